package hybster.coordination;

import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import hybster.coordination.CoordinationService.Code;
import hybster.coordination.CoordinationService.CreateMode;

/**
 * ZooKeeper's lock recipe on the coordination service: each contender creates
 * an ephemeral sequential node under the lock's directory; the lowest holds
 * the lock, and every other watches only the node just below its own (no herd
 * wakes at a release). A holder whose session expires loses its node, so the
 * next contender takes over: the lock then has moved on although the old
 * holder may not know yet (it learns from its session's watcher), so work
 * under the lock that must never overlap needs a fencing token; the node's
 * sequence number ({@link #token}) is one.
 *
 * <p>Needs an open session on the client ({@link CoordinationClient#openSession}).
 * Not for concurrent use by several threads.
 */
public final class DistributedLock {
    private static final String PREFIX = "lock-";

    private final CoordinationClient zk;
    private final String directory;
    /** Our contender node while we hold or wait for the lock, else null. */
    private String node;

    /** A lock whose contenders' nodes go under {@code directory}, which must exist. */
    public DistributedLock(CoordinationClient zk, String directory) {
        this.zk = zk;
        this.directory = directory;
    }

    /**
     * Waits up to {@code timeoutMillis} for the lock; true once held. On a
     * timeout our node is withdrawn and the call returns false.
     */
    public boolean tryLock(long timeoutMillis) throws Exception {
        if (node != null) {
            throw new IllegalStateException("this lock is held or being waited for already: " + node);
        }
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMillis);
        node = zk.create(directory + "/" + PREFIX, new byte[0], CreateMode.EPHEMERAL_SEQUENTIAL);
        try {
            while (true) {
                String below = below();
                if (below == null) {
                    return true;
                }
                CountDownLatch gone = new CountDownLatch(1);
                if (zk.exists(directory + "/" + below, event -> gone.countDown()) < 0) {
                    continue; // went before the watch was set
                }
                long left = deadline - System.nanoTime();
                if (left <= 0 || !gone.await(left, TimeUnit.NANOSECONDS)) {
                    unlock();
                    return false;
                }
            }
        } catch (Exception e) {
            withdraw();
            throw e;
        }
    }

    /** The contender node just below ours, or null when ours is the lowest. */
    private String below() throws Exception {
        String own = node.substring(directory.length() + 1);
        List<String> contenders = zk.getChildren(directory).stream().filter(name -> name.startsWith(PREFIX))
                .sorted().toList();
        if (!contenders.contains(own)) {
            throw new CoordinationException(Code.SESSION_EXPIRED, "our contender node " + node + " is gone");
        }
        int at = contenders.indexOf(own);
        return at == 0 ? null : contenders.get(at - 1);
    }

    /** The holder's fencing token: its node's sequence number, higher for every later holder. */
    public long token() {
        if (node == null) {
            throw new IllegalStateException("the lock is not held");
        }
        return Long.parseLong(node.substring(node.length() - 10));
    }

    /** Releases the lock (or withdraws from waiting). */
    public void unlock() throws Exception {
        if (node == null) {
            throw new IllegalStateException("the lock is not held");
        }
        String held = node;
        node = null;
        try {
            zk.delete(held, -1);
        } catch (CoordinationException e) {
            if (e.code() != Code.NO_NODE) { // gone with an expired session: released already
                throw e;
            }
        }
    }

    private void withdraw() {
        try {
            unlock();
        } catch (Exception e) {
            // the node goes with the session
        }
    }
}
