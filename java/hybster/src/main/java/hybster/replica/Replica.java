package hybster.replica;

import java.io.Closeable;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.spi.SelectorProvider;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.atomic.AtomicLong;
import java.util.logging.Logger;

import hybster.Cluster;
import hybster.net.Node;
import hybster.trinx.Certificate;
import hybster.trinx.TrustedCounter;
import hybster.wire.Keys;
import hybster.wire.Message;
import hybster.wire.Message.Checkpoint;
import hybster.wire.Message.Commit;
import hybster.wire.Message.NewView;
import hybster.wire.Message.Notice;
import hybster.wire.Message.Prepare;
import hybster.wire.Message.Read;
import hybster.wire.Message.Recover;
import hybster.wire.Message.RecoveryAnswer;
import hybster.wire.Message.Reply;
import hybster.wire.Message.Request;
import hybster.wire.Message.State;
import hybster.wire.Message.StateRequest;
import hybster.wire.Message.Suspicion;
import hybster.wire.Message.ViewChange;

/**
 * A Hybster replica (Behl, Distler, Kapitza, EuroSys'17): the ordering protocol
 * with its view change, on one event loop.
 *
 * <p>Trusted counter. Every message a replica certifies (PREPARE, COMMIT,
 * VIEW-CHANGE, NEW-VIEW) takes the next value of its TrInX counter, and every
 * replica handles each peer's certified messages strictly in counter order:
 * a value shown before is rejected (a replay, or an equivocation), a message
 * ahead of a missing one waits for it. So all correct replicas see the same
 * sequence of messages from each peer: a leader cannot tell them different
 * things.
 *
 * <p>Normal case. The leader of view v (replica v mod n) orders a client's
 * request with a PREPARE for the next order number. A follower that accepts it
 * (from the leader, the next order, the request known from its client too)
 * answers all replicas with a COMMIT that carries the PREPARE. f+1 matching
 * certified messages (the PREPARE and f COMMITs) commit a request; committed
 * requests execute in order; the client accepts a result after f+1 matching
 * REPLYs. Requests are deduplicated per client by timestamp.
 *
 * <p>Batching. A PREPARE orders a batch of requests, which execute in the
 * batch's order as one order number. The leader keeps one batch per instance
 * in flight: a request that comes while its instance's last batch has not
 * executed waits, and the next batch takes everything that waited (at most
 * {@code maxBatch} requests and about {@link #MAX_BATCH_BYTES} of operations), as
 * Hybster and BFT-SMaRt do: batches grow with the load and no clock decides
 * what a batch holds. With {@code maxBatch} 1 every request is ordered as it
 * comes, without waiting for the last.
 *
 * <p>View change. A follower that knows a request from its client and sees it
 * unexecuted for {@code viewChangeMillis} (doubled after each view change that
 * brought no execution) suspects the leader: it sends SUSPICION(v+1),
 * certified by a counter of its own, and goes on in view v (MinBFT's
 * REQ-VIEW-CHANGE: one slow or misled replica alone does not leave the view,
 * where the others may need it to order). Once f+1 replicas suspect, each
 * replica sends VIEW-CHANGE(v+1) with every
 * certified message it sent; the counter values prove the log complete. The
 * leader of v+1 collects f+1 of them (its own included) and sends NEW-VIEW with
 * them. Every replica derives the same requests from those logs: any request
 * that committed had f+1 certified messages, and any f+1 logs contain one of
 * them. It executes what it has not yet, and the new leader orders from there.
 *
 * <p>Checkpoints. Every {@code checkpointInterval} orders a replica certifies a
 * CHECKPOINT with the digest of its state ({@link #snapshot}: its history, the
 * chain of what it executed; each client's last result; the application's
 * snapshot); f+1 matching ones, its own among them, make it stable, and the
 * replica drops its log up to its own CHECKPOINT there and keeps that
 * checkpoint's snapshot. A VIEW-CHANGE then carries the stable checkpoint's
 * proof and the log since. So a replica whose state went another way than
 * the others' (a fault its results did not show) finds no checkpoint stable.
 *
 * <p>Parallel ordering instances (Hybster's consensus-oriented
 * parallelization, as a configuration option). With k instances, instance i
 * orders the order numbers g with (g - 1) mod k = i, and its leader in view v
 * is replica (v + i) mod n, so k replicas lead at once. A client's requests go
 * to instance (client mod k). Execution stays one sequence in global order: a
 * leader whose instance falls behind another's fills its orders below the
 * other's with no-ops (an instance with nothing to order must not stall the
 * rest). One view covers every instance: its primary (instance 0's leader)
 * runs the view change, whose logs carry every instance's PREPAREs, and a
 * request left unexecuted suspects the view. All certified messages of a
 * replica share one trusted counter, so each peer's messages, of whatever
 * instance, still arrive in one checked order. With k = 1 this is the protocol
 * above.
 *
 * <p>Time. An application that needs time (session expiry) gets it as ordered
 * operations: every {@code Application.tickMillis} each replica proposes its
 * clock reading as a request of its own, which the others take as a client's
 * and which executes with the replica's index as client (no reply goes out).
 * Its trusted counter certifies each tick ({@link #TICK_COUNTER}), since the
 * link keys that authenticate requests are derived from a secret clients hold.
 *
 * <p>Layout: {@link CounterOrder} keeps each peer's certified messages in
 * counter order, {@link ViewChanges} holds the view change's own state and
 * checks, {@link Certified} says what a certificate covers; this class holds
 * the ordering state and acts on all of them, on its node's event loop.
 *
 * <p>State transfer. A replica that missed more of a peer's messages than the
 * peer keeps to send again ({@code Options.retainedBytes}) waits in counter
 * order for them for good. When f+1 replicas certified a checkpoint alike
 * beyond what it executed, and it cannot get there by executing (one of the
 * CHECKPOINTs waits behind a missing message, or the checkpoint lies two
 * intervals or more ahead; a NEW-VIEW's stable checkpoint beyond it too), it
 * asks those replicas for their stable state (STATE-REQUEST; one not there
 * yet answers once it is), takes the first STATE whose proof holds f+1
 * matching verified CHECKPOINTs with the snapshot's digest, installs it, goes
 * past each proof replica's messages up to its CHECKPOINT, and executes on
 * from there; a STATE carries the NEW-VIEW of its sender's view, which the
 * replica enters if it missed that view change. Its VIEW-CHANGEs go on
 * proving themselves by its own last stable checkpoint (the state's has no
 * CHECKPOINT of its own) until it makes another. Not covered yet: PREPAREs
 * a leader certified before its CHECKPOINT for later orders (with
 * {@code maxBatch} 1 or parallel instances: the replica then waits until the
 * next stable checkpoint and fetches again). A reply sent again after an
 * installed state has no proof.
 *
 * <p>Recovery. A replica whose trusted counter went on from a sealed state
 * (see {@code SoftwareTrinx.sealed}) restarted and lost what it knew: what
 * it certified before the crash is gone, so its view changes could leave out
 * an order it agreed to. It sends RECOVER first, which its peers take across
 * the gap in its counter values; each answers with RECOVERY-ANSWER (the
 * highest order it holds a PREPARE of, and the NEW-VIEW that proves its
 * view) and suspects the view if the replica leads in it. The recovering
 * replica starts each peer's counter sequence at its answer, takes the view
 * the answers prove, and takes no part (no COMMIT, no VIEW-CHANGE, no
 * execution: it keeps the PREPAREs and COMMITs that come) until f+1
 * answers came and f+1 replicas certified a checkpoint alike at or past
 * every order they named: any order it may have agreed to before is then
 * within a stable checkpoint. It fetches that state, certifies its own
 * CHECKPOINT there (its log is complete from it on) and goes on with what
 * it kept. One replica recovers at a time (a recovering replica is one of
 * the f faulty ones and answers no RECOVER); a recovery ends only when
 * checkpoints are made, so under load. While one recovers, ordering needs
 * every other replica, a lone suspecting follower too: a suspicion leaves
 * it in its view.
 */
