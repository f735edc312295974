package rdmanio.bench;

import java.io.EOFException;
import java.io.IOException;
import java.net.ConnectException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.SocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.SocketChannel;
import java.nio.channels.spi.SelectorProvider;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.SplittableRandom;

import rdmanio.nio.RdmaSelectorProvider;

/**
 * One row of the benchmark suite (tests/bench/suite), for one provider, in
 * this JVM: plain {@code java.nio} code, the same for every provider.
 *
 * <pre>
 * java rdmanio.bench.Rows ROW PROVIDER ADDRESS HISTOGRAM_FILE ARGS...
 *   pingpong BYTES ROUND_TRIPS     a blocking client and a selector echo server
 *   stream BYTES MEBIBYTES         one-way transfer in writes of BYTES, then an ack
 *   echo CONNECTIONS MESSAGES      one client selector drives CONNECTIONS connections,
 *                                  each echoing MESSAGES messages of 1-4096 B
 *   connect CYCLES                 connect, 64 B echo, close
 *   connect-nb CYCLES              the same with a non-blocking connect through a selector
 *   refused CYCLES                 connect to a port with no listener
 *   calls COUNT                    an empty non-blocking read and an empty selectNow on an
 *                                  idle connection: what a provider adds to a call
 * </pre>
 *
 * PROVIDER is {@code jdk} or {@code rdma-nio} (its transport and polling from
 * {@code -Drdmanio.*}). Prints one CSV line ({@link Phase#HEADER}).
 */
public final class Rows {
    private static final int WARM_UP_MINIMUM = 2000;
    /** Connects (refused or not) before a connect row is measured, at least. */
    private static final int CONNECT_WARM_UP_MINIMUM = 200;
    /**
     * Echoes before an echo row is measured, at least, over all its
     * connections (and each connection at least a fifth of what it measures):
     * a selector loop needs about this many before the JIT has compiled it
     * (with 400, a fifth of one connection's 2,000, the row measured the
     * compiler: p50 15-20 us where a warm loop takes 5-8).
     */
    private static final int ECHO_WARM_UP = 10_000;
    /**
     * A row warms up for this long at least, whatever its count: the JIT
     * compiles on its own threads, which take a core from the row while they
     * do; a fast variant's count passes in milliseconds (shm: 10,000
     * ping-pong round trips in 35 ms), and then its row measured the compiler
     * (16 B p50 3.2-3.8 us where a warm one takes 1.2-1.4).
     */
    private static final long WARM_UP_NANOS = 1_000_000_000L;

    private Rows() {}

    public static void main(String[] args) throws Exception {
        if (args.length < 5) {
            System.err.println("usage: rdmanio.bench.Rows ROW PROVIDER ADDRESS HISTOGRAM_FILE ARGS... (see the class doc)");
            System.exit(2);
        }
        String row = args[0];
        SelectorProvider provider = provider(args[1]);
        InetAddress address = InetAddress.getByName(args[2]);
        Path histogram = Path.of(args[3]);
        int first = Integer.parseInt(args[4]);
        int second = args.length > 5 ? Integer.parseInt(args[5]) : 0;
        Phase phase = new Phase();
        String param;
        switch (row) {
            case "pingpong" -> {
                pingPong(provider, address, first, second, phase);
                param = first + "B";
            }
            case "stream" -> {
                stream(provider, address, first, second, phase);
                param = first + "B";
            }
            case "echo" -> {
                echo(provider, address, first, second, phase);
                param = first + "conn";
            }
            case "connect", "connect-nb" -> {
                connectCycles(provider, address, first, row.equals("connect-nb"), phase);
                param = "64B";
            }
            case "refused" -> {
                refused(provider, address, first, phase);
                param = "-";
            }
            case "calls" -> {
                calls(provider, address, first, phase);
                param = "read+selectNow";
            }
            default -> throw new IllegalArgumentException("unknown row '" + row + "'");
        }
        phase.report(System.out, row, args[1], param, histogram);
    }

    static SelectorProvider provider(String name) {
        return switch (name) {
            case "jdk" -> {
                if (SelectorProvider.provider() instanceof RdmaSelectorProvider) {
                    throw new IllegalArgumentException("'jdk' needs a JVM whose system provider is the JDK's");
                }
                yield SelectorProvider.provider();
            }
            case "rdma-nio" -> new RdmaSelectorProvider();
            default -> throw new IllegalArgumentException("unknown provider '" + name + "': use jdk or rdma-nio");
        };
    }

    private static void pingPong(SelectorProvider provider, InetAddress address, int bytes, int trips, Phase phase)
            throws IOException {
        try (EchoServer server = new EchoServer(provider, address, Math.max(bytes, 64 * 1024));
             SocketChannel client = provider.openSocketChannel()) {
            client.connect(server.address());
            ByteBuffer message = ByteBuffer.allocateDirect(bytes);
            ByteBuffer reply = ByteBuffer.allocateDirect(bytes);
            measure(trips, WARM_UP_MINIMUM, phase, () -> roundTrip(client, message, reply));
            server.check();
        }
    }

