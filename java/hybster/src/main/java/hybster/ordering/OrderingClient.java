package hybster.ordering;

import java.io.Closeable;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.security.PublicKey;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.TreeMap;
import java.util.concurrent.TimeoutException;
import java.util.function.Consumer;

import hybster.client.Client;
import hybster.wire.Keys;
import hybster.wire.Message;
import hybster.wire.Message.Notice;

/**
 * The ordering service's client API over a Hybster {@link Client}: submit
 * transactions, cut, fetch blocks with the replicas' signatures (taking a
 * replica's reply only when its signature verifies under that replica's key),
 * and subscribe to the blocks as they are cut.
 */
public final class OrderingClient {
    private final Client client;
    private final List<PublicKey> replicaKeys;
    private final long timeoutMillis;
    private Subscription subscription;

    /** {@code replicaKeys}: each replica's Ed25519 public key, by replica index. */
    public OrderingClient(Client client, List<PublicKey> replicaKeys, long timeoutMillis) {
        this.client = client;
        this.replicaKeys = List.copyOf(replicaKeys);
        this.timeoutMillis = timeoutMillis;
    }

    /** Submits {@code transaction}; returns the number of the block it will be in. */
    public long submit(byte[] transaction) throws IOException, TimeoutException, InterruptedException {
        return number(client.invoke(OrderingService.submit(transaction), timeoutMillis));
    }

    /** Cuts the pending block; returns its number, or -1 when nothing was pending. */
    public long cut() throws IOException, TimeoutException, InterruptedException {
        return number(client.invoke(OrderingService.cutOperation(), timeoutMillis));
    }

    /**
     * Block {@code number} with f+1 valid signatures, or empty while it is not
     * cut. Read without ordering first: f+1 replicas' valid signatures prove a
     * block whatever each of them executed, a replica that restarted answering
     * from its {@link BlockStore}; only when they do not come (the block is not
     * cut, or too few replicas have it) is the read ordered.
     */
    public Optional<SignedBlock> block(long number) throws IOException, TimeoutException, InterruptedException {
        byte[] operation = OrderingService.getBlock(number);
        Client.Proven proven = client.readProven(operation, reply -> reply.result().length > 0 && signed(reply),
                timeoutMillis);
        if (proven == null) {
            proven = client.invoke(operation, timeoutMillis, reply -> reply.result().length == 0 || signed(reply));
        }
        if (proven.result().length == 0) {
            return Optional.empty();
        }
        return Optional.of(new SignedBlock(Block.decode(proven.result()), proven.proofs()));
    }

    /** Whether {@code reply}'s proof is its sender's valid signature of its result. */
    private boolean signed(Message.Reply reply) {
        return reply.sender() < replicaKeys.size() && SignedBlock.signedBy(replicaKeys.get(reply.sender()),
                Keys.digest(reply.result()), reply.proof());
    }

    /**
     * Delivers every block from {@code from} on to {@code consumer}, in order,
     * each with f+1 valid signatures, until the subscription closes: blocks cut
     * before it are fetched, later ones come as the replicas' notices, and one
     * whose notices do not reach f+1 valid copies within {@code patienceMillis}
     * while a later one was noticed (a replica lags, lies or dropped it) is
     * fetched. The consumer runs on the subscription's own thread. One
     * subscription per client at a time.
     */
    public synchronized Subscription subscribe(long from, long patienceMillis, Consumer<SignedBlock> consumer)
            throws IOException, TimeoutException, InterruptedException {
        if (subscription != null && !subscription.closed) {
            throw new IllegalStateException("this client has a subscription already");
        }
        if (from < 0) {
            throw new IllegalArgumentException("no block " + from);
        }
        Subscription fresh = new Subscription(from, patienceMillis, consumer);
        client.onNotice(fresh::onNotice); // before subscribing: the first notice may come before the reply
        try {
            fresh.firstNoticed = number(client.invoke(OrderingService.subscribe(), timeoutMillis));
        } catch (IOException | TimeoutException | InterruptedException e) {
            client.onNotice(notice -> { });
            throw e;
        }
        subscription = fresh;
        fresh.thread.start();
        return fresh;
    }

    /** A stream of blocks in order (see {@link #subscribe}). */
    public final class Subscription implements Closeable {
        /** Blocks past the next one whose copies are kept; later copies only show that the block exists. */
        private static final int WINDOW = 256;