public final class Replica implements Closeable {
    private static final Logger LOG = Logger.getLogger(Replica.class.getName());
    /** The TrInX counter every certified message uses. */
    static final int COUNTER = 0;
    /** The TrInX counter that certifies this replica's clock ticks (see {@link #tick}). */
    static final int TICK_COUNTER = 1;
    /** The TrInX counter that certifies this replica's suspicions (see View change above). */
    static final int SUSPICION_COUNTER = 2;
    /** The counters a replica's trusted subsystem needs. */
    public static final int COUNTERS = 3;
    /** Bytes of the certificate in front of a tick's operation: the counter's previous value and the tag. */
    private static final int TICK_CERTIFICATE_BYTES = 8 + 32;
    public static final long DEFAULT_VIEW_CHANGE_MILLIS = 2000;
    public static final long DEFAULT_CHECKPOINT_INTERVAL = 100;
    /** The most ordering instances (each needs a leader; more than replicas only shares them out). */
    public static final int MAX_INSTANCES = 64;
    /** Requests per PREPARE by default: enough to amortize an ordering round over many clients. */
    public static final int DEFAULT_MAX_BATCH = 64;
    /** Operation bytes a batch takes before it is cut (one request larger than this goes alone). */
    public static final int MAX_BATCH_BYTES = 64 * 1024;

    private final int id;
    private final Cluster cluster;
    private final TrustedCounter trinx;
    private final Application application;
    private final Node node;
    private final CounterOrder counterOrder;
    private final ViewChanges viewChanges;
    private final long viewChangeMillis;
    private final long checkpointInterval;
    private final int instances;
    private final int maxBatch;
    /** How often this replica proposes its clock (0: the application needs no time). */
    private final long tickMillis;
    private volatile long stableCheckpoint;
    private volatile int logSize;
    private volatile int openOrders;
    private final AtomicLong executed = new AtomicLong();
    private final AtomicLong rejected = new AtomicLong();
    private final AtomicLong batchesPrepared = new AtomicLong();
    private volatile int currentView;
    private volatile boolean currentlyRecovering;

    // The event loop's state.
    private int view;
    /**
     * Per instance, the last order prepared in this view (its leader's, as
     * followers see it); before the first, the order k below the instance's first.
     */
    private final long[] lastPrepared;
    private long lastExecuted;
    /** Every certified message this replica sent, in counter order (its view-change log). */
    private final List<Message> sentLog = new ArrayList<>();
    private final TreeMap<Long, Slot> slots = new TreeMap<>();
    /** Requests received from their clients and not executed, by digest, with when they came. */
    private final Map<ByteBuffer, Pending> pending = new LinkedHashMap<>();
    /** Requests the leader has ordered and not yet executed (client, timestamp). */
    private final Set<ByteBuffer> ordered = new HashSet<>();
    /** Per instance this replica leads, the requests waiting for the next batch. */
    private final List<ArrayDeque<Request>> unbatched = new ArrayList<>();
    /** Per client (in client order, as a snapshot writes them), its last executed request. */
    private final TreeMap<Integer, ClientRecord> clients = new TreeMap<>();
    /** PREPAREs and COMMITs of views not entered yet (in counter order per sender), by view. */
    private final Map<Integer, List<Message>> aheadOfView = new HashMap<>();
    /** The chain of everything executed: what a CHECKPOINT certifies. */
    private byte[] history = new byte[32];
    /** CHECKPOINTs by order, then sender, until their order is stable. */
    private final Map<Long, Map<Integer, Checkpoint>> checkpoints = new HashMap<>();
    /** The proof of the last stable checkpoint (empty before the first). */
    private List<Checkpoint> stableProof = List.of();
    /**
     * The proof of the last stable checkpoint with this replica's own
     * CHECKPOINT in it, which its VIEW-CHANGEs carry with the log since that
     * CHECKPOINT (a state transfer's checkpoint has none of its own: its log
     * goes on from the earlier one).
     */
    private List<Checkpoint> ownStableProof = List.of();
    /** This replica's snapshots at its checkpoints from the last stable one on, by order. */
    private final TreeMap<Long, byte[]> snapshots = new TreeMap<>();
    /** The last stable checkpoint's snapshot, for readers off the loop thread (empty before the first). */
    private volatile byte[] stableSnapshot = new byte[0];
    /** A stable checkpoint is beyond what this replica executed: it needs the state from others. */
    private boolean needsStateTransfer;
    /**
     * The orders a NEW-VIEW carried past what this replica executed, when it
     * entered that view needing a state: each order's batch (empty where no
     * log mentions it), executed once the state is in. Nobody orders them again.
     */
    private final TreeMap<Long, List<Request>> carriedPastState = new TreeMap<>();
    /** The stable checkpoint whose state this replica fetches, and its proof (0 and empty: none). */
    private long fetching;
    private List<Checkpoint> fetchProof = List.of();
    private final AtomicLong stateTransfers = new AtomicLong();
    /** Replicas that asked for the state of a checkpoint not stable here yet, and the order they asked for. */
    private final Map<Integer, Long> stateWanted = new HashMap<>();
    /** This replica's last clock tick (a request of its own; see {@code Application.tickMillis}). */
    private Request lastTick;
    /** The NEW-VIEW that started this replica's view (null in view 0). */
    private NewView viewStart;
    /** This replica restarted with a sealed trusted counter and has no stable state yet (see Recovery above). */
    private boolean recovering;
    /** Its RECOVER's counter value. */
    private long recoverValue;
    /** While recovering: the answers to its RECOVER, by sender. */
    private final Map<Integer, RecoveryAnswer> answers = new HashMap<>();
    /** While recovering: the PREPAREs and COMMITs that came, in the order they came. */
    private final List<Message> keptWhileRecovering = new ArrayList<>();
    private final AtomicLong recoveries = new AtomicLong();
    private final AtomicLong suspicionsSent = new AtomicLong();

    /** One order number's agreement. */
    private static final class Slot {
        Prepare prepare;
        /** The PREPARE's batch digest: what f+1 agreements must match for the order to commit. */
        byte[] prepared;
        /** This replica certified the batch (its COMMIT, or its PREPARE as leader). */
        boolean agreed;
        /** The batch's requests this follower has not had from their clients yet, by digest. */
        final Set<ByteBuffer> missing = new HashSet<>();
        /** Replica to the request digest it certified for this order. */
        final Map<Integer, byte[]> agreements = new HashMap<>();
    }

    private record Pending(Request request, long since) { }

    /** The last request executed for a client, and its reply (for retransmissions). */
    private record ClientRecord(long timestamp, Reply reply) { }

