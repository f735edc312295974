package rdmanio.nio;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.ClosedSelectorException;
import java.nio.channels.IllegalSelectorException;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.spi.AbstractSelectableChannel;
import java.nio.channels.spi.AbstractSelector;
import java.util.ArrayDeque;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashSet;
import java.util.Iterator;
import java.util.Objects;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.Consumer;

/**
 * A selector over the provider's channels. Each select is one native call that
 * asks every registered socket with a non-empty interest set what it is ready
 * for, and waits (spinning, then sleeping, as configured) when none is.
 *
 * <p>The selecting thread owns the native registration: keys registered and
 * interest sets changed from other threads are queued and applied before the
 * next wait, as in the JDK's selectors. Interests cross to native code in a
 * direct buffer indexed by slot, and ready (slot, ops) pairs come back in
 * another; the poller holds both from its opening (and again after they grow),
 * so a select passes neither, and allocates nothing in steady state.
 *
 * <p>Locks, in order: this selector, the selected-key set, then
 * {@code updateLock} or {@code interruptLock}.
 */
final class RdmaSelector extends AbstractSelector {
    private static final int INITIAL_SLOTS = 64;

    private final long poller;
    private final Set<SelectionKey> keys = ConcurrentHashMap.newKeySet();
    private final Set<SelectionKey> publicKeys = Collections.unmodifiableSet(keys);
    private final Set<SelectionKey> selectedKeys = new HashSet<>();
    private final Set<SelectionKey> publicSelectedKeys = new UngrowableSet<>(selectedKeys);

    private final Object updateLock = new Object();
    private final ArrayDeque<RdmaSelectionKey> updateKeys = new ArrayDeque<>();

    private final Object interruptLock = new Object();
    private boolean interruptTriggered;
    private boolean pollerClosed;

    // The selecting thread's (under the selector's lock).
    private boolean inSelect;
    private RdmaSelectionKey[] keysBySlot = new RdmaSelectionKey[INITIAL_SLOTS];
    private int[] freeSlots = new int[INITIAL_SLOTS];
    private int freeSlotCount;
    private int slotsInUse;
    private ByteBuffer interests = directInts(INITIAL_SLOTS);
    private ByteBuffer ready = directInts(2 * INITIAL_SLOTS);

    RdmaSelector(RdmaSelectorProvider provider) throws IOException {
        super(provider);
        Config config = provider.config();
        this.poller = SocketNative.pollerOpen(config.pollMode, config.spinMicros, interests, ready);
    }

    private static ByteBuffer directInts(int count) {
        return ByteBuffer.allocateDirect(4 * count).order(ByteOrder.nativeOrder());
    }

    private void ensureOpen() {
        if (!isOpen()) {
            throw new ClosedSelectorException();
        }
    }

    @Override
    public Set<SelectionKey> keys() {
        ensureOpen();
        return publicKeys;
    }

    @Override
    public Set<SelectionKey> selectedKeys() {
        ensureOpen();
        return publicSelectedKeys;
    }

    @Override
    protected SelectionKey register(AbstractSelectableChannel channel, int ops, Object attachment) {
        if (!(channel instanceof RdmaChannel)) {
            throw new IllegalSelectorException();
        }
        RdmaSelectionKey key = new RdmaSelectionKey(channel, this);
        key.attach(attachment);
        synchronized (publicKeys) {
            ensureOpen();
            key.holdsSocket = ((RdmaChannel) channel).holdForKey();
            keys.add(key);
        }
        queueInterestUpdate(key); // registers natively, even with an empty interest set
        try {
            key.interestOps(ops);
        } catch (ClosedSelectorException e) {
            keys.remove(key);
            key.releaseSocket();
            throw e;
        }
        return key;
    }

    void queueInterestUpdate(RdmaSelectionKey key) {
        synchronized (updateLock) {
            updateKeys.addLast(key);
        }
    }

    @Override
    public int select(long timeout) throws IOException {
        if (timeout < 0) {
            throw new IllegalArgumentException("negative timeout " + timeout);
        }
        return lockAndDoSelect(null, timeout == 0 ? -1 : timeout);
    }

    @Override
    public int select() throws IOException {
        return lockAndDoSelect(null, -1);
    }

    @Override
    public int selectNow() throws IOException {
        return lockAndDoSelect(null, 0);
    }

    @Override
    public int select(Consumer<SelectionKey> action, long timeout) throws IOException {
        Objects.requireNonNull(action, "action");
        if (timeout < 0) {
            throw new IllegalArgumentException("negative timeout " + timeout);
        }
        return lockAndDoSelect(action, timeout == 0 ? -1 : timeout);
    }

    @Override
    public int select(Consumer<SelectionKey> action) throws IOException {
        Objects.requireNonNull(action, "action");
        return lockAndDoSelect(action, -1);
    }

    @Override
    public int selectNow(Consumer<SelectionKey> action) throws IOException {
        Objects.requireNonNull(action, "action");
        return lockAndDoSelect(action, 0);
    }

    /** {@code timeout}: negative waits forever, zero only looks. */
    private int lockAndDoSelect(Consumer<SelectionKey> action, long timeout) throws IOException {
        synchronized (this) {
            ensureOpen();
            if (inSelect) {
                throw new IllegalStateException("select is not reentrant (called from within a select action)");
            }
            inSelect = true;
            try {
                synchronized (publicSelectedKeys) {
                    return doSelect(action, timeout);
                }
            } finally {
                inSelect = false;
            }
        }
    }

