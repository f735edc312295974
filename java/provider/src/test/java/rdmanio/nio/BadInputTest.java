package rdmanio.nio;

import static org.junit.Assert.assertEquals;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.net.SocketAddress;
import java.net.SocketOption;
import java.net.StandardSocketOptions;
import java.nio.ByteBuffer;
import java.net.InetAddress;
import java.net.NetworkInterface;
import java.net.StandardProtocolFamily;
import java.nio.channels.DatagramChannel;
import java.nio.channels.Pipe;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.channels.spi.SelectorProvider;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.zip.CRC32C;

import org.junit.Test;
import org.junit.runners.Parameterized.Parameter;
import org.junit.runners.Parameterized.Parameters;

/**
 * Bad input to every channel (socket, server socket, datagram, pipe),
 * selector, key and adaptor method, judged against the JDK's provider in the
 * same run: each case runs once on the JDK's provider and once on rdma-nio,
 * each on a fresh connected pair with 8 bytes waiting to be read (and, for the
 * cases that use them, a datagram channel with a datagram waiting, a pipe with
 * 8 bytes in it), and both must end alike: the same result or exception
 * class, and afterwards the same bytes still readable and the same bytes sent. So a bad
 * call that consumed, sent or corrupted a byte before it threw shows as a
 * difference, whatever it threw. No expected outcome is written here: the JDK's
 * provider is the reference.
 *
 * <p>Runs on rdma-nio's tcp and shm on the host, and rdma (rings and sends) in
 * the Soft-RoCE VM, where the JDK's reference runs over the VM's own TCP.
 */
public class BadInputTest extends EveryProvider {
    /** What a case does to a fixture: a result to compare (a count, buffers, a flag), or it throws. */
    interface Case {
        Object run(Fixture f) throws Exception;
    }

    private static final Map<String, Case> CASES = new LinkedHashMap<>();
    /** The 8 bytes the client sends before each case, for the server to read. */
    private static final byte[] WAITING = Providers.pattern(8, 17);
    private static final int HUGE = 64 << 20;
    /** An address no interface of the host (nor the VM) has: TEST-NET-2. */
    private static final InetSocketAddress FOREIGN = new InetSocketAddress("198.51.100.7", 0);
    private static final InetSocketAddress UNRESOLVED = InetSocketAddress.createUnresolved("example.invalid", 80);
    /** How {@link Fixture#whatMoved} ends a stream that ended (not with an exception). */
    private static final String END = ", then end";

    @Parameter(2)
    public String caseName;

    @Parameters(name = "{0} {2}")
    public static List<Object[]> providers() {
        List<Object[]> parameters = new ArrayList<>();
        for (Object[] candidate : Providers.all()) {
            if (candidate[1] instanceof RdmaSelectorProvider) {
                for (String caseName : CASES.keySet()) {
                    parameters.add(new Object[] {candidate[0], candidate[1], caseName});
                }
            }
        }
        return parameters;
    }

    @Test(timeout = 120_000)
    public void endsAsOnTheJdksProvider() throws Exception {
        Case bad = CASES.get(caseName);
        String reference = outcome(SelectorProvider.provider(), RdmaSelectorProvider.withTransport("tcp"), bad);
        String ours = outcome(provider, SelectorProvider.provider(), bad);
        assertEquals(caseName + " on " + name + " (expected: the JDK's provider)", reference, ours);
    }

    /** Runs {@code bad} on a fresh fixture: its result or exception class, then what moved. */
    private static String outcome(SelectorProvider provider, SelectorProvider other, Case bad) throws Exception {
        try (Fixture f = new Fixture(provider, other)) {
            String result;
            try {
                result = "returned " + describe(bad.run(f));
            } catch (Exception | Error e) {
                result = "threw " + e.getClass().getName();
            }
            return result + "; " + f.whatMoved();
        }
    }

    private static String describe(Object result) {
        if (result instanceof ByteBuffer[]) {
            int[] positions = Arrays.stream((ByteBuffer[]) result).mapToInt(b -> b.position()).toArray();
            return "positions " + Arrays.toString(positions);
        }
        if (result instanceof ByteBuffer) {
            return "position " + ((ByteBuffer) result).position();
        }
        if (result instanceof SelectionKey) {
            SelectionKey key = (SelectionKey) result;
            return "a key, valid " + key.isValid() + (key.isValid() ? ", interest " + key.interestOps() : "");
        }
        if (result instanceof java.util.Collection) {
            return "a collection of " + ((java.util.Collection<?>) result).size();
        }
        for (Class<?> kind : List.of(SocketChannel.class, ServerSocketChannel.class, DatagramChannel.class,
                Selector.class, InputStream.class, OutputStream.class, java.nio.channels.Channel.class)) {
            if (kind.isInstance(result)) {
                return "a " + kind.getSimpleName(); // not its toString: implementations differ
            }
        }
        return String.valueOf(result);
    }

    /**
     * A connected pair of blocking channels of one provider, the client having
     * sent {@link #WAITING}; the channels, selectors and sockets a case opens
     * besides, closed with it.
     */
    static final class Fixture implements AutoCloseable {
        final SelectorProvider provider;
        /** Another provider, whose selectors this one's channels must refuse. */
        final SelectorProvider other;
        final ServerSocketChannel listener;
        final SocketChannel client;
        final SocketChannel server;
        private final List<java.io.Closeable> opened = new ArrayList<>();
        private DatagramChannel receiver;
        private DatagramChannel sender;
        private Pipe pipe;

