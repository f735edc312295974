package rdmanio.nio;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.SelectionKey;

import org.junit.Test;

import rdmanio.RdmaException;

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

    // Read, write and select skip the jni crate's frame (export_lean!): what
    // fails in them must still arrive as the JDK's exceptions, never crash the JVM.

    @Test
    public void aReadOrWriteOfABufferThatIsNotDirectOrTooShortIsAnIllegalArgument() throws Exception {
        long socket = SocketNative.open(0);
        try {
            IllegalArgumentException heap = assertThrows(IllegalArgumentException.class,
                    () -> SocketNative.read(socket, ByteBuffer.allocate(8), 0, 8, false, -1));
            assertTrue(heap.getMessage(), heap.getMessage().contains("not a direct buffer"));
            IllegalArgumentException none = assertThrows(IllegalArgumentException.class,
                    () -> SocketNative.write(socket, null, 0, 8, false));
            assertTrue(none.getMessage(), none.getMessage().contains("no buffer"));
            IllegalArgumentException beyond = assertThrows(IllegalArgumentException.class,
                    () -> SocketNative.write(socket, ByteBuffer.allocateDirect(8), 4, 8, false));
            assertTrue(beyond.getMessage(), beyond.getMessage().contains("range 4+8 exceeds the buffer's capacity 8"));
        } finally {
            SocketNative.close(socket, true, false);
            SocketNative.release(socket);
        }
    }

    @Test
    public void aPanicInASelectIsAnRdmaExceptionAndThePollerWorksOn() throws Exception {
        ByteBuffer interests = ByteBuffer.allocateDirect(64).order(ByteOrder.nativeOrder());
        ByteBuffer ready = ByteBuffer.allocateDirect(128).order(ByteOrder.nativeOrder());
        long poller = SocketNative.pollerOpen("blocking", 0, interests, ready);
        try {
            // Interests at an odd address: the engine's alignment assertion panics inside the select.
            ByteBuffer misaligned = ByteBuffer.allocateDirect(65).position(1).slice();
            SocketNative.pollerBuffers(poller, misaligned, ready);
            RdmaException e = assertThrows(RdmaException.class, () -> SocketNative.pollerSelect(poller, 1, 0));
            assertTrue(e.getMessage(), e.getMessage().contains("rdma-nio internal error"));
            SocketNative.pollerBuffers(poller, interests, ready);
            assertEquals(0, SocketNative.pollerSelect(poller, 1, 0));
        } finally {
            SocketNative.pollerClose(poller);
        }
    }
}
