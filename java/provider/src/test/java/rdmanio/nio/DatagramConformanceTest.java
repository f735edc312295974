package rdmanio.nio;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertSame;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.io.IOException;
import java.net.DatagramPacket;
import java.net.DatagramSocket;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.PortUnreachableException;
import java.net.SocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.AsynchronousCloseException;
import java.nio.channels.DatagramChannel;
import java.nio.channels.NotYetConnectedException;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.spi.SelectorProvider;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import org.junit.Test;
import org.junit.runners.Parameterized.Parameters;

/**
 * {@link DatagramChannel} on the provider's own selectors, after what
 * OpenJDK's DatagramChannel tests found: the JDK's provider, the reference,
 * and rdma-nio (which handed out the JDK's channel, refused by its selectors
 * with IllegalSelectorException).
 */
public class DatagramConformanceTest extends EveryProvider {
    @Parameters(name = "{0}")
    public static List<Object[]> providers() {
        return List.of(new Object[] {"jdk", SelectorProvider.provider()},
                new Object[] {"rdma-nio", RdmaSelectorProvider.withTransport("tcp")});
    }

    private static final InetAddress LOOPBACK = InetAddress.getLoopbackAddress();

    private DatagramChannel bound() throws Exception {
        return provider.openDatagramChannel().bind(new InetSocketAddress(LOOPBACK, 0));
    }

    private static ByteBuffer text(String text) {
        return ByteBuffer.wrap(text.getBytes(StandardCharsets.UTF_8));
    }

    /** A change of blocking mode waits for a blocking receive, as the JDK's (it returned at once). */
    @Test(timeout = 60_000)
    public void aBlockingModeChangeWaitsForABlockingReceive() throws Exception {
        try (DatagramChannel server = bound(); DatagramChannel client = bound()) {
            CompletableFuture<SocketAddress> received = CompletableFuture.supplyAsync(() -> {
                try {
                    return server.receive(ByteBuffer.allocate(8));
                } catch (IOException e) {
                    throw new RuntimeException(e);
                }
            });
            Providers.assertModeChangeWaitsFor(server, received,
                    () -> client.send(text("ping"), server.getLocalAddress()));
            assertEquals(client.getLocalAddress(), received.get());
        }
    }

    @Test(timeout = 60_000)
    public void aSelectorServesDatagramsAndTellsTheSenderOnce() throws Exception {
        try (Selector selector = provider.openSelector(); DatagramChannel server = bound();
                DatagramChannel client = bound()) {
            server.configureBlocking(false);
            SelectionKey key = server.register(selector, SelectionKey.OP_READ);
            assertEquals("nothing sent", 0, selector.selectNow());
            assertNull(server.receive(ByteBuffer.allocate(8)));

            SocketAddress previous = null;
            for (int i = 0; i < 3; i++) {
                client.send(text("ping " + i), server.getLocalAddress());
                assertEquals(1, selector.select(10_000));
                assertTrue(selector.selectedKeys().remove(key) && key.isReadable());
                ByteBuffer in = ByteBuffer.allocate(4); // shorter: the rest of the datagram is dropped
                SocketAddress sender = server.receive(in);
                assertEquals(client.getLocalAddress(), sender);
                assertArrayEquals("ping".getBytes(StandardCharsets.UTF_8), in.array());
                if (previous != null) {
                    assertSame("a sender that repeats is the same object", previous, sender);
                }
                previous = sender;
            }
            assertNull("one datagram per send", server.receive(ByteBuffer.allocate(8)));
        }
    }

    @Test(timeout = 60_000)
    public void aConnectedChannelReadsItsPeerOnlyAndLearnsWhenNobodyListens() throws Exception {
        DatagramChannel b = bound(); // closed midway
        try (DatagramChannel a = bound(); DatagramChannel stranger = bound()) {
            assertThrows(NotYetConnectedException.class, () -> a.read(ByteBuffer.allocate(8)));
            SocketAddress bound = a.getLocalAddress();
            a.connect(b.getLocalAddress());
            stranger.send(text("stranger"), a.getLocalAddress());
            b.send(text("peer"), a.getLocalAddress());
            ByteBuffer in = ByteBuffer.allocate(16);
            assertEquals(4, a.read(in));
            assertEquals("peer", new String(in.array(), 0, 4, StandardCharsets.UTF_8));

            a.disconnect();
            assertEquals("a disconnect keeps the address", bound, a.getLocalAddress());

            SocketAddress gone = b.getLocalAddress();
            b.close();
            a.connect(gone);
            a.write(text("anyone?"));
            a.configureBlocking(false);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
            assertThrows(PortUnreachableException.class, () -> {
                while (System.nanoTime() < deadline) {
                    a.read(ByteBuffer.allocate(8));
                    Thread.sleep(1);
                }
            });
        } finally {
            b.close();
        }
    }

    @Test(timeout = 60_000)
    public void theSocketAdaptorReusesAPacketAndItsTimeoutEnds() throws Exception {
        try (DatagramChannel server = bound(); DatagramChannel client = bound()) {
            DatagramSocket socket = server.socket();
            DatagramPacket packet = new DatagramPacket(new byte[64], 3, 50);
            for (String message : new String[] {"a longer first datagram", "short"}) {
                client.send(text(message), server.getLocalAddress());
                socket.receive(packet);
                assertEquals(message, new String(packet.getData(), 3, packet.getLength(), StandardCharsets.UTF_8));
                assertEquals(client.getLocalAddress(), packet.getSocketAddress());
            }
            client.send(text("a datagram longer than the last one"), server.getLocalAddress());
            socket.receive(packet);
            assertEquals("the packet's buffer length stays", 35, packet.getLength());

            socket.setSoTimeout(50);
            assertThrows(java.net.SocketTimeoutException.class, () -> socket.receive(packet));
        }
    }

    @Test(timeout = 60_000)
    public void aCloseEndsABlockedReceive() throws Exception {
        DatagramChannel channel = bound();
        CompletableFuture<Throwable> receive = Providers.failureOf(() -> channel.receive(ByteBuffer.allocate(8)));
        Thread.sleep(100);
        channel.close();
        assertEquals(AsynchronousCloseException.class, receive.get(10, TimeUnit.SECONDS).getClass());
    }
}
