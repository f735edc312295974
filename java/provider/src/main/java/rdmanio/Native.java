package rdmanio;

import java.io.IOException;
import java.nio.ByteBuffer;

/**
 * Every native method of the message API, implemented in native/src/bindings/jni/native.rs. Each takes
 * primitives, direct buffers or strings, and reports failure by throwing:
 * {@link NoRdmaDeviceException}, {@link RdmaException} (operation and errno),
 * {@link java.net.ConnectException}, {@link java.net.SocketTimeoutException},
 * {@link java.net.NoRouteToHostException} or {@link IllegalArgumentException}.
 *
 * <p>Handles are opaque {@code long}s. Callers close each exactly once and never
 * use one from two threads at a time or after closing it. Timeouts are in
 * milliseconds; a negative timeout waits forever.
 */
final class Native {
    static {
        NativeLibrary.load();
    }

    private Native() {}

    /** Names of this host's RDMA devices; never empty. */
    static native String[] deviceNames() throws IOException;

    /** Binds {@code ip:port} (port 0 picks one) and listens; returns a listener handle. */
    static native long listen(String ip, int port, int backlog) throws IOException;

    static native int listenerPort(long listener);

    /** Waits for a connection; returns its handle. */
    static native long accept(long listener, int timeoutMillis) throws IOException;

    /** Connects to a listener; returns the connection handle. */
    static native long connect(String ip, int port, int timeoutMillis) throws IOException;

    /** Sends {@code length} bytes at {@code position} of a direct buffer as one message. */
    static native void send(long connection, ByteBuffer direct, int position, int length, int timeoutMillis)
            throws IOException;

    /** Receives one message into a direct buffer; returns its length, or -1 at end of stream. */
    static native int receive(long connection, ByteBuffer direct, int position, int length, int timeoutMillis)
            throws IOException;

    /** How long a blocked send or receive polls for completions before it sleeps. */
    static native void setBusyPoll(long connection, long micros);

    static native int queuePairNumber(long connection);

    static native String deviceName(long connection);

    static native void closeConnection(long connection);

    static native void closeListener(long listener);
}
