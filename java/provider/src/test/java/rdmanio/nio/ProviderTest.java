package rdmanio.nio;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.io.IOException;
import java.net.Inet6Address;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.NetworkInterface;
import java.net.NoRouteToHostException;
import java.net.ServerSocket;
import java.net.SocketTimeoutException;
import java.net.StandardProtocolFamily;
import java.nio.ByteBuffer;
import java.nio.channels.AsynchronousCloseException;
import java.nio.channels.ClosedByInterruptException;
import java.nio.channels.DatagramChannel;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.channels.spi.SelectorProvider;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import org.junit.Test;

import rdmanio.NoRdmaDeviceException;

/** The provider as a whole: the JVM-wide switch, delegation to the JDK, configuration errors. */
public class ProviderTest {
    /**
     * An unchanged NIO program (NioPingPong's "system" provider: Selector.open()
     * and friends) in a JVM started with the system property runs on rdma-nio:
     * over rdma in the VM, over tcp on the host.
     */
    @Test(timeout = 300_000)
    public void theSystemPropertySwitchesAnUnchangedNioProgram() throws Exception {
        runPingPongOnTheSystemProvider();
    }

    /**
     * The JVM-wide provider loads where only java.base is (jtreg runs OpenJDK's
     * tests so; it failed with NoClassDefFoundError: java/util/logging/Level).
     */
    @Test(timeout = 300_000)
    public void theSystemProviderNeedsOnlyJavaBase() throws Exception {
        runPingPongOnTheSystemProvider("--limit-modules", "java.base");
    }