    /**
     * How a replica runs, the same on every replica of a cluster: how long a
     * request may wait before followers suspect its leader, how many orders
     * lie between checkpoints, how many ordering instances run in parallel,
     * how many requests a PREPARE orders at most, and how many bytes of the
     * frames last sent to each replica go again after a broken connection
     * (a replica that missed more catches up by state transfer).
     */
    public record Options(long viewChangeMillis, long checkpointInterval, int instances, int maxBatch,
            long retainedBytes) {
        public static final Options DEFAULTS = new Options(DEFAULT_VIEW_CHANGE_MILLIS, DEFAULT_CHECKPOINT_INTERVAL,
                1, DEFAULT_MAX_BATCH, Node.RETAINED_BYTES);

        public Options {
            if (viewChangeMillis < 1) {
                throw new IllegalArgumentException("view change timeout " + viewChangeMillis + " ms");
            }
            if (checkpointInterval < 1) {
                throw new IllegalArgumentException("checkpoint interval " + checkpointInterval);
            }
            if (instances < 1 || instances > MAX_INSTANCES) {
                throw new IllegalArgumentException(instances + " ordering instances: 1 to " + MAX_INSTANCES);
            }
            if (maxBatch < 1) {
                throw new IllegalArgumentException("batches of at most " + maxBatch + " requests");
            }
            if (retainedBytes < 0) {
                throw new IllegalArgumentException(retainedBytes + " bytes retained");
            }
        }

        public Options withViewChangeMillis(long millis) {
            return new Options(millis, checkpointInterval, instances, maxBatch, retainedBytes);
        }

        public Options withCheckpointInterval(long interval) {
            return new Options(viewChangeMillis, interval, instances, maxBatch, retainedBytes);
        }

        public Options withInstances(int count) {
            return new Options(viewChangeMillis, checkpointInterval, count, maxBatch, retainedBytes);
        }

        public Options withMaxBatch(int requests) {
            return new Options(viewChangeMillis, checkpointInterval, instances, requests, retainedBytes);
        }

        public Options withRetainedBytes(long bytes) {
            return new Options(viewChangeMillis, checkpointInterval, instances, maxBatch, bytes);
        }
    }

    /** A replica with the default {@link Options}. */
    public Replica(int id, Cluster cluster, TrustedCounter trinx, Application application, SelectorProvider provider)
            throws IOException {
        this(id, cluster, trinx, application, provider, Options.DEFAULTS);
    }

    public Replica(int id, Cluster cluster, TrustedCounter trinx, Application application, SelectorProvider provider,
            Options options) throws IOException {
        if (trinx.owner() != id) {
            throw new IllegalArgumentException("replica " + id + " got the trusted subsystem of " + trinx.owner());
        }
        this.id = id;
        this.cluster = cluster;
        this.trinx = trinx;
        this.application = application;
        this.viewChangeMillis = options.viewChangeMillis();
        this.checkpointInterval = options.checkpointInterval();
        this.instances = options.instances();
        this.maxBatch = options.maxBatch();
        this.tickMillis = application.tickMillis();
        if (tickMillis > 0 && trinx.counters() <= TICK_COUNTER) {
            throw new IllegalArgumentException("the application's clock ticks need the trusted subsystem's counter "
                    + TICK_COUNTER + ": give it " + COUNTERS + " counters, not " + trinx.counters());
        }
        for (int instance = 0; instance < instances; instance++) {
            unbatched.add(new ArrayDeque<>());
        }
        this.counterOrder = new CounterOrder(id, cluster, trinx);
        this.viewChanges = new ViewChanges(id, cluster, trinx, viewChangeMillis);
        this.lastPrepared = new long[instances];
        resetInstances(0);
        this.recovering = trinx.value(COUNTER) > 0; // its counter went on from a sealed state: a restart
        this.currentlyRecovering = recovering;
        this.node = new Node(id, cluster.replicas().get(id), cluster.addresses(), cluster.keys(), provider,
                options.retainedBytes());
        application.attach((client, payload, proof) -> node.send(client, new Notice(id, payload, proof)));
    }

    public void start() {
        node.start(this::onMessage);
        if (recovering) {
            node.execute(this::recover);
        }
        node.execute(this::watchRequests);
        if (tickMillis > 0) {
            node.schedule(tickMillis, this::tick);
        }
        LOG.info(() -> "replica " + id + " of " + cluster.n() + " (f=" + cluster.f() + ") started in view " + view);
    }

    public int id() {
        return id;
    }

    /** The view this replica is in. */
    public int view() {
        return currentView;
    }

    /** Requests executed so far. */
    public long executed() {
        return executed.get();
    }

    /** Certified messages rejected so far (bad certificate, replayed counter value, wrong leader, order or view). */
    public long rejected() {
        return rejected.get();
    }

    /** Recoveries this replica completed since it started (0 or 1: see Recovery above). */
    public long recoveries() {
        return recoveries.get();
    }

    /** The SUSPICIONs this replica sent since it started. */
    public long suspicions() {
        return suspicionsSent.get();
    }

    /** Whether it restarted and has not recovered yet. */
    public boolean recovering() {
        return currentlyRecovering;
    }

    /** The order of the last stable checkpoint. */
    public long stableCheckpoint() {
        return stableCheckpoint;
    }

    /** Certified messages kept for a view change (the log since the last stable checkpoint). */
    public int logSize() {
        return logSize;
    }

    /** Orders this replica holds PREPAREs or COMMITs of and has not executed. */
    public int openOrders() {
        return openOrders;
    }

    /** PREPAREs of a non-empty batch this replica sent as a leader. */
    public long batchesPrepared() {
        return batchesPrepared.get();
    }

    /** Frames the network dropped (bad MAC, malformed). */
    public long dropped() {
        return node.dropped();
    }

    /** The primary of a view: instance 0's leader, who runs the change to it. */
    static int primary(int inView, Cluster cluster) {
        return inView % cluster.n();
    }

    private int leader(int instance, int inView) {
        return (inView + instance) % cluster.n();
    }

    private int instanceOf(long order) {
        return (int) ((order - 1) % instances);
    }

    private int instanceOf(Request request) {
        return Math.floorMod(request.sender(), instances);
    }

    private long nextOrder(int instance) {
        return lastPrepared[instance] + instances;
    }

    /** Every instance's last prepared order as of {@code last}, the last order of all. */
    private void resetInstances(long last) {
        for (int instance = 0; instance < instances; instance++) {
            lastPrepared[instance] = lastOfInstanceUpTo(instance, last);
        }
    }

    /** Instance {@code instance}'s last order at or below {@code last} (before its first: k below it). */
    private long lastOfInstanceUpTo(int instance, long last) {
        long order = last;
        while (order >= 1 && instanceOf(order) != instance) {
            order--;
        }
        return order >= 1 ? order : instance + 1 - instances;
    }

    private void onMessage(Message message) {
        if (message instanceof Request request) {
            onRequest(request);
        } else if (message instanceof Read read) {
            onRead(read);
        } else if (message instanceof StateRequest request) {
            onStateRequest(request);
        } else if (message instanceof State state) {
            onState(state);
        } else if (message instanceof Suspicion suspicion) {
            onSuspicion(suspicion);
        } else {
            String refusal = counterOrder.offer(message, this::handleInOrder);
            if (refusal != null) {
                reject(message, refusal);
            } else if (message instanceof Checkpoint) {
                lookForStableAhead();
            }
        }
        openOrders = slots.size();
    }

