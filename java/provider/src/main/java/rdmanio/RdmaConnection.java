package rdmanio;

import java.io.Closeable;
import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ClosedChannelException;

/**
 * A reliable RDMA connection (one RC queue pair) that carries whole messages
 * of up to {@link #MAX_MESSAGE_SIZE} bytes, in order and without loss.
 *
 * <p>Thread-safe: operations are serialized, and {@link #close()} waits for
 * the one in progress, which its timeout bounds. Direct buffers go to the
 * device without a copy; heap buffers are copied through a direct one.
 */
public final class RdmaConnection implements Closeable {
    /** The largest message one {@link #send} carries. */
    public static final int MAX_MESSAGE_SIZE = 4096;

    private final Object lock = new Object();
    private long handle; // guarded by lock; 0 once closed
    private ByteBuffer staging; // guarded by lock; for heap buffers, allocated on first use

    RdmaConnection(long handle) {
        this.handle = handle;
    }

    /**
     * Connects to an {@link RdmaListener} at {@code remote}.
     *
     * @throws java.net.ConnectException when nothing listens there
     * @throws java.net.NoRouteToHostException when no RDMA route leads there
     * @throws NoRdmaDeviceException on a host without RDMA
     */
    public static RdmaConnection connect(InetSocketAddress remote, int timeoutMillis) throws IOException {
        InetAddress ip = RdmaListener.ipOf(remote);
        return new RdmaConnection(Native.connect(ip.getHostAddress(), remote.getPort(), timeoutMillis));
    }

    /**
     * Sends the buffer's remaining bytes as one message and advances its
     * position to its limit. Returns once the message is handed to the device.
     *
     * @throws IllegalArgumentException when the message exceeds {@link #MAX_MESSAGE_SIZE}
     * @throws RdmaException when the peer has closed the connection
     */
    public void send(ByteBuffer message, int timeoutMillis) throws IOException {
        int length = message.remaining();
        synchronized (lock) {
            long connection = open();
            if (message.isDirect()) {
                Native.send(connection, message, message.position(), length, timeoutMillis);
            } else {
                if (length > MAX_MESSAGE_SIZE) {
                    throw new IllegalArgumentException("message of " + length
                            + " bytes exceeds the maximum message size of " + MAX_MESSAGE_SIZE + " bytes");
                }
                ByteBuffer direct = staging();
                direct.put(message.duplicate());
                Native.send(connection, direct, 0, length, timeoutMillis);
            }
            message.position(message.limit());
        }
    }

    /**
     * Receives one message into the buffer at its position and advances the
     * position past it.
     *
     * @return the message length, or -1 at end of stream (the peer closed and
     *     every message it sent was received)
     * @throws IllegalArgumentException when the next message does not fit the
     *     buffer's remaining space (the message stays queued)
     * @throws java.net.SocketTimeoutException when no message arrives in time
     */
    public int receive(ByteBuffer into, int timeoutMillis) throws IOException {
        synchronized (lock) {
            long connection = open();
            int length;
            if (into.isDirect()) {
                length = Native.receive(connection, into, into.position(), into.remaining(), timeoutMillis);
                if (length > 0) {
                    into.position(into.position() + length);
                }
            } else {
                ByteBuffer direct = staging();
                int room = Math.min(into.remaining(), MAX_MESSAGE_SIZE);
                length = Native.receive(connection, direct, 0, room, timeoutMillis);
                if (length > 0) {
                    into.put(direct.limit(length));
                }
            }
            return length;
        }
    }

    /**
     * Sets how long a blocked {@link #send} or {@link #receive} keeps polling for
     * completions before it sleeps (0, the default: sleep at once). Polling saves
     * a sleep and a wakeup per message at the cost of a busy core.
     */
    public void setBusyPoll(long micros) throws IOException {
        synchronized (lock) {
            Native.setBusyPoll(open(), micros);
        }
    }

    /** The RDMA device that carries the connection, e.g. {@code rxe0}. */
    public String deviceName() throws IOException {
        synchronized (lock) {
            return Native.deviceName(open());
        }
    }

    /** The local queue pair number. */
    public int queuePairNumber() throws IOException {
        synchronized (lock) {
            return Native.queuePairNumber(open());
        }
    }

    public boolean isOpen() {
        synchronized (lock) {
            return handle != 0;
        }
    }

    /** Closes the connection; the peer sees end of stream. Idempotent. */
    @Override
    public void close() {
        synchronized (lock) {
            if (handle != 0) {
                Native.closeConnection(handle);
                handle = 0;
            }
        }
    }

    private long open() throws ClosedChannelException {
        if (handle == 0) {
            throw new ClosedChannelException();
        }
        return handle;
    }

    private ByteBuffer staging() {
        if (staging == null) {
            staging = ByteBuffer.allocateDirect(MAX_MESSAGE_SIZE);
        }
        return staging.clear();
    }
}
