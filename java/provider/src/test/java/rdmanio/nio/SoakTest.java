package rdmanio.nio;

import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

import org.junit.Test;

/**
 * Soaks on every provider of {@link Providers} (the JDK's figures are printed
 * next to rdma-nio's): many connections echoing through one selector with
 * nothing lost, duplicated or corrupted, and connect/transfer/close cycles
 * that leave no fd, thread, memory (resident or Java heap) or, in the VM,
 * registered region or queue pair behind. CI runs them small; the full
 * sizes (256 connections x 10,000 messages, 10,000 cycles) run with {@code
 * gradle :provider:test --tests rdmanio.nio.SoakTest -Drdmanio.soak=full}
 * (in the VM: {@code RDMANIO_SOAK=full tests/vm/run-in-vm tests/vm/junit}).
 */
public class SoakTest extends EveryProvider {
    private static final boolean FULL = "full".equals(System.getProperty("rdmanio.soak"))
            || "full".equals(System.getenv("RDMANIO_SOAK"));
    private static final int CONNECTIONS = FULL ? 256 : Providers.IN_VM ? 16 : 64;
    private static final int MESSAGES = FULL ? 10_000 : Providers.IN_VM ? 50 : 500;
    private static final int CYCLES = FULL ? 10_000 : Providers.IN_VM ? 100 : 1_000;
    private static final int WARM_UP_CYCLES = 20;
    private static final int MAX_MESSAGE = 4096;


    /** The bytes of message {@code number} of connection {@code connection}: 1 to 4096 of them, each its own. */
    private static byte[] message(int connection, int number) {
        int seed = connection * 1_000_003 + number;
        int length = 1 + Math.floorMod(seed * 0x9e3779b9, MAX_MESSAGE);
        return Providers.pattern(length, seed);
    }

    @Test(timeout = 900_000)
    public void manyConnectionsEchoThroughOneSelectorWithNothingLost() throws Exception {
        try (ServerSocketChannel listener = provider.openServerSocketChannel().bind(Providers.anyPort(), CONNECTIONS);
                Selector clients = provider.openSelector()) {
            CompletableFuture<Throwable> server = Providers.failureOf(() -> echo(listener, CONNECTIONS));
            List<SocketChannel> channels = new ArrayList<>();
            try {
                for (int i = 0; i < CONNECTIONS; i++) {
                    SocketChannel channel = provider.openSocketChannel();
                    channels.add(channel);
                    channel.connect(listener.getLocalAddress());
                    channel.configureBlocking(false);
                    channel.register(clients, SelectionKey.OP_WRITE, new Exchange(i));
                }
                long started = System.nanoTime();
                int done = 0;
                long deadline = started + TimeUnit.MINUTES.toNanos(FULL ? 14 : 3);
                while (done < CONNECTIONS) {
                    assertTrue("stalled with " + done + " of " + CONNECTIONS + " connections done",
                            System.nanoTime() < deadline);
                    clients.select(1_000);
                    for (SelectionKey key : clients.selectedKeys()) {
                        if (((Exchange) key.attachment()).step(key)) {
                            done++;
                        }
                    }
                    clients.selectedKeys().clear();
                }
                double seconds = (System.nanoTime() - started) / 1e9;
                System.out.printf("soak %s: %d connections x %d messages of 1-%d B echoed through one selector,"
                        + " none lost or changed, in %.2f s (%.0f messages/s)%n", name, CONNECTIONS, MESSAGES,
                        MAX_MESSAGE, seconds, CONNECTIONS * (double) MESSAGES / seconds);
            } finally {
                for (SocketChannel channel : channels) {
                    channel.close();
                }
            }
            Throwable failure = server.get(60, TimeUnit.SECONDS);
            if (failure != null) {
                throw new AssertionError("the echo server failed", failure);
            }
        }
    }

    /** One client connection's exchange: a message out, its echo back, checked, the next. */
    private static final class Exchange {
        final int connection;
        int number;
        ByteBuffer out;
        ByteBuffer in;

        Exchange(int connection) {
            this.connection = connection;
            next();
        }

        private void next() {
            out = ByteBuffer.wrap(message(connection, number));
            in = ByteBuffer.allocate(out.remaining());
        }

