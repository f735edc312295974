package rdmanio.demo;

import java.io.Closeable;
import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.channels.spi.SelectorProvider;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;

import rdmanio.bench.Rows;
import rdmanio.nio.RdmaSelectorProvider;

/**
 * A ping-pong written against plain {@code java.nio} only: an echo server on
 * one selector thread and a blocking client. The same code runs on every
 * provider it is given, so it measures what switching the provider gives an
 * unchanged NIO program.
 *
 * <pre>
 * java rdmanio.demo.NioPingPong [address [round-trips [message-bytes [providers]]]]
 * </pre>
 *
 * {@code providers} is a comma-separated list of {@code system} (whatever
 * {@code -Djava.nio.channels.spi.SelectorProvider} chose, else the JDK's),
 * {@code jdk}, or {@code rdma-nio} (transport from {@code -Drdmanio.transport});
 * default {@code jdk,rdma-nio}. Several providers alternate in blocks, so that
 * each sees the same machine load.
 */
public final class NioPingPong {
    private static final int BLOCKS = 8;

    /** An echo server and a client connected to it, over one provider. */
    static final class Session implements Closeable {
        final String name;
        private final Selector selector;
        private final ServerSocketChannel listener;
        private final Thread server;
        private final SocketChannel client;
        private volatile boolean running = true;

        Session(String name, SelectorProvider provider, InetAddress address) throws IOException {
            this.name = name;
            selector = provider.openSelector();
            listener = provider.openServerSocketChannel().bind(new InetSocketAddress(address, 0));
            listener.configureBlocking(false);
            listener.register(selector, SelectionKey.OP_ACCEPT);
            server = new Thread(this::serve, "echo server " + name);
            server.setDaemon(true);
            server.start();
            client = provider.openSocketChannel();
            client.connect(listener.getLocalAddress());
        }

        private void serve() {
            ByteBuffer buffer = ByteBuffer.allocateDirect(64 * 1024);
            try {
                while (running) {
                    selector.select();
                    for (SelectionKey key : selector.selectedKeys()) {
                        if (key.isAcceptable()) {
                            SocketChannel accepted = listener.accept();
                            if (accepted != null) {
                                accepted.configureBlocking(false);
                                accepted.register(selector, SelectionKey.OP_READ);
                            }
                        } else if (key.isReadable()) {
                            echo((SocketChannel) key.channel(), buffer.clear());
                        }
                    }
                    selector.selectedKeys().clear();
                }
            } catch (IOException e) {
                if (running) {
                    System.err.println(name + " echo server failed: " + e);
                }
            }
        }

        private static void echo(SocketChannel channel, ByteBuffer buffer) throws IOException {
            if (channel.read(buffer) < 0) {
                channel.close();
                return;
            }
            buffer.flip();
            while (buffer.hasRemaining()) {
                channel.write(buffer); // a small echo fits the peer's buffer at once
            }
        }

        long roundTripNanos(ByteBuffer message, ByteBuffer reply) throws IOException {
            long start = System.nanoTime();
            Rows.roundTrip(client, message, reply);
            return System.nanoTime() - start;
        }

        @Override
        public void close() throws IOException {
            running = false;
            client.close();
            selector.wakeup();
            try {
                server.join(5000);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            listener.close();
            selector.close();
        }
    }

    private NioPingPong() {}

    static SelectorProvider provider(String name) {
        switch (name) {
            case "system":
                return SelectorProvider.provider();
            case "jdk":
                if (SelectorProvider.provider() instanceof RdmaSelectorProvider) {
                    throw new IllegalArgumentException("'jdk' needs a JVM without "
                            + "-Djava.nio.channels.spi.SelectorProvider (use 'system' there)");
                }
                return SelectorProvider.provider();
            case "rdma-nio":
                return new RdmaSelectorProvider();
            default:
                throw new IllegalArgumentException("unknown provider '" + name + "': use system, jdk or rdma-nio");
        }
    }

    public static void main(String[] args) throws Exception {
        String host = args.length > 0 ? args[0] : System.getenv().getOrDefault("RDMANIO_TEST_ADDR", "127.0.0.1");
        int rounds = args.length > 1 ? Integer.parseInt(args[1]) : 4000;
        int size = args.length > 2 ? Integer.parseInt(args[2]) : 64;
        String[] names = (args.length > 3 ? args[3] : "jdk,rdma-nio").split(",");
        InetAddress address = InetAddress.getByName(host);
        System.out.printf("plain java.nio ping-pong to %s: %d-byte messages, %d round trips per provider%n",
                address.getHostAddress(), size, rounds);
        List<Session> sessions = new ArrayList<>();
        try {
            for (String name : names) {
                SelectorProvider provider = provider(name);
                String label = provider instanceof RdmaSelectorProvider
                        ? "rdma-nio (" + ((RdmaSelectorProvider) provider).transport() + ")" : "jdk";
                sessions.add(new Session(label, provider, address));
                System.out.printf("%-22s %s%n", label + ":", provider.getClass().getName());
            }
            long[][] nanos = new long[sessions.size()][rounds];
            ByteBuffer message = ByteBuffer.allocateDirect(size);
            ByteBuffer reply = ByteBuffer.allocateDirect(size);
            for (Session session : sessions) { // warm-up
                for (int i = 0; i < Math.min(rounds, 500); i++) {
                    session.roundTripNanos(message, reply);
                }
            }
            int perBlock = (rounds + BLOCKS - 1) / BLOCKS;
            for (int done = 0; done < rounds; done += perBlock) {
                for (int s = 0; s < sessions.size(); s++) {
                    for (int i = done; i < Math.min(rounds, done + perBlock); i++) {
                        nanos[s][i] = sessions.get(s).roundTripNanos(message, reply);
                    }
                }
            }
            System.out.printf("%-22s %9s %9s %16s%n", "provider", "p50 us", "p99 us", "p50 / first p50");
            long first = percentile(nanos[0], 50);
            for (int s = 0; s < sessions.size(); s++) {
                long p50 = percentile(nanos[s], 50);
                System.out.printf(Locale.ROOT, "%-22s %9.1f %9.1f %16.2f%n", sessions.get(s).name, p50 / 1e3,
                        percentile(nanos[s], 99) / 1e3, (double) p50 / first);
            }
        } finally {
            for (Session session : sessions) {
                session.close();
            }
        }
    }

    static long percentile(long[] values, int percent) {
        long[] sorted = values.clone();
        Arrays.sort(sorted);
        return sorted[Math.min(sorted.length - 1, sorted.length * percent / 100)];
    }
}
