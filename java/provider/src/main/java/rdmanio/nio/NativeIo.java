package rdmanio.nio;

import java.io.IOException;
import java.nio.ByteBuffer;

/**
 * One native read or write of a channel's socket with any kind of buffer:
 * direct buffers go to native code as they are, heap buffers through the
 * thread's {@link Staging} buffer. The caller holds the direction's lock and
 * brackets the call as an operation on the socket.
 */
final class NativeIo {
    private NativeIo() {}

    /**
     * Reads into {@code dst}: a count, {@link SocketNative#EOF} or
     * {@link SocketNative#UNAVAILABLE}; a negative timeout waits forever.
     */
    static int read(long socket, ByteBuffer dst, boolean block, int timeoutMillis)
            throws IOException {
        int position = dst.position();
        int wanted = dst.remaining();
        if (wanted == 0) {
            return 0;
        }
        if (dst.isDirect()) {
            int n = SocketNative.read(socket, dst, position, wanted, block, timeoutMillis);
            if (n > 0) {
                dst.position(position + n);
            }
            return n;
        }
        ByteBuffer direct = Staging.get(wanted);
        int n = SocketNative.read(socket, direct, 0, Math.min(wanted, direct.capacity()), block, timeoutMillis);
        if (n > 0) {
            dst.put(direct.limit(n));
        }
        return n;
    }

    /** Writes from {@code src}: all of it when {@code block}, else what the peer has room for. */
    static int write(long socket, ByteBuffer src, boolean block) throws IOException {
        int position = src.position();
        int length = src.remaining();
        if (length == 0) {
            return 0;
        }
        if (src.isDirect()) {
            int n = SocketNative.write(socket, src, position, length, block);
            src.position(position + n);
            return n;
        }
        int total = 0;
        while (src.hasRemaining()) {
            ByteBuffer direct = Staging.get(src.remaining());
            int chunk = Math.min(src.remaining(), direct.capacity());
            direct.put(0, src, src.position(), chunk);
            int n = SocketNative.write(socket, direct, 0, chunk, block);
            src.position(src.position() + n);
            total += n;
            if (n < chunk) {
                break; // no more room (non-blocking)
            }
        }
        return total;
    }
}
