package rdmanio.nio;

import java.io.IOException;
import java.io.UncheckedIOException;

/**
 * A channel's native socket and what both channel classes need of its life:
 * the operations that use it outside the channel's state lock are counted,
 * and the handle is released once the channel is closing and the last of
 * them has left. A close never waits for a blocked operation: it wakes it in
 * native code, and the operation releases the socket on its way out (as the
 * JDK's channels do, since an interrupt closes while holding the interrupted
 * thread's lock).
 *
 * <p>Lock: its own monitor, held only for counting and for the native calls
 * that never block (close, release, register); taken after the channel's
 * state lock when both are held.
 */
final class NativeSocket {
    /** The engine's socket; valid until {@link #release}. */
    final long handle;

    // -- guarded by this
    private int activeOperations;
    private boolean closing;
    private boolean released;
    private boolean detachesStdStreams;
    // --

    NativeSocket(long handle) {
        this.handle = handle;
    }

    /** A socket that neither connects nor listens yet, with the provider's blocking spin. */
    static NativeSocket open(Config config) throws IOException {
        return new NativeSocket(SocketNative.open(config.blockingSpinMicros()));
    }

    /**
     * Starts an operation that uses the handle outside any lock; false (and no
     * operation started) once closing. Every true is followed by {@link #end}.
     */
    synchronized boolean begin() {
        if (closing) {
            return false;
        }
        activeOperations++;
        return true;
    }

    /** Ends an operation; the last one out of a closing socket releases it. */
    synchronized void end() {
        if (--activeOperations == 0 && closing) {
            release();
        }
    }

    /**
     * Wakes the socket's blocked operations (they fail) and shuts it down,
     * resetting the connection when {@code abortive} ({@code SO_LINGER} 0);
     * the handle goes now or when the last operation ends. Idempotent.
     */
    void close(boolean abortive) {
        close(abortive, false);
    }

    /**
     * {@link #close(boolean)}, for a socket a selector's key holds when
     * {@code held} (it goes when the key does: see {@link RdmaChannel#holdForKey}).
     */
    synchronized void close(boolean abortive, boolean held) {
        if (closing) {
            return;
        }
        closing = true; // from now on no selector registers the socket
        SocketNative.close(handle, abortive, held);
        if (detachesStdStreams) {
            try {
                SocketNative.detachStdStreams();
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }
        if (activeOperations == 0) {
            release();
        }
    }

    /**
     * Makes the close point the standard streams at /dev/null, as the JDK does
     * for the channel inherited on standard input: then the socket's last
     * reference goes with the channel.
     */
    synchronized void detachStdStreamsOnClose() {
        detachesStdStreams = true;
    }

    synchronized boolean isClosing() {
        return closing;
    }

    /** Registers the socket with a poller in {@code slot}; false once closing. */
    synchronized boolean registerWith(long poller, int slot) throws IOException {
        if (closing) {
            return false;
        }
        SocketNative.pollerRegister(poller, handle, slot);
        return true;
    }

    private void release() {
        if (!released) {
            released = true;
            SocketNative.release(handle); // selectors still holding it release theirs on deregistration
        }
    }
}