    /**
     * Proposes this replica's clock reading as a request of its own, sent to
     * every replica as a client sends one; while the last one is unexecuted,
     * sends that one again instead (one at a time, as a client).
     */
    private void tick() {
        node.schedule(tickMillis, this::tick);
        if (recovering) {
            return;
        }
        if (lastTick == null || isExecuted(lastTick)) {
            long stamp = trinx.value(TICK_COUNTER) + 1;
            byte[] operation = application.clockTick(System.currentTimeMillis());
            Certificate certificate = trinx.certify(TICK_COUNTER, stamp, Keys.digest(operation));
            lastTick = new Request(id, stamp, ByteBuffer.allocate(TICK_CERTIFICATE_BYTES + operation.length)
                    .putLong(certificate.previous()).put(certificate.tag()).put(operation).array());
        }
        broadcast(lastTick);
        onRequest(lastTick);
    }

    /**
     * What {@code request} asks the application to execute: a client's
     * operation, or a replica's tick without the certificate in front of it:
     * {@code [long previous][32-byte tag][operation]}, certifying the
     * operation's digest with counter value {@code timestamp}.
     */
    private static byte[] operationOf(Request request) {
        return request.sender() >= Cluster.FIRST_CLIENT ? request.operation()
                : Arrays.copyOfRange(request.operation(), TICK_CERTIFICATE_BYTES, request.operation().length);
    }

    /** Whether {@code request} may be ordered: a client's, or a clock tick its replica's trusted counter certified. */
    private boolean mayOrder(Request request) {
        int sender = request.sender();
        if (sender >= Cluster.FIRST_CLIENT) {
            return true;
        }
        if (tickMillis == 0 || sender < 0 || sender >= cluster.n()
                || request.operation().length < TICK_CERTIFICATE_BYTES) {
            return false;
        }
        ByteBuffer tick = ByteBuffer.wrap(request.operation());
        long previous = tick.getLong();
        byte[] tag = new byte[TICK_CERTIFICATE_BYTES - 8];
        tick.get(tag);
        Certificate certificate = new Certificate(TICK_COUNTER, previous, request.timestamp(), tag);
        return trinx.verify(sender, certificate, Keys.digest(operationOf(request)));
    }

    /**
     * Answers a client's unordered read from the state executed so far (the
     * client checks that all agree, or the proofs), recovering or not.
     */
    private void onRead(Read read) {
        if (read.sender() < Cluster.FIRST_CLIENT) {
            reject(read, "a read from a replica");
            return;
        }
        byte[] result = application.read(read.operation());
        if (result != null) {
            node.send(read.sender(),
                    new Reply(id, view, read.timestamp(), result, application.prove(read.operation(), result)));
        }
    }

    /** Handles a verified certified message that continues its sender's counter. */
    private void handleInOrder(Message message) {
        if (recovering && (message instanceof Prepare || message instanceof Commit)) {
            if (keptWhileRecovering.size() < CounterOrder.MAX_WAITING) {
                keptWhileRecovering.add(message); // for when it has the state
            }
        } else if (message instanceof Recover recover) {
            onRecover(recover);
        } else if (message instanceof RecoveryAnswer answer) {
            onRecoveryAnswer(answer);
        } else if (message instanceof Prepare prepare) {
            onPrepare(prepare);
        } else if (message instanceof Commit commit) {
            onCommit(commit);
        } else if (message instanceof ViewChange viewChange) {
            if (!recovering) { // a recovering replica takes no part in a view change
                onViewChange(viewChange);
            }
        } else if (message instanceof NewView newView) {
            onNewView(newView);
        } else if (message instanceof Checkpoint checkpoint) {
            onCheckpoint(checkpoint);
        }
    }

    private void reject(Message message, String why) {
        rejected.incrementAndGet();
        LOG.warning(() -> "replica " + id + ": rejected " + message.getClass().getSimpleName() + " from "
                + message.sender() + ": " + why);
    }

    /** Certifies {@code digest} with the next counter value. */
    private Certificate certify(byte[] digest) {
        return trinx.certify(COUNTER, trinx.value(COUNTER) + 1, digest);
    }

    private static ByteBuffer key(long client, long timestamp) {
        return ByteBuffer.allocate(16).putLong(client).putLong(timestamp).flip();
    }

    // ---- normal case

    private void onRequest(Request request) {
        if (!mayOrder(request)) {
            reject(request, "requests come from clients (and replicas' certified clock ticks)");
            return;
        }
        ClientRecord record = clients.get(request.sender());
        if (record != null && request.timestamp() <= record.timestamp()) {
            if (request.timestamp() == record.timestamp() && request.sender() >= Cluster.FIRST_CLIENT) {
                node.send(request.sender(), record.reply()); // the reply was lost: again
            }
            return;
        }
        ByteBuffer digest = ByteBuffer.wrap(request.digest());
        pending.putIfAbsent(digest, new Pending(request, System.nanoTime()));
        if (viewChanges.underWay() || recovering) {
            return;
        }
        if (leader(instanceOf(request), view) == id) {
            order(request);
        } else {
            // A PREPARE that waited for this request from its client goes on once it has its whole batch.
            List<Slot> complete = new ArrayList<>();
            for (Slot slot : slots.values()) {
                if (!slot.agreed && slot.missing.remove(digest) && slot.missing.isEmpty()) {
                    complete.add(slot);
                }
            }
            complete.forEach(this::agree);
        }
    }

    private void order(Request request) {
        if (!ordered.add(key(request.sender(), request.timestamp()))) {
            return; // a retransmission of a request already ordered
        }
        unbatched.get(instanceOf(request)).add(request);
        prepareBatches();
        executeCommitted();
    }

    /**
     * Cuts a batch of the waiting requests of each instance this replica
     * leads whose last batch executed (or of every such instance at once,
     * when batches are of one request).
     */
    private void prepareBatches() {
        if (viewChanges.underWay()) {
            return;
        }
        for (int instance = 0; instance < instances; instance++) {
            ArrayDeque<Request> waiting = unbatched.get(instance);
            while (!waiting.isEmpty() && leader(instance, view) == id
                    && (maxBatch == 1 || lastPrepared[instance] <= lastExecuted)) {
                List<Request> batch = new ArrayList<>();
                long bytes = 0;
                while (!waiting.isEmpty() && batch.size() < maxBatch
                        && (batch.isEmpty() || bytes + waiting.peek().operation().length <= MAX_BATCH_BYTES)) {
                    bytes += waiting.peek().operation().length;
                    batch.add(waiting.poll());
                }
                batchesPrepared.incrementAndGet();
                fillInstancesBelow(prepare(instance, batch));
            }
        }
    }

    /**
     * Lets no instance this replica leads stay behind {@code order}: each
     * prepares no-ops for its orders below it.
     */
    private void fillInstancesBelow(long order) {
        for (int instance = 0; instance < instances; instance++) {
            if (leader(instance, view) != id) {
                continue;
            }
            while (nextOrder(instance) < order) {
                prepare(instance, List.of()); // a no-op
            }
        }
    }