        Fixture(SelectorProvider provider, SelectorProvider other) throws IOException {
            this.provider = provider;
            this.other = other;
            listener = provider.openServerSocketChannel().bind(Providers.anyPort());
            client = provider.openSocketChannel();
            client.connect(listener.getLocalAddress());
            server = listener.accept();
            client.write(ByteBuffer.wrap(WAITING));
        }

        /** An IPv4 datagram channel bound to the test address, {@link #WAITING} sent to it by {@link #sender}. */
        DatagramChannel receiver() throws IOException {
            if (receiver == null) {
                receiver = track(provider.openDatagramChannel(StandardProtocolFamily.INET)).bind(Providers.anyPort());
                sender = track(provider.openDatagramChannel(StandardProtocolFamily.INET)).bind(Providers.anyPort());
                sender.send(ByteBuffer.wrap(WAITING), receiver.getLocalAddress());
                awaitWaitingDatagram();
            }
            return receiver;
        }

        /**
         * Waits until {@link #WAITING} is at the receiver, which is left blocking: a send
         * to a local address may return before the datagram is delivered (it did once in
         * the VM, and the case then found none waiting).
         */
        private void awaitWaitingDatagram() throws IOException {
            try (Selector selector = provider.openSelector()) {
                receiver.configureBlocking(false);
                receiver.register(selector, SelectionKey.OP_READ);
                if (selector.select(Providers.TIMEOUT_MILLIS) == 0) {
                    throw new IOException("the waiting datagram did not arrive");
                }
            }
            receiver.configureBlocking(true);
        }

        DatagramChannel sender() throws IOException {
            receiver();
            return sender;
        }

        /** The receiver connected to the sender, which sends {@link #WAITING} again (a connect drops what came). */
        DatagramChannel connectedReceiver() throws IOException {
            receiver().connect(sender.getLocalAddress());
            sender.send(ByteBuffer.wrap(WAITING), receiver.getLocalAddress());
            awaitWaitingDatagram();
            return receiver;
        }

        /** The sender, connected to the receiver. */
        DatagramChannel connectedSender() throws IOException {
            return sender().connect(receiver.getLocalAddress());
        }

        /** A pipe whose sink wrote {@link #WAITING}. */
        Pipe pipe() throws IOException {
            if (pipe == null) {
                pipe = provider.openPipe();
                track(pipe.source());
                track(pipe.sink());
                pipe.sink().write(ByteBuffer.wrap(WAITING));
            }
            return pipe;
        }

        SocketChannel unconnected() throws IOException {
            return track(provider.openSocketChannel());
        }

        ServerSocketChannel unbound() throws IOException {
            return track(provider.openServerSocketChannel());
        }

        Selector selector() throws IOException {
            return track(provider.openSelector());
        }

        /** The server, non-blocking and registered for reading with a new selector, once the 8 bytes are there. */
        SelectionKey serverKey() throws IOException {
            Selector selector = selector();
            server.configureBlocking(false);
            SelectionKey key = server.register(selector, SelectionKey.OP_READ);
            if (selector.select(Providers.TIMEOUT_MILLIS) != 1) {
                throw new AssertionError("the client's bytes never arrived");
            }
            selector.selectedKeys().clear();
            return key;
        }

        /** {@link #serverKey}, cancelled. */
        SelectionKey cancelledKey() throws IOException {
            SelectionKey key = serverKey();
            key.cancel();
            return key;
        }

        Selector closedSelector() throws IOException {
            Selector selector = selector();
            selector.close();
            return selector;
        }

        SocketChannel closedServer() throws IOException {
            server.close();
            return server;
        }

        <T extends java.io.Closeable> T track(T resource) {
            opened.add(resource);
            return resource;
        }

        /**
         * What the case consumed and sent: the client's bytes the server can
         * still read and whether they are the end of what was sent, and what
         * the client receives from the server; each to the end of its stream.
         */
        String whatMoved() throws Exception {
            for (java.io.Closeable resource : opened) {
                if (resource instanceof Selector) {
                    resource.close(); // deregisters the server, which can then block again
                }
            }
            String moved = "unread: " + drain(client, server) + "; sent: " + drain(server, client);
            if (receiver != null) {
                moved += "; datagrams left: " + datagrams(receiver) + "; to the sender: " + datagrams(sender);
            }
            if (pipe != null) {
                if (pipe.sink().isOpen()) {
                    pipe.sink().close();
                }
                moved += "; in the pipe: " + drain(pipe.source());
            }
            return moved;
        }

        /** The datagrams waiting at {@code channel}: their lengths and checksums. */
        private static String datagrams(DatagramChannel channel) throws IOException {
            if (!channel.isOpen()) {
                return "closed";
            }
            channel.configureBlocking(false);
            List<String> waiting = new ArrayList<>();
            ByteBuffer buffer = ByteBuffer.allocate(1 << 16);
            while (channel.receive(buffer) != null) {
                CRC32C crc = new CRC32C();
                crc.update(buffer.flip());
                waiting.add(buffer.limit() + " B " + Long.toHexString(crc.getValue()));
                buffer.clear();
            }
            return waiting.toString();
        }

        private static String drain(SocketChannel writer, SocketChannel reader) throws Exception {
            if (writer.isOpen() && writer.isConnected()) {
                writer.shutdownOutput();
            }
            return drain(reader);
        }

        /** What {@code reader} reads to the end of its stream. */
        private static String drain(java.nio.channels.ReadableByteChannel reader) throws IOException {
            if (!reader.isOpen()) {
                return "closed";
            }
            ((java.nio.channels.SelectableChannel) reader).configureBlocking(true);
            ByteBuffer buffer = ByteBuffer.allocate(1 << 16);
            CRC32C crc = new CRC32C();
            long count = 0;
            try {
                for (int n; (n = reader.read(buffer)) >= 0; buffer.clear()) {
                    crc.update(buffer.flip());
                    count += n;
                }
            } catch (IOException e) {
                return count + " bytes, crc " + Long.toHexString(crc.getValue()) + ", then " + e.getClass().getName();
            }
            return count + " bytes, crc " + Long.toHexString(crc.getValue()) + END;
        }

