package rdmanio.nio;

import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertThrows;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SelectableChannel;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.channels.spi.SelectorProvider;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * The providers every conformance test runs against. The JDK's own provider is
 * the reference: a test it fails checks the wrong thing. On the host: the JDK's,
 * and rdma-nio over tcp and shm. In the Soft-RoCE VM (RDMANIO_TEST_DEVICE set):
 * rdma-nio over rdma, on the VM's RDMA address, on the one-sided path (rings) and
 * on the two-sided one (sends).
 */
final class Providers {
    static final boolean IN_VM = System.getenv("RDMANIO_TEST_DEVICE") != null;
    static final String HOST = IN_VM ? System.getenv("RDMANIO_TEST_ADDR") : "127.0.0.1";
    static final int TIMEOUT_MILLIS = 20_000;

    private Providers() {}

    /** JUnit parameters: {name, provider}. */
    static List<Object[]> all() {
        List<Object[]> providers = new ArrayList<>();
        if (IN_VM) {
            providers.add(new Object[] {"rdma-nio/rdma", RdmaSelectorProvider.withTransport("rdma")});
            // Listeners that grant nobody a ring: every connection takes the two-sided path.
            providers.add(new Object[] {"rdma-nio/rdma-sends",
                RdmaSelectorProvider.withTransport("rdma").withRingPeers("none")});
        } else {
            providers.add(new Object[] {"jdk", SelectorProvider.provider()});
            providers.add(new Object[] {"rdma-nio/tcp", RdmaSelectorProvider.withTransport("tcp")});
            providers.add(new Object[] {"rdma-nio/shm", RdmaSelectorProvider.withTransport("shm")});
        }
        return providers;
    }

    static InetSocketAddress anyPort() {
        return new InetSocketAddress(HOST, 0);
    }

    /** A connected pair of blocking channels, and the listener they came from. */
    static final class Pair implements AutoCloseable {
        final ServerSocketChannel listener;
        final SocketChannel client;
        final SocketChannel server;

        Pair(SelectorProvider provider) throws IOException {
            listener = provider.openServerSocketChannel().bind(anyPort());
            client = provider.openSocketChannel();
            client.connect(listener.getLocalAddress());
            server = listener.accept();
        }

        @Override
        public void close() throws IOException {
            client.close();
            server.close();
            listener.close();
        }
    }

    /** The engine's log records while open (java.util.logging under rdmanio.native). */
    static final class EngineLog extends java.util.logging.Handler implements AutoCloseable {
        private final java.util.logging.Logger engine = java.util.logging.Logger.getLogger(rdmanio.NativeLog.LOGGER);
        final List<String> messages = new java.util.concurrent.CopyOnWriteArrayList<>();

        EngineLog() {
            engine.addHandler(this);
        }

        /** Whether a record complained that a selector's fd was closed or replaced under it. */
        boolean lostAnFd() {
            return messages.stream().anyMatch(m -> m.contains("cannot stop watching"));
        }

        @Override
        public void publish(java.util.logging.LogRecord record) {
            messages.add(record.getMessage());
        }

        @Override
        public void flush() {}

        @Override
        public void close() {
            engine.removeHandler(this);
        }
    }

    /** What a test runs on another thread. */
    interface Io {
        void run() throws Exception;
    }

    /** Runs {@code io} on another thread: what it threw, or null. */
    static CompletableFuture<Throwable> failureOf(Io io) {
        return CompletableFuture.supplyAsync(() -> {
            try {
                io.run();
                return null;
            } catch (Throwable t) {
                return t;
            }
        });
    }

    /**
     * Checks that a change of {@code channel}'s blocking mode waits for
     * {@code blocked}, a blocking operation on it in another thread, as the
     * JDK's does (its configureBlocking takes the operations' locks), and ends
     * once {@code release} lets the operation finish.
     */
    static void assertModeChangeWaitsFor(SelectableChannel channel, CompletableFuture<?> blocked, Io release)
            throws Exception {
        Thread.sleep(200); // the operation is asleep by now (a later one would only make the check weaker)
        CompletableFuture<Throwable> change = failureOf(() -> channel.configureBlocking(false));
        assertThrows("the mode change did not wait for the blocked operation", TimeoutException.class,
                () -> change.get(300, TimeUnit.MILLISECONDS));
        assertFalse(blocked.isDone());
        release.run();
        blocked.get(20, TimeUnit.SECONDS);
        assertNull(change.get(20, TimeUnit.SECONDS));
        assertFalse(channel.isBlocking());
    }

    /** Bytes that differ from position to position, so a loss or a swap shows. */
    static byte[] pattern(int length, int seed) {
        byte[] bytes = new byte[length];
        int state = seed * 0x9e3779b9 + 1;
        for (int i = 0; i < length; i++) {
            state = state * 1103515245 + 12345;
            bytes[i] = (byte) (state >>> 24);
        }
        return bytes;
    }

    /** Reads exactly {@code length} bytes from a blocking channel. */
    static byte[] readFully(SocketChannel channel, int length) throws IOException {
        ByteBuffer buffer = ByteBuffer.allocate(length);
        while (buffer.hasRemaining()) {
            if (channel.read(buffer) < 0) {
                throw new IOException("end of stream after " + buffer.position() + " of " + length + " bytes");
            }
        }
        return buffer.array();
    }
}