    /** Certifies and sends the PREPARE of {@code batch} as the next order of {@code instance}. */
    private long prepare(int instance, List<Request> batch) {
        long order = nextOrder(instance);
        lastPrepared[instance] = order;
        byte[] digest = Prepare.batchDigest(batch);
        Prepare prepare = new Prepare(id, view, order, batch, certify(Prepare.certified(view, order, digest)));
        log(prepare);
        Slot slot = slots.computeIfAbsent(order, o -> new Slot());
        slot.prepare = prepare;
        slot.prepared = digest;
        slot.agreed = true;
        slot.agreements.put(id, digest);
        broadcast(prepare);
        LOG.fine(() -> "replica " + id + ": view " + view + " ordered " + batch.size() + " requests as " + order);
        return order;
    }

    private void onPrepare(Prepare prepare) {
        if (aheadOfView(prepare, prepare.view())) {
            return;
        }
        int instance = instanceOf(prepare.order());
        if (viewChanges.underWay() || prepare.view() != view || prepare.sender() != leader(instance, view)) {
            reject(prepare, "not from the leader of its instance in view " + view
                    + (viewChanges.underWay() ? " (changing view)" : ""));
            return;
        }
        if (prepare.order() != nextOrder(instance)) {
            reject(prepare, "order " + prepare.order() + " does not follow " + lastPrepared[instance]);
            return;
        }
        if (prepare.batch().size() > maxBatch) {
            reject(prepare, "a batch of " + prepare.batch().size() + " requests (at most " + maxBatch + ")");
            return;
        }
        if (prepare.batch().stream().anyMatch(r -> !mayOrder(r) || instanceOf(r) != instance)) {
            reject(prepare, "its batch holds a request that is no client's of this instance");
            return;
        }
        lastPrepared[instance] = prepare.order();
        Slot slot = slots.computeIfAbsent(prepare.order(), o -> new Slot());
        slot.prepare = prepare;
        slot.prepared = prepare.batchDigest();
        slot.agreements.put(prepare.sender(), slot.prepared);
        for (Request request : prepare.batch()) {
            ByteBuffer digest = ByteBuffer.wrap(request.digest());
            if (!pending.containsKey(digest) && !isExecuted(request)) {
                slot.missing.add(digest);
            }
        }
        if (slot.missing.isEmpty()) {
            agree(slot);
        } else {
            LOG.fine(() -> "replica " + id + ": order " + prepare.order() + " waits for " + slot.missing.size()
                    + " of its requests from their clients");
        }
        fillInstancesBelow(prepare.order());
        executeCommitted();
    }

    /**
     * Keeps a message of a view this replica has not entered yet (another
     * replica's COMMIT can come before the NEW-VIEW, on another link) for when
     * it enters that view; true if it was kept.
     */
    private boolean aheadOfView(Message message, int messageView) {
        if (messageView <= view) {
            return false;
        }
        List<Message> kept = aheadOfView.computeIfAbsent(messageView, v -> new ArrayList<>());
        if (kept.size() < CounterOrder.MAX_WAITING) {
            kept.add(message);
        }
        return true;
    }

    private boolean isExecuted(Request request) {
        ClientRecord record = clients.get(request.sender());
        return record != null && request.timestamp() <= record.timestamp();
    }

    /** Commits to a PREPARE whose requests came from their clients too. */
    private void agree(Slot slot) {
        Prepare prepare = slot.prepare;
        slot.agreed = true;
        Commit commit = new Commit(id, view, prepare.order(), prepare,
                certify(Commit.certified(view, prepare.order(), slot.prepared)));
        log(commit);
        slot.agreements.put(id, slot.prepared);
        broadcast(commit);
        executeCommitted();
    }

    private void onCommit(Commit commit) {
        if (aheadOfView(commit, commit.view())) {
            return;
        }
        if (viewChanges.underWay() || commit.view() != view) {
            return; // of an earlier view: it only had to keep the counter order
        }
        Prepare prepare = commit.prepare();
        if (prepare.sender() != leader(instanceOf(commit.order()), view) || prepare.view() != view
                || prepare.order() != commit.order()
                || !trinx.verify(prepare.sender(), prepare.certificate(), Certified.certified(prepare))) {
            reject(commit, "its PREPARE is not the leader's");
            return;
        }
        if (commit.order() <= lastExecuted) {
            return; // a COMMIT beyond the f + 1 that executed it: a slot for it would never go
        }
        slots.computeIfAbsent(commit.order(), o -> new Slot()).agreements.put(commit.sender(), commit.batchDigest());
        executeCommitted();
    }

    /**
     * Executes committed batches in order, as far as they go; then the
     * leader's next batches can go. An order commits with f+1 certified
     * messages for its PREPARE's batch (the PREPARE and COMMITs), this
     * replica's own COMMIT or not: a follower that never got a request from
     * its client (the client had its f+1 replies from the others, and sent
     * it no more) still executes it, from the batch the PREPARE carries.
     */
    private void executeCommitted() {
        while (true) {
            Slot slot = slots.get(lastExecuted + 1);
            if (slot == null || slot.prepared == null) {
                break;
            }
            long matching = slot.agreements.values().stream().filter(d -> Arrays.equals(d, slot.prepared)).count();
            if (matching < cluster.f() + 1) {
                break;
            }
            slots.remove(lastExecuted + 1);
            execute(lastExecuted + 1, slot.prepare.batch());
        }
        prepareBatches();
    }

    /** Executes {@code batch} (empty: a no-op) as {@code order}, the next one. */
    private void execute(long order, List<Request> batch) {
        if (needsStateTransfer) {
            return;
        }
        ByteBuffer results = ByteBuffer.allocate(32 * batch.size());
        for (Request request : batch) {
            byte[] result = new byte[0];
            ordered.remove(key(request.sender(), request.timestamp()));
            pending.remove(ByteBuffer.wrap(request.digest()));
            if (!isExecuted(request)) { // else ordered twice (a retransmission): executed once
                byte[] operation = operationOf(request);
                result = application.execute(request.sender(), operation);
                Reply reply = new Reply(id, view, request.timestamp(), result, application.prove(operation, result));
                clients.put(request.sender(), new ClientRecord(request.timestamp(), reply));
                viewChanges.progressed();
                if (request.sender() >= Cluster.FIRST_CLIENT) { // not a clock tick
                    executed.incrementAndGet();
                    node.send(request.sender(), reply);
                }
            }
            results.put(Keys.digest(result));
        }
        lastExecuted = order;
        history = Keys.digest(ByteBuffer.allocate(104).put(history).putLong(order)
                .put(Prepare.batchDigest(batch)).put(Keys.digest(results.array())).array());
        LOG.fine(() -> "replica " + id + ": executed order " + order);
        if (order % checkpointInterval == 0) {
            byte[] snapshot = snapshot();
            snapshots.put(order, snapshot);
            byte[] digest = Keys.digest(snapshot);
            Checkpoint checkpoint = new Checkpoint(id, order, digest, certify(Checkpoint.certified(order, digest)));
            log(checkpoint);
            broadcast(checkpoint);
            onCheckpoint(checkpoint);
        }
    }

    /**
     * The state a checkpoint certifies, as bytes: the history, each client's
     * last request and result (in client order; not the reply, which names
     * this replica and its view), then the application's snapshot.
     */
    private byte[] snapshot() {
        byte[] application = this.application.snapshot();
        int size = history.length + 4 + 4 + application.length;
        for (ClientRecord record : clients.values()) {
            size += 4 + 8 + 4 + record.reply().result().length;
        }
        ByteBuffer state = ByteBuffer.allocate(size).put(history).putInt(clients.size());
        for (Map.Entry<Integer, ClientRecord> entry : clients.entrySet()) {
            byte[] result = entry.getValue().reply().result();
            state.putInt(entry.getKey()).putLong(entry.getValue().timestamp()).putInt(result.length).put(result);
        }
        return state.putInt(application.length).put(application).array();
    }

