package rdmanio.nio;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNotEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.io.ByteArrayOutputStream;
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
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import org.junit.Test;

/**
 * Closes while the Soft-RoCE VM's wire (tests/vm/wire) drops every packet for
 * longer than any linger: the peer must read every byte written before the
 * close, then the end of stream, once the wire is back, and the close itself
 * must not wait for the wire, as with the JDK's provider over TCP (run next to
 * each RDMA path as the reference). Both a blocking channel and a non-blocking
 * one registered with a selector that never selects again (which holds the
 * channel until its next select).
 *
 * <p>Needs the VM's wire, so Gradle's host run leaves it out; tests/vm/junit runs it.
 */
public class ImpairedWireTest {
    /** Longer than a close ever waited for its writes (2 s), shorter than RDMA's retries last (about 7 s). */
    private static final long OUTAGE_MILLIS = 2500;
    /** A close returns well before the outage ends. */
    private static final long CLOSE_RETURNS_WITHIN_MILLIS = 1500;
    /** Fits every path's buffers and credits at once (two-sided sends: 4 slots of 2 KiB). */
    private static final int BYTES = 6 * 1024;

    /** One connection across the wire whose client writes, then closes in the outage. */
    private static final class Closing {
        final String name;
        final ServerSocketChannel listener;
        final SocketChannel client;
        final SocketChannel server;
        final Selector selector;
        CompletableFuture<byte[]> received;
        long closeMillis;

        Closing(String name, SelectorProvider provider, String far, boolean registered) throws IOException {
            this.name = name + (registered ? ", registered" : ", blocking");
            listener = provider.openServerSocketChannel().bind(new InetSocketAddress(far, 0));
            client = provider.openSocketChannel();
            client.connect(listener.getLocalAddress());
            server = listener.accept();
            InetAddress near = ((InetSocketAddress) client.getLocalAddress()).getAddress();
            assertNotEquals("the connection crosses the wire", InetAddress.getByName(far), near);
            selector = registered ? provider.openSelector() : null;
            if (registered) {
                client.configureBlocking(false);
                client.register(selector, SelectionKey.OP_READ);
                selector.selectNow();
            }
            received = CompletableFuture.supplyAsync(this::readToEnd);
        }

        /** Writes the pattern (it fits every medium's buffers at once) and closes; times the close. */
        void writeAndClose() throws IOException {
            ByteBuffer data = ByteBuffer.wrap(pattern());
            while (data.hasRemaining()) {
                if (client.write(data) == 0) {
                    fail(name + ": the write would block with " + data.remaining() + " bytes left");
                }
            }
            long start = System.nanoTime();
            client.close();
            closeMillis = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start);
        }

        private byte[] readToEnd() {
            ByteArrayOutputStream got = new ByteArrayOutputStream();
            ByteBuffer buf = ByteBuffer.allocate(65536);
            try {
                while (server.read(buf) >= 0) {
                    got.write(buf.array(), 0, buf.position());
                    buf.clear();
                }
            } catch (IOException e) {
                throw new IllegalStateException(name + ": read after " + got.size() + " bytes: " + e, e);
            }
            return got.toByteArray();
        }

        void close() throws IOException {
            server.close();
            listener.close();
            if (selector != null) {
                selector.close();
            }
        }
    }

    @Test
    public void aCloseDeliversWhatAnOutageHeldUpWithoutWaitingForIt() throws Exception {
        VmWire wire = VmWire.required();
        List<Object[]> providers = new ArrayList<>(Providers.all());
        providers.add(0, new Object[] {"jdk", SelectorProvider.provider()});
        List<Closing> closings = new ArrayList<>();
        try {
            for (Object[] named : providers) {
                for (boolean registered : new boolean[] {false, true}) {
                    closings.add(new Closing((String) named[0], (SelectorProvider) named[1], wire.far, registered));
                }
            }
            wire.run("impair", "loss", "100%");
            long outage = System.nanoTime();
            try {
                for (Closing closing : closings) {
                    closing.writeAndClose();
                }
                Thread.sleep(Math.max(0, OUTAGE_MILLIS - TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - outage)));
            } finally {
                wire.run("clear");
            }
            for (Closing closing : closings) {
                byte[] got = closing.received.get(Providers.TIMEOUT_MILLIS, TimeUnit.MILLISECONDS);
                System.out.printf("%s: the close took %d ms; the server read %d of %d bytes%n", closing.name,
                    closing.closeMillis, got.length, BYTES);
                assertEquals(closing.name + ": bytes lost at close", BYTES, got.length);
                assertArrayEquals(closing.name + ": the stream differs", pattern(), got);
                assertTrue(closing.name + ": the close waited " + closing.closeMillis + " ms for the wire",
                    closing.closeMillis < CLOSE_RETURNS_WITHIN_MILLIS);
            }
        } finally {
            for (Closing closing : closings) {
                closing.close();
            }
        }
    }

    private static byte[] pattern() {
        byte[] data = new byte[BYTES];
        for (int i = 0; i < data.length; i++) {
            data[i] = (byte) ((i * 2654435761L) >>> 13);
        }
        return data;
    }
}
