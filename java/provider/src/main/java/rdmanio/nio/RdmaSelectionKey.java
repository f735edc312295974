package rdmanio.nio;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.channels.CancelledKeyException;
import java.nio.channels.SelectableChannel;
import java.nio.channels.Selector;
import java.nio.channels.spi.AbstractSelectionKey;

/**
 * A channel's registration with an {@link RdmaSelector}. The interest set may
 * change from any thread: a change is queued, and the selecting thread applies
 * it before its next wait (as the JDK's selectors do).
 */
final class RdmaSelectionKey extends AbstractSelectionKey {
    private static final VarHandle INTEREST_OPS;

    static {
        try {
            INTEREST_OPS = MethodHandles.lookup().findVarHandle(RdmaSelectionKey.class, "interestOps", int.class);
        } catch (ReflectiveOperationException e) {
            throw new ExceptionInInitializerError(e);
        }
    }

    private final SelectableChannel channel;
    private final RdmaSelector selector;
    private volatile int interestOps;
    private volatile int readyOps;
    /** The poller slot, or -1 before the selecting thread registered the channel (its thread only). */
    int slot = -1;
    /** The key holds its channel's native socket (see {@link RdmaChannel#holdForKey}). */
    volatile boolean holdsSocket;

    RdmaSelectionKey(SelectableChannel channel, RdmaSelector selector) {
        this.channel = channel;
        this.selector = selector;
    }

    /** Gives the channel's native socket back, once, if the key holds it. */
    void releaseSocket() {
        if (holdsSocket) {
            holdsSocket = false;
            ((RdmaChannel) channel).keyGone();
        }
    }

    @Override
    public SelectableChannel channel() {
        return channel;
    }

    @Override
    public Selector selector() {
        return selector;
    }

    RdmaChannel rdmaChannel() {
        return (RdmaChannel) channel;
    }

    private void ensureValid() {
        if (!isValid()) {
            throw new CancelledKeyException();
        }
    }

    @Override
    public int interestOps() {
        ensureValid();
        return interestOps;
    }

    /** The interest set without the validity check (for the selecting thread). */
    int currentInterestOps() {
        return interestOps;
    }

    @Override
    public java.nio.channels.SelectionKey interestOps(int ops) {
        ensureValid();
        if ((ops & ~channel.validOps()) != 0) {
            throw new IllegalArgumentException("invalid interest ops " + ops + " for " + channel);
        }
        int old = (int) INTEREST_OPS.getAndSet(this, ops);
        if (old != ops) {
            selector.queueInterestUpdate(this);
        }
        return this;
    }

    @Override
    public int interestOpsOr(int ops) {
        ensureValid();
        if ((ops & ~channel.validOps()) != 0) {
            throw new IllegalArgumentException("invalid interest ops " + ops + " for " + channel);
        }
        int old = (int) INTEREST_OPS.getAndBitwiseOr(this, ops);
        if (old != (old | ops)) {
            selector.queueInterestUpdate(this);
        }
        return old;
    }

    @Override
    public int interestOpsAnd(int ops) {
        ensureValid();
        int old = (int) INTEREST_OPS.getAndBitwiseAnd(this, ops);
        if (old != (old & ops)) {
            selector.queueInterestUpdate(this);
        }
        return old;
    }

    @Override
    public int readyOps() {
        ensureValid();
        return readyOps;
    }

    void setReadyOps(int ops) {
        readyOps = ops;
    }
}