        @Override
        public void close() throws IOException {
            for (java.io.Closeable resource : opened) {
                resource.close();
            }
            client.close();
            server.close();
            listener.close();
        }
    }

    private static void add(String name, Case bad) {
        if (CASES.put(name, bad) != null) {
            throw new IllegalStateException("two cases named " + name);
        }
    }

    /** What a case without a result does. */
    interface Step {
        void run(Fixture f) throws Exception;
    }

    private static void step(String name, Step bad) {
        add(name, f -> {
            bad.run(f);
            return "nothing";
        });
    }

    private static ByteBuffer[] buffers(ByteBuffer... buffers) {
        return buffers;
    }

    private static ByteBuffer heap(int capacity) {
        return ByteBuffer.allocate(capacity);
    }

    private static ByteBuffer direct(int capacity) {
        return ByteBuffer.allocateDirect(capacity);
    }

    private static ByteBuffer filled(ByteBuffer buffer) {
        buffer.put(Providers.pattern(buffer.remaining(), buffer.capacity())).flip();
        return buffer;
    }

    /** The network interface of the test address. */
    private static NetworkInterface testInterface() throws IOException {
        return NetworkInterface.getByInetAddress(InetAddress.getByName(Providers.HOST));
    }

    /** A socket address of a kind no provider supports. */
    private static final class Unsupported extends SocketAddress {
        private static final long serialVersionUID = 1L;
    }

    @SuppressWarnings({"unchecked", "rawtypes"})
    private static Object setRaw(SocketChannel channel, SocketOption option, Object value) throws IOException {
        return channel.setOption(option, value);
    }

    /** Writes {@code buffers} (blocking) while the client reads them: the count, and whether all arrived intact. */
    private static String writeWhileTheClientReads(Fixture f, ByteBuffer... buffers) throws Exception {
        CRC32C sent = new CRC32C();
        long total = 0;
        for (ByteBuffer buffer : buffers) {
            sent.update(buffer.duplicate());
            total += buffer.remaining();
        }
        long expected = total;
        CompletableFuture<Long> received = CompletableFuture.supplyAsync(() -> {
            try {
                CRC32C crc = new CRC32C();
                ByteBuffer buffer = ByteBuffer.allocateDirect(1 << 20);
                for (long got = 0; got < expected; buffer.clear()) {
                    if (f.client.read(buffer) < 0) {
                        return -1L;
                    }
                    got += buffer.position();
                    crc.update(buffer.flip());
                }
                return crc.getValue();
            } catch (IOException e) {
                return -2L;
            }
        });
        long wrote = f.server.write(buffers, 0, buffers.length);
        return "wrote " + wrote + ", intact " + (received.get(90, TimeUnit.SECONDS) == sent.getValue());
    }