    /** The snapshot of the last stable checkpoint (empty before the first). */
    public byte[] stableSnapshot() {
        return stableSnapshot.clone();
    }

    private void log(Message certified) {
        sentLog.add(certified);
        logSize = sentLog.size();
    }

    // ---- checkpoints

    private void onCheckpoint(Checkpoint checkpoint) {
        if (checkpoint.order() <= stableCheckpoint) {
            return;
        }
        Map<Integer, Checkpoint> forOrder = checkpoints.computeIfAbsent(checkpoint.order(), o -> new HashMap<>());
        forOrder.put(checkpoint.sender(), checkpoint);
        Checkpoint own = forOrder.get(id);
        if (own == null) {
            lookForStableAhead();
            return; // stable for this replica only once it got there itself
        }
        List<Checkpoint> matching = forOrder.values().stream()
                .filter(c -> Arrays.equals(c.stateDigest(), own.stateDigest()))
                .sorted((a, b) -> Integer.compare(a.sender(), b.sender())).toList();
        if (matching.size() < cluster.f() + 1) {
            return;
        }
        stableProof = matching;
        ownStableProof = matching;
        stableCheckpoint = checkpoint.order();
        snapshots.headMap(checkpoint.order()).clear();
        stableSnapshot = snapshots.get(checkpoint.order());
        stateWanted.entrySet().removeIf(wanted -> {
            boolean answered = wanted.getValue() <= stableCheckpoint;
            if (answered) {
                node.send(wanted.getKey(), stateMessage());
            }
            return answered;
        });
        checkpoints.keySet().removeIf(order -> order <= checkpoint.order());
        // The log restarts after our own CHECKPOINT: a view change proves the rest by it.
        int at = sentLog.indexOf(own);
        sentLog.subList(0, at + 1).clear();
        logSize = sentLog.size();
        LOG.info(() -> "replica " + id + ": view " + view + ", checkpoint " + checkpoint.order()
                + " stable, log truncated to " + sentLog.size() + " messages");
    }

    // ---- state transfer

    /**
     * Fetches the state of a checkpoint that f+1 replicas certified alike
     * beyond what this replica executed, when it cannot get there by
     * executing: one of those CHECKPOINTs waits behind a message that never
     * came (more went missing than its sender kept to send again), or the
     * checkpoint lies two intervals or more ahead (a NEW-VIEW left it behind
     * its stable checkpoint; a replica merely slow is rarely that far).
     */
    private void lookForStableAhead() {
        // A recovering replica counts only CHECKPOINTs that came after the answers (see Recovery above).
        List<Checkpoint> waiting = recovering ? List.of() : counterOrder.waitingCheckpoints();
        long recoverAt = recoveryTarget();
        List<Checkpoint> known = new ArrayList<>(waiting);
        checkpoints.values().forEach(bySender -> known.addAll(bySender.values()));
        Map<ByteBuffer, Map<Integer, Checkpoint>> alike = new HashMap<>();
        for (Checkpoint checkpoint : known) {
            if (checkpoint.order() > Math.max(lastExecuted, fetching) && checkpoint.sender() != id) {
                ByteBuffer key = ByteBuffer.allocate(8 + checkpoint.stateDigest().length)
                        .putLong(checkpoint.order()).put(checkpoint.stateDigest()).flip();
                alike.computeIfAbsent(key, k -> new TreeMap<>()).put(checkpoint.sender(), checkpoint);
            }
        }
        alike.values().stream()
                .filter(bySender -> bySender.size() >= cluster.f() + 1)
                .map(bySender -> List.copyOf(bySender.values()))
                .filter(proof -> recovering ? proof.get(0).order() >= recoverAt
                        : proof.stream().anyMatch(waiting::contains)
                                || proof.get(0).order() >= lastExecuted + 2 * checkpointInterval)
                .max((a, b) -> Long.compare(a.get(0).order(), b.get(0).order()))
                .ifPresent(this::fetch);
    }

    /** Asks the replicas of {@code proof} for their stable state, again while it has not come. */
    private void fetch(List<Checkpoint> proof) {
        long order = proof.get(0).order();
        if (order <= Math.max(lastExecuted, fetching)) {
            return;
        }
        fetching = order;
        fetchProof = proof;
        LOG.info(() -> "replica " + id + ": executed up to " + lastExecuted + ", fetches the state of checkpoint "
                + order);
        askForState(order);
    }

    private void askForState(long order) {
        if (fetching != order) {
            return; // it came (or a later one is wanted)
        }
        fetchProof.stream().filter(checkpoint -> checkpoint.sender() != id)
                .forEach(checkpoint -> node.send(checkpoint.sender(), new StateRequest(id, order)));
        node.schedule(viewChangeMillis, () -> askForState(order));
    }

    /** Sends a replica that asks the state of this replica's last stable checkpoint, if it is as far. */
    private void onStateRequest(StateRequest request) {
        if (request.sender() < 0 || request.sender() >= cluster.n() || request.sender() == id) {
            reject(request, "a state request from no other replica");
            return;
        }
        if (stableCheckpoint >= request.order() && stableSnapshot.length > 0) {
            node.send(request.sender(), stateMessage());
        } else {
            stateWanted.put(request.sender(), request.order()); // answered once it is stable here
        }
    }

    /** This replica's stable state, with the NEW-VIEW of its view (a replica cut off may have missed it). */
    private State stateMessage() {
        return new State(id, stableCheckpoint, stableSnapshot, stableProof,
                viewStart == null ? List.of() : List.of(viewStart));
    }

    /**
     * Takes a state beyond what this replica executed whose proof holds and
     * whose digest it has, and enters the view the state's NEW-VIEW proves
     * if it is beyond this replica's (it missed that view change).
     */
    private void onState(State state) {
        if (state.order() <= lastExecuted || fetching == 0) {
            return; // this replica got there meanwhile, or asked for nothing
        }
        String problem = checkProof(state);
        if (problem != null) {
            reject(state, problem);
            return;
        }
        install(state.order(), state.snapshot(), state.proof());
        state.view().stream().filter(newView -> newView.view() > view).forEach(this::onNewView);
    }

    /** Why {@code state}'s proof does not show its snapshot stable, or null. */
    private String checkProof(State state) {
        byte[] digest = Keys.digest(state.snapshot());
        Set<Integer> senders = new HashSet<>();
        for (Checkpoint checkpoint : state.proof()) {
            if (checkpoint.order() != state.order() || !Arrays.equals(checkpoint.stateDigest(), digest)) {
                return "a proof's CHECKPOINT is of another order or state";
            }
            if (checkpoint.sender() < 0 || checkpoint.sender() >= cluster.n()
                    || !trinx.verify(checkpoint.sender(), checkpoint.certificate(), Certified.certified(checkpoint))) {
                return "a proof's CHECKPOINT does not verify";
            }
            senders.add(checkpoint.sender());
        }
        return senders.size() < cluster.f() + 1 ? "a proof of " + senders.size() + " replicas" : null;
    }

