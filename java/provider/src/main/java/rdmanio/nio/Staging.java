package rdmanio.nio;

import java.nio.ByteBuffer;

/**
 * The direct buffer that heap buffers are copied through on their way to and
 * from native code: one per thread, as the JDK's channels keep theirs (its
 * temporary buffer cache), taken and given back within one native call. A
 * buffer per channel, as before, held its native memory until a GC collected
 * the closed channel: 16 KiB and more per connection, which a JVM whose heap
 * stays quiet gathered by the hundred megabytes under connection churn. It
 * grows to the largest transfer asked for, up to {@link #MAX}, and stays.
 */
final class Staging {
    static final int MAX = 256 * 1024;
    private static final int MIN = 8 * 1024;
    private static final ThreadLocal<ByteBuffer> BUFFER = new ThreadLocal<>();

    private Staging() {}

    /** This thread's buffer, cleared, of at least {@code min(wanted, MAX)} bytes. */
    static ByteBuffer get(int wanted) {
        int size = Math.min(Math.max(wanted, MIN), MAX);
        ByteBuffer buffer = BUFFER.get();
        if (buffer == null || buffer.capacity() < size) {
            buffer = ByteBuffer.allocateDirect(size);
            BUFFER.set(buffer);
        }
        return buffer.clear();
    }
}