    static {
        // ---- SocketChannel.read, one buffer (the server has 8 bytes waiting)
        add("read(null)", f -> f.server.read((ByteBuffer) null));
        add("read(read-only heap)", f -> f.server.read(heap(16).asReadOnlyBuffer()));
        add("read(read-only direct)", f -> f.server.read(direct(16).asReadOnlyBuffer()));
        add("read(empty heap)", f -> f.server.read(heap(0)));
        add("read(full direct)", f -> f.server.read(direct(4).position(4)));
        add("read(64 MiB direct)", f -> {
            ByteBuffer huge = direct(HUGE);
            return f.server.read(huge) + " into position " + huge.position();
        });
        add("read(64 MiB heap)", f -> f.server.read(heap(HUGE)));
        add("read(sliced heap) leaves the rest", f -> {
            ByteBuffer whole = heap(16);
            ByteBuffer slice = whole.position(4).limit(7).slice();
            f.server.read(slice);
            return Arrays.toString(whole.array());
        });
        // ---- scatter reads
        add("read(null array)", f -> f.server.read((ByteBuffer[]) null));
        add("read([4, null])", f -> f.server.read(buffers(heap(4), null)));
        add("read([null, 4])", f -> f.server.read(buffers(null, heap(4))));
        add("read([4, read-only heap])", f -> f.server.read(buffers(heap(4), heap(4).asReadOnlyBuffer())));
        add("read([4, read-only direct])", f -> f.server.read(buffers(heap(4), direct(4).asReadOnlyBuffer())));
        add("read([read-only] outside the range)", f -> {
            ByteBuffer[] dsts = buffers(heap(16), heap(4).asReadOnlyBuffer());
            f.server.read(dsts, 0, 1);
            return dsts;
        });
        add("read(array, -1, 1)", f -> f.server.read(buffers(heap(4), heap(4)), -1, 1));
        add("read(array, 0, 3) of 2", f -> f.server.read(buffers(heap(4), heap(4)), 0, 3));
        add("read(array, 1, -1)", f -> f.server.read(buffers(heap(4), heap(4)), 1, -1));
        add("read(array, 3, 0) of 2", f -> f.server.read(buffers(heap(4), heap(4)), 3, 0));
        add("read(array, 2, 0) of 2", f -> f.server.read(buffers(heap(4), heap(4)), 2, 0));
        add("read(empty array)", f -> f.server.read(new ByteBuffer[0]));
        add("read([empty, empty])", f -> f.server.read(buffers(heap(0), direct(0))));
        add("read([3, 3, 3]) fills in order", f -> {
            ByteBuffer[] dsts = buffers(heap(3), direct(3), heap(3));
            return f.server.read(dsts) + ", " + describe(dsts);
        });
        add("read([3, full, 8]) skips the full one", f -> {
            ByteBuffer[] dsts = buffers(heap(3), heap(2).position(2), direct(8));
            return f.server.read(dsts) + ", " + describe(dsts);
        });
        // ---- SocketChannel.write, one buffer
        add("write(null)", f -> f.server.write((ByteBuffer) null));
        add("write(empty heap)", f -> f.server.write(heap(0)));
        add("write(empty direct)", f -> f.server.write(direct(0)));
        add("write(read-only)", f -> f.server.write(filled(heap(5)).asReadOnlyBuffer()));
        add("write(read-only direct)", f -> f.server.write(filled(direct(5)).asReadOnlyBuffer()));
        add("write(64 MiB direct) while the client reads", f -> writeWhileTheClientReads(f, filled(direct(HUGE))));
        add("write(64 MiB heap) while the client reads", f -> writeWhileTheClientReads(f, filled(heap(HUGE))));
        add("write([32 MiB, 32 MiB]) while the client reads",
            f -> writeWhileTheClientReads(f, filled(direct(HUGE / 2)), filled(heap(HUGE / 2))));
        add("non-blocking write(64 MiB): what it counts arrives", f -> {
            ByteBuffer huge = filled(direct(HUGE));
            f.server.configureBlocking(false);
            int wrote = f.server.write(huge);
            f.server.shutdownOutput();
            f.client.shutdownOutput();
            byte[] received = Providers.readFully(f.client, wrote);
            boolean end = f.client.read(heap(1)) < 0;
            return (wrote > 0) + ", position matches " + (huge.position() == wrote) + ", intact "
                + Arrays.equals(received, Arrays.copyOf(Providers.pattern(HUGE, HUGE), wrote)) + ", then end " + end;
        });
        // ---- gather writes
        add("write(null array)", f -> f.server.write((ByteBuffer[]) null));
        add("write([4, null])", f -> f.server.write(buffers(filled(heap(4)), null)));
        add("write([null, 4])", f -> f.server.write(buffers(null, filled(heap(4)))));
        add("write(array, -1, 1)", f -> f.server.write(buffers(filled(heap(4))), -1, 1));
        add("write(array, 0, 2) of 1", f -> f.server.write(buffers(filled(heap(4))), 0, 2));
        add("write(array, 0, -1)", f -> f.server.write(buffers(filled(heap(4))), 0, -1));
        add("write(array, 1, 0) of 1", f -> f.server.write(buffers(filled(heap(4))), 1, 0));
        add("write(empty array)", f -> f.server.write(new ByteBuffer[0]));
        add("write([read-only, direct, empty])", f -> {
            ByteBuffer[] srcs = buffers(filled(heap(3)).asReadOnlyBuffer(), filled(direct(6)), heap(0));
            return f.server.write(srcs) + ", " + describe(srcs);
        });
        add("write([null] outside the range)", f -> f.server.write(buffers(filled(heap(4)), null), 0, 1));
        // ---- the channel's state
        add("read after close", f -> f.closedServer().read(heap(4)));
        add("read(null) after close", f -> f.closedServer().read((ByteBuffer) null));
        add("read(read-only) after close", f -> f.closedServer().read(heap(4).asReadOnlyBuffer()));
        add("read([4, null]) after close", f -> f.closedServer().read(buffers(heap(4), null)));
        add("write after close", f -> f.closedServer().write(filled(heap(4))));
        add("write after shutdownOutput", f -> {
            f.server.shutdownOutput();
            return f.server.write(filled(heap(4)));
        });
        add("gather write after shutdownOutput", f -> {
            f.server.shutdownOutput();
            return f.server.write(buffers(filled(heap(4))));
        });
        add("non-blocking read after close", f -> {
            f.server.configureBlocking(false);
            f.server.close();
            return f.server.read(heap(4));
        });
        add("non-blocking write after close", f -> {
            f.server.configureBlocking(false);
            f.server.close();
            return f.server.write(filled(heap(4)));
        });
        add("non-blocking write after shutdownOutput", f -> {
            f.server.configureBlocking(false);
            f.server.shutdownOutput();
            return f.server.write(filled(heap(4)));
        });
        add("read([4, read-only]) unconnected",
            f -> f.unconnected().read(buffers(heap(4), heap(4).asReadOnlyBuffer())));
        add("write([4, null]) after close", f -> f.closedServer().write(buffers(filled(heap(4)), null)));
        add("write([4, null]) after shutdownOutput", f -> {
            f.server.shutdownOutput();
            return f.server.write(buffers(filled(heap(4)), null));
        });
        add("read after shutdownInput", f -> {
            f.server.shutdownInput();
            return f.server.read(heap(4));
        });
        add("scatter read after shutdownInput", f -> {
            f.server.shutdownInput();
            return f.server.read(buffers(heap(4)));
        });
        add("shutdownInput twice", f -> {
            f.server.shutdownInput();
            f.server.shutdownInput();
            return f.server.read(heap(4));
        });
        add("shutdownOutput after close", f -> f.closedServer().shutdownOutput());
        add("read unconnected", f -> f.unconnected().read(heap(4)));
        add("write unconnected", f -> f.unconnected().write(filled(heap(4))));
        add("read(null) unconnected", f -> f.unconnected().read((ByteBuffer) null));
        add("scatter read unconnected", f -> f.unconnected().read(buffers(heap(4))));
        add("shutdownInput unconnected", f -> f.unconnected().shutdownInput());
        add("getRemoteAddress unconnected", f -> f.unconnected().getRemoteAddress());
        add("getRemoteAddress after close", f -> f.closedServer().getRemoteAddress());
        add("getLocalAddress after close", f -> f.closedServer().getLocalAddress());
        add("finishConnect unconnected", f -> f.unconnected().finishConnect());
        add("finishConnect connected", f -> f.server.finishConnect());
        add("finishConnect after close", f -> f.closedServer().finishConnect());
        // ---- connect and bind
        add("connect(null)", f -> f.unconnected().connect(null));
        add("connect(unresolved)", f -> f.unconnected().connect(UNRESOLVED));
        add("connect(unsupported address)", f -> f.unconnected().connect(new Unsupported()));
        add("connect when connected", f -> f.server.connect(f.listener.getLocalAddress()));
        add("connect after close", f -> {
            SocketChannel channel = f.unconnected();
            channel.close();
            return channel.connect(f.listener.getLocalAddress());
        });
        add("non-blocking connect after close", f -> {
            SocketChannel channel = f.unconnected();
            channel.configureBlocking(false);
            channel.close();
            return channel.connect(f.listener.getLocalAddress());
        });
        add("non-blocking finishConnect after close", f -> {
            SocketChannel channel = f.unconnected();
            channel.configureBlocking(false);
            channel.connect(f.listener.getLocalAddress());
            channel.close();
            return channel.finishConnect();
        });
        add("connect while pending", f -> {
            SocketChannel channel = f.unconnected();
            channel.configureBlocking(false);
            channel.connect(f.listener.getLocalAddress());
            return channel.connect(f.listener.getLocalAddress());
        });
        add("connect to port 0", f -> f.unconnected().connect(new InetSocketAddress(Providers.HOST, 0)));
        add("bind(unresolved)", f -> f.unconnected().bind(UNRESOLVED));
        add("bind(unsupported address)", f -> f.unconnected().bind(new Unsupported()));
        add("bind(foreign address)", f -> f.unconnected().bind(FOREIGN));
        add("bind twice", f -> f.unconnected().bind(Providers.anyPort()).bind(Providers.anyPort()));
        add("bind when connected", f -> f.server.bind(Providers.anyPort()));
        add("bind after close", f -> {
            SocketChannel channel = f.unconnected();
            channel.close();
            return channel.bind(Providers.anyPort());
        });
        // ---- socket options
        add("setOption(null)", f -> f.server.setOption(null, 1));
        add("setOption(SO_RCVBUF, -1)", f -> f.server.setOption(StandardSocketOptions.SO_RCVBUF, -1));
        add("setOption(SO_SNDBUF, 0)", f -> f.server.setOption(StandardSocketOptions.SO_SNDBUF, 0));
        add("setOption(SO_RCVBUF, null)", f -> f.server.setOption(StandardSocketOptions.SO_RCVBUF, null));
        add("setOption(TCP_NODELAY, null)", f -> f.server.setOption(StandardSocketOptions.TCP_NODELAY, null));
        add("setOption(SO_LINGER, null)", f -> f.server.setOption(StandardSocketOptions.SO_LINGER, null));
        add("setOption(IP_TOS, 256)", f -> f.server.setOption(StandardSocketOptions.IP_TOS, 256));
        add("setOption(IP_TOS, -1)", f -> f.server.setOption(StandardSocketOptions.IP_TOS, -1));
        add("setOption(SO_RCVBUF, a string)", f -> setRaw(f.server, StandardSocketOptions.SO_RCVBUF, "1024"));
        add("setOption(IP_MULTICAST_TTL)", f -> f.server.setOption(StandardSocketOptions.IP_MULTICAST_TTL, 1));
        add("setOption(IP_TOS, 0x10)", f -> f.server.setOption(StandardSocketOptions.IP_TOS, 0x10)
                .getOption(StandardSocketOptions.IP_TOS));
        add("setOption(SO_LINGER, 70000)", f -> f.server.setOption(StandardSocketOptions.SO_LINGER, 70_000)
                .getOption(StandardSocketOptions.SO_LINGER));
        add("setOption(SO_LINGER, -5)", f -> f.server.setOption(StandardSocketOptions.SO_LINGER, -5)
                .getOption(StandardSocketOptions.SO_LINGER));
        add("getOption(null)", f -> f.server.getOption(null));
        add("getOption(IP_MULTICAST_IF)", f -> f.server.getOption(StandardSocketOptions.IP_MULTICAST_IF));
        add("getOption after close", f -> f.closedServer().getOption(StandardSocketOptions.TCP_NODELAY));
        add("setOption after close", f -> f.closedServer().setOption(StandardSocketOptions.TCP_NODELAY, true));
        add("setOption(null) after close", f -> f.closedServer().setOption(null, 1));
        // ---- ServerSocketChannel
        add("accept unbound", f -> f.unbound().accept());
        add("accept after close", f -> {
            f.listener.close();
            return f.listener.accept();
        });
        add("non-blocking accept after close", f -> {
            f.listener.configureBlocking(false);
            f.listener.close();
            return f.listener.accept();
        });
        add("non-blocking accept, nobody waiting", f -> {
            f.listener.configureBlocking(false);
            return f.listener.accept();
        });
        add("listener bind twice", f -> f.listener.bind(Providers.anyPort()));
        add("listener bind(unresolved)", f -> f.unbound().bind(UNRESOLVED));
        add("listener bind(unsupported address)", f -> f.unbound().bind(new Unsupported()));
        add("listener bind(foreign address)", f -> f.unbound().bind(FOREIGN));
        add("listener bind to a port taken", f -> f.unbound().bind(f.listener.getLocalAddress()));
        add("listener bind, backlog -1", f -> f.unbound().bind(Providers.anyPort(), -1).isOpen());
        add("listener setOption(SO_RCVBUF, 0)", f -> f.listener.setOption(StandardSocketOptions.SO_RCVBUF, 0));
        add("listener setOption(TCP_NODELAY)", f -> f.listener.setOption(StandardSocketOptions.TCP_NODELAY, true));
        add("listener setOption(null)", f -> f.listener.setOption(null, 1));
        add("listener getOption(SO_LINGER)", f -> f.listener.getOption(StandardSocketOptions.SO_LINGER));
        add("listener getLocalAddress after close", f -> {
            f.listener.close();
            return f.listener.getLocalAddress();
        });
        // ---- registration, keys, selectors
        add("register blocking", f -> f.server.register(f.selector(), SelectionKey.OP_READ));
        add("register(OP_ACCEPT)", f -> {
            f.server.configureBlocking(false);
            return f.server.register(f.selector(), SelectionKey.OP_ACCEPT);
        });
        add("register(-1)", f -> {
            f.server.configureBlocking(false);
            return f.server.register(f.selector(), -1);
        });
        add("register with a closed selector", f -> {
            Selector selector = f.selector();
            selector.close();
            f.server.configureBlocking(false);
            return f.server.register(selector, SelectionKey.OP_READ);
        });
        add("register after close", f -> f.closedServer().register(f.selector(), SelectionKey.OP_READ));
        add("register with another provider's selector", f -> {
            f.server.configureBlocking(false);
            return f.server.register(f.track(f.other.openSelector()), SelectionKey.OP_READ);
        });
        add("register(null)", f -> {
            f.server.configureBlocking(false);
            return f.server.register(null, SelectionKey.OP_READ);
        });
        add("listener register(OP_READ)", f -> {
            f.listener.configureBlocking(false);
            return f.listener.register(f.selector(), SelectionKey.OP_READ);
        });
        add("configureBlocking(true) while registered", f -> {
            f.serverKey();
            return f.server.configureBlocking(true);
        });
        add("configureBlocking after close", f -> f.closedServer().configureBlocking(false));
        add("key interestOps(-1)", f -> f.serverKey().interestOps(-1));
        add("key interestOps(OP_ACCEPT)", f -> f.serverKey().interestOps(SelectionKey.OP_ACCEPT));
        add("key interestOpsOr(OP_ACCEPT)", f -> f.serverKey().interestOpsOr(SelectionKey.OP_ACCEPT));
        add("cancelled key interestOps()", f -> f.cancelledKey().interestOps());
        add("cancelled key interestOps(int)", f -> f.cancelledKey().interestOps(SelectionKey.OP_WRITE));
        add("cancelled key readyOps()", f -> f.cancelledKey().readyOps());
        add("cancelled key isReadable()", f -> f.cancelledKey().isReadable());
        add("key of a closed channel", f -> {
            SelectionKey key = f.serverKey();
            f.server.read(heap(8)); // else the close resets, at once or only once deregistered
            f.server.close();
            return key.isValid() + ", " + key.selector().selectNow() + ", " + key.selector().keys().size();
        });
        add("register again after cancel, before a select",
            f -> f.server.register(f.cancelledKey().selector(), SelectionKey.OP_READ));
        add("select(-1)", f -> f.selector().select(-1));
        add("select(null action)", f -> f.selector().select(null));
        add("select(action, -1)", f -> f.selector().select(k -> { }, -1));
        add("select after close", f -> f.closedSelector().select(1));
        add("selectNow after close", f -> f.closedSelector().selectNow());
        add("keys() after close", f -> f.closedSelector().keys());
        add("selectedKeys() after close", f -> f.closedSelector().selectedKeys());
        add("wakeup after close", f -> {
            Selector selector = f.closedSelector();
            return selector.wakeup() == selector;
        });
        add("close a selector twice", f -> {
            Selector selector = f.selector();
            selector.close();
            selector.close();
            return selector.isOpen();
        });
        add("keys().add", f -> {
            SelectionKey key = f.serverKey();
            return key.selector().keys().add(key);
        });
        add("keys().remove", f -> {
            SelectionKey key = f.serverKey();
            return key.selector().keys().remove(key);
        });
        add("selectedKeys().add", f -> {
            SelectionKey key = f.serverKey();
            return key.selector().selectedKeys().add(key);
        });
        add("selected key read", f -> {
            SelectionKey key = f.serverKey();
            key.interestOps(SelectionKey.OP_READ | SelectionKey.OP_WRITE);
            int selected = key.selector().selectNow();
            return selected + ", ready " + key.readyOps() + ", read " + f.server.read(heap(16));
        });
        // ---- datagram channels (the receiver has 8 bytes waiting from the sender)
        add("datagram receive(null)", f -> f.receiver().receive(null));
        add("datagram receive(read-only)", f -> f.receiver().receive(heap(16).asReadOnlyBuffer()));
        add("datagram receive(empty buffer)", f -> f.receiver().receive(heap(0)) != null);
        add("datagram receive(4 of 8)", f -> {
            ByteBuffer half = heap(4);
            return (f.receiver().receive(half) != null) + ", " + describe(half);
        });
        add("datagram receive after close", f -> {
            DatagramChannel receiver = f.receiver();
            receiver.close();
            return receiver.receive(heap(16));
        });
        add("non-blocking datagram receive after close", f -> {
            DatagramChannel receiver = f.receiver();
            receiver.configureBlocking(false);
            receiver.close();
            return receiver.receive(heap(16));
        });
        add("datagram send(null, to)", f -> f.sender().send(null, f.receiver().getLocalAddress()));
        add("datagram send(b, null)", f -> f.sender().send(filled(heap(4)), null));
        add("datagram send to unresolved", f -> f.sender().send(filled(heap(4)), UNRESOLVED));
        add("datagram send to an unsupported address", f -> f.sender().send(filled(heap(4)), new Unsupported()));
        add("datagram send to port 0", f -> f.sender().send(filled(heap(4)), new InetSocketAddress(Providers.HOST, 0)));
        add("datagram send of 70,000 bytes",
            f -> f.sender().send(filled(heap(70_000)), f.receiver().getLocalAddress()));
        add("datagram send(read-only)",
            f -> f.sender().send(filled(heap(5)).asReadOnlyBuffer(), f.receiver().getLocalAddress()));
        add("datagram send after close", f -> {
            DatagramChannel sender = f.sender();
            sender.close();
            return sender.send(filled(heap(4)), f.receiver().getLocalAddress());
        });
        add("datagram send elsewhere when connected",
            f -> f.connectedSender().send(filled(heap(4)), new InetSocketAddress(Providers.HOST, 9)));
        add("datagram read unconnected", f -> f.receiver().read(heap(16)));
        add("datagram write unconnected", f -> f.sender().write(filled(heap(4))));
        add("datagram read(read-only), connected", f -> f.connectedReceiver().read(heap(16).asReadOnlyBuffer()));
        add("datagram read([4, null]), connected", f -> f.connectedReceiver().read(buffers(heap(4), null)));
        add("datagram read([4, 4]), connected", f -> {
            ByteBuffer[] dsts = buffers(heap(4), heap(4));
            return f.connectedReceiver().read(dsts) + ", " + describe(dsts);
        });
        add("datagram write([4, null]), connected", f -> f.connectedSender().write(buffers(filled(heap(4)), null)));
        add("datagram write([3, 5]), connected",
            f -> f.connectedSender().write(buffers(filled(heap(3)), filled(heap(5)))));
        add("datagram connect(null)", f -> f.sender().connect(null));
        add("datagram connect(unresolved)", f -> f.sender().connect(UNRESOLVED));
        add("datagram connect(unsupported address)", f -> f.sender().connect(new Unsupported()));
        add("datagram bind twice", f -> f.receiver().bind(Providers.anyPort()));
        add("datagram bind(foreign address)",
            f -> f.track(f.provider.openDatagramChannel(StandardProtocolFamily.INET)).bind(FOREIGN));
        add("datagram setOption(IP_MULTICAST_TTL, 256)",
            f -> f.receiver().setOption(StandardSocketOptions.IP_MULTICAST_TTL, 256));
        add("datagram setOption(IP_TOS, -1)", f -> f.receiver().setOption(StandardSocketOptions.IP_TOS, -1));
        add("datagram setOption(SO_RCVBUF, -1)", f -> f.receiver().setOption(StandardSocketOptions.SO_RCVBUF, -1));
        add("datagram setOption(TCP_NODELAY)", f -> f.receiver().setOption(StandardSocketOptions.TCP_NODELAY, true));
        add("datagram getOption(null)", f -> f.receiver().getOption(null));
        add("datagram join(null, interface)", f -> f.receiver().join(null, testInterface()));
        add("datagram join(a unicast address)",
            f -> f.receiver().join(InetAddress.getByName(Providers.HOST), testInterface()));
        add("datagram join(group, null)", f -> f.receiver().join(InetAddress.getByName("239.1.2.3"), null));
        add("datagram join(an IPv6 group) on IPv4",
            f -> f.receiver().join(InetAddress.getByName("ff02::1:2"), testInterface()));
        add("datagram register(OP_ACCEPT)", f -> {
            DatagramChannel receiver = f.receiver();
            receiver.configureBlocking(false);
            return receiver.register(f.selector(), SelectionKey.OP_ACCEPT);
        });
        step("datagram adaptor send(null)", f -> f.sender().socket().send(null));
        step("datagram adaptor receive(null)", f -> f.receiver().socket().receive(null));
        step("datagram adaptor setSoTimeout(-1)", f -> f.receiver().socket().setSoTimeout(-1));
        // ---- pipes (the sink wrote 8 bytes)
        add("pipe read(null)", f -> f.pipe().source().read((ByteBuffer) null));
        add("pipe read(read-only)", f -> f.pipe().source().read(heap(16).asReadOnlyBuffer()));
        add("pipe read([4, null])", f -> f.pipe().source().read(buffers(heap(4), null)));
        add("pipe read([4, read-only])", f -> f.pipe().source().read(buffers(heap(4), heap(4).asReadOnlyBuffer())));
        add("pipe read(array, 1, 2) of 2", f -> f.pipe().source().read(buffers(heap(4), heap(4)), 1, 2));
        add("pipe read after close", f -> {
            Pipe.SourceChannel source = f.pipe().source();
            source.close();
            return source.read(heap(4));
        });
        add("non-blocking pipe read after close", f -> {
            Pipe.SourceChannel source = f.pipe().source();
            source.configureBlocking(false);
            source.close();
            return source.read(heap(4));
        });
        add("pipe write(null)", f -> f.pipe().sink().write((ByteBuffer) null));
        add("pipe write([4, null])", f -> f.pipe().sink().write(buffers(filled(heap(4)), null)));
        add("pipe write(read-only)", f -> f.pipe().sink().write(filled(heap(5)).asReadOnlyBuffer()));
        add("pipe write after close", f -> {
            Pipe.SinkChannel sink = f.pipe().sink();
            sink.close();
            return sink.write(filled(heap(4)));
        });
        add("pipe read after the sink closed", f -> {
            Pipe pipe = f.pipe();
            pipe.sink().close();
            return pipe.source().read(heap(16)) + ", then " + pipe.source().read(heap(16));
        });
        add("pipe sink register(OP_READ)", f -> {
            Pipe.SinkChannel sink = f.pipe().sink();
            sink.configureBlocking(false);
            return sink.register(f.selector(), SelectionKey.OP_READ);
        });
        add("pipe source register(OP_WRITE)", f -> {
            Pipe.SourceChannel source = f.pipe().source();
            source.configureBlocking(false);
            return source.register(f.selector(), SelectionKey.OP_WRITE);
        });
        // ---- the socket adaptors
        add("adaptor read(null, 0, 1)", f -> f.server.socket().getInputStream().read(null, 0, 1));
        add("adaptor read(b, -1, 1)", f -> f.server.socket().getInputStream().read(new byte[4], -1, 1));
        add("adaptor read(b, 2, 3) of 4", f -> f.server.socket().getInputStream().read(new byte[4], 2, 3));
        add("adaptor read(b, 0, 0)", f -> f.server.socket().getInputStream().read(new byte[4], 0, 0));
        add("adaptor read(), non-blocking channel", f -> {
            InputStream in = f.server.socket().getInputStream();
            f.server.configureBlocking(false);
            return in.read();
        });
        add("adaptor available()", f -> {
            f.serverKey();
            return f.server.socket().getInputStream().available() > 0;
        });
        add("adaptor available(), nothing waiting", f -> {
            f.serverKey();
            f.server.read(heap(8));
            return f.server.socket().getInputStream().available();
        });
        add("adaptor available() after close", f -> {
            InputStream in = f.server.socket().getInputStream();
            f.server.close();
            return in.available();
        });
        add("adaptor available() after shutdownInput", f -> {
            InputStream in = f.server.socket().getInputStream();
            f.server.shutdownInput();
            return in.available();
        });
        add("adaptor setSoLinger(false, 5)", f -> {
            Socket socket = f.server.socket();
            socket.setSoLinger(false, 5);
            return socket.getSoLinger();
        });
        add("adaptor skip(-1)", f -> f.server.socket().getInputStream().skip(-1));
        step("adaptor write(null)", f -> f.server.socket().getOutputStream().write(null));
        step("adaptor write(b, 2, 5) of 4", f -> f.server.socket().getOutputStream().write(new byte[4], 2, 5));
        step("adaptor write(b, 0, -1)", f -> f.server.socket().getOutputStream().write(new byte[4], 0, -1));
        add("adaptor write, non-blocking channel", f -> {
            OutputStream out = f.server.socket().getOutputStream();
            f.server.configureBlocking(false);
            out.write(new byte[4]);
            return null;
        });
        add("adaptor stream after close", f -> f.closedServer().socket().getInputStream());
        add("adaptor stream after shutdownInput", f -> {
            f.server.socket().shutdownInput();
            return f.server.socket().getInputStream().read();
        });
        add("adaptor shutdownOutput twice", f -> {
            f.server.socket().shutdownOutput();
            f.server.socket().shutdownOutput();
            return null;
        });
        step("adaptor setSoTimeout(-1)", f -> f.server.socket().setSoTimeout(-1));
        step("adaptor setReceiveBufferSize(0)", f -> f.server.socket().setReceiveBufferSize(0));
        step("adaptor setSendBufferSize(-1)", f -> f.server.socket().setSendBufferSize(-1));
        step("adaptor setTrafficClass(256)", f -> f.server.socket().setTrafficClass(256));
        add("adaptor setSoLinger(true, -1)", f -> {
            Socket socket = f.server.socket();
            socket.setSoLinger(true, -1);
            return socket.getSoLinger();
        });
        add("adaptor setSoLinger(true, 70000)", f -> {
            Socket socket = f.server.socket();
            socket.setSoLinger(true, 70_000);
            return socket.getSoLinger();
        });
        step("adaptor connect(null)", f -> f.unconnected().socket().connect(null));
        step("adaptor connect(unresolved)", f -> f.unconnected().socket().connect(UNRESOLVED));
        step("adaptor connect(unsupported address)", f -> f.unconnected().socket().connect(new Unsupported()));
        step("adaptor connect(timeout -1)", f -> f.unconnected().socket().connect(f.listener.getLocalAddress(), -1));
        step("adaptor connect when connected", f -> f.server.socket().connect(f.listener.getLocalAddress()));
        add("adaptor connect, non-blocking channel", f -> {
            SocketChannel channel = f.unconnected();
            channel.configureBlocking(false);
            channel.socket().connect(f.listener.getLocalAddress());
            return null;
        });
        step("adaptor bind when bound", f -> f.server.socket().bind(Providers.anyPort()));
        add("adaptor getInputStream unconnected", f -> f.unconnected().socket().getInputStream());
        add("server adaptor accept unbound", f -> f.unbound().socket().accept());
        add("server adaptor accept, non-blocking channel", f -> {
            f.listener.configureBlocking(false);
            return f.listener.socket().accept();
        });
        step("server adaptor bind(unsupported address)", f -> f.unbound().socket().bind(new Unsupported()));
        step("server adaptor bind when bound", f -> f.listener.socket().bind(Providers.anyPort()));
        step("server adaptor setSoTimeout(-1)", f -> f.listener.socket().setSoTimeout(-1));
        add("server adaptor setReceiveBufferSize(0)", f -> {
            ServerSocket socket = f.listener.socket();
            socket.setReceiveBufferSize(0);
            return null;
        });
        add("server adaptor accept after close", f -> {
            f.listener.close();
            return f.listener.socket().accept();
        });
    }
}