        private final long patienceMillis;
        private final Consumer<SignedBlock> consumer;
        private final Thread thread;
        // Guarded by this subscription.
        private long next;
        private long firstNoticed = Long.MAX_VALUE;
        private long highestNoticed = -1;
        private final Map<Long, Map<Integer, Notice>> copies = new HashMap<>();
        private long fetched;
        private volatile boolean closed;
        private volatile Exception failure;

        private Subscription(long from, long patienceMillis, Consumer<SignedBlock> consumer) {
            this.next = from;
            this.patienceMillis = patienceMillis;
            this.consumer = consumer;
            this.thread = new Thread(this::deliver, "block subscription from " + from);
            thread.setDaemon(true);
        }

        /** The number of the next block to deliver. */
        public synchronized long next() {
            return next;
        }

        /** Blocks delivered by fetching them, not from notices. */
        public synchronized long fetched() {
            return fetched;
        }

        /** What ended the delivery, if it failed (the consumer's exception, or the client's). */
        public Exception failure() {
            return failure;
        }

        /** On the client's event loop: keeps a copy whose signature verifies under its sender's key. */
        private void onNotice(Notice notice) {
            Block block;
            try {
                block = Block.decode(notice.payload());
            } catch (IOException e) {
                return; // a lying replica's
            }
            if (notice.sender() >= replicaKeys.size() || !SignedBlock.signedBy(replicaKeys.get(notice.sender()),
                    Keys.digest(notice.payload()), notice.proof())) {
                return;
            }
            synchronized (this) {
                highestNoticed = Math.max(highestNoticed, block.number());
                if (block.number() >= next && block.number() <= next + WINDOW) {
                    copies.computeIfAbsent(block.number(), n -> new HashMap<>()).put(notice.sender(), notice);
                    notifyAll();
                }
            }
        }

        private void deliver() {
            try {
                while (!closed) {
                    long number;
                    SignedBlock block;
                    synchronized (this) {
                        number = next;
                        block = awaitCopies(number);
                    }
                    boolean fetch = block == null; // not noticed by f+1 (yet): fetched, if it exists
                    if (fetch) {
                        block = OrderingClient.this.block(number).orElse(null);
                    }
                    if (block != null && !closed) {
                        synchronized (this) {
                            fetched += fetch ? 1 : 0;
                            next = number + 1;
                            copies.keySet().removeIf(n -> n <= number);
                        }
                        consumer.accept(block);
                    }
                }
            } catch (InterruptedException e) {
                closed = true; // by close, or by someone else: either way the delivery ends
            } catch (Exception e) {
                failure = e;
                closed = true;
            }
        }

        /**
         * Block {@code number} once f+1 verified copies match; null to fetch it
         * instead: it was cut before the subscription, or patience ran out while
         * a later block was noticed. Waits while nothing says it exists.
         */
        private SignedBlock awaitCopies(long number) throws InterruptedException {
            if (number < firstNoticed) {
                return null;
            }
            long deadline = System.nanoTime() + patienceMillis * 1_000_000;
            while (!closed) {
                SignedBlock agreed = agreed(copies.getOrDefault(number, Map.of()));
                if (agreed != null) {
                    return agreed;
                }
                long left = deadline - System.nanoTime();
                if (left <= 0 && highestNoticed >= number) {
                    return null;
                }
                wait(Math.max(1, left > 0 ? left / 1_000_000 : patienceMillis));
            }
            return null;
        }

        private SignedBlock agreed(Map<Integer, Notice> byReplica) {
            List<Notice> alike = client.agreed(byReplica.values());
            if (alike.isEmpty()) {
                return null;
            }
            Map<Integer, byte[]> signatures = new TreeMap<>();
            alike.forEach(copy -> signatures.put(copy.sender(), copy.proof()));
            try {
                return new SignedBlock(Block.decode(alike.get(0).payload()), signatures);
            } catch (IOException e) {
                throw new IllegalStateException("a block that decoded once", e);
            }
        }

        /** Stops the delivery and tells the replicas. */
        @Override
        public void close() throws IOException {
            closed = true;
            synchronized (this) {
                notifyAll();
            }
            thread.interrupt();
            try {
                thread.join(timeoutMillis);
                client.invoke(OrderingService.unsubscribe(), timeoutMillis);
            } catch (TimeoutException e) {
                throw new IOException("unsubscribing timed out", e);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            } finally {
                client.onNotice(notice -> { });
            }
        }
    }

    private static long number(byte[] result) {
        return ByteBuffer.wrap(result).getLong();
    }
}