    /**
     * Replaces this replica's state with a stable checkpoint's (see
     * {@link #snapshot} for the layout) and goes on from there: past each
     * proof replica's messages up to its CHECKPOINT, and executing what
     * committed after it.
     */
    private void install(long order, byte[] snapshot, List<Checkpoint> proof) {
        ByteBuffer in = ByteBuffer.wrap(snapshot);
        byte[] chain = new byte[history.length];
        in.get(chain);
        Map<Integer, ClientRecord> records = new HashMap<>();
        for (int i = in.getInt(); i > 0; i--) {
            int client = in.getInt();
            long timestamp = in.getLong();
            byte[] result = new byte[in.getInt()];
            in.get(result);
            // No proof: it would need the operation (a client asking again gets the others').
            records.put(client, new ClientRecord(timestamp, new Reply(id, view, timestamp, result, new byte[0])));
        }
        byte[] state = new byte[in.getInt()];
        in.get(state);
        application.restore(state);
        history = chain;
        clients.clear();
        clients.putAll(records);
        lastExecuted = order;
        slots.keySet().removeIf(slot -> slot <= order);
        pending.values().removeIf(waiting -> isExecuted(waiting.request()));
        ordered.removeIf(key -> {
            ClientRecord record = clients.get((int) key.getLong(0));
            return record != null && key.getLong(8) <= record.timestamp();
        });
        for (int instance = 0; instance < instances; instance++) {
            lastPrepared[instance] = Math.max(lastPrepared[instance], lastOfInstanceUpTo(instance, order));
        }
        stableCheckpoint = order;
        stableProof = List.copyOf(proof);
        snapshots.clear();
        snapshots.put(order, snapshot);
        stableSnapshot = snapshot;
        checkpoints.keySet().removeIf(checkpoint -> checkpoint <= order);
        needsStateTransfer = false;
        fetching = 0;
        fetchProof = List.of();
        stateTransfers.incrementAndGet();
        LOG.info(() -> "replica " + id + ": took the state of checkpoint " + order);
        for (Checkpoint checkpoint : proof) {
            if (checkpoint.sender() != id) {
                counterOrder.skipTo(checkpoint.sender(), checkpoint.certificate().value(), this::handleInOrder);
            }
        }
        if (recovering) {
            endRecovery(order, snapshot);
        }
        for (Map.Entry<Long, List<Request>> carried : carriedPastState.tailMap(order, false).entrySet()) {
            if (carried.getKey() != lastExecuted + 1) {
                break;
            }
            execute(carried.getKey(), carried.getValue());
        }
        carriedPastState.clear();
        executeCommitted();
    }

    /** State transfers this replica made (each took a stable checkpoint's state from others). */
    public long stateTransfers() {
        return stateTransfers.get();
    }

    // ---- recovery

    /** A restarted replica's first step: RECOVER to every peer (see Recovery above). */
    private void recover() {
        Recover recover = new Recover(id, certify(Recover.certified()));
        recoverValue = recover.certificate().value();
        counterOrder.startAtAnswersTo(recoverValue);
        log(recover);
        broadcast(recover);
        LOG.info(() -> "replica " + id + " restarted: its counter went on at " + recoverValue + ", it recovers");
    }

    /** A peer restarted: tells it how far ordering went and in which view, and suspects the view if it led in it. */
    private void onRecover(Recover recover) {
        if (recovering) {
            return; // knows nothing to tell (one replica recovers at a time)
        }
        int from = recover.sender();
        long value = recover.certificate().value();
        long highest = Math.max(lastExecuted, slots.isEmpty() ? 0 : slots.lastKey());
        for (long last : lastPrepared) {
            highest = Math.max(highest, last);
        }
        List<NewView> started = viewStart == null ? List.of() : List.of(viewStart);
        RecoveryAnswer answer = new RecoveryAnswer(id, from, value, highest, started,
                certify(RecoveryAnswer.certified(from, value, highest, started)));
        log(answer);
        broadcast(answer);
        long highestOrder = highest;
        LOG.info(() -> "replica " + id + ": replica " + from + " restarted; ordering went up to " + highestOrder);
        for (int instance = 0; instance < instances; instance++) {
            if (leader(instance, view) == from) {
                suspectView(); // it lost what it led
                break;
            }
        }
    }

    private void onRecoveryAnswer(RecoveryAnswer answer) {
        if (!recovering || answer.recovering() != id || answer.recoverValue() != recoverValue) {
            return; // to another replica, or to an earlier restart of this one
        }
        answers.put(answer.sender(), answer);
        answer.view().stream().filter(newView -> newView.view() > view).forEach(this::onNewView);
        lookForStableAhead();
    }

    /**
     * The checkpoint a recovering replica's state must be at or past: the
     * highest order f+1 answers named (one correct replica that agreed with
     * it to any order it agreed to before the crash is among any f+1);
     * unknown (Long.MAX_VALUE) before f+1 answers.
     */
    private long recoveryTarget() {
        if (answers.size() < cluster.f() + 1) {
            return Long.MAX_VALUE;
        }
        return answers.values().stream().mapToLong(RecoveryAnswer::highestOrder).max().orElse(0);
    }

    /**
     * The state of checkpoint {@code order} is installed: certifies its own
     * CHECKPOINT there (its log restarts after it, so its view changes prove
     * themselves again) and goes on with the PREPAREs and COMMITs it kept.
     */
    private void endRecovery(long order, byte[] snapshot) {
        recovering = false;
        currentlyRecovering = false;
        byte[] digest = Keys.digest(snapshot);
        Checkpoint own = new Checkpoint(id, order, digest, certify(Checkpoint.certified(order, digest)));
        broadcast(own);
        List<Checkpoint> proof = new ArrayList<>(stableProof);
        proof.removeIf(checkpoint -> checkpoint.sender() == id); // one its earlier life certified, if any
        proof.add(own);
        stableProof = List.copyOf(proof);
        ownStableProof = stableProof;
        sentLog.clear();
        logSize = 0;
        answers.clear();
        recoveries.incrementAndGet();
        LOG.info(() -> "replica " + id + ": recovered at checkpoint " + order + " in view " + view);
        List<Message> kept = List.copyOf(keptWhileRecovering);
        keptWhileRecovering.clear();
        for (Message message : kept) {
            if (message instanceof Prepare prepare && prepare.order() > order && prepare.view() >= view) {
                onPrepare(prepare);
            } else if (message instanceof Commit commit && commit.order() > order && commit.view() >= view) {
                onCommit(commit);
            }
        }
    }

    private void broadcast(Message message) {
        for (int replica = 0; replica < cluster.n(); replica++) {
            if (replica != id) {
                node.send(replica, message);
            }
        }
    }

    // ---- view change

    /** Every half timeout: a request from a client left unexecuted too long suspects the leader. */
    private void watchRequests() {
        long now = System.nanoTime();
        // A replica does not suspect itself: its own instances' requests it orders at once.
        boolean overdue = !recovering && pending.values().stream()
                .anyMatch(p -> now - p.since() > viewChanges.suspectAfterMillis() * 1_000_000
                        && !isExecuted(p.request())
                        && leader(instanceOf(p.request()), view) != id);
        if (overdue) {
            suspectView();
        }
        node.schedule(Math.max(1, viewChangeMillis / 2), this::watchRequests);
    }

