package rdmanio.nio;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertNotEquals;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertSame;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.ConnectException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.net.SocketAddress;
import java.net.SocketException;
import java.net.SocketTimeoutException;
import java.net.StandardSocketOptions;
import java.net.UnknownHostException;
import java.nio.ByteBuffer;
import java.nio.channels.AlreadyBoundException;
import java.nio.channels.AlreadyConnectedException;
import java.nio.channels.AsynchronousCloseException;
import java.nio.channels.ClosedByInterruptException;
import java.nio.channels.ClosedChannelException;
import java.nio.channels.ConnectionPendingException;
import java.nio.channels.IllegalBlockingModeException;
import java.nio.channels.NoConnectionPendingException;
import java.nio.channels.NotYetBoundException;
import java.nio.channels.NotYetConnectedException;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.channels.UnresolvedAddressException;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.zip.CRC32C;

import jdk.net.ExtendedSocketOptions;

import org.junit.Test;

/**
 * The {@link SocketChannel} and {@link ServerSocketChannel} contracts, after
 * what OpenJDK's own channel tests check (data integrity with every buffer
 * kind, scatter/gather, short writes and OP_WRITE, half close, the exceptions
 * of each state, asynchronous close and interrupt, the socket adaptors), run
 * against every provider of {@link Providers}.
 */
public class SocketChannelConformanceTest extends EveryProvider {
    /** Closes a resource the test goes on checking (and try-with-resources closes again). */
    private static void closeMidway(java.nio.channels.Channel channel) throws IOException {
        channel.close();
    }

    /** The provider runs over RDMA (rdma or rdma-sends), in the VM. */
    private static long crc(byte[] bytes) {
        CRC32C crc = new CRC32C();
        crc.update(bytes);
        return crc.getValue();
    }

    /** A read of up to 8 bytes from {@code channel} by another thread. */
    private static CompletableFuture<Integer> readInAnotherThread(SocketChannel channel) {
        return CompletableFuture.supplyAsync(() -> {
            try {
                return channel.read(ByteBuffer.allocate(8));
            } catch (IOException e) {
                throw new RuntimeException(e);
            }
        });
    }

    /** Writes {@code data} in pieces of varying size through heap and direct buffers. */
    private static void writeInPieces(SocketChannel channel, byte[] data) throws IOException {
        ByteBuffer direct = ByteBuffer.allocateDirect(70_000);
        int offset = 0;
        for (int round = 0; offset < data.length; round++) {
            int length = Math.min(data.length - offset, 1 + (round * 7919) % 65_000);
            ByteBuffer src = round % 2 == 0 ? ByteBuffer.wrap(data, offset, length)
                    : direct.clear().put(data, offset, length).flip();
            while (src.hasRemaining()) {
                channel.write(src);
            }
            offset += length;
        }
    }

