package rdmanio.nio;

import java.io.IOException;
import java.nio.channels.AsynchronousCloseException;
import java.nio.channels.ClosedChannelException;

/** What the selector needs of the provider's channels. */
interface RdmaChannel {
    /**
     * What an operation on a closed channel throws, as the JDK's channels
     * do: a blocking operation starts its interruptible step before it looks,
     * so a close before it fails it as a close during it would.
     */
    static ClosedChannelException closed(boolean blocking) {
        return blocking ? new AsynchronousCloseException() : new ClosedChannelException();
    }

    /**
     * Registers the channel's native socket with a selector's poller in
     * {@code slot}; false when the channel is closed (its key is cancelled
     * then, and goes with the next selection).
     */
    boolean registerNative(long poller, int slot) throws IOException;

    /**
     * Makes a selector's new key hold the channel's native socket until the
     * key goes ({@link #keyGone}); false when it does not (the channel is
     * closed already, or its kind is released at its close). A socket channel
     * closed while registered so keeps its connection until the selector's
     * next select, as the JDK's keeps its file: till then the peer's writes
     * are taken, and only then do they meet a reset.
     */
    default boolean holdForKey() {
        return false;
    }

    /** The key that held the native socket ({@link #holdForKey}) went. */
    default void keyGone() {
    }
}