    private static void runPingPongOnTheSystemProvider(String... jvmOptions) throws Exception {
        String transport = Providers.IN_VM ? "rdma" : "tcp";
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        List<String> command = new ArrayList<>(List.of(java));
        command.addAll(List.of(jvmOptions));
        command.addAll(List.of("-Djava.nio.channels.spi.SelectorProvider=" + RdmaSelectorProvider.class.getName(),
                "-Drdmanio.transport=" + transport, "-Djava.library.path=" + System.getProperty("java.library.path"),
                "-cp", System.getProperty("rdmanio.benchClasspath"), "rdmanio.demo.NioPingPong", Providers.HOST, "200", "64",
                "system"));
        Process process = new ProcessBuilder(command).redirectErrorStream(true).start();
        assertTrue("the child JVM finished", process.waitFor(240, TimeUnit.SECONDS));
        String output = new String(process.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertEquals(output, 0, process.exitValue());
        assertTrue(output, output.contains("rdma-nio (" + transport + "):"));
        assertTrue(output, output.contains(RdmaSelectorProvider.class.getName()));
    }

    /**
     * An inetd-style launch (bash puts a TCP connection or a connected UDP
     * socket on the service's standard input): System.inheritedChannel() is
     * rdma-nio's own channel over it (it was null), and the channel's close
     * ends the connection while the process lives on (the standard streams,
     * which held the socket too, point at /dev/null then).
     */
    @Test(timeout = 120_000)
    public void aSocketOnStandardInputIsTheInheritedChannel() throws Exception {
        try (ServerSocketChannel listener = ServerSocketChannel.open().bind(new InetSocketAddress("127.0.0.1", 0));
                DatagramChannel datagrams = DatagramChannel.open().bind(new InetSocketAddress("127.0.0.1", 0))) {
            int port = ((InetSocketAddress) listener.getLocalAddress()).getPort();
            Process tcp = inheritedEcho("/dev/tcp/127.0.0.1/" + port);
            try (SocketChannel service = listener.accept()) {
                String line = readLine(service);
                assertTrue(line, line.startsWith(RdmaSocketChannel.class.getName() + " /127.0.0.1:" + port));
                service.write(ByteBuffer.wrap("ping".getBytes(StandardCharsets.UTF_8)));
                assertEquals("ping", readText(service.shutdownOutput(), 4));
                assertEquals("the close ended the connection", -1, service.read(ByteBuffer.allocate(1)));
                assertTrue("the service lives on after its close", tcp.isAlive());
            } finally {
                tcp.destroy();
            }

            int udpPort = ((InetSocketAddress) datagrams.getLocalAddress()).getPort();
            Process udp = inheritedEcho("/dev/udp/127.0.0.1/" + udpPort);
            try {
                ByteBuffer received = ByteBuffer.allocate(256);
                datagrams.receive(received);
                String text = new String(received.array(), 0, received.position(), StandardCharsets.UTF_8);
                assertTrue(text, text.startsWith(RdmaDatagramChannel.class.getName() + " /127.0.0.1:" + udpPort));
            } finally {
                udp.destroy();
            }
        }
    }

    /** Starts rdma-nio's InheritedEcho demo with {@code socket} (bash's /dev/tcp or /dev/udp) on standard input. */
    private static Process inheritedEcho(String socket) throws IOException {
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        String command = String.join(" ", java, "-Djava.nio.channels.spi.SelectorProvider="
                + RdmaSelectorProvider.class.getName(), "-Djava.library.path=" + System.getProperty("java.library.path"),
                "-cp", System.getProperty("rdmanio.benchClasspath"), "rdmanio.demo.InheritedEcho", "60000",
                "0<>" + socket);
        return new ProcessBuilder("bash", "-c", "exec " + command).redirectError(ProcessBuilder.Redirect.INHERIT)
                .start();
    }

    /** Reads up to a newline. */
    private static String readLine(SocketChannel channel) throws IOException {
        StringBuilder line = new StringBuilder();
        ByteBuffer one = ByteBuffer.allocate(1);
        while (true) {
            one.clear();
            assertEquals("a line before the end", 1, channel.read(one));
            if (one.get(0) == '\n') {
                return line.toString();
            }
            line.append((char) one.get(0));
        }
    }

    /** Reads exactly {@code length} bytes as text. */
    private static String readText(SocketChannel channel, int length) throws IOException {
        ByteBuffer bytes = ByteBuffer.allocate(length);
        while (bytes.hasRemaining()) {
            assertTrue("the echo ended early", channel.read(bytes) >= 0);
        }
        return new String(bytes.array(), StandardCharsets.UTF_8);
    }

    /**
     * Netty's localhost is the loopback interface's IPv6 address with its scope
     * ("0:0:0:0:0:0:0:1%lo"): every kernel medium binds and connects to it, as
     * the JDK does (it was refused as "not an IP address").
     */
    @Test(timeout = 60_000)
    public void scopedIpv6LiteralsBindAndConnect() throws Exception {
        InetAddress scoped = Inet6Address.getByAddress(null, InetAddress.getByName("::1").getAddress(),
                NetworkInterface.getByName("lo"));
        assertTrue(scoped.getHostAddress(), scoped.getHostAddress().endsWith("%lo"));
        for (SelectorProvider provider : List.of(SelectorProvider.provider(), RdmaSelectorProvider.withTransport("tcp"),
                RdmaSelectorProvider.withTransport("shm"))) {
            try (ServerSocketChannel listener = provider.openServerSocketChannel()
                    .bind(new InetSocketAddress(scoped, 0));
                    SocketChannel client = provider.openSocketChannel()) {
                client.connect(listener.getLocalAddress());
                try (SocketChannel server = listener.accept()) {
                    client.write(ByteBuffer.wrap(new byte[] {7}));
                    ByteBuffer one = ByteBuffer.allocate(1);
                    while (one.hasRemaining()) {
                        assertTrue(server.read(one) >= 0);
                    }
                    assertEquals(provider.toString(), 7, one.get(0));
                }
            }
        }
    }

    /**
     * A listener on the wildcard address takes IPv4 and IPv6 clients and says
     * it listens on [::], as the JDK's (over tcp, [::1] was refused), and an
     * IPv4 client is named by its IPv4 address on both ends.
     */
    @Test(timeout = 60_000)
    public void aWildcardListenerTakesIpv4AndIpv6Clients() throws Exception {
        for (SelectorProvider provider : List.of(SelectorProvider.provider(), RdmaSelectorProvider.withTransport("tcp"),
                RdmaSelectorProvider.withTransport("shm"), RdmaSelectorProvider.withTransport("auto"))) {
            try (ServerSocketChannel listener = provider.openServerSocketChannel().bind(new InetSocketAddress(0))) {
                InetSocketAddress bound = (InetSocketAddress) listener.getLocalAddress();
                assertEquals(provider.toString(), new InetSocketAddress("::", bound.getPort()), bound);
                for (String client : List.of("127.0.0.1", "::1")) {
                    InetSocketAddress at = new InetSocketAddress(client, bound.getPort());
                    try (SocketChannel channel = provider.openSocketChannel()) {
                        channel.connect(at);
                        try (SocketChannel served = listener.accept()) {
                            InetSocketAddress local = (InetSocketAddress) channel.getLocalAddress();
                            assertEquals(provider + " " + client, local, served.getRemoteAddress());
                            assertEquals(provider + " " + client, at.getAddress(), local.getAddress());
                            assertEquals(provider + " " + client, at, served.getLocalAddress());
                        }
                    }
                }
            }
        }
    }

    /**
     * shm reaches this host only: a connect elsewhere fails as an unreachable
     * address does (NoRouteToHostException) and closes the channel, as a failed
     * connect does; it threw IllegalArgumentException and stayed pending.
     */
    @Test(timeout = 30_000)
    public void shmToAnotherHostIsNoRouteAndClosesTheChannel() throws Exception {
        SocketChannel channel = RdmaSelectorProvider.withTransport("shm").openSocketChannel();
        NoRouteToHostException e = assertThrows(NoRouteToHostException.class,
                () -> channel.connect(new InetSocketAddress("203.0.113.7", 7000)));
        assertTrue(e.getMessage(), e.getMessage().contains("this host only"));
        assertFalse("a failed connect closes the channel", channel.isOpen());
        assertFalse(channel.isConnectionPending());
    }

    @Test
    public void datagramChannelsAreRdmaNiosAndUnixDomainSocketsTheJdks() throws Exception {
        RdmaSelectorProvider provider = RdmaSelectorProvider.withTransport("tcp");
        try (DatagramChannel datagrams = provider.openDatagramChannel(StandardProtocolFamily.INET)) {
            assertTrue("a datagram channel its selectors take", datagrams instanceof RdmaDatagramChannel);
        }
        assertThrows(UnsupportedOperationException.class,
                () -> provider.openDatagramChannel(StandardProtocolFamily.UNIX));
        try (SocketChannel unix = provider.openSocketChannel(StandardProtocolFamily.UNIX)) {
            assertTrue("Unix domain sockets are the JDK's", !(unix instanceof RdmaSocketChannel));
        }
    }

    /** On a host without RDMA, forcing the rdma transport says so, once, clearly. */
    @Test
    public void theRdmaTransportWithoutADeviceSaysSo() throws Exception {
        RdmaSelectorProvider provider = RdmaSelectorProvider.withTransport("rdma");
        if (Providers.IN_VM) {
            try (ServerSocketChannel listener = provider.openServerSocketChannel().bind(Providers.anyPort())) {
                assertNotNull("the VM has a device: rdma listens", listener.getLocalAddress());
            }
            return;
        }
        try (ServerSocketChannel listener = provider.openServerSocketChannel()) {
            NoRdmaDeviceException e =
                    assertThrows(NoRdmaDeviceException.class, () -> listener.bind(Providers.anyPort()));
            assertTrue(e.getMessage(), e.getMessage().startsWith("no RDMA device: "));
        }
        SocketChannel client = provider.openSocketChannel();
        NoRdmaDeviceException e = assertThrows(NoRdmaDeviceException.class,
                () -> client.connect(new InetSocketAddress(Providers.HOST, 9)));
        assertTrue(e.getMessage(), e.getMessage().startsWith("no RDMA device: "));
        assertTrue("a failed connect closes the channel", !client.isOpen());
    }

    /**
     * A listener whose two-sided receive pool holds one connection (7 slots) takes
     * the first client and refuses the second (in the VM; on the host rdma has no
     * device, which the test above checks).
     */
    @Test(timeout = 120_000)
    public void aListenerWhosePoolIsSpentRefusesTheNextClient() throws Exception {
        RdmaSelectorProvider provider = withProperty("rdmanio.sendPoolSlots", "7",
                () -> RdmaSelectorProvider.withTransport(Providers.IN_VM ? "rdma" : "tcp").withRingPeers("none"));
        assertEquals(7, provider.config().sendPoolSlots);
        if (!Providers.IN_VM) {
            return; // the setting's validation is in badSettingsAreRefusedWithTheirName
        }
        try (ServerSocketChannel listener = provider.openServerSocketChannel().bind(Providers.anyPort());
                SocketChannel first = provider.openSocketChannel();
                SocketChannel second = provider.openSocketChannel()) {
            first.connect(listener.getLocalAddress());
            assertEquals("rdma-sends", ((RdmaSocketChannel) first).medium());
            assertThrows(java.net.ConnectException.class, () -> second.connect(listener.getLocalAddress()));
        }
    }

    /**
     * {@code Socket.connect(remote, timeout)} on the channel's adaptor gives up after
     * the timeout and closes the channel, as the JDK's does: against a TCP listener
     * whose backlog is full, connects hang until then (tcp, which the VM has too).
     */
    @Test(timeout = 120_000)
    public void anAdaptorConnectGivesUpAfterItsTimeout() throws Exception {
        try (ServerSocket full = new ServerSocket(0, 1, InetAddress.getByName(Providers.HOST))) {
            InetSocketAddress target = new InetSocketAddress(Providers.HOST, full.getLocalPort());
            for (SelectorProvider provider : List.of(SelectorProvider.provider(),
                    RdmaSelectorProvider.withTransport("tcp"))) {
                List<SocketChannel> held = new ArrayList<>();
                try {
                    SocketTimeoutException timedOut = null;
                    long tookNanos = 0;
                    for (int i = 0; i < 16 && timedOut == null; i++) {
                        SocketChannel channel = provider.openSocketChannel();
                        held.add(channel);
                        long start = System.nanoTime();
                        try {
                            channel.socket().connect(target, 300);
                        } catch (SocketTimeoutException e) {
                            timedOut = e;
                            tookNanos = System.nanoTime() - start;
                        }
                    }
                    assertNotNull(provider + ": no connect to the full backlog timed out", timedOut);
                    assertTrue(provider + ": gave up after " + tookNanos / 1_000_000 + " ms",
                            tookNanos < TimeUnit.SECONDS.toNanos(5));
                    assertTrue(provider + ": the timed-out channel is closed", !held.get(held.size() - 1).isOpen());
                } finally {
                    for (SocketChannel channel : held) {
                        channel.close();
                    }
                }
            }
        }
    }

    /**
     * A blocking connect that hangs (the listener's backlog is full) ends when
     * another thread closes the channel (AsynchronousCloseException) or
     * interrupts the connecting one (ClosedByInterruptException), as the
     * JDK's: over tcp the connect runs in the caller's thread, under auto
     * too on a host without RDMA (past shm, which finds no rdma-nio listener
     * there), else on a helper thread.
     */
    @Test(timeout = 120_000)
    public void aHangingConnectEndsWithACloseOrAnInterrupt() throws Exception {
        try (ServerSocket full = new ServerSocket(0, 1, InetAddress.getByName(Providers.HOST))) {
            InetSocketAddress target = new InetSocketAddress(Providers.HOST, full.getLocalPort());
            for (SelectorProvider provider : List.of(SelectorProvider.provider(), RdmaSelectorProvider.withTransport("tcp"),
                    RdmaSelectorProvider.withTransport("auto"))) {
                List<SocketChannel> held = new ArrayList<>();
                try {
                    fillBacklog(provider, target, held);
                    assertACloseAndAnInterruptEndAHangingConnect(provider.toString(), provider, target, held);
                } finally {
                    for (SocketChannel channel : held) {
                        channel.close();
                    }
                }
            }
        }
    }

    /**
     * A non-blocking connect that a selector watches gives up after the
     * provider's connect timeout (rdmanio.connectTimeoutMillis) as a blocking
     * one does: over tcp it is the kernel's connect, with no thread to time it,
     * and a look after the deadline fails it. The failed connect's socket stays
     * open while the selector watches it (its fd was closed under the
     * selector's epoll set: "cannot stop watching fd").
     */
    @Test(timeout = 120_000)
    public void aSelectedConnectGivesUpAfterTheConnectTimeout() throws Exception {
        SelectorProvider provider =
                withProperty("rdmanio.connectTimeoutMillis", "500", () -> RdmaSelectorProvider.withTransport("tcp"));
        try (Providers.EngineLog log = new Providers.EngineLog();
                ServerSocket full = new ServerSocket(0, 1, InetAddress.getByName(Providers.HOST));
                Selector selector = provider.openSelector()) {
            InetSocketAddress target = new InetSocketAddress(Providers.HOST, full.getLocalPort());
            List<SocketChannel> held = new ArrayList<>();
            try {
                fillBacklog(provider, target, held);
                SocketChannel channel = provider.openSocketChannel();
                held.add(channel);
                channel.configureBlocking(false);
                assertFalse(channel.connect(target));
                channel.register(selector, SelectionKey.OP_CONNECT);
                long start = System.nanoTime();
                SocketTimeoutException timedOut = null;
                while (timedOut == null && System.nanoTime() - start < TimeUnit.SECONDS.toNanos(10)) {
                    selector.select(100);
                    try {
                        assertFalse("connected to a full backlog", channel.finishConnect());
                    } catch (SocketTimeoutException e) {
                        timedOut = e;
                    }
                }
                assertNotNull("the connect never gave up", timedOut);
                long tookMillis = (System.nanoTime() - start) / 1_000_000;
                assertTrue("gave up after " + tookMillis + " ms", tookMillis >= 400 && tookMillis < 5_000);
                assertFalse("a failed connect closes the channel", channel.isOpen());
                selector.selectNow(); // the cancelled key leaves the epoll set
                assertFalse(log.messages.toString(), log.lostAnFd());
            } finally {
                for (SocketChannel channel : held) {
                    channel.close();
                }
            }
        }
    }

    /**
     * A blocking connect over shm, and auto's to a local rdma-nio listener:
     * when the listener's backlog is full (its acceptor waits for room, and
     * its datagram queue fills) a close or an interrupt ends the connect as
     * the JDK's, and a timeout bounds it.
     */
    @Test(timeout = 120_000)
    public void aBlockingShmConnectEndsWithACloseOrAnInterrupt() throws Exception {
        for (String transport : List.of("shm", "auto")) {
            SelectorProvider provider = RdmaSelectorProvider.withTransport(transport);
            List<SocketChannel> held = new ArrayList<>();
            try (ServerSocketChannel server = provider.openServerSocketChannel().bind(Providers.anyPort(), 1)) {
                InetSocketAddress target = (InetSocketAddress) server.getLocalAddress();
                SocketChannel first = provider.openSocketChannel();
                held.add(first);
                first.connect(target);
                fillBacklog(provider, target, held);
                assertACloseAndAnInterruptEndAHangingConnect(transport, provider, target, held);
            } finally {
                for (SocketChannel channel : held) {
                    channel.close();
                }
            }
        }
    }

    /**
     * Under auto, a blocking connect to a plain TCP listener (no rdma-nio
     * listener there, so shm refuses) and a refused one behave as the JDK's
     * (over RDMA first where the host has a device).
     */
    @Test(timeout = 120_000)
    public void autoPastShmConnectsOverTcp() throws Exception {
        SelectorProvider auto = RdmaSelectorProvider.withTransport("auto");
        InetSocketAddress target;
        try (ServerSocket plain = new ServerSocket(0, 50, InetAddress.getByName(Providers.HOST))) {
            target = new InetSocketAddress(Providers.HOST, plain.getLocalPort());
            try (SocketChannel client = auto.openSocketChannel()) {
                assertTrue(client.connect(target));
                client.write(ByteBuffer.wrap(new byte[] {42}));
                try (java.net.Socket served = plain.accept()) {
                    assertEquals(42, served.getInputStream().read());
                }
            }
        }
        SocketChannel refused = auto.openSocketChannel();
        assertThrows(java.net.ConnectException.class, () -> refused.connect(target));
        assertFalse("a failed connect closes the channel", refused.isOpen());
    }

    /**
     * A blocking connect to {@code target}, which does not answer, ends with
     * AsynchronousCloseException when another thread closes the channel, and
     * with ClosedByInterruptException (the channel closed) when the connecting
     * thread is interrupted. The channels join {@code held}.
     */
    private static void assertACloseAndAnInterruptEndAHangingConnect(String what, SelectorProvider provider,
            InetSocketAddress target, List<SocketChannel> held) throws Exception {
        SocketChannel closed = provider.openSocketChannel();
        held.add(closed);
        CompletableFuture<Throwable> ended = Providers.failureOf(() -> closed.connect(target));
        Thread.sleep(200);
        closed.close();
        Throwable byClose = ended.get(20, TimeUnit.SECONDS);
        assertTrue(what + ": " + byClose, byClose instanceof AsynchronousCloseException);

        SocketChannel interrupted = provider.openSocketChannel();
        held.add(interrupted);
        CompletableFuture<Throwable> failure = new CompletableFuture<>();
        Thread connecting = new Thread(() -> {
            try {
                interrupted.connect(target);
                failure.complete(null);
            } catch (Throwable t) {
                failure.complete(t);
            }
        });
        connecting.start();
        Thread.sleep(200);
        connecting.interrupt();
        Throwable byInterrupt = failure.get(20, TimeUnit.SECONDS);
        assertTrue(what + ": " + byInterrupt, byInterrupt instanceof ClosedByInterruptException);
        assertFalse(what, interrupted.isOpen());
    }

    /** Connects to {@code target} until a connect hangs (its backlog is full); keeps the channels in {@code held}. */
    private static void fillBacklog(SelectorProvider provider, InetSocketAddress target, List<SocketChannel> held)
            throws IOException {
        // An shm listener's backlog is its Unix datagram queue too (the kernel's max_dgram_qlen, 10 by default).
        java.nio.file.Path queue = java.nio.file.Path.of("/proc/sys/net/unix/max_dgram_qlen");
        int attempts = 16 + (java.nio.file.Files.isReadable(queue)
                ? Integer.parseInt(java.nio.file.Files.readString(queue).trim()) : 0);
        for (int i = 0; i < attempts; i++) {
            SocketChannel channel = provider.openSocketChannel();
            held.add(channel);
            try {
                channel.socket().connect(target, 300);
            } catch (SocketTimeoutException e) {
                return;
            }
        }
        throw new AssertionError(provider + ": no connect hung");
    }

    /** Runs {@code make} with a system property set, then restores it. */
    private static <T> T withProperty(String name, String value, java.util.function.Supplier<T> make) {
        String old = System.getProperty(name);
        System.setProperty(name, value);
        try {
            return make.get();
        } finally {
            if (old == null) {
                System.clearProperty(name);
            } else {
                System.setProperty(name, old);
            }
        }
    }

    @Test
    public void badSettingsAreRefusedWithTheirName() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> withProperty("rdmanio.poll", "sometimes", RdmaSelectorProvider::new));
        assertEquals("-Drdmanio.poll=sometimes: invalid argument: unknown polling mode 'sometimes': use busy, blocking or adaptive",
                e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> RdmaSelectorProvider.withTransport("carrier-pigeon"));
        IllegalArgumentException peers = assertThrows(IllegalArgumentException.class,
                () -> RdmaSelectorProvider.withTransport("tcp").withRingPeers("replica-1"));
        assertEquals("-Drdmanio.ringPeers=replica-1 is not all, none or a comma-separated list of IP addresses",
                peers.getMessage());
        RdmaSelectorProvider.withTransport("tcp").withRingPeers(" 192.0.2.1, 192.0.2.2 ");
        IllegalArgumentException pool = assertThrows(IllegalArgumentException.class,
                () -> withProperty("rdmanio.sendPoolSlots", "3", RdmaSelectorProvider::new));
        assertEquals("-Drdmanio.sendPoolSlots=3 is not a number in [7, 4194304]", pool.getMessage());
    }
}
