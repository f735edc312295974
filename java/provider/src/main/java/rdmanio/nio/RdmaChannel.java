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
}
