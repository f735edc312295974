package hybster.client;

import java.io.Closeable;
import java.io.IOException;
import java.nio.channels.spi.SelectorProvider;
import java.util.Arrays;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Consumer;
import java.util.function.Predicate;
import java.util.logging.Logger;

import hybster.Cluster;
import hybster.net.Node;
import hybster.wire.Message;
import hybster.wire.Message.Notice;
import hybster.wire.Message.Read;
import hybster.wire.Message.Reply;
import hybster.wire.Message.Request;

/**
 * A Hybster client: sends each request to every replica, accepts a result once
 * f+1 replicas sent the same one (at least one of them is correct), and sends
 * the request again to all when no result comes in time. One request at a time.
 * A caller that wants the replicas' proofs of a result (see
 * {@code Application.prove}) names the replies it accepts, so a replica's bad
 * proof does not count toward the f+1.
 */
public final class Client implements Closeable {
    private static final Logger LOG = Logger.getLogger(Client.class.getName());

    private final int id;
    private final Cluster cluster;
    private final Node node;
    private final long retransmitMillis;
    private final AtomicLong retransmissions = new AtomicLong();
    private long timestamp;

    /** Reads left to order at once, after an unordered read timed out. */
    private int orderedReadsLeft;
    private long unorderedReads;
    private long readsOrdered;

    // The event loop's: the message of the call in progress, its timestamp, and the matching replies it needs.
    private Message current;
    private long currentTimestamp;
    private int needed;
    private Predicate<Reply> acceptable;
    private CompletableFuture<Proven> result;
    private final Map<Integer, Reply> replies = new HashMap<>();
    /** The replicas that replied to the current message, acceptably or not. */
    private final Set<Integer> answered = new HashSet<>();
    private Node.Timer retransmit;
    private volatile Consumer<Notice> notices = notice -> { };

    public Client(int id, Cluster cluster, SelectorProvider provider, long retransmitMillis) throws IOException {
        if (id < Cluster.FIRST_CLIENT) {
            throw new IllegalArgumentException("client ids start at " + Cluster.FIRST_CLIENT);
        }
        this.id = id;
        this.cluster = cluster;
        this.retransmitMillis = retransmitMillis;
        this.node = new Node(id, null, cluster.addresses(), cluster.keys(), provider);
        node.start(this::onMessage);
    }

    /** The copies among {@code copies} (a notice per replica) that f+1 replicas sent alike, or none. */
    public List<Notice> agreed(Collection<Notice> copies) {
        for (Notice candidate : copies) {
            List<Notice> alike = copies.stream()
                    .filter(copy -> Arrays.equals(copy.payload(), candidate.payload())).toList();
            if (alike.size() >= cluster.f() + 1) {
                return alike;
            }
        }
        return List.of();
    }

    /** Requests sent again after a timeout, so far. */
    public long retransmissions() {
        return retransmissions.get();
    }

    /** A result that f+1 replicas agreed on, and their proofs of it by replica. */
    public record Proven(byte[] result, Map<Integer, byte[]> proofs) { }

    /** Executes {@code operation} on the replicated service and returns the result f+1 replicas agree on. */
    public byte[] invoke(byte[] operation, long timeoutMillis)
            throws IOException, TimeoutException, InterruptedException {
        return invoke(operation, timeoutMillis, reply -> true).result();
    }

    /**
     * Executes {@code operation} and returns the result that f+1 replicas sent
     * in replies that {@code acceptable} takes (say, whose proof verifies), with
     * those replies' proofs; other replies are ignored.
     */
    public synchronized Proven invoke(byte[] operation, long timeoutMillis, Predicate<Reply> acceptable)
            throws IOException, TimeoutException, InterruptedException {
        long stamp = ++timestamp;
        return call(new Request(id, stamp, operation.clone()), stamp, cluster.f() + 1, acceptable, timeoutMillis);
    }

    /**
     * Reads with {@code operation}, which must not change the service's state
     * (the application's {@code read} answers it): sent to every replica, which
     * answers at once from its state, without ordering; taken when all n
     * replies match. That is linearizable: a write that completed before the
     * read began was executed by f+1 replicas, one of them at least correct,
     * and replicas only move forward, so n matching replies show a state after
     * it (f+1 matching replies would not: they might all come from replicas
     * that have not executed it, one of them lying). When the replies differ or
     * do not all come within the retransmission interval (a replica lags or is
     * down), the read is ordered like any operation, and after a timeout the
     * next 100 reads are ordered at once.
     */
    public synchronized byte[] read(byte[] operation, long timeoutMillis)
            throws IOException, TimeoutException, InterruptedException {
        if (orderedReadsLeft > 0) {
            orderedReadsLeft--;
            return invoke(operation, timeoutMillis);
        }
        long started = System.nanoTime();
        long stamp = ++timestamp;
        try {
            Proven agreed = call(new Read(id, stamp, operation.clone()), stamp, cluster.n(), reply -> true,
                    Math.min(timeoutMillis, retransmitMillis));
            if (agreed != null) {
                unorderedReads++;
                return agreed.result();
            }
        } catch (TimeoutException e) {
            orderedReadsLeft = 100;
        }
        readsOrdered++;
        long left = timeoutMillis - (System.nanoTime() - started) / 1_000_000;
        return invoke(operation, Math.max(1, left));
    }