    /**
     * A non-blocking read and a selectNow that find nothing, on a connection
     * whose peer stays silent: no wait and no wake-up, so the time is the
     * provider's own per call (its Java side, JNI, its engine, one syscall
     * each; and the two clock readings the row takes around each pair).
     */
    private static void calls(SelectorProvider provider, InetAddress address, int count, Phase phase)
            throws IOException {
        try (EchoServer server = new EchoServer(provider, address, 64);
             SocketChannel client = provider.openSocketChannel();
             Selector selector = provider.openSelector()) {
            client.connect(server.address());
            client.configureBlocking(false);
            client.register(selector, SelectionKey.OP_READ);
            ByteBuffer buffer = ByteBuffer.allocateDirect(64);
            measure(count, WARM_UP_MINIMUM, phase, () -> {
                buffer.clear();
                if (client.read(buffer) != 0 || selector.selectNow() != 0) {
                    throw new IllegalStateException("the silent connection had something to read");
                }
            });
            server.check();
        }
    }

    /** One operation of a row, timed on its own. */
    @FunctionalInterface
    private interface Operation {
        void run() throws IOException;
    }

    /**
     * Warms up on `operation` (at least `warmUpAtLeast` times, a fifth of
     * `count`, and `WARM_UP_NANOS`), then times it `count` times into `phase`.
     */
    private static void measure(int count, int warmUpAtLeast, Phase phase, Operation operation) throws IOException {
        long warmingSince = System.nanoTime();
        for (int i = 0; i < Math.max(warmUpAtLeast, count / 5) || System.nanoTime() - warmingSince < WARM_UP_NANOS;
                i++) {
            operation.run();
        }
        phase.start();
        for (int i = 0; i < count; i++) {
            long start = System.nanoTime();
            operation.run();
            phase.record(System.nanoTime() - start);
        }
        phase.end(count);
    }

    /** Writes all of `message` and reads a reply of its size into `reply` (both cleared first). */
    public static void roundTrip(SocketChannel client, ByteBuffer message, ByteBuffer reply) throws IOException {
        message.clear();
        while (message.hasRemaining()) {
            client.write(message);
        }
        reply.clear();
        while (reply.hasRemaining()) {
            if (client.read(reply) < 0) {
                throw new EOFException("the echo server closed");
            }
        }
    }

    /** A sink server: reads everything, answers one byte once it has `total` bytes. */
    private static void stream(SelectorProvider provider, InetAddress address, int bytes, int mebibytes, Phase phase)
            throws Exception {
        long total = (long) mebibytes << 20;
        try (var listener = provider.openServerSocketChannel().bind(new InetSocketAddress(address, 0));
             SocketChannel client = provider.openSocketChannel()) {
            client.connect(listener.getLocalAddress());
            SocketChannel sink = listener.accept();
            Thread reader = new Thread(() -> {
                ByteBuffer in = ByteBuffer.allocateDirect(256 * 1024);
                try (sink) {
                    for (int round = 0; round < 2; round++) { // warm-up, then the measured transfer
                        long received = 0;
                        while (received < total) {
                            int n = sink.read(in.clear());
                            if (n < 0) {
                                return;
                            }
                            received += n;
                        }
                        sink.write(ByteBuffer.wrap(new byte[] {1}));
                    }
                } catch (IOException e) {
                    e.printStackTrace();
                }
            }, "stream sink");
            reader.start();
            ByteBuffer out = ByteBuffer.allocateDirect(bytes);
            ByteBuffer ack = ByteBuffer.allocate(1);
            for (int round = 0; round < 2; round++) {
                if (round == 1) {
                    phase.start();
                }
                for (long sent = 0; sent < total; sent += bytes) {
                    out.clear().limit((int) Math.min(bytes, total - sent));
                    while (out.hasRemaining()) {
                        client.write(out);
                    }
                }
                if (client.read(ack.clear()) != 1) {
                    throw new EOFException("the sink closed");
                }
            }
            phase.end(total >> 20); // per MiB
            reader.join();
        }
    }

    /** A client selector that keeps one message in flight on each of `connections` connections. */
    private static void echo(SelectorProvider provider, InetAddress address, int connections, int messages,
            Phase phase) throws IOException {
        try (EchoServer server = new EchoServer(provider, address, 64 * 1024);
             Selector selector = provider.openSelector()) {
            List<Flow> flows = new ArrayList<>();
            for (int i = 0; i < connections; i++) {
                SocketChannel channel = provider.openSocketChannel();
                channel.connect(server.address());
                channel.configureBlocking(false);
                Flow flow = new Flow(channel, i);
                channel.register(selector, SelectionKey.OP_WRITE, flow);
                flows.add(flow);
            }
            int warmUpStep = Math.max(messages / 5, (ECHO_WARM_UP + connections - 1) / connections);
            int warmUp = 0;
            long warmingSince = System.nanoTime();
            do {
                warmUp += warmUpStep;
                drive(selector, flows, warmUp, null, server);
            } while (System.nanoTime() - warmingSince < WARM_UP_NANOS);
            phase.start();
            drive(selector, flows, warmUp + messages, phase, server);
            phase.end((long) connections * messages);
            for (Flow flow : flows) {
                flow.channel.close();
            }
        }
    }

