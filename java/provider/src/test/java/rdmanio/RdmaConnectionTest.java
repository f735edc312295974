package rdmanio;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNotEquals;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.io.IOException;
import java.net.ConnectException;
import java.net.InetSocketAddress;
import java.net.SocketTimeoutException;
import java.nio.ByteBuffer;
import java.nio.channels.ClosedChannelException;
import java.nio.channels.UnresolvedAddressException;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import org.junit.Test;
import org.junit.function.ThrowingRunnable;

/**
 * Connections over a real verbs device. The Soft-RoCE VM harness sets
 * RDMANIO_TEST_DEVICE and RDMANIO_TEST_ADDR, and there every test runs over that
 * device. Without them (a host with no RDMA), each test checks instead that the
 * operation reports the missing device clearly: the normal case on such a host.
 */
public class RdmaConnectionTest {
    private static final int TIMEOUT_MILLIS = 20_000;
    private static final String DEVICE = System.getenv("RDMANIO_TEST_DEVICE");
    private static final String ADDRESS = System.getenv("RDMANIO_TEST_ADDR");

    /** Without the harness's device, checks that {@code attempt} says there is none, and returns true. */
    private static boolean checkedNoDevice(ThrowingRunnable attempt) {
        if (DEVICE != null) {
            return false;
        }
        NoRdmaDeviceException e = assertThrows(NoRdmaDeviceException.class, attempt);
        assertTrue(e.getMessage(), e.getMessage().startsWith("no RDMA device: "));
        System.out.println("host without RDMA, as expected: " + e.getMessage());
        return true;
    }

    private static InetSocketAddress anyPort() {
        return new InetSocketAddress(ADDRESS == null ? "127.0.0.1" : ADDRESS, 0);
    }

    /** Accepts one connection and echoes its messages until end of stream; completes with the count. */
    private static CompletableFuture<Integer> echoServer(RdmaListener listener) {
        return CompletableFuture.supplyAsync(() -> {
            try (RdmaConnection server = listener.accept(TIMEOUT_MILLIS)) {
                assertEquals(DEVICE, server.deviceName());
                System.out.println("JUnit ping-pong server on " + server.deviceName()
                        + ", queue pair " + server.queuePairNumber());
                ByteBuffer buffer = ByteBuffer.allocateDirect(RdmaConnection.MAX_MESSAGE_SIZE);
                int echoed = 0;
                while (server.receive(buffer.clear(), TIMEOUT_MILLIS) >= 0) {
                    server.send(buffer.flip(), TIMEOUT_MILLIS);
                    echoed++;
                }
                return echoed;
            } catch (IOException e) {
                throw new RuntimeException(e);
            }
        });
    }

    @Test
    public void deviceListMatchesTheEnvironment() throws IOException {
        if (checkedNoDevice(RdmaDevices::names)) {
            return;
        }
        assertTrue(RdmaDevices.names() + " lacks " + DEVICE, RdmaDevices.names().contains(DEVICE));
    }

    @Test
    public void messagesAreEchoedIntactOverRdma() throws Exception {
        if (checkedNoDevice(() -> RdmaListener.bind(anyPort(), 8))) {
            return;
        }
        try (RdmaListener listener = RdmaListener.bind(anyPort(), 8)) {
            assertNotEquals(0, listener.localAddress().getPort());
            CompletableFuture<Integer> server = echoServer(listener);
            int rounds = 100;
            try (RdmaConnection client = RdmaConnection.connect(listener.localAddress(), TIMEOUT_MILLIS)) {
                assertEquals(DEVICE, client.deviceName());
                System.out.println("JUnit ping-pong client on " + client.deviceName()
                        + ", queue pair " + client.queuePairNumber());
                for (int round = 0; round < rounds; round++) {
                    if (round == rounds / 2) {
                        client.setBusyPoll(200); // the second half polls before it sleeps
                    }
                    // Alternate heap and direct buffers, with sizes up to the maximum.
                    boolean direct = round % 2 == 0;
                    int size = (round * 397) % (RdmaConnection.MAX_MESSAGE_SIZE + 1);
                    byte[] bytes = new byte[size];
                    for (int i = 0; i < size; i++) {
                        bytes[i] = (byte) (i * 31 + round);
                    }
                    ByteBuffer message = direct ? ByteBuffer.allocateDirect(size).put(bytes).flip() : ByteBuffer.wrap(bytes);
                    client.send(message, TIMEOUT_MILLIS);
                    assertFalse("send consumes the message", message.hasRemaining());

                    ByteBuffer reply = direct ? ByteBuffer.allocateDirect(RdmaConnection.MAX_MESSAGE_SIZE)
                            : ByteBuffer.allocate(RdmaConnection.MAX_MESSAGE_SIZE);
                    assertEquals(size, client.receive(reply, TIMEOUT_MILLIS));
                    assertEquals(size, reply.position());
                    byte[] echoed = new byte[size];
                    reply.flip().get(echoed);
                    assertArrayEquals("round " + round, bytes, echoed);
                }
            }
            assertEquals(rounds, (int) server.get(TIMEOUT_MILLIS, TimeUnit.MILLISECONDS));
        }
    }

