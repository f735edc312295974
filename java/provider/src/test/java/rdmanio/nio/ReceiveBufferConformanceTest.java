package rdmanio.nio;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;

import java.io.ByteArrayOutputStream;
import java.net.StandardSocketOptions;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.util.List;
import java.util.stream.Collectors;

import org.junit.Test;
import org.junit.runners.Parameterized.Parameters;

/**
 * What a connection holds unread when an application sized its buffers for
 * TCP: Linux doubles SO_RCVBUF and SO_SNDBUF for its bookkeeping, and a peer
 * that stops reading still leaves room for many small writes. Kafka's TLS
 * layer writes each message as two records (a 4-byte size, then the body)
 * with 4 KiB buffers, and its tests send 20 such messages to a peer that
 * stopped reading: over shm a ring of 4 KiB took 18, as each record pays a
 * header and alignment, and the 19th waited for good.
 *
 * <p>Runs on every provider but the two-sided RDMA path, whose credits count
 * slots, not bytes (`SendOptions`: four data slots a connection), so how
 * many small writes it holds unread is another matter.
 */
public class ReceiveBufferConformanceTest extends EveryProvider {
    @Parameters(name = "{0}")
    public static List<Object[]> providers() {
        return Providers.all().stream().filter(p -> !"rdma-nio/rdma-sends".equals(p[0]))
                .collect(Collectors.toList());
    }

    @Test(timeout = 60_000)
    public void smallWritesToAPeerThatDoesNotReadFitInBuffersSizedForTcp() throws Exception {
        int messages = 30;
        byte[] body = Providers.pattern(100, 7);
        try (ServerSocketChannel listener = provider.openServerSocketChannel().bind(Providers.anyPort());
                SocketChannel client = provider.openSocketChannel()) {
            client.setOption(StandardSocketOptions.SO_RCVBUF, 4096);
            client.setOption(StandardSocketOptions.SO_SNDBUF, 4096);
            client.connect(listener.getLocalAddress());
            try (SocketChannel server = listener.accept()) {
                client.configureBlocking(false);
                ByteArrayOutputStream sent = new ByteArrayOutputStream();
                for (int i = 0; i < messages; i++) {
                    ByteBuffer size = ByteBuffer.allocate(4).putInt(i).flip();
                    assertEquals("the size of message " + i + ", the peer reading nothing", 4, client.write(size));
                    assertEquals("the body of message " + i, body.length, client.write(ByteBuffer.wrap(body)));
                    sent.write(size.array());
                    sent.write(body);
                }
                assertArrayEquals("every byte, in order", sent.toByteArray(),
                        Providers.readFully(server, sent.size()));
            }
        }
    }
}
