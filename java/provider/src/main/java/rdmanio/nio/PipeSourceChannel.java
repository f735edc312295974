package rdmanio.nio;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.Pipe;
import java.util.Objects;
import java.util.concurrent.locks.ReentrantLock;

/**
 * The reading end of an {@link RdmaPipe}: reads as a socket channel's (a
 * blocking read waits for a byte; -1 once the sink is closed and drained).
 */
final class PipeSourceChannel extends Pipe.SourceChannel implements RdmaChannel {
    private final NativeSocket socket;
    private final ReentrantLock readLock = new ReentrantLock();

    PipeSourceChannel(RdmaSelectorProvider provider, NativeSocket socket) {
        super(provider);
        this.socket = socket;
    }

    @Override
    public int read(ByteBuffer dst) throws IOException {
        Objects.requireNonNull(dst, "dst");
        if (dst.isReadOnly()) {
            throw new IllegalArgumentException("read-only buffer");
        }
        readLock.lock();
        try {
            return read(dst, true);
        } finally {
            readLock.unlock();
        }
    }

    @Override
    public long read(ByteBuffer[] dsts, int offset, int length) throws IOException {
        RdmaSocketChannel.checkBuffers(dsts, offset, length, true);
        readLock.lock();
        try {
            long total = 0;
            for (int i = offset; i < offset + length; i++) {
                if (!dsts[i].hasRemaining()) {
                    continue;
                }
                // The first read may block; the rest take only what is there already.
                int n = read(dsts[i], total == 0);
                if (n < 0) {
                    return total == 0 ? -1 : total;
                }
                total += n;
                if (dsts[i].hasRemaining()) {
                    break;
                }
            }
            return total;
        } finally {
            readLock.unlock();
        }
    }

    @Override
    public long read(ByteBuffer[] dsts) throws IOException {
        return read(dsts, 0, dsts.length);
    }

    /** One native read, blocking only if {@code mayBlock} and the channel does; under readLock. */
    private int read(ByteBuffer dst, boolean mayBlock) throws IOException {
        boolean blocking = mayBlock && isBlocking();
        if (!isOpen() || !socket.begin()) {
            throw RdmaChannel.closed(blocking);
        }
        boolean completed = false;
        if (blocking) {
            begin();
        }
        try {
            int n = NativeIo.read(socket.handle, dst, blocking, -1);
            completed = true;
            return n == SocketNative.UNAVAILABLE ? 0 : n;
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
        socket.close(false); // a blocked read wakes and fails
    }

    @Override
    protected void implConfigureBlocking(boolean block) {
        // Each native call says whether it may block; a blocking read ends
        // first, as with the JDK's (its lock).
        readLock.lock();
        readLock.unlock();
    }

    @Override
    public boolean registerNative(long poller, int slot) throws IOException {
        return socket.registerWith(poller, slot);
    }
}
