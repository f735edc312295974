package hybster.client;

import java.io.Closeable;
import java.io.IOException;
import java.nio.channels.spi.SelectorProvider;
import java.util.Arrays;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
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

    // The event loop's.
    private Request current;
    private Predicate<Reply> acceptable;
    private CompletableFuture<Proven> result;
    private final Map<Integer, Reply> replies = new HashMap<>();
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
        Request request = new Request(id, ++timestamp, operation.clone());
        CompletableFuture<Proven> done = new CompletableFuture<>();
        node.execute(() -> {
            current = request;
            this.acceptable = acceptable;
            result = done;
            replies.clear();
            send();
        });
        try {
            return done.get(timeoutMillis, TimeUnit.MILLISECONDS);
        } catch (ExecutionException e) {
            throw new IOException("request " + request.timestamp() + " failed", e.getCause());
        } catch (TimeoutException | InterruptedException e) {
            node.execute(() -> {
                if (current == request) {
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
        retransmit = node.schedule(retransmitMillis, () -> {
            if (current != null && !result.isDone()) {
                retransmissions.incrementAndGet();
                LOG.fine(() -> "client " + id + ": no result for request " + current.timestamp() + ": sending again");
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
        if (!(message instanceof Reply reply) || current == null || reply.timestamp() != current.timestamp()
                || reply.sender() < 0 || reply.sender() >= cluster.n() || !acceptable.test(reply)) {
            return;
        }
        replies.put(reply.sender(), reply);
        Map<Integer, byte[]> proofs = new TreeMap<>();
        replies.values().stream().filter(reply::matches).forEach(match -> proofs.put(match.sender(), match.proof()));
        if (proofs.size() >= cluster.f() + 1) {
            finish(); // here, on the loop: the caller returns without handing the loop more work
            result.complete(new Proven(reply.result(), proofs));
        }
    }

    @Override
    public void close() {
        node.close();
    }
}