    /**
     * Reads with {@code operation}, whose result proves itself: a replica's
     * reply is taken only when {@code acceptable} holds (its proof verifies,
     * say a signature over a value that never changes once it exists), and
     * f+1 matching acceptable replies are the result, without ordering, from
     * whatever state each replica reached. Returns null when every replica
     * answered without that, or not all within the retransmission interval:
     * the caller then orders the operation. Counted as neither kind of read above.
     */
    public synchronized Proven readProven(byte[] operation, Predicate<Reply> acceptable, long timeoutMillis)
            throws IOException, InterruptedException {
        long stamp = ++timestamp;
        try {
            return call(new Read(id, stamp, operation.clone()), stamp, cluster.f() + 1, acceptable,
                    Math.min(timeoutMillis, retransmitMillis));
        } catch (TimeoutException e) {
            return null;
        }
    }

    /** Reads that all replicas answered alike, without ordering (see {@link #read}). */
    public synchronized long unorderedReads() {
        return unorderedReads;
    }

    /** Reads tried unordered that were then ordered (the replies differed or did not all come). */
    public synchronized long readsOrdered() {
        return readsOrdered;
    }

    /**
     * Sends {@code message} to every replica and returns the result that
     * {@code needed} acceptable replies agree on; a request is sent again after
     * each retransmission interval, a read never, and it returns null once all
     * replicas answered without enough agreeing.
     */
    private Proven call(Message message, long stamp, int needed, Predicate<Reply> acceptable, long timeoutMillis)
            throws IOException, TimeoutException, InterruptedException {
        CompletableFuture<Proven> done = new CompletableFuture<>();
        node.execute(() -> {
            current = message;
            currentTimestamp = stamp;
            this.needed = needed;
            this.acceptable = acceptable;
            result = done;
            replies.clear();
            answered.clear();
            send();
        });
        try {
            return done.get(timeoutMillis, TimeUnit.MILLISECONDS);
        } catch (ExecutionException e) {
            throw new IOException("request " + stamp + " failed", e.getCause());
        } catch (TimeoutException | InterruptedException e) {
            node.execute(() -> {
                if (current == message) {
                    finish();
                }
            });
            throw e;
        }
    }

    /** Ends the current request: no more retransmissions, and later replies are ignored (loop thread). */
    private void finish() {
        if (retransmit != null) {
            retransmit.cancel();
        }
        current = null;
    }

    private void send() {
        for (int replica = 0; replica < cluster.n(); replica++) {
            node.send(replica, current);
        }
        if (!(current instanceof Request)) {
            return;
        }
        retransmit = node.schedule(retransmitMillis, () -> {
            if (current != null && !result.isDone()) {
                retransmissions.incrementAndGet();
                LOG.fine(() -> "client " + id + ": no result for request " + currentTimestamp + ": sending again");
                send();
            }
        });
    }

    /**
     * Hands every notice of a replica (see {@code Message.Notice}) to
     * {@code listener}, on the client's event loop: it must not block, and it
     * decides which to believe (f+1 alike).
     */
    public void onNotice(Consumer<Notice> listener) {
        notices = listener;
    }

    private void onMessage(Message message) {
        if (message instanceof Notice notice) {
            if (notice.sender() >= 0 && notice.sender() < cluster.n()) {
                notices.accept(notice);
            }
            return;
        }
        if (!(message instanceof Reply reply) || current == null || reply.timestamp() != currentTimestamp
                || reply.sender() < 0 || reply.sender() >= cluster.n()) {
            return;
        }
        answered.add(reply.sender());
        if (!acceptable.test(reply)) {
            if (answered.size() == cluster.n() && current instanceof Read) {
                finish(); // all answered, not enough acceptably alike: the read is ordered instead
                result.complete(null);
            }
            return;
        }
        replies.put(reply.sender(), reply);
        Map<Integer, byte[]> proofs = new TreeMap<>();
        replies.values().stream().filter(reply::matches).forEach(match -> proofs.put(match.sender(), match.proof()));
        if (proofs.size() >= needed) {
            finish(); // here, on the loop: the caller returns without handing the loop more work
            result.complete(new Proven(reply.result(), proofs));
        } else if (answered.size() == cluster.n() && current instanceof Read) {
            finish(); // all answered, not alike: the read is ordered instead
            result.complete(null);
        }
    }

    @Override
    public void close() {
        node.close();
    }
}