    @Test
    public void connectingWhereNothingListensIsRefused() throws IOException {
        if (checkedNoDevice(() -> RdmaConnection.connect(new InetSocketAddress("127.0.0.1", 9), TIMEOUT_MILLIS))) {
            return;
        }
        InetSocketAddress closed;
        try (RdmaListener listener = RdmaListener.bind(anyPort(), 1)) {
            closed = listener.localAddress();
        }
        ConnectException e = assertThrows(ConnectException.class, () -> RdmaConnection.connect(closed, TIMEOUT_MILLIS));
        assertTrue(e.getMessage(), e.getMessage().contains("refused"));
    }

    @Test
    public void aSilentPeerMakesReceiveTimeOut() throws Exception {
        if (checkedNoDevice(() -> RdmaListener.bind(anyPort(), 1))) {
            return;
        }
        try (RdmaListener listener = RdmaListener.bind(anyPort(), 1)) {
            CompletableFuture<RdmaConnection> server = CompletableFuture.supplyAsync(() -> {
                try {
                    return listener.accept(TIMEOUT_MILLIS);
                } catch (IOException e) {
                    throw new RuntimeException(e);
                }
            });
            try (RdmaConnection client = RdmaConnection.connect(listener.localAddress(), TIMEOUT_MILLIS);
                    RdmaConnection silent = server.get(TIMEOUT_MILLIS, TimeUnit.MILLISECONDS)) {
                assertTrue(silent.isOpen());
                assertThrows(SocketTimeoutException.class, () -> client.receive(ByteBuffer.allocate(16), 100));
            }
        }
    }

    @Test
    public void closedConnectionsRefuseFurtherUse() throws Exception {
        if (checkedNoDevice(() -> RdmaListener.bind(anyPort(), 1))) {
            return;
        }
        try (RdmaListener listener = RdmaListener.bind(anyPort(), 1)) {
            CompletableFuture<Integer> server = echoServer(listener);
            RdmaConnection client = RdmaConnection.connect(listener.localAddress(), TIMEOUT_MILLIS);
            assertTrue(client.isOpen());
            client.close();
            client.close(); // idempotent
            assertFalse(client.isOpen());
            assertThrows(ClosedChannelException.class, () -> client.send(ByteBuffer.allocate(1), TIMEOUT_MILLIS));
            assertThrows(ClosedChannelException.class, () -> client.receive(ByteBuffer.allocate(1), TIMEOUT_MILLIS));
            assertThrows(ClosedChannelException.class, client::deviceName);
            assertEquals("the server saw end of stream", 0, (int) server.get(TIMEOUT_MILLIS, TimeUnit.MILLISECONDS));
        }
        RdmaListener closed = RdmaListener.bind(anyPort(), 1);
        closed.close();
        assertThrows(ClosedChannelException.class, () -> closed.accept(0));
    }

    @Test
    public void oversizedMessagesAreRefused() throws Exception {
        if (checkedNoDevice(() -> RdmaListener.bind(anyPort(), 1))) {
            return;
        }
        try (RdmaListener listener = RdmaListener.bind(anyPort(), 1)) {
            CompletableFuture<Integer> server = echoServer(listener);
            try (RdmaConnection client = RdmaConnection.connect(listener.localAddress(), TIMEOUT_MILLIS)) {
                int tooBig = RdmaConnection.MAX_MESSAGE_SIZE + 1;
                for (ByteBuffer message : new ByteBuffer[] {ByteBuffer.allocate(tooBig), ByteBuffer.allocateDirect(tooBig)}) {
                    IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                            () -> client.send(message, TIMEOUT_MILLIS));
                    assertTrue(e.getMessage(), e.getMessage().contains("exceeds the maximum message size"));
                    assertEquals("nothing was consumed", tooBig, message.remaining());
                }
            }
            assertEquals(0, (int) server.get(TIMEOUT_MILLIS, TimeUnit.MILLISECONDS));
        }
    }

    @Test
    public void aNegativeBusyPollTimeIsRefused() throws Exception {
        if (checkedNoDevice(() -> RdmaListener.bind(anyPort(), 1))) {
            return;
        }
        try (RdmaListener listener = RdmaListener.bind(anyPort(), 1)) {
            CompletableFuture<Integer> server = echoServer(listener);
            try (RdmaConnection client = RdmaConnection.connect(listener.localAddress(), TIMEOUT_MILLIS)) {
                IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> client.setBusyPoll(-1));
                assertTrue(e.getMessage(), e.getMessage().contains("negative busy-poll time -1 us"));
            }
            assertEquals(0, (int) server.get(TIMEOUT_MILLIS, TimeUnit.MILLISECONDS));
        }
    }

    @Test
    public void unresolvedAddressesAreRefusedBeforeAnyNativeCall() {
        InetSocketAddress unresolved = InetSocketAddress.createUnresolved("replica-1.invalid", 7000);
        assertThrows(UnresolvedAddressException.class, () -> RdmaConnection.connect(unresolved, TIMEOUT_MILLIS));
        assertThrows(UnresolvedAddressException.class, () -> RdmaListener.bind(unresolved, 1));
    }
}