    @Test(timeout = 60_000)
    public void aMebibyteCrossesBothWaysIntactThroughHeapAndDirectBuffers() throws Exception {
        try (Providers.Pair pair = new Providers.Pair(provider)) {
            byte[] up = Providers.pattern(1 << 20, 1);
            byte[] down = Providers.pattern(1 << 20, 2);
            CompletableFuture<byte[]> serverSide = CompletableFuture.supplyAsync(() -> {
                try {
                    CompletableFuture<Void> reply = CompletableFuture.runAsync(() -> {
                        try {
                            writeInPieces(pair.server, down);
                        } catch (IOException e) {
                            throw new RuntimeException(e);
                        }
                    });
                    byte[] received = Providers.readFully(pair.server, up.length);
                    reply.get();
                    return received;
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
            });
            writeInPieces(pair.client, up);
            ByteBuffer direct = ByteBuffer.allocateDirect(down.length);
            while (direct.hasRemaining()) {
                assertTrue(pair.client.read(direct) > 0);
            }
            byte[] received = new byte[down.length];
            direct.flip().get(received);
            assertEquals("server to client", crc(down), crc(received));
            assertEquals("client to server", crc(up), crc(serverSide.get(50, TimeUnit.SECONDS)));
        }
    }

    @Test(timeout = 30_000)
    public void scatterAndGatherHonourOffsetAndLength() throws IOException {
        try (Providers.Pair pair = new Providers.Pair(provider)) {
            ByteBuffer[] srcs = {ByteBuffer.wrap(new byte[] {9}), ByteBuffer.wrap(new byte[] {1, 2}),
                    ByteBuffer.allocateDirect(3).put(new byte[] {3, 4, 5}).flip(), ByteBuffer.wrap(new byte[] {9})};
            assertEquals(5, pair.client.write(srcs, 1, 2));
            assertEquals("before the range: untouched", 1, srcs[0].remaining());
            assertEquals("after the range: untouched", 1, srcs[3].remaining());
            ByteBuffer[] dsts = {ByteBuffer.allocate(1), ByteBuffer.allocate(2), ByteBuffer.allocateDirect(8)};
            long total = 0;
            while (total < 5) {
                total += pair.server.read(dsts, 1, 2);
            }
            assertEquals(0, dsts[0].position());
            assertArrayEquals(new byte[] {1, 2}, dsts[1].array());
            dsts[2].flip();
            byte[] rest = new byte[dsts[2].remaining()];
            dsts[2].get(rest);
            assertArrayEquals(new byte[] {3, 4, 5}, rest);
            assertThrows(IndexOutOfBoundsException.class, () -> pair.client.write(srcs, 3, 2));
        }
    }

    /**
     * Every buffer of a scatter or gather array is checked before a byte moves:
     * a bad one throws what the JDK throws, and nothing is consumed or sent.
     */
    @Test(timeout = 30_000)
    public void badScatterAndGatherArraysMoveNoByte() throws Exception {
        try (Providers.Pair pair = new Providers.Pair(provider)) {
            pair.client.write(ByteBuffer.wrap(new byte[] {1, 2, 3, 4, 5, 6, 7, 8}));
            ByteBuffer small = ByteBuffer.allocate(4);
            ByteBuffer readOnly = ByteBuffer.allocate(8).asReadOnlyBuffer();
            ByteBuffer readOnlyDirect = ByteBuffer.allocateDirect(8).asReadOnlyBuffer();
            assertThrows(IllegalArgumentException.class, () -> pair.server.read(new ByteBuffer[] {small, readOnly}));
            assertThrows(IllegalArgumentException.class,
                    () -> pair.server.read(new ByteBuffer[] {small, readOnlyDirect}));
            assertThrows(NullPointerException.class,
                    () -> pair.server.read(new ByteBuffer[] {ByteBuffer.allocate(16), null}));
            assertEquals("nothing read into the first buffer", 0, small.position());
            assertEquals("nothing written into read-only memory", 0, readOnlyDirect.get(0));
            assertArrayEquals("every byte still there", new byte[] {1, 2, 3, 4, 5, 6, 7, 8},
                    Providers.readFully(pair.server, 8));

            ByteBuffer first = ByteBuffer.wrap(new byte[] {9, 9, 9, 9});
            assertThrows(NullPointerException.class, () -> pair.client.write(new ByteBuffer[] {first, null}));
            assertEquals("nothing taken from the first buffer", 0, first.position());
            pair.client.write(ByteBuffer.wrap(new byte[] {42}));
            assertArrayEquals("nothing sent before the marker", new byte[] {42}, Providers.readFully(pair.server, 1));
        }
    }

    /**
     * A peer that closes with SO_LINGER 0 resets the connection: every later
     * read fails with the JDK's SocketException "Connection reset" (it was an
     * RdmaException once, then end of stream; over RDMA end of stream until
     * the close told the peer it was a reset).
     */
    @Test(timeout = 30_000)
    public void anAbortiveCloseResetsTheConnection() throws Exception {
        try (Providers.Pair pair = new Providers.Pair(provider)) {
            pair.client.write(ByteBuffer.wrap(new byte[] {1, 2, 3}));
            assertArrayEquals(new byte[] {1, 2, 3}, Providers.readFully(pair.server, 3));
            pair.client.setOption(StandardSocketOptions.SO_LINGER, 0);
            pair.client.close();
            ByteBuffer buffer = ByteBuffer.allocate(16);
            for (int read = 0; read < 2; read++) {
                SocketException e = assertThrows(SocketException.class, () -> pair.server.read(buffer));
                assertEquals("Connection reset", e.getMessage());
            }
        }
    }

    /**
     * A write to a peer that closed is taken once, as over TCP (the peer's
     * kernel drops its bytes and answers with a reset), and the writes after
     * it fail; the peer's last bytes are read before its end. Kafka's TLS
     * client reads the peer's alert only after a write that did not fail
     * (SslTransportLayerTest#testListenerConfigOverride lost the alert over
     * shm, whose writes failed as soon as the peer had closed, and over
     * RDMA, where a disconnect was all the peer learned of the close).
     */
    @Test(timeout = 30_000)
    public void aWriteToAPeerThatClosedIsTakenOnceAndTheWritesAfterItFail() throws Exception {
        try (Providers.Pair pair = new Providers.Pair(provider)) {
            closeAfterLastBytes(pair.server);
            readLastBytesAndEnd(pair.client);
            assertEquals("the first write after the peer's end", 4,
                    pair.client.write(ByteBuffer.wrap(new byte[] {4, 5, 6, 7})));
            writesSoonFail(pair.client, "a later write");
        }
    }

    /**
     * A channel closed while a selector holds it takes the peer's writes until
     * the selector's next select, as the JDK's does: it shuts only its output
     * down at the close, and its socket closes with the key. Kafka's TLS
     * server closes so after a failed handshake, while its client may still
     * be writing its last handshake records. The writes are taken even once
     * the peer has read the end (the RDMA media disconnected at the close, so
     * such writes failed). The RDMA media send the end at the close and
     * disconnect when the key goes.
     */
    @Test(timeout = 30_000)
    public void aChannelClosedWhileRegisteredTakesThePeersWritesUntilItsKeyGoes() throws Exception {
        try (Providers.Pair pair = new Providers.Pair(provider); Selector selector = provider.openSelector()) {
            pair.server.configureBlocking(false);
            pair.server.register(selector, SelectionKey.OP_READ);
            closeAfterLastBytes(pair.server);
            readLastBytesAndEnd(pair.client);
            for (int write = 0; write < 3; write++) {
                assertEquals("write " + write + " after the end", 2,
                        pair.client.write(ByteBuffer.wrap(new byte[] {4, 5})));
            }
            selector.selectNow(); // the key goes, and the socket with it
            writesSoonFail(pair.client, "a write after the key went");
        }
    }

    /** Writes the bytes 1, 2, 3 and closes: the peer's last bytes. */
    private static void closeAfterLastBytes(SocketChannel channel) throws IOException {
        channel.write(ByteBuffer.wrap(new byte[] {1, 2, 3}));
        channel.close();
    }

    /** Reads what {@link #closeAfterLastBytes} wrote, then the end. */
    private static void readLastBytesAndEnd(SocketChannel channel) throws IOException {
        assertArrayEquals("the peer's last bytes", new byte[] {1, 2, 3}, Providers.readFully(channel, 3));
        assertEquals(-1, channel.read(ByteBuffer.allocate(4)));
    }

    /** Writes a byte at a time until one fails, as one must within 10 s (the peer's reset came). */
    private static void writesSoonFail(SocketChannel channel, String what) {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        assertThrows(what + " fails", IOException.class, () -> {
            while (System.nanoTime() < deadline) {
                channel.write(ByteBuffer.wrap(new byte[] {6}));
                Thread.sleep(1);
            }
        });
    }

    /**
     * The adaptors' options the JDK's support are kept and reported (they threw
     * UnsupportedOperationException), urgent data is refused with the
     * documented SocketException (no medium of rdma-nio has it), the server
     * adaptor's accept honours its timeout, and in non-blocking mode takes a
     * waiting connection (it threw IllegalBlockingModeException even then).
     */
    @Test(timeout = 30_000)
    public void adaptorOptionsAndAcceptsBehaveAsTheJdks() throws Exception {
        try (Providers.Pair pair = new Providers.Pair(provider)) {
            Socket socket = pair.client.socket();
            socket.setOOBInline(true);
            assertTrue(socket.getOOBInline());
            socket.setTrafficClass(0x10);
            assertEquals(0x10, socket.getTrafficClass());
            assertThrows(IllegalArgumentException.class, () -> socket.setTrafficClass(256));

            ServerSocket server = pair.listener.socket();
            server.setReceiveBufferSize(64 * 1024);
            assertTrue(server.getReceiveBufferSize() >= 64 * 1024);
            assertThrows(IllegalArgumentException.class, () -> server.setReceiveBufferSize(0));
            server.setSoTimeout(200);
            assertEquals(200, server.getSoTimeout());
            long started = System.nanoTime();
            assertThrows(SocketTimeoutException.class, server::accept);
            assertTrue("gave up early", System.nanoTime() - started >= TimeUnit.MILLISECONDS.toNanos(150));
            server.setSoTimeout(0);

            pair.listener.configureBlocking(false);
            assertThrows("nothing waits", IllegalBlockingModeException.class, server::accept);
            try (SocketChannel another = provider.openSocketChannel()) {
                another.connect(pair.listener.getLocalAddress());
                Socket taken = null;
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
                while (taken == null && System.nanoTime() < deadline) {
                    try {
                        taken = server.accept();
                    } catch (IllegalBlockingModeException notYet) {
                        Thread.sleep(10);
                    }
                }
                assertNotNull("a waiting connection is taken in non-blocking mode", taken);
                taken.close();
            }
        }
    }

    /**
     * Urgent data, as OpenJDK's OutOfBand and SendUrgentData tests use it:
     * read in line with SO_OOBINLINE, else dropped, over TCP (sendUrgentData
     * threw, and setOOBInline did not reach the kernel socket) and shm (it
     * threw there until urgent records joined the ring). RDMA, without urgent
     * data, throws the documented SocketException.
     */
    @Test(timeout = 60_000)
    public void urgentDataIsReadInLineOrDropped() throws Exception {
        try (Providers.Pair pair = new Providers.Pair(provider)) {
            Socket client = pair.client.socket();
            Socket server = pair.server.socket();
            String medium = name.equals("jdk") ? "tcp" : ((RdmaSocketChannel) pair.client).medium();
            if (!medium.equals("tcp") && !medium.equals("shm")) {
                SocketException urgent = assertThrows(SocketException.class, () -> client.sendUrgentData(1));
                assertTrue(urgent.getMessage(), urgent.getMessage().contains("Urgent data not supported"));
                return;
            }
            server.setOOBInline(true);
            assertTrue(server.getOOBInline());
            client.sendUrgentData(0x155); // the low byte goes
            ByteBuffer one = ByteBuffer.allocate(1);
            assertEquals(1, pair.server.read(one));
            assertEquals(0x55, one.get(0));

            server.setOOBInline(false);
            client.sendUrgentData(0x66);
            pair.client.write(ByteBuffer.wrap(new byte[] {0x77}));
            ByteBuffer rest = ByteBuffer.allocate(8);
            while (rest.position() == 0) {
                assertTrue(pair.server.read(rest) >= 0);
            }
            assertEquals("the urgent byte was dropped", 1, rest.position());
            assertEquals(0x77, rest.get(0));

            pair.client.configureBlocking(false);
            ByteBuffer chunk = ByteBuffer.allocateDirect(1 << 16);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
            while (pair.client.write(chunk.clear()) > 0) {
                assertTrue("the socket never filled", System.nanoTime() < deadline);
            }
            IOException full = assertThrows(IOException.class, () -> client.sendUrgentData(1));
            assertEquals(IOException.class, full.getClass());
            assertEquals("Socket buffer full", full.getMessage());
        }
    }

    /**
     * A client's bind holds its port at once and the connection comes from it,
     * as OpenJDK's LocalAddress test checks (the bind was only recorded: port 0
     * after bind(0), another port once connected; over shm both ends said 0).
     */
    @Test(timeout = 60_000)
    public void aClientBindHoldsItsPortAndTheConnectionComesFromIt() throws Exception {
        try (ServerSocketChannel listener = provider.openServerSocketChannel().bind(Providers.anyPort());
                SocketChannel client = provider.openSocketChannel()) {
            client.bind(Providers.anyPort());
            InetSocketAddress bound = (InetSocketAddress) client.getLocalAddress();
            assertNotEquals(0, bound.getPort());
            assertEquals(bound.getPort(), client.socket().getLocalPort());
            try (ServerSocket taken = new ServerSocket()) {
                assertThrows(java.net.BindException.class, () -> taken.bind(bound));
            }
            try (SocketChannel second = provider.openSocketChannel()) {
                assertThrows(java.net.BindException.class, () -> second.bind(bound));
            }

            client.connect(listener.getLocalAddress());
            try (SocketChannel server = listener.accept()) {
                assertEquals(bound, client.getLocalAddress());
                assertEquals(bound, server.getRemoteAddress());
            }
        }
    }

    /**
     * A listener and a connection hold their ports in TCP's port space whatever their medium, as TCP's
     * do: a client's bind cannot get a port a connection is named by. (rdma_cm's ports are a space of
     * their own: an RDMA client's port was free for the kernel to give the next bind, whose connect
     * then failed with "rdma_resolve_addr failed: Address already in use".)
     */
    @Test(timeout = 60_000)
    public void aListenerAndAConnectionHoldTheirPortsInTcpsPortSpace() throws Exception {
        try (Providers.Pair pair = new Providers.Pair(provider)) {
            for (SocketChannel end : List.of(pair.client, pair.server)) {
                InetSocketAddress local = (InetSocketAddress) end.getLocalAddress();
                try (ServerSocket taken = new ServerSocket()) {
                    assertThrows("the port of " + local + " was free", java.net.BindException.class,
                            () -> taken.bind(new InetSocketAddress(local.getPort())));
                }
            }
        }
    }

    /**
     * As many blocking connects as a listener's backlog holds complete before
     * any accept, from one thread, as the JDK's do: over shm the kernel's
     * handover queue holds ten, and the eleventh would have hung had nothing
     * moved the handovers on (written for a listener without an acceptor thread).
     */
    @Test(timeout = 60_000)
    public void connectsUpToTheBacklogCompleteBeforeAnyAccept() throws Exception {
        int clients = 30;
        List<SocketChannel> connected = new java.util.ArrayList<>();
        try (ServerSocketChannel listener = provider.openServerSocketChannel().bind(Providers.anyPort(), 50)) {
            for (int i = 0; i < clients; i++) {
                SocketChannel client = provider.openSocketChannel();
                connected.add(client);
                client.socket().connect(listener.getLocalAddress(), 10_000);
                client.write(ByteBuffer.wrap(new byte[] {(byte) i}));
            }
            for (int i = 0; i < clients; i++) {
                try (SocketChannel server = listener.accept()) {
                    ByteBuffer got = ByteBuffer.allocate(1);
                    assertEquals(1, server.read(got));
                    assertEquals("connections are accepted in the order they were made", i, got.get(0));
                }
            }
        } finally {
            for (SocketChannel client : connected) {
                client.close();
            }
        }
    }

    /**
     * A change of blocking mode waits for a blocking read or accept to
     * finish, as the JDK's: so no selector can register a channel that a
     * blocking operation is under way in. (configureBlocking returned at once.)
     */
    @Test(timeout = 60_000)
    public void aBlockingModeChangeWaitsForABlockingReadOrAccept() throws Exception {
        try (Providers.Pair pair = new Providers.Pair(provider)) {
            CompletableFuture<Integer> read = readInAnotherThread(pair.client);
            Providers.assertModeChangeWaitsFor(pair.client, read,
                    () -> pair.server.write(ByteBuffer.wrap(new byte[] {7})));
            assertEquals(1, (int) read.get());
        }
        try (ServerSocketChannel listener = provider.openServerSocketChannel().bind(Providers.anyPort());
                SocketChannel client = provider.openSocketChannel()) {
            CompletableFuture<SocketChannel> accepted = CompletableFuture.supplyAsync(() -> {
                try {
                    return listener.accept();
                } catch (IOException e) {
                    throw new RuntimeException(e);
                }
            });
            Providers.assertModeChangeWaitsFor(listener, accepted, () -> client.connect(listener.getLocalAddress()));
            accepted.get().close();
        }
    }

    /**
     * The adaptors speak java.net: a channel's unchecked exception for a bad
     * state is a SocketException, as OpenJDK's ExceptionTranslation test checks
     * (a second bind threw AlreadyBoundException).
     */
    @Test(timeout = 60_000)
    public void adaptorsTurnChannelStateErrorsIntoSocketExceptions() throws Exception {
        try (SocketChannel client = provider.openSocketChannel();
                ServerSocketChannel listener = provider.openServerSocketChannel()) {
            Socket socket = client.socket();
            socket.bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0));
            SocketException again = assertThrows(SocketException.class,
                    () -> socket.bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0)));
            assertEquals("Already bound", again.getMessage());

            ServerSocket server = listener.socket();
            SocketException unbound = assertThrows(SocketException.class, server::accept);
            assertEquals("Socket is not bound yet", unbound.getMessage());
            server.bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0));
            assertEquals("Already bound", assertThrows(SocketException.class,
                    () -> server.bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0))).getMessage());
        }
    }

    /**
     * The adaptor's streams as the JDK's: taking one needs no blocking mode,
     * using it does (a stream read after configureBlocking(false) returned 0 as
     * a data byte, and its writes spun); a timed read ends with the channel
     * closed by an interrupt (it ran to its timeout); connecting to an
     * unresolved address is an UnknownHostException.
     */
    @Test(timeout = 30_000)
    public void adaptorStreamsBehaveAsTheJdks() throws Exception {
        try (Providers.Pair pair = new Providers.Pair(provider)) {
            InputStream in = pair.server.socket().getInputStream();
            OutputStream out = pair.server.socket().getOutputStream();
            pair.server.configureBlocking(false);
            assertNotNull(pair.server.socket().getInputStream());
            assertThrows(IllegalBlockingModeException.class, in::read);
            assertThrows(IllegalBlockingModeException.class, () -> out.write(7));
            pair.server.configureBlocking(true);

            pair.server.socket().setSoTimeout(10_000);
            Thread reader = Thread.currentThread();
            Thread interrupter = new Thread(() -> {
                try {
                    Thread.sleep(200);
                } catch (InterruptedException e) {
                    return;
                }
                reader.interrupt();
            });
            interrupter.start();
            long started = System.nanoTime();
            try {
                assertThrows(ClosedByInterruptException.class, in::read);
            } finally {
                Thread.interrupted(); // clear it for what follows
                interrupter.join();
            }
            assertTrue("ended by the interrupt", System.nanoTime() - started < TimeUnit.SECONDS.toNanos(8));
            assertFalse(pair.server.isOpen());
        }
        try (SocketChannel channel = provider.openSocketChannel()) {
            assertThrows(UnknownHostException.class,
                    () -> channel.socket().connect(InetSocketAddress.createUnresolved("no-such-host.invalid", 80)));
        }
    }

    /**
     * The JDK's channels offer jdk.net's TCP keep-alive options (Linux's
     * defaults, out of range a SocketException) and take SO_RCVBUF 0 (a
     * negative size is an IllegalArgumentException): rdma-nio lacked the
     * former and refused the latter.
     */
    @Test(timeout = 30_000)
    public void keepAliveTuningAndABufferSizeOfZeroAreTaken() throws Exception {
        try (SocketChannel channel = provider.openSocketChannel();
                ServerSocketChannel listener = provider.openServerSocketChannel()) {
            for (java.nio.channels.NetworkChannel each : List.of(channel, listener)) {
                assertTrue(each.supportedOptions().contains(ExtendedSocketOptions.TCP_KEEPIDLE));
                assertEquals(7200, (int) each.getOption(ExtendedSocketOptions.TCP_KEEPIDLE));
                assertEquals(75, (int) each.getOption(ExtendedSocketOptions.TCP_KEEPINTERVAL));
                assertEquals(9, (int) each.getOption(ExtendedSocketOptions.TCP_KEEPCOUNT));
                each.setOption(ExtendedSocketOptions.TCP_KEEPIDLE, 30);
                assertEquals(30, (int) each.getOption(ExtendedSocketOptions.TCP_KEEPIDLE));
                each.setOption(ExtendedSocketOptions.TCP_KEEPCOUNT, 3);
                assertEquals(3, (int) each.getOption(ExtendedSocketOptions.TCP_KEEPCOUNT));
                assertThrows(SocketException.class, () -> each.setOption(ExtendedSocketOptions.TCP_KEEPIDLE, 0));
                assertThrows(SocketException.class, () -> each.setOption(ExtendedSocketOptions.TCP_KEEPCOUNT, 128));
                each.setOption(StandardSocketOptions.SO_RCVBUF, 0);
                assertTrue(each.getOption(StandardSocketOptions.SO_RCVBUF) > 0);
                assertThrows(IllegalArgumentException.class, () -> each.setOption(StandardSocketOptions.SO_RCVBUF, -1));
            }
        }
    }

    /**
     * The socket adaptor names the peer from the start of a connect (Kafka
     * makes its TLS engine for a pending connect and names the peer by
     * {@code socket().getInetAddress()}: rdma-nio gave null, and hostname
     * verification failed), and keeps both addresses after a close, as the
     * JDK's does; only the local address reads as the wildcard once closed.
     */
    @Test(timeout = 30_000)
    public void theSocketAdaptorNamesThePeerFromTheConnectOnAndAfterTheClose() throws Exception {
        try (ServerSocketChannel listener = provider.openServerSocketChannel().bind(Providers.anyPort());
                SocketChannel client = provider.openSocketChannel()) {
            InetSocketAddress target = (InetSocketAddress) listener.getLocalAddress();
            client.configureBlocking(false);
            client.connect(target); // pending or done: the peer is named either way
            Socket socket = client.socket();
            assertEquals(target.getAddress(), socket.getInetAddress());
            assertEquals(target.getPort(), socket.getPort());
            assertEquals(target, socket.getRemoteSocketAddress());
            while (!client.finishConnect()) {
                Thread.sleep(1);
            }
            int localPort = socket.getLocalPort();
            SocketAddress local = socket.getLocalSocketAddress();
            listener.accept().close();

            closeMidway(client);
            assertEquals(target.getAddress(), socket.getInetAddress());
            assertEquals(target.getPort(), socket.getPort());
            assertEquals(target, socket.getRemoteSocketAddress());
            assertEquals(localPort, socket.getLocalPort());
            assertEquals(local, socket.getLocalSocketAddress());
            assertTrue("a close does not unbind", socket.isBound());
            assertTrue(socket.getLocalAddress().isAnyLocalAddress());
        }
    }

    /**
     * Connections made one after another to one listener each carry their own
     * bytes and end where they end: none reads what an earlier one wrote (a
     * closed shm connection's memory serves the next connect).
     */
    @Test(timeout = 120_000)
    public void successiveConnectionsToOneListenerCarryOnlyTheirOwnBytes() throws Exception {
        try (ServerSocketChannel listener = provider.openServerSocketChannel().bind(Providers.anyPort())) {
            SocketAddress target = listener.getLocalAddress();
            for (int i = 0; i < 40; i++) {
                int round = i;
                // Long and short by turns: what a long one left must not show in a short one.
                int length = round % 2 == 0 ? 30_000 + round : 10 + round;
                byte[] request = Providers.pattern(length, round);
                byte[] reply = Providers.pattern(length / 2 + 1, -round);
                try (SocketChannel client = provider.openSocketChannel()) {
                    client.connect(target);
                    SocketChannel accepted = listener.accept();
                    CompletableFuture<byte[]> served = CompletableFuture.supplyAsync(() -> {
                        try (SocketChannel server = accepted) {
                            byte[] got = Providers.readFully(server, request.length);
                            assertEquals("round " + round + ": the request ends there", -1,
                                    server.read(ByteBuffer.allocate(1)));
                            server.write(ByteBuffer.wrap(reply));
                            return got;
                        } catch (IOException e) {
                            throw new RuntimeException(e);
                        }
                    });
                    client.write(ByteBuffer.wrap(request));
                    client.shutdownOutput();
                    // The reply is read as it comes: a peer buffers only so much (two-sided RDMA: four messages).
                    assertArrayEquals("round " + round, reply, Providers.readFully(client, reply.length));
                    assertEquals("round " + round + ": the reply ends there", -1, client.read(ByteBuffer.allocate(1)));
                    assertArrayEquals("round " + round, request, served.get(30, TimeUnit.SECONDS));
                }
            }
        }
    }

    @Test(timeout = 60_000)
    public void shortWritesAndWritabilityWhenThePeerDoesNotRead() throws Exception {
        try (Providers.Pair pair = new Providers.Pair(provider); Selector selector = provider.openSelector()) {
            pair.client.configureBlocking(false);
            SelectionKey key = pair.client.register(selector, SelectionKey.OP_WRITE);
            byte[] chunk = Providers.pattern(64 * 1024, 3);
            CRC32C sent = new CRC32C();
            long written = 0;
            ByteBuffer src = ByteBuffer.wrap(chunk);
            // Fill until a write takes less than offered.
            while (true) {
                int n = pair.client.write(src.clear());
                sent.update(chunk, 0, n);
                written += n;
                if (n < chunk.length) {
                    break;
                }
                assertTrue("64 MiB accepted with nobody reading", written < (64 << 20));
            }
            long total = written;
            CompletableFuture<Long> reader = CompletableFuture.supplyAsync(() -> {
                try {
                    return crcOfStream(pair.server);
                } catch (IOException e) {
                    throw new RuntimeException(e);
                }
            });
            // Whatever was refused goes out once OP_WRITE says so.
            ByteBuffer more = ByteBuffer.wrap(chunk);
            while (more.hasRemaining()) {
                selector.select(1000);
                if (key.isWritable()) {
                    int at = more.position();
                    total += pair.client.write(more);
                    sent.update(chunk, at, more.position() - at);
                }
                selector.selectedKeys().clear();
            }
            pair.client.shutdownOutput();
            assertEquals(sent.getValue(), (long) reader.get(50, TimeUnit.SECONDS));
            assertTrue(total > chunk.length);
        }
    }

    private static long crcOfStream(SocketChannel channel) throws IOException {
        CRC32C crc = new CRC32C();
        ByteBuffer buffer = ByteBuffer.allocate(32 * 1024);
        while (channel.read(buffer.clear()) >= 0) {
            crc.update(buffer.flip());
        }
        return crc.getValue();
    }

    @Test(timeout = 30_000)
    public void nonBlockingReadsReturnZeroThenDataThenEndOfStream() throws Exception {
        try (Providers.Pair pair = new Providers.Pair(provider)) {
            pair.client.configureBlocking(false);
            ByteBuffer buffer = ByteBuffer.allocate(8);
            assertEquals(0, pair.client.read(buffer));
            assertEquals(0, pair.client.read(ByteBuffer.allocate(0)));
            pair.server.write(ByteBuffer.wrap(new byte[] {5, 6}));
            pair.server.close();
            int n;
            while ((n = pair.client.read(buffer)) == 0) {
                Thread.onSpinWait();
            }
            assertEquals(2, n);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
            while ((n = pair.client.read(buffer)) == 0 && System.nanoTime() < deadline) {
                Thread.onSpinWait();
            }
            assertEquals("end of stream after the data", -1, n);
            ByteBuffer readOnly = ByteBuffer.allocate(4).asReadOnlyBuffer();
            assertThrows(IllegalArgumentException.class, () -> pair.client.read(readOnly));
        }
    }

    @Test(timeout = 30_000)
    public void halfClosesEndOneDirectionOnly() throws IOException {
        try (Providers.Pair pair = new Providers.Pair(provider)) {
            pair.client.write(ByteBuffer.wrap(new byte[] {1, 2, 3}));
            assertSame(pair.client, pair.client.shutdownOutput());
            assertThrows(ClosedChannelException.class, () -> pair.client.write(ByteBuffer.wrap(new byte[] {4})));
            assertArrayEquals(new byte[] {1, 2, 3}, Providers.readFully(pair.server, 3));
            assertEquals(-1, pair.server.read(ByteBuffer.allocate(4)));
            pair.server.write(ByteBuffer.wrap(new byte[] {7, 8}));
            assertArrayEquals("the other direction still works", new byte[] {7, 8},
                    Providers.readFully(pair.client, 2));

            pair.client.shutdownInput();
            assertEquals(-1, pair.client.read(ByteBuffer.allocate(4)));
            assertTrue(pair.client.socket().isInputShutdown());
            assertTrue(pair.client.socket().isOutputShutdown());
        }
    }

    @Test(timeout = 30_000)
    public void addressesBeforeDuringAndAfterTheConnection() throws IOException {
        try (ServerSocketChannel listener = provider.openServerSocketChannel()) {
            assertNull(listener.getLocalAddress());
            listener.bind(Providers.anyPort());
            InetSocketAddress bound = (InetSocketAddress) listener.getLocalAddress();
            assertTrue(bound.getPort() > 0);
            assertThrows(AlreadyBoundException.class, () -> listener.bind(Providers.anyPort()));
            SocketChannel client = provider.openSocketChannel();
            assertNull(client.getRemoteAddress());
            assertNull(client.getLocalAddress());
            client.connect(bound);
            try (SocketChannel server = listener.accept()) {
                assertEquals(bound, client.getRemoteAddress());
                assertNotNull(client.getLocalAddress());
                assertEquals(bound.getPort(), client.socket().getPort());
                assertEquals(bound.getAddress(), client.socket().getInetAddress());
                assertNotNull(server.getRemoteAddress());
                assertEquals(bound.getPort(), ((InetSocketAddress) server.getLocalAddress()).getPort());
                assertTrue(client.toString().contains("connected"));
            }
            client.close();
            assertThrows(ClosedChannelException.class, client::getRemoteAddress);
            assertThrows(ClosedChannelException.class, client::getLocalAddress);
        }
    }

    @Test(timeout = 30_000)
    public void eachStateRefusesWhatItCannotDo() throws Exception {
        try (ServerSocketChannel listener = provider.openServerSocketChannel().bind(Providers.anyPort());
                SocketChannel client = provider.openSocketChannel()) {
            assertThrows(NotYetConnectedException.class, () -> client.read(ByteBuffer.allocate(1)));
            assertThrows(NotYetConnectedException.class, () -> client.write(ByteBuffer.allocate(1)));
            assertThrows(NotYetConnectedException.class, client::shutdownOutput);
            assertThrows(NoConnectionPendingException.class, client::finishConnect);
            assertThrows(UnresolvedAddressException.class,
                    () -> client.connect(InetSocketAddress.createUnresolved("no.such.host.invalid", 80)));
            client.configureBlocking(false);
            if (!client.connect(listener.getLocalAddress())) {
                assertThrows(ConnectionPendingException.class, () -> client.connect(listener.getLocalAddress()));
                assertThrows(ConnectionPendingException.class, () -> client.bind(null));
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
                while (!client.finishConnect()) {
                    assertTrue(System.nanoTime() < deadline);
                    Thread.sleep(1);
                }
            }
            assertThrows(AlreadyConnectedException.class, () -> client.connect(listener.getLocalAddress()));
            assertTrue("finishConnect on a connected channel", client.finishConnect());
            closeMidway(client);
            assertThrows(ClosedChannelException.class, () -> client.read(ByteBuffer.allocate(1)));
            assertThrows(ClosedChannelException.class, () -> client.write(ByteBuffer.allocate(1)));
            assertThrows(ClosedChannelException.class, () -> client.connect(listener.getLocalAddress()));
            assertThrows(ClosedChannelException.class, () -> client.setOption(StandardSocketOptions.TCP_NODELAY, true));
        }
    }

    @Test(timeout = 30_000)
    public void connectingToAPortNobodyListensOnFailsAndClosesTheChannel() throws IOException {
        InetSocketAddress nobody;
        try (ServerSocketChannel listener = provider.openServerSocketChannel().bind(Providers.anyPort())) {
            nobody = (InetSocketAddress) listener.getLocalAddress();
        }
        SocketChannel client = provider.openSocketChannel();
        assertThrows(ConnectException.class, () -> client.connect(nobody));
        assertFalse("a failed connect closes the channel", client.isOpen());
    }

    @Test(timeout = 30_000)
    public void optionsAreKeptAndUnknownOnesRefused() throws IOException {
        try (SocketChannel channel = provider.openSocketChannel()) {
            channel.setOption(StandardSocketOptions.TCP_NODELAY, true);
            assertTrue(channel.getOption(StandardSocketOptions.TCP_NODELAY));
            channel.setOption(StandardSocketOptions.SO_RCVBUF, 128 * 1024);
            assertTrue(channel.getOption(StandardSocketOptions.SO_RCVBUF) > 0);
            assertTrue(channel.getOption(StandardSocketOptions.SO_SNDBUF) > 0);
            assertTrue(channel.supportedOptions().contains(StandardSocketOptions.SO_RCVBUF));
            assertThrows(UnsupportedOperationException.class,
                    () -> channel.setOption(StandardSocketOptions.IP_MULTICAST_LOOP, true));
            assertThrows(UnsupportedOperationException.class,
                    () -> channel.getOption(StandardSocketOptions.IP_MULTICAST_LOOP));
            Socket socket = channel.socket();
            socket.setTcpNoDelay(false);
            assertFalse(socket.getTcpNoDelay());
            assertSame(channel, socket.getChannel());
        }
    }

    @Test(timeout = 30_000)
    public void closeFromAnotherThreadEndsABlockedRead() throws Exception {
        try (Providers.Pair pair = new Providers.Pair(provider)) {
            CompletableFuture<Integer> read = readInAnotherThread(pair.client);
            Thread.sleep(300);
            assertFalse(read.isDone());
            pair.client.close();
            ExecutionException e = assertThrows(ExecutionException.class, () -> read.get(10, TimeUnit.SECONDS));
            assertTrue(String.valueOf(e.getCause().getCause()),
                    e.getCause().getCause() instanceof AsynchronousCloseException);
            assertEquals("the peer sees the close", -1, pair.server.read(ByteBuffer.allocate(8)));
        }
    }

    @Test(timeout = 30_000)
    public void anInterruptEndsABlockedReadAndClosesTheChannel() throws Exception {
        try (Providers.Pair pair = new Providers.Pair(provider)) {
            Throwable[] failure = new Throwable[1];
            Thread reader = new Thread(() -> {
                try {
                    pair.client.read(ByteBuffer.allocate(8));
                } catch (Throwable t) {
                    failure[0] = t;
                }
            });
            reader.start();
            Thread.sleep(300);
            reader.interrupt();
            reader.join(10_000);
            assertFalse("the read did not end", reader.isAlive());
            assertTrue(String.valueOf(failure[0]), failure[0] instanceof ClosedByInterruptException);
            assertFalse(pair.client.isOpen());
        }
    }

    @Test(timeout = 30_000)
    public void theSocketAdaptorStreamsAndTimesOut() throws Exception {
        try (Providers.Pair pair = new Providers.Pair(provider)) {
            Socket client = pair.client.socket();
            Socket server = pair.server.socket();
            assertTrue(client.isConnected());
            assertTrue(client.isBound());
            OutputStream out = client.getOutputStream();
            out.write(new byte[] {10, 20, 30});
            out.flush();
            InputStream in = server.getInputStream();
            byte[] three = new byte[3];
            int got = 0;
            while (got < 3) {
                got += in.read(three, got, 3 - got);
            }
            assertArrayEquals(new byte[] {10, 20, 30}, three);
            server.setSoTimeout(200);
            assertEquals(200, server.getSoTimeout());
            assertThrows(SocketTimeoutException.class, in::read);
            assertTrue("a timed-out read leaves the socket usable", pair.server.isOpen());
            client.close();
            assertTrue(client.isClosed());
            assertFalse(pair.client.isOpen());
        }
    }

    @Test(timeout = 30_000)
    public void theServerSocketAdaptorAccepts() throws IOException {
        try (ServerSocketChannel listener = provider.openServerSocketChannel()) {
            ServerSocket socket = listener.socket();
            assertFalse(socket.isBound());
            socket.bind(Providers.anyPort());
            assertTrue(socket.getLocalPort() > 0);
            assertSame(listener, socket.getChannel());
            try (SocketChannel client = provider.openSocketChannel();
                    Socket accepted = connectAndAccept(client, socket)) {
                assertTrue(accepted.isConnected());
                assertNotNull(accepted.getChannel());
                assertTrue(client.isConnected());
            }
        }
    }

    private static Socket connectAndAccept(SocketChannel client, ServerSocket socket) throws IOException {
        client.connect(socket.getLocalSocketAddress());
        return socket.accept();
    }

    @Test(timeout = 30_000)
    public void serverSocketChannelsRefuseWhatTheirStateForbids() throws Exception {
        try (ServerSocketChannel listener = provider.openServerSocketChannel()) {
            assertThrows(NotYetBoundException.class, listener::accept);
            listener.bind(Providers.anyPort());
            listener.configureBlocking(false);
            assertNull(listener.accept());
            try (ServerSocketChannel second = provider.openServerSocketChannel()) {
                assertThrows(java.net.BindException.class, () -> second.bind(listener.getLocalAddress()));
            }
            listener.configureBlocking(true);
            CompletableFuture<SocketChannel> accept = CompletableFuture.supplyAsync(() -> {
                try {
                    return listener.accept();
                } catch (IOException e) {
                    throw new RuntimeException(e);
                }
            });
            Thread.sleep(300);
            assertFalse(accept.isDone());
            closeMidway(listener);
            ExecutionException e = assertThrows(ExecutionException.class, () -> accept.get(10, TimeUnit.SECONDS));
            assertTrue(String.valueOf(e.getCause().getCause()),
                    e.getCause().getCause() instanceof AsynchronousCloseException);
            assertThrows(ClosedChannelException.class, listener::accept);
        }
    }

    @Test(timeout = 30_000)
    public void aClosedListenerFreesItsPort() throws IOException {
        InetSocketAddress address;
        try (ServerSocketChannel listener = provider.openServerSocketChannel().bind(Providers.anyPort())) {
            address = (InetSocketAddress) listener.getLocalAddress();
        }
        try (ServerSocketChannel again = provider.openServerSocketChannel().bind(address)) {
            assertEquals(address, again.getLocalAddress());
        }
    }
}