    /** Runs every flow until it has echoed `until` messages in all. */
    private static void drive(Selector selector, List<Flow> flows, int until, Phase phase, EchoServer server)
            throws IOException {
        int unfinished = 0;
        for (Flow flow : flows) {
            if (flow.echoed < until) {
                unfinished++;
                flow.channel.keyFor(selector).interestOps(SelectionKey.OP_WRITE);
            }
        }
        while (unfinished > 0) {
            if (selector.select(10_000) == 0) {
                server.check();
                throw new IOException("echo: no progress for 10 s");
            }
            Iterator<SelectionKey> keys = selector.selectedKeys().iterator();
            while (keys.hasNext()) {
                SelectionKey key = keys.next();
                keys.remove();
                Flow flow = (Flow) key.attachment();
                if (flow.step(key, phase) && ++flow.echoed >= until) {
                    key.interestOps(0);
                    unfinished--;
                } else if (flow.echoed < until && key.interestOps() == 0) {
                    key.interestOps(SelectionKey.OP_WRITE);
                }
            }
        }
    }

    /** One connection of the echo row: sends a message, reads its echo, checks it. */
    private static final class Flow {
        final SocketChannel channel;
        final SplittableRandom sizes;
        final ByteBuffer out = ByteBuffer.allocateDirect(4096);
        final ByteBuffer in = ByteBuffer.allocateDirect(4096);
        int echoed;
        long sentAt;
        byte mark;

        Flow(SocketChannel channel, int seed) {
            this.channel = channel;
            this.sizes = new SplittableRandom(seed);
            out.limit(0);
        }

        /** Moves the exchange on; true when an echo just completed. */
        boolean step(SelectionKey key, Phase phase) throws IOException {
            if (key.isWritable()) {
                if (!out.hasRemaining()) {
                    int size = 1 + sizes.nextInt(4096);
                    mark++;
                    out.clear().limit(size);
                    for (int i = 0; i < size; i++) {
                        out.put(i, (byte) (mark + i));
                    }
                    in.clear().limit(size);
                    sentAt = System.nanoTime();
                }
                channel.write(out);
                key.interestOps(out.hasRemaining() ? SelectionKey.OP_WRITE : SelectionKey.OP_READ);
                return false;
            }
            if (channel.read(in) < 0) {
                throw new EOFException("echo: the server closed a connection");
            }
            if (in.hasRemaining()) {
                return false;
            }
            for (int i = 0; i < in.limit(); i++) {
                if (in.get(i) != (byte) (mark + i)) {
                    throw new IOException("echo: byte " + i + " of a message came back wrong");
                }
            }
            if (phase != null) {
                phase.record(System.nanoTime() - sentAt);
            }
            key.interestOps(SelectionKey.OP_WRITE);
            return true;
        }
    }

    private static void connectCycles(SelectorProvider provider, InetAddress address, int cycles,
            boolean nonBlocking, Phase phase) throws IOException {
        try (EchoServer server = new EchoServer(provider, address, 4096);
             Selector selector = nonBlocking ? provider.openSelector() : null) {
            SocketAddress target = server.address();
            ByteBuffer message = ByteBuffer.allocateDirect(64);
            ByteBuffer reply = ByteBuffer.allocateDirect(64);
            measure(cycles, CONNECT_WARM_UP_MINIMUM, phase, () -> cycle(provider, selector, target, message, reply));
            server.check();
        }
    }

    /** Connects (without blocking, through {@code selector}, when one is given), echoes 64 B and closes. */
    private static void cycle(SelectorProvider provider, Selector selector, SocketAddress target,
            ByteBuffer message, ByteBuffer reply) throws IOException {
        try (SocketChannel client = provider.openSocketChannel()) {
            if (selector == null) {
                client.connect(target);
            } else {
                client.configureBlocking(false);
                SelectionKey key = client.register(selector, SelectionKey.OP_CONNECT);
                if (!client.connect(target)) {
                    while (!client.finishConnect()) {
                        selector.select();
                        selector.selectedKeys().clear();
                    }
                }
                key.cancel();
                selector.selectNow(); // the key goes, so the channel may block again
                client.configureBlocking(true);
            }
            roundTrip(client, message, reply);
        }
    }

    private static void refused(SelectorProvider provider, InetAddress address, int cycles, Phase phase)
            throws IOException {
        int port;
        try (ServerSocket free = new ServerSocket(0, 1, address)) {
            port = free.getLocalPort(); // free again once closed: nobody listens there
        }
        SocketAddress target = new InetSocketAddress(address, port);
        measure(cycles, CONNECT_WARM_UP_MINIMUM, phase, () -> refusedOnce(provider, target));
    }

    private static void refusedOnce(SelectorProvider provider, SocketAddress target) throws IOException {
        try (SocketChannel client = provider.openSocketChannel()) {
            client.connect(target);
            throw new IOException("refused: a connect to " + target + " succeeded");
        } catch (ConnectException expected) {
            // as the row wants
        }
    }
}
