package rdmanio.nio;

import java.io.IOException;
import java.nio.ByteBuffer;
import rdmanio.NativeLibrary;

/**
 * Every native method behind the provider, implemented in
 * native/src/bindings/jni/socket_native.rs, and the constants it shares with
 * the engine, read from it at load rather than copied.
 * Each takes primitives, direct buffers or strings and reports failure by
 * throwing an {@link IOException} (an {@code RdmaException} naming the
 * operation and errno, {@link java.net.ConnectException},
 * {@link java.net.BindException}, ...) or {@link IllegalArgumentException}.
 *
 * <p>A socket handle is shared with the selectors it is registered with; the
 * channel releases its own reference once, after its last use. A poller handle
 * belongs to one selector.
 */
final class SocketNative {
    static {
        NativeLibrary.load();
    }

    private static final int[] CONSTANTS = constants();
    /**
     * The ready-op bits the engine reports and takes as interests: the
     * selector passes {@link java.nio.channels.SelectionKey}'s bits through, so
     * these must equal them (a test checks).
     */
    static final int READ = CONSTANTS[0];
    static final int WRITE = CONSTANTS[1];
    static final int CONNECT = CONSTANTS[2];
    static final int ACCEPT = CONSTANTS[3];
    /** {@link #read} reached the end of the stream. */
    static final int EOF = CONSTANTS[4];
    /** {@link #read} found nothing and did not block. */
    static final int UNAVAILABLE = CONSTANTS[5];

    /** READ, WRITE, CONNECT, ACCEPT, EOF, UNAVAILABLE, in this order. */
    private static native int[] constants();

    /**
     * Throws {@link IllegalArgumentException} with the engine's reason unless
     * {@code name} is a transport (or, with {@code pollMode}, a polling mode) it knows.
     */
    static native void checkName(String name, boolean pollMode);

    private SocketNative() {}

    /**
     * A socket that neither connects nor listens yet; returns its handle. Its
     * blocking operations poll {@code spinMicros} before they sleep (negative:
     * until ready).
     */
    static native long open(long spinMicros) throws IOException;

    /**
     * Sends the low byte of {@code data} as urgent data (TCP only), waiting for
     * room when {@code block}; false when there is none and not {@code block}.
     */
    static native boolean sendUrgentData(long socket, int data, boolean block) throws IOException;

    /** Whether urgent data the peer sends is read in line ({@code SO_OOBINLINE}), else dropped. */
    static native void setUrgentInline(long socket, boolean inline) throws IOException;

    /** A new pipe's ends as sockets: {source, sink} handles (see {@link #open} for the spin). */
    static native long[] pipe(long spinMicros) throws IOException;

    // What {@link #inherited} found on standard input.
    static final long INHERITED_NONE = 0;
    static final long INHERITED_CONNECTION = 1;
    static final long INHERITED_LISTENER = 2;
    static final long INHERITED_DATAGRAM_IPV4 = 3;
    static final long INHERITED_DATAGRAM_IPV6 = 4;
    static final long INHERITED_OTHER_FAMILY = 5;

    /**
     * The socket a launcher (inetd, systemd) passed on standard input, as a socket of the
     * engine over a duplicate of fd 0: {kind, handle}, the kind one of the INHERITED_
     * constants (no handle for none and another family). See {@link #open} for the spin.
     */
    static native long[] inherited(long spinMicros) throws IOException;

    /** Points fds 0, 1 and 2 at /dev/null, once the inherited channel closes. */
    static native void detachStdStreams() throws IOException;

    /** Binds a socket that is to connect, holding the port at once; returns "ip:port" held. */
    static native String bind(long socket, String ip, int port) throws IOException;

    /** Starts connecting (on a helper thread). */
    static native void connect(long socket, String ip, int port, String transport, int ringBytes,
            int timeoutMillis) throws IOException;

    /**
     * A blocking channel's connect, in the calling thread where it can be
     * (TCP; shm, also as {@code auto}'s first try): no helper thread; a close
     * wakes it. True once connected; false when it goes on in a helper thread
     * ({@code auto} past shm, RDMA), which {@link #finishConnect} waits for.
     */
    static native boolean connectHere(long socket, String ip, int port, String transport, int ringBytes,
            int timeoutMillis) throws IOException;

    /** True once connected; false while under way and {@code block} is false. */
    static native boolean finishConnect(long socket, boolean block) throws IOException;

    /**
     * Binds and listens on every medium of {@code transport}; over RDMA, grants rings to
     * {@code ringPeers} ("all", "none" or IP addresses) and two-sided sends to the others,
     * which share {@code sendPoolSlots} receive slots.
     */
    static native void listen(long socket, String ip, int port, String transport, int ringBytes,
            String ringPeers, int sendPoolSlots, int backlog) throws IOException;

    /**
     * An accepted connection's handle, or 0 when none waits and {@code block} is
     * false; a blocking accept gives up after {@code timeoutMillis} (negative: never).
     */
    static native long accept(long socket, boolean block, int timeoutMillis) throws IOException;

    /** A byte count, {@link #EOF} or {@link #UNAVAILABLE}; a negative timeout waits forever. */
    static native int read(long socket, ByteBuffer direct, int position, int length, boolean block,
            int timeoutMillis) throws IOException;

    /** How many bytes went out: all of them when {@code block}, else possibly 0. */
    static native int write(long socket, ByteBuffer direct, int position, int length, boolean block)
            throws IOException;

    static native void shutdownInput(long socket) throws IOException;

    static native void shutdownOutput(long socket) throws IOException;

    /** "ip:port" of the local end, or of the peer when {@code peer}. */
    static native String address(long socket, boolean peer) throws IOException;

    /** The bytes a read returns now without waiting, at least (exact over TCP, the next message or record else). */
    static native int available(long socket) throws IOException;

    /** "rdma", "rdma-sends", "shm" or "tcp". */
    static native String medium(long socket) throws IOException;

    /**
     * Wakes the socket's blocked threads and shuts it down, resetting the
     * connection when {@code abortive} ({@code SO_LINGER} 0); {@code held}: a
     * selector's key still holds it (see {@link RdmaChannel#holdForKey}), so
     * only its output ends now. The handle stays valid.
     */
    static native void close(long socket, boolean abortive, boolean held);

    /** Drops the channel's reference to the socket. */
    static native void release(long socket);

    /**
     * {@code mode}: "busy", "blocking" or "adaptive" (spinning {@code spinMicros} before sleeping).
     * {@code interests} and {@code ready} are the buffers of {@link #pollerSelect}.
     */
    static native long pollerOpen(String mode, long spinMicros, ByteBuffer interests, ByteBuffer ready)
            throws IOException;

    /** Replaces the buffers of {@link #pollerSelect} (the poller holds them until then). */
    static native void pollerBuffers(long poller, ByteBuffer interests, ByteBuffer ready) throws IOException;

    static native void pollerRegister(long poller, long socket, int slot) throws IOException;

    static native void pollerDeregister(long poller, int slot);

    /**
     * Waits for readiness of the registered sockets with the interests in the
     * poller's interest buffer (native-order ints by slot, the first
     * {@code slots}); writes (slot, ready ops) int pairs into its ready buffer
     * and returns their number. A negative timeout waits forever, zero only looks.
     */
    static native int pollerSelect(long poller, int slots, long timeoutMillis) throws IOException;

    static native void pollerWakeup(long poller) throws IOException;

    static native void pollerClearWakeup(long poller) throws IOException;

    static native void pollerClose(long poller);
}
