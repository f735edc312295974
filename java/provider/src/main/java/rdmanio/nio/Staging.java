package rdmanio.nio;

import java.nio.ByteBuffer;

/**
 * A direct buffer that heap buffers are copied through on their way to and
 * from native code, one per channel direction (its lock guards it). It grows
 * to the largest transfer asked for, up to {@link #MAX}, and stays: no
 * allocation per operation once warm.
 */
final class Staging {
    static final int MAX = 256 * 1024;
    private static final int MIN = 8 * 1024;

    private ByteBuffer buffer;

    /** A cleared direct buffer of at least {@code min(wanted, MAX)} bytes. */
    ByteBuffer get(int wanted) {
        int size = Math.min(Math.max(wanted, MIN), MAX);
        if (buffer == null || buffer.capacity() < size) {
            buffer = ByteBuffer.allocateDirect(size);
        }
        return buffer.clear();
    }
}