        /** Moves the exchange on; true when the connection's last echo arrived. */
        boolean step(SelectionKey key) throws IOException {
            SocketChannel channel = (SocketChannel) key.channel();
            if (key.isWritable()) {
                channel.write(out);
                if (!out.hasRemaining()) {
                    key.interestOps(SelectionKey.OP_READ);
                }
                return false;
            }
            if (channel.read(in) < 0) {
                fail("connection " + connection + ": end of stream after " + number + " messages");
            }
            if (in.hasRemaining()) {
                return false;
            }
            if (!Arrays.equals(in.array(), message(connection, number))) {
                fail("connection " + connection + ": message " + number + " came back changed");
            }
            if (++number == MESSAGES) {
                key.cancel();
                return true;
            }
            next();
            key.interestOps(SelectionKey.OP_WRITE);
            return false;
        }
    }

    /** Accepts {@code connections} and echoes everything on one selecting thread until each ends. */
    private void echo(ServerSocketChannel listener, int connections) throws IOException {
        try (Selector selector = provider.openSelector()) {
            listener.configureBlocking(false);
            listener.register(selector, SelectionKey.OP_ACCEPT);
            int open = 0;
            int accepted = 0;
            do {
                selector.select(1_000);
                for (SelectionKey key : selector.selectedKeys()) {
                    if (key.isAcceptable()) {
                        SocketChannel channel;
                        while ((channel = listener.accept()) != null) {
                            channel.configureBlocking(false);
                            channel.register(selector, SelectionKey.OP_READ, ByteBuffer.allocate(16 * 1024));
                            accepted++;
                            open++;
                        }
                    } else if (!echoSome(key)) {
                        key.channel().close();
                        open--;
                    }
                }
                selector.selectedKeys().clear();
            } while (accepted < connections || open > 0);
        }
    }

    /** Reads what is there and writes it back (waiting for room when short); false at end of stream. */
    private static boolean echoSome(SelectionKey key) throws IOException {
        SocketChannel channel = (SocketChannel) key.channel();
        ByteBuffer buffer = (ByteBuffer) key.attachment();
        if (key.isReadable() && channel.read(buffer) < 0) {
            return false;
        }
        buffer.flip();
        channel.write(buffer);
        buffer.compact();
        key.interestOps(buffer.position() > 0 ? SelectionKey.OP_WRITE : SelectionKey.OP_READ);
        return true;
    }

    @Test(timeout = 900_000)
    public void connectTransferCloseCyclesLeaveNothingBehind() throws Exception {
        try (ServerSocketChannel listener = provider.openServerSocketChannel().bind(Providers.anyPort())) {
            CompletableFuture<Throwable> server = Providers.failureOf(() -> {
                for (int i = 0; i < WARM_UP_CYCLES + CYCLES + (Providers.IN_VM ? 1 : 0); i++) {
                    try (SocketChannel accepted = listener.accept()) {
                        accepted.write(ByteBuffer.wrap(Providers.readFully(accepted, 100)));
                    }
                }
            });
            cycles(listener, WARM_UP_CYCLES);
            if (Providers.IN_VM) {
                try (SocketChannel open = provider.openSocketChannel()) {
                    open.connect(listener.getLocalAddress());
                    assertTrue("the rdma tool counts no region of an open connection", new Footprint().regions > 0);
                    open.write(ByteBuffer.wrap(Providers.pattern(100, 7)));
                    Providers.readFully(open, 100);
                }
            }
            Footprint before = Footprint.settled(null);
            long started = System.nanoTime();
            cycles(listener, CYCLES);
            double seconds = (System.nanoTime() - started) / 1e9;
            Throwable failure = server.get(60, TimeUnit.SECONDS);
            if (failure != null) {
                throw new AssertionError("the server failed", failure);
            }
            Footprint after = Footprint.settled(before);
            System.out.printf("soak %s: %d connect/transfer/close cycles in %.2f s (%.0f us each); before %s;"
                    + " after %s%n", name, CYCLES, seconds, seconds * 1e6 / CYCLES, before, after);
            assertFalse("the cycles left something behind: before " + before + ", after " + after,
                    after.exceeds(before));
            assertTrue("resident memory grew from " + before.rssKib + " to " + after.rssKib + " KiB",
                    after.rssKib - before.rssKib < 32 * 1024);
            assertTrue("the Java heap grew from " + before.heapKib + " to " + after.heapKib + " KiB",
                    after.heapKib - before.heapKib < 16 * 1024);
        }
    }

