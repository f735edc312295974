package hybster.replica;

import java.io.Closeable;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.spi.SelectorProvider;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.atomic.AtomicLong;
import java.util.logging.Logger;

import hybster.Cluster;
import hybster.net.Node;
import hybster.trinx.Certificate;
import hybster.trinx.TrustedCounter;
import hybster.wire.Message;
import hybster.wire.Message.Commit;
import hybster.wire.Message.Prepare;
import hybster.wire.Message.Reply;
import hybster.wire.Message.Request;

/**
 * A Hybster replica: the normal case of the ordering protocol (Behl, Distler,
 * Kapitza, EuroSys'17), on one event loop.
 *
 * <ul>
 *   <li>The leader of view v (replica v mod n) orders a client's request with a
 *       PREPARE certified by its trusted counter, the counter's value being the
 *       order number: it cannot certify a second request for the same number.
 *   <li>A follower that accepts the PREPARE (leader, view, certificate, the
 *       counter moving on from the last value seen, the request known from the
 *       client itself) answers all replicas with a COMMIT certified by its own
 *       counter.
 *   <li>f+1 matching certified messages (the PREPARE and f COMMITs) commit the
 *       request; committed requests execute in order; the client gets a REPLY
 *       and accepts a result after f+1 matching ones.
 * </ul>
 *
 * Every certified message must continue its sender's counter: a value it has
 * shown before (a replay, an equivocation) is rejected. A gap (lost messages)
 * is accepted and logged. Clients' requests are deduplicated by timestamp.
 * Not yet here: view change, checkpoints, parallel ordering instances.
 */
public final class Replica implements Closeable {
    private static final Logger LOG = Logger.getLogger(Replica.class.getName());
    /** The trusted counter that orders (leader) and agrees (followers). */
    static final int COUNTER = 0;

    private final int id;
    private final Cluster cluster;
    private final TrustedCounter trinx;
    private final Application application;
    private final Node node;
    private final AtomicLong executed = new AtomicLong();
    private final AtomicLong rejected = new AtomicLong();

    // The event loop's state.
    private int view;
    private long lastOrdered;
    private long lastExecuted;
    private long lastCommitCertified;
    private final long[] lastCounterSeen;
    private final Map<Long, Slot> slots = new TreeMap<>();
    /** Requests received from their clients, by digest (a PREPARE must carry one of these). */
    private final Map<ByteBuffer, Request> knownRequests = new HashMap<>();
    /** Requests the leader has ordered and not yet executed (client, timestamp). */
    private final Set<ByteBuffer> ordered = new HashSet<>();
    private final Map<Integer, ClientRecord> clients = new HashMap<>();

    /** One order number's agreement. */
    private static final class Slot {
        Prepare prepare;
        byte[] digest;
        /** Replica to the request digest it certified for this order. */
        final Map<Integer, byte[]> agreements = new HashMap<>();
        boolean executed;
    }

    /** The last request executed for a client, and its reply (for retransmissions). */
    private record ClientRecord(long timestamp, Reply reply) { }

    public Replica(int id, Cluster cluster, TrustedCounter trinx, Application application, SelectorProvider provider)
            throws IOException {
        if (trinx.owner() != id) {
            throw new IllegalArgumentException("replica " + id + " got the trusted subsystem of " + trinx.owner());
        }
        this.id = id;
        this.cluster = cluster;
        this.trinx = trinx;
        this.application = application;
        this.lastCounterSeen = new long[cluster.n()];
        this.node = new Node(id, cluster.replicas().get(id), cluster.addresses(), cluster.keys(), provider);
    }

    public void start() {
        node.start(this::onMessage);
        LOG.info(() -> "replica " + id + " of " + cluster.n() + " (f=" + cluster.f() + ") started in view " + view);
    }

    public int id() {
        return id;
    }

    /** Requests executed so far. */
    public long executed() {
        return executed.get();
    }

    /** Certified messages rejected so far (bad certificate, replayed counter value, wrong leader or view). */
    public long rejected() {
        return rejected.get();
    }

    /** Frames the network dropped (bad MAC, malformed). */
    public long dropped() {
        return node.dropped();
    }

    private int leader() {
        return view % cluster.n();
    }

    private void onMessage(Message message) {
        if (message instanceof Request request) {
            onRequest(request);
        } else if (message instanceof Prepare prepare) {
            onPrepare(prepare);
        } else if (message instanceof Commit commit) {
            onCommit(commit);
        } else {
            reject(message, "replicas take no replies");
        }
    }

    private void reject(Message message, String why) {
        rejected.incrementAndGet();
        LOG.warning(() -> "replica " + id + ": rejected " + message.getClass().getSimpleName() + " from "
                + message.sender() + ": " + why);
    }

    private static ByteBuffer key(long client, long timestamp) {
        return ByteBuffer.allocate(16).putLong(client).putLong(timestamp).flip();
    }

    private void onRequest(Request request) {
        if (request.sender() < Cluster.FIRST_CLIENT) {
            reject(request, "requests come from clients");
            return;
        }
        ClientRecord record = clients.get(request.sender());
        if (record != null && request.timestamp() <= record.timestamp()) {
            if (request.timestamp() == record.timestamp()) {
                node.send(request.sender(), record.reply()); // the reply was lost: again
            }
            return;
        }
        ByteBuffer digest = ByteBuffer.wrap(request.digest());
        knownRequests.put(digest, request);
        if (leader() == id) {
            order(request);
        } else {
            // A PREPARE that waited for this request from its client can go on now.
            slots.values().stream()
                    .filter(slot -> slot.prepare != null && slot.digest == null
                            && Arrays.equals(slot.prepare.request().digest(), digest.array()))
                    .toList()
                    .forEach(this::agree);
        }
    }