    private int doSelect(Consumer<SelectionKey> action, long timeout) throws IOException {
        processDeregisterQueue();
        processUpdateQueue();
        int found;
        boolean blocking = timeout != 0;
        try {
            if (blocking) {
                begin(); // an interrupt becomes a wakeup
            }
            found = SocketNative.pollerSelect(poller, slotsInUse, timeout);
        } finally {
            if (blocking) {
                end();
            }
        }
        processDeregisterQueue();
        try {
            return processReadyEvents(found, action);
        } finally {
            clearWakeup();
        }
    }

    /** Applies registrations and interest changes queued by any thread. */
    private void processUpdateQueue() throws IOException {
        synchronized (updateLock) {
            RdmaSelectionKey key;
            while ((key = updateKeys.pollFirst()) != null) {
                if (!key.isValid()) {
                    continue;
                }
                if (key.slot < 0 && !registerNative(key)) {
                    continue;
                }
                interests.putInt(4 * key.slot, key.currentInterestOps());
            }
        }
    }

    private boolean registerNative(RdmaSelectionKey key) throws IOException {
        int slot = freeSlotCount > 0 ? freeSlots[--freeSlotCount] : slotsInUse;
        if (slot == keysBySlot.length) {
            grow();
        }
        if (!key.rdmaChannel().registerNative(poller, slot)) {
            if (slot < slotsInUse) {
                freeSlots[freeSlotCount++] = slot;
            }
            return false;
        }
        key.slot = slot;
        keysBySlot[slot] = key;
        slotsInUse = Math.max(slotsInUse, slot + 1);
        return true;
    }

    private void grow() throws IOException {
        int capacity = 2 * keysBySlot.length;
        ByteBuffer wider = directInts(capacity);
        wider.put(interests.clear()).clear();
        ByteBuffer widerReady = directInts(2 * capacity);
        SocketNative.pollerBuffers(poller, wider, widerReady); // first: a failure leaves all as it was
        interests = wider;
        ready = widerReady;
        keysBySlot = Arrays.copyOf(keysBySlot, capacity);
        freeSlots = Arrays.copyOf(freeSlots, capacity);
    }

    /** Forgets the keys cancelled since the last selection (and their channels' registrations). */
    private void processDeregisterQueue() {
        Set<SelectionKey> cancelled = cancelledKeys();
        synchronized (cancelled) {
            if (cancelled.isEmpty()) {
                return;
            }
            Iterator<SelectionKey> it = cancelled.iterator();
            while (it.hasNext()) {
                RdmaSelectionKey key = (RdmaSelectionKey) it.next();
                forget(key);
                it.remove();
            }
        }
    }

    private void forget(RdmaSelectionKey key) {
        if (key.slot >= 0) {
            SocketNative.pollerDeregister(poller, key.slot);
            interests.putInt(4 * key.slot, 0);
            keysBySlot[key.slot] = null;
            freeSlots[freeSlotCount++] = key.slot;
            key.slot = -1;
        }
        keys.remove(key);
        selectedKeys.remove(key);
        deregister(key);
        key.releaseSocket();
    }

    private int processReadyEvents(int found, Consumer<SelectionKey> action) {
        int updated = 0;
        for (int i = 0; i < found; i++) {
            RdmaSelectionKey key = keysBySlot[ready.getInt(8 * i)];
            int ops = ready.getInt(8 * i + 4);
            // A channel closing now is not selected: its closer cancels the key
            // next (the JDK's selector does not wake for the close of a
            // non-blocking channel at all; this one may, by the socket's kick).
            if (key == null || !key.isValid() || !key.channel().isOpen()) {
                continue;
            }
            ops &= key.currentInterestOps(); // the interest may have shrunk during the wait
            if (ops == 0) {
                continue;
            }
            if (action != null) {
                key.setReadyOps(ops);
                action.accept(key);
                ensureOpen();
                updated++;
            } else if (selectedKeys.contains(key)) {
                int old = key.readyOps();
                if ((ops & ~old) != 0) {
                    key.setReadyOps(old | ops);
                    updated++;
                }
            } else {
                key.setReadyOps(ops);
                selectedKeys.add(key);
                updated++;
            }
        }
        return updated;
    }

    @Override
    public Selector wakeup() {
        synchronized (interruptLock) {
            if (!interruptTriggered && !pollerClosed) {
                try {
                    SocketNative.pollerWakeup(poller);
                } catch (IOException e) {
                    throw new IllegalStateException("selector wakeup failed", e);
                }
                interruptTriggered = true;
            }
        }
        return this;
    }

    private void clearWakeup() throws IOException {
        synchronized (interruptLock) {
            if (interruptTriggered && !pollerClosed) {
                SocketNative.pollerClearWakeup(poller);
                interruptTriggered = false;
            }
        }
    }

    @Override
    protected void implCloseSelector() throws IOException {
        wakeup(); // a thread blocked in select returns, and gives up the lock
        synchronized (this) {
            synchronized (publicSelectedKeys) {
                for (SelectionKey key : keys) {
                    forget((RdmaSelectionKey) key);
                }
                processDeregisterQueue();
            }
            synchronized (interruptLock) {
                pollerClosed = true; // no wakeup touches the poller any more
                SocketNative.pollerClose(poller);
            }
        }
    }
}
