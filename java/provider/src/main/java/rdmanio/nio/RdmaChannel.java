package rdmanio.nio;

import java.io.IOException;

/** What the selector needs of the provider's channels. */
interface RdmaChannel {
    /**
     * Registers the channel's native socket with a selector's poller in
     * {@code slot}; false when the channel is closed (its key is cancelled
     * then, and goes with the next selection).
     */
    boolean registerNative(long poller, int slot) throws IOException;
}
