package rdmanio.nio;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.nio.channels.SelectionKey;

import org.junit.Test;

/** What the provider and the engine share: the constants the Java side reads from it, and the names it parses. */
public class SocketNativeTest {
    @Test
    public void theEnginesReadyOpsAreSelectionKeysBits() {
        assertEquals(SelectionKey.OP_READ, SocketNative.READ);
        assertEquals(SelectionKey.OP_WRITE, SocketNative.WRITE);
        assertEquals(SelectionKey.OP_CONNECT, SocketNative.CONNECT);
        assertEquals(SelectionKey.OP_ACCEPT, SocketNative.ACCEPT);
    }

    @Test
    public void readStatusesAreNegativeAndDistinct() {
        // What RdmaSocketChannel returns as is (-1, as the JDK's IOStatus.EOF) or maps to 0.
        assertEquals(-1, SocketNative.EOF);
        assertTrue(SocketNative.UNAVAILABLE < 0 && SocketNative.UNAVAILABLE != SocketNative.EOF);
    }

    @Test
    public void theDocumentedNamesAreTheEnginesNames() {
        for (String transport : new String[] {"auto", "rdma", "shm", "tcp"}) {
            SocketNative.checkName(transport, false);
        }
        for (String mode : new String[] {"adaptive", "busy", "blocking"}) {
            SocketNative.checkName(mode, true);
        }
        IllegalArgumentException e =
                assertThrows(IllegalArgumentException.class, () -> SocketNative.checkName("carrier-pigeon", false));
        assertEquals("invalid argument: unknown transport 'carrier-pigeon': use rdma, shm, tcp or auto", e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> SocketNative.checkName("tcp", true));
    }
}