    /**
     * Asks to leave the view: SUSPICION of its leader while in it; once a view
     * change is under way (it brought no execution), the next view's VIEW-CHANGE.
     */
    private void suspectView() {
        if (viewChanges.underWay()) {
            startViewChange(viewChanges.changingTo() + 1);
            return;
        }
        int newView = view + 1;
        if (viewChanges.suspects(newView)) {
            return; // asked already: the others decide
        }
        LOG.info(() -> "replica " + id + ": suspects the leader of view " + view + "; " + progress());
        Suspicion suspicion = new Suspicion(id, newView, trinx.certify(SUSPICION_COUNTER,
                trinx.value(SUSPICION_COUNTER) + 1, Suspicion.certified(newView)));
        suspicionsSent.incrementAndGet();
        broadcast(suspicion);
        onSuspicion(suspicion);
    }

    /** A replica suspects the leader: f+1 suspicions (its own too) start the view change here. */
    private void onSuspicion(Suspicion suspicion) {
        int sender = suspicion.sender();
        Certificate certificate = suspicion.certificate();
        if (sender < 0 || sender >= cluster.n() || certificate.counter() != SUSPICION_COUNTER
                || !trinx.verify(sender, certificate, Suspicion.certified(suspicion.newView()))) {
            reject(suspicion, "its certificate does not verify");
            return;
        }
        if (recovering || suspicion.newView() <= view) {
            return; // takes no part in a view change, or past that view
        }
        if (viewChanges.suspected(sender, suspicion.newView(), view)) {
            startViewChange(view + 1);
        }
    }

    /** Where execution stands: what the next order waits for (for the log of a suspicion). */
    private String progress() {
        Slot next = slots.get(lastExecuted + 1);
        String waitsFor = next == null ? "nothing of it came"
                : next.prepare == null ? "its PREPARE (" + next.agreements.size() + " COMMITs came)"
                : "agreements (" + next.agreements.size() + " came; " + next.missing.size()
                        + " of its requests did not come from their clients)";
        return "executed " + lastExecuted + ", order " + (lastExecuted + 1) + " waits for " + waitsFor + "; "
                + pending.size() + " requests pending, " + slots.size() + " orders open, " + counterOrder.waiting()
                + " certified messages wait for a missing one";
    }

    private void startViewChange(int newView) {
        if (!viewChanges.start(view, newView)) {
            return;
        }
        LOG.info(() -> "replica " + id + ": asks for view " + newView + "; " + progress());
        List<Message> log = List.copyOf(sentLog);
        ViewChange viewChange = new ViewChange(id, newView, ownStableProof, log,
                certify(ViewChange.certified(newView, ownStableProof, log)));
        log(viewChange);
        broadcast(viewChange);
        onViewChange(viewChange);
        // Pending requests wait a full timeout again in the new view (or the next view change).
        long now = System.nanoTime();
        pending.replaceAll((digest, p) -> new Pending(p.request(), now));
    }

    private void onViewChange(ViewChange viewChange) {
        if (viewChange.newView() <= view) {
            return; // for a view this replica is past
        }
        if (!viewChanges.logIsComplete(viewChange)) {
            reject(viewChange, "its log is not every certified message its sender sent");
            return;
        }
        int newView = viewChange.newView();
        switch (viewChanges.take(viewChange)) {
            case JOIN -> startViewChange(newView); // which comes back here with our own
            case LEAD -> {
                List<ViewChange> proofs = viewChanges.proofs(newView);
                NewView newViewMessage = new NewView(id, newView, proofs, certify(NewView.certified(newView, proofs)));
                log(newViewMessage);
                broadcast(newViewMessage);
                viewStart = newViewMessage;
                enterView(newView, proofs);
            }
            case WAIT -> { }
        }
    }

    private void onNewView(NewView newView) {
        if (viewStart != null && newView.certificate().equals(viewStart.certificate())) {
            return; // the NEW-VIEW of this view, which a recovering replica had from an answer first
        }
        if (newView.view() <= view || newView.sender() != primary(newView.view(), cluster)) {
            reject(newView, "not from the leader of view " + newView.view());
            return;
        }
        String refusal = viewChanges.refusal(newView);
        if (refusal != null) {
            reject(newView, refusal);
            return;
        }
        viewStart = newView;
        if (recovering) { // it takes the view and executes nothing: its state comes with a checkpoint
            view = newView.view();
            currentView = view;
            viewChanges.entered(view);
            return;
        }
        enterView(newView.view(), newView.proofs());
    }

    /**
     * Moves to {@code newView}: every request that any of the proofs' logs
     * prepared or committed executes, in order (a missing order is empty), and
     * ordering goes on after the last of them.
     */
    private void enterView(int newView, List<ViewChange> proofs) {
        long stableInProofs = proofs.stream().flatMap(proof -> proof.stable().stream())
                .mapToLong(Checkpoint::order).max().orElse(0);
        if (stableInProofs > lastExecuted) {
            needsStateTransfer = true;
            LOG.warning(() -> "replica " + id + ": checkpoint " + stableInProofs + " is stable but this replica "
                    + "executed only up to " + lastExecuted + ": it fetches the state");
            proofs.stream().map(ViewChange::stable).filter(stable -> !stable.isEmpty()
                    && stable.get(0).order() == stableInProofs).findFirst().ifPresent(this::fetch);
        }
        TreeMap<Long, Prepare> carried = new TreeMap<>();
        for (ViewChange proof : proofs) {
            for (Message entry : proof.log()) {
                Prepare prepare = entry instanceof Prepare p ? p : entry instanceof Commit c ? c.prepare() : null;
                if (prepare != null) {
                    // Within a view one PREPARE per order; across views the later view's stands.
                    carried.merge(prepare.order(), prepare, (a, b) -> a.view() >= b.view() ? a : b);
                }
            }
        }
        // The view goes on after the stable checkpoint and what the NEW-VIEW carries, as its
        // leader's does, also where this replica has executed less (it fetches the state).
        long last = Math.max(Math.max(lastExecuted, stableInProofs), carried.isEmpty() ? 0 : carried.lastKey());
        carriedPastState.clear();
        for (long order = Math.max(lastExecuted, stableInProofs) + 1; order <= last; order++) {
            Prepare prepare = carried.get(order);
            // An order no log mentions: nothing committed there, it executes as nothing.
            List<Request> batch = prepare == null ? List.of() : prepare.batch();
            if (needsStateTransfer) {
                carriedPastState.put(order, batch);
            } else {
                execute(order, batch);
            }
        }
        view = newView;
        currentView = newView;
        viewChanges.entered(newView);
        resetInstances(last);
        slots.clear();
        ordered.clear();
        unbatched.forEach(ArrayDeque::clear); // still pending: ordered again below if this replica leads them
        List<Message> early = aheadOfView.remove(newView);
        aheadOfView.keySet().removeIf(v -> v < newView);
        LOG.info(() -> "replica " + id + ": entered view " + newView + " (primary " + primary(newView, cluster)
                + ") after order " + last);
        pending.values().stream().map(Pending::request)
                .filter(request -> leader(instanceOf(request), newView) == id).toList().forEach(this::order);
        if (early != null) {
            for (Message message : early) {
                if (message instanceof Prepare prepare) {
                    onPrepare(prepare);
                } else {
                    onCommit((Commit) message);
                }
            }
        }
    }

    @Override
    public void close() {
        node.close();
        LOG.info(() -> "replica " + id + " stopped after executing " + executed.get() + " requests");
    }
}