    private void order(Request request) {
        if (!ordered.add(key(request.sender(), request.timestamp()))) {
            return; // a retransmission of a request already ordered
        }
        long order = ++lastOrdered;
        byte[] digest = request.digest();
        Certificate certificate = trinx.certify(COUNTER, order, Prepare.certified(view, order, digest));
        Prepare prepare = new Prepare(id, view, order, request, certificate);
        Slot slot = slots.computeIfAbsent(order, o -> new Slot());
        slot.prepare = prepare;
        slot.digest = digest;
        slot.agreements.put(id, digest);
        broadcast(prepare);
        LOG.fine(() -> "replica " + id + ": view " + view + " ordered request " + request.timestamp() + " of client "
                + request.sender() + " as " + order);
        tryCommit(order);
    }

    /** Accepts a certificate that continues {@code sender}'s counter; false (and counted) otherwise. */
    private boolean continuesCounter(Message message, int sender, Certificate certificate, byte[] certified) {
        if (sender < 0 || sender >= cluster.n()) {
            reject(message, "not a replica");
            return false;
        }
        if (certificate.counter() != COUNTER || !trinx.verify(sender, certificate, certified)) {
            reject(message, "its certificate does not verify");
            return false;
        }
        if (certificate.previous() < lastCounterSeen[sender]) {
            reject(message, "counter value " + certificate.value() + " was shown before (replay or equivocation)");
            return false;
        }
        if (certificate.previous() > lastCounterSeen[sender]) {
            LOG.warning(() -> "replica " + id + ": replica " + sender + "'s counter skipped from "
                    + lastCounterSeen[sender] + " to " + certificate.previous() + ": messages were lost");
        }
        lastCounterSeen[sender] = certificate.value();
        return true;
    }

    private void onPrepare(Prepare prepare) {
        if (prepare.view() != view || prepare.sender() != leader()) {
            reject(prepare, "not from the leader of view " + view);
            return;
        }
        byte[] digest = prepare.request().digest();
        if (prepare.certificate().value() != prepare.order()) {
            reject(prepare, "certified counter value " + prepare.certificate().value() + " for order "
                    + prepare.order());
            return;
        }
        if (!continuesCounter(prepare, prepare.sender(), prepare.certificate(),
                Prepare.certified(view, prepare.order(), digest))) {
            return;
        }
        Slot slot = slots.computeIfAbsent(prepare.order(), o -> new Slot());
        slot.prepare = prepare;
        slot.agreements.put(prepare.sender(), digest);
        if (knownRequests.containsKey(ByteBuffer.wrap(digest))) {
            agree(slot);
        } else {
            LOG.fine(() -> "replica " + id + ": order " + prepare.order() + " waits for its request from the client");
        }
    }

    /** Commits to a PREPARE whose request came from its client too. */
    private void agree(Slot slot) {
        Prepare prepare = slot.prepare;
        slot.digest = prepare.request().digest();
        Certificate certificate = trinx.certify(COUNTER, ++lastCommitCertified,
                Commit.certified(view, prepare.order(), slot.digest));
        slot.agreements.put(id, slot.digest);
        broadcast(new Commit(id, view, prepare.order(), slot.digest, certificate));
        tryCommit(prepare.order());
    }

    private void onCommit(Commit commit) {
        if (commit.view() != view) {
            reject(commit, "view " + commit.view() + " is not " + view);
            return;
        }
        if (!continuesCounter(commit, commit.sender(), commit.certificate(),
                Commit.certified(view, commit.order(), commit.requestDigest()))) {
            return;
        }
        slots.computeIfAbsent(commit.order(), o -> new Slot()).agreements.put(commit.sender(), commit.requestDigest());
        tryCommit(commit.order());
    }

    private void tryCommit(long order) {
        Slot slot = slots.get(order);
        if (slot == null || slot.digest == null || slot.executed) {
            return;
        }
        long matching = slot.agreements.values().stream().filter(d -> Arrays.equals(d, slot.digest)).count();
        if (matching >= cluster.f() + 1) {
            executeCommitted();
        }
    }

    /** Executes committed requests in order, as far as they go. */
    private void executeCommitted() {
        while (true) {
            Slot slot = slots.get(lastExecuted + 1);
            if (slot == null || slot.digest == null) {
                return;
            }
            long matching = slot.agreements.values().stream().filter(d -> Arrays.equals(d, slot.digest)).count();
            if (matching < cluster.f() + 1) {
                return;
            }
            execute(lastExecuted + 1, slot);
            lastExecuted++;
            slots.remove(lastExecuted);
        }
    }

    private void execute(long order, Slot slot) {
        Request request = slot.prepare.request();
        slot.executed = true;
        ordered.remove(key(request.sender(), request.timestamp()));
        knownRequests.remove(ByteBuffer.wrap(slot.digest));
        ClientRecord record = clients.get(request.sender());
        if (record != null && request.timestamp() <= record.timestamp()) {
            return; // ordered twice (a retransmission): executed once
        }
        byte[] result = application.execute(request.sender(), request.operation());
        Reply reply = new Reply(id, view, request.timestamp(), result);
        clients.put(request.sender(), new ClientRecord(request.timestamp(), reply));
        executed.incrementAndGet();
        LOG.fine(() -> "replica " + id + ": executed order " + order);
        node.send(request.sender(), reply);
    }

    private void broadcast(Message message) {
        for (int replica = 0; replica < cluster.n(); replica++) {
            if (replica != id) {
                node.send(replica, message);
            }
        }
    }

    @Override
    public void close() {
        node.close();
        LOG.info(() -> "replica " + id + " stopped after executing " + executed.get() + " requests");
    }
}