    private void cycles(ServerSocketChannel listener, int count) throws IOException {
        byte[] bytes = Providers.pattern(100, 7);
        for (int i = 0; i < count; i++) {
            try (SocketChannel channel = provider.openSocketChannel()) {
                channel.connect(listener.getLocalAddress());
                channel.write(ByteBuffer.wrap(bytes));
                if (!Arrays.equals(Providers.readFully(channel, 100), bytes)) {
                    fail("cycle " + i + ": the echo came back changed");
                }
            }
        }
    }

    /** What the process holds: fds, threads, resident memory, Java heap in use; in the VM its MRs and QPs. */
    private static final class Footprint {
        final long fds;
        final long threads;
        final long rssKib;
        final long heapKib;
        final long regions;
        final long queuePairs;

        private Footprint() throws IOException {
            System.gc();
            Runtime runtime = Runtime.getRuntime();
            fds = count(Path.of("/proc/self/fd"));
            threads = count(Path.of("/proc/self/task"));
            rssKib = Files.readAllLines(Path.of("/proc/self/status")).stream()
                    .filter(line -> line.startsWith("VmRSS:")).mapToLong(line -> Long.parseLong(line.split("\\s+")[1]))
                    .findFirst().orElseThrow();
            heapKib = (runtime.totalMemory() - runtime.freeMemory()) / 1024;
            regions = Providers.IN_VM ? rdmaResources("mr") : 0;
            queuePairs = Providers.IN_VM ? rdmaResources("qp") : 0;
        }

        /**
         * The footprint once what winds down has (a closed connection's fds
         * go with its last user): taken until it holds no more than {@code before}
         * of what is counted, or for 10 s.
         */
        static Footprint settled(Footprint before) throws Exception {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
            Footprint now = new Footprint();
            while (before != null && now.exceeds(before) && System.nanoTime() < deadline) {
                Thread.sleep(200);
                now = new Footprint();
            }
            return now;
        }

        /** Whether it holds more of anything counted than {@code other}. */
        private boolean exceeds(Footprint other) {
            return fds > other.fds || threads > other.threads || regions > other.regions
                    || queuePairs > other.queuePairs;
        }

        private static long count(Path folder) throws IOException {
            try (Stream<Path> entries = Files.list(folder)) {
                return entries.count();
            }
        }

        /**
         * The test device's RDMA resources of a kind ("mr", "qp") as the rdma
         * tool counts them: the device's, which in the VM only this JVM uses
         * (the tool names the creating thread, not the process, per resource).
         */
        private static long rdmaResources(String kind) throws IOException {
            Process rdma = new ProcessBuilder("rdma", "resource", "show").redirectErrorStream(true).start();
            rdma.getOutputStream().close();
            String device = System.getenv("RDMANIO_TEST_DEVICE") + ":";
            try (java.io.InputStream output = rdma.getInputStream()) {
                String listing = new String(output.readAllBytes(), java.nio.charset.StandardCharsets.UTF_8);
                rdma.waitFor();
                for (String line : listing.split("\n")) {
                    List<String> words = Arrays.asList(line.trim().split("\\s+"));
                    int at = words.indexOf(kind);
                    if (words.contains(device) && at > 0 && at + 1 < words.size()) {
                        return Long.parseLong(words.get(at + 1));
                    }
                }
                throw new AssertionError("no " + kind + " count for " + device + " in: " + listing);
            } catch (InterruptedException e) {
                throw new java.io.InterruptedIOException("waiting for the rdma tool");
            }
        }

        @Override
        public String toString() {
            return String.format("%d fds, %d threads, %d KiB resident, %d KiB heap%s", fds, threads, rssKib, heapKib,
                    Providers.IN_VM ? ", " + regions + " MRs, " + queuePairs + " QPs" : "");
        }
    }
}
