package rdmanio.nio;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.Pipe;
import java.util.Objects;
import java.util.concurrent.locks.ReentrantLock;

/**
 * The writing end of an {@link RdmaPipe}: writes as a socket channel's (a
 * blocking write writes all; a non-blocking one what the pipe has room for).
 */
final class PipeSinkChannel extends Pipe.SinkChannel implements RdmaChannel {
    private final NativeSocket socket;
    private final ReentrantLock writeLock = new ReentrantLock();

    PipeSinkChannel(RdmaSelectorProvider provider, NativeSocket socket) {
        super(provider);
        this.socket = socket;
    }

    @Override
    public int write(ByteBuffer src) throws IOException {
        Objects.requireNonNull(src, "src");
        writeLock.lock();
        try {
            return write(src, true);
        } finally {
            writeLock.unlock();
        }
    }

    @Override
    public long write(ByteBuffer[] srcs, int offset, int length) throws IOException {
        RdmaSocketChannel.checkBuffers(srcs, offset, length, false);
        writeLock.lock();
        try {
            long total = 0;
            for (int i = offset; i < offset + length; i++) {
                ByteBuffer src = srcs[i];
                if (!src.hasRemaining()) {
                    continue;
                }
                total += write(src, true);
                if (src.hasRemaining()) {
                    break; // the pipe has no more room
                }
            }
            return total;
        } finally {
            writeLock.unlock();
        }
    }

    @Override
    public long write(ByteBuffer[] srcs) throws IOException {
        return write(srcs, 0, srcs.length);
    }

    /** All of {@code src} in blocking mode, else what fits; under writeLock. */
    private int write(ByteBuffer src, boolean mayBlock) throws IOException {
        boolean blocking = mayBlock && isBlocking();
        if (!isOpen() || !socket.begin()) {
            throw RdmaChannel.closed(blocking);
        }
        boolean completed = false;
        if (blocking) {
            begin();
        }
        try {
            int n = NativeIo.write(socket.handle, src, blocking);
            completed = true;
            return n;
        } finally {
            try {
                if (blocking) {
                    end(completed);
                }
            } finally {
                socket.end();
            }
        }
    }

    @Override
    protected void implCloseSelectableChannel() {
        socket.close(false); // the source reads end of stream; a blocked write wakes and fails
    }

    @Override
    protected void implConfigureBlocking(boolean block) {
        // Each native call says whether it may block; a blocking write ends
        // first, as with the JDK's (its lock).
        writeLock.lock();
        writeLock.unlock();
    }

    @Override
    public boolean registerNative(long poller, int slot) throws IOException {
        return socket.registerWith(poller, slot);
    }
}
