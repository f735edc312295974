package rdmanio.demo;

import java.lang.management.ManagementFactory;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.channels.spi.SelectorProvider;
import java.util.Locale;
import java.util.function.Consumer;

/**
 * What a write, a read and a select cost in steady state, per provider: heap
 * bytes allocated per operation (the target is zero beyond what the NIO API
 * itself makes: the selected-key set's node when a key joins it) and
 * nanoseconds, measured on one thread after a warm-up.
 *
 * <pre>java rdmanio.demo.SteadyStateCost [address [operations [providers]]]</pre>
 *
 * {@code providers} as for {@link NioPingPong} (default {@code jdk,rdma-nio}).
 */
public final class SteadyStateCost {
    private SteadyStateCost() {}

    public static void main(String[] args) throws Exception {
        String host = args.length > 0 ? args[0] : System.getenv().getOrDefault("RDMANIO_TEST_ADDR", "127.0.0.1");
        int operations = args.length > 1 ? Integer.parseInt(args[1]) : 20_000;
        String[] names = (args.length > 2 ? args[2] : "jdk,rdma-nio").split(",");
        com.sun.management.ThreadMXBean threads =
                (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();
        System.out.println("one operation: a 64-byte write, selects until readable, the read");
        System.out.printf("%-10s %-22s %14s %12s%n", "provider", "buffers", "bytes / op", "ns / op");
        for (String name : names) {
            SelectorProvider provider = NioPingPong.provider(name);
            try (Selector selector = provider.openSelector();
                    ServerSocketChannel listener = provider.openServerSocketChannel()
                            .bind(new InetSocketAddress(InetAddress.getByName(host), 0));
                    SocketChannel client = connect(provider, listener);
                    SocketChannel server = listener.accept()) {
                server.configureBlocking(false);
                SelectionKey key = server.register(selector, SelectionKey.OP_READ);
                ByteBuffer direct = ByteBuffer.allocateDirect(64);
                ByteBuffer heap = ByteBuffer.allocate(64);
                ByteBuffer in = ByteBuffer.allocateDirect(64);
                ByteBuffer heapIn = ByteBuffer.allocate(64);
                Consumer<SelectionKey> read = readInto(server, in);
                Runnable[] cases = {
                    () -> exchange(client, server, direct, in, selector, key),
                    () -> exchange(client, server, heap, heapIn, selector, key),
                    () -> exchangeWithAction(client, direct, in, selector, read),
                };
                String[] labels = {"direct buffers", "heap buffers", "direct, select(action)"};
                for (int c = 0; c < cases.length; c++) {
                    for (int i = 0; i < operations; i++) {
                        cases[c].run(); // warm-up: JIT, staging buffers, key sets
                    }
                    long bytes = threads.getCurrentThreadAllocatedBytes();
                    long start = System.nanoTime();
                    for (int i = 0; i < operations; i++) {
                        cases[c].run();
                    }
                    long nanos = System.nanoTime() - start;
                    bytes = threads.getCurrentThreadAllocatedBytes() - bytes;
                    System.out.printf(Locale.ROOT, "%-10s %-22s %14.2f %12.0f%n", name, labels[c],
                            (double) bytes / operations, (double) nanos / operations);
                }
            }
        }
    }

    /** As {@link #exchange}, with the consumer form of select (no selected-key set). */
    private static void exchangeWithAction(SocketChannel client, ByteBuffer out, ByteBuffer in, Selector selector,
            Consumer<SelectionKey> read) {
        try {
            client.write(out.clear());
            in.clear();
            while (in.hasRemaining()) {
                selector.selectNow(read);
            }
        } catch (java.io.IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

    private static Consumer<SelectionKey> readInto(SocketChannel server, ByteBuffer in) {
        return key -> {
            try {
                server.read(in);
            } catch (java.io.IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
        };
    }

    private static SocketChannel connect(SelectorProvider provider, ServerSocketChannel listener)
            throws java.io.IOException {
        SocketChannel client = provider.openSocketChannel();
        client.connect(listener.getLocalAddress());
        return client;
    }

    /** One 64-byte write, selects until it is readable, reads it back. */
    private static void exchange(SocketChannel client, SocketChannel server, ByteBuffer out, ByteBuffer in,
            Selector selector, SelectionKey key) {
        try {
            client.write(out.clear());
            in.clear();
            while (in.hasRemaining()) {
                selector.selectNow();
                if (selector.selectedKeys().remove(key)) {
                    server.read(in);
                }
            }
        } catch (java.io.IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }
}
