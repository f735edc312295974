package rdmanio.nio;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.SocketAddress;
import java.net.SocketOption;
import java.net.StandardSocketOptions;
import java.nio.channels.AlreadyBoundException;
import java.nio.channels.ClosedChannelException;
import java.nio.channels.NotYetBoundException;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.util.Set;
import java.util.concurrent.locks.ReentrantLock;

/**
 * A server socket channel that listens on every medium its provider's
 * transport allows, at one address. The native side completes handshakes into
 * the backlog as a kernel does, so clients may connect before {@code accept}.
 *
 * <p>Locks: {@code acceptLock} (held by accepts), then {@code stateLock}, then
 * the native socket's. As with socket channels, close never waits: the last
 * accept to leave a closing channel releases the native socket ({@link NativeSocket}).
 */
final class RdmaServerSocketChannel extends ServerSocketChannel implements RdmaChannel {
    private static final int DEFAULT_BACKLOG = 50;
    private static final Set<SocketOption<?>> OPTIONS =
            KeepAlive.with(StandardSocketOptions.SO_RCVBUF, StandardSocketOptions.SO_REUSEADDR);

    private final RdmaSelectorProvider provider;
    private final NativeSocket socket;
    private final ReentrantLock acceptLock = new ReentrantLock();
    private final Object stateLock = new Object();

    // -- guarded by stateLock
    private InetSocketAddress localAddress;
    private int receiveBufferSize;
    private boolean reuseAddress = true;
    private final KeepAlive keepAliveTuning = new KeepAlive();
    private ServerSocketAdaptor adaptor;
    // --

    RdmaServerSocketChannel(RdmaSelectorProvider provider) throws IOException {
        super(provider);
        this.provider = provider;
        this.socket = NativeSocket.open(provider.config());
    }

    /** A channel over a socket already listening (the one inherited on standard input). */
    RdmaServerSocketChannel(RdmaSelectorProvider provider, NativeSocket listening) throws IOException {
        super(provider);
        this.provider = provider;
        this.socket = listening;
        this.localAddress = Addresses.parse(SocketNative.address(listening.handle, false));
    }

    private void ensureOpen() throws ClosedChannelException {
        if (!isOpen()) {
            throw new ClosedChannelException();
        }
    }

    @Override
    public ServerSocketChannel bind(SocketAddress local, int backlog) throws IOException {
        InetSocketAddress address = local == null ? new InetSocketAddress(0) : Addresses.check(local);
        synchronized (stateLock) {
            ensureOpen();
            if (localAddress != null) {
                throw new AlreadyBoundException();
            }
            Config config = provider.config();
            SocketNative.listen(socket.handle, Addresses.ip(address), address.getPort(), config.transport,
                    receiveBufferSize, config.ringPeers, config.sendPoolSlots,
                    backlog < 1 ? DEFAULT_BACKLOG : backlog);
            localAddress = Addresses.parse(SocketNative.address(socket.handle, false));
        }
        return this;
    }

    @Override
    public SocketChannel accept() throws IOException {
        return accept(-1);
    }

    /**
     * {@link #accept()}, giving up with {@link java.net.SocketTimeoutException}
     * after {@code timeoutMillis} when blocking (negative: never; the server
     * socket adaptor's {@code setSoTimeout}).
     */
    SocketChannel accept(int timeoutMillis) throws IOException {
        acceptLock.lock();
        try {
            synchronized (stateLock) {
                if (!isOpen()) {
                    throw RdmaChannel.closed(isBlocking());
                }
                if (localAddress == null) {
                    throw new NotYetBoundException();
                }
            }
            boolean blocking = beginAccept();
            long accepted = 0;
            try {
                accepted = SocketNative.accept(socket.handle, blocking, timeoutMillis);
            } finally {
                endAccept(blocking, accepted != 0);
            }
            if (accepted == 0) {
                return null;
            }
            try {
                return new RdmaSocketChannel(provider, new NativeSocket(accepted));
            } catch (IOException | RuntimeException e) {
                SocketNative.close(accepted, false, false); // the connection goes, and its socket with it
                SocketNative.release(accepted);
                throw e;
            }
        } finally {
            acceptLock.unlock();
        }
    }

    /**
     * Starts an accept (under acceptLock): counts it on the native socket and,
     * when it may block, lets a close or an interrupt wake it. Returns whether it blocks.
     */
    private boolean beginAccept() throws ClosedChannelException {
        if (!socket.begin()) {
            throw new ClosedChannelException();
        }
        boolean blocking = isBlocking();
        if (blocking) {
            begin();
        }
        return blocking;
    }

    private void endAccept(boolean blocking, boolean completed) throws IOException {
        try {
            if (blocking) {
                end(completed);
            }
        } finally {
            socket.end();
        }
    }

    @Override
    public SocketAddress getLocalAddress() throws IOException {
        synchronized (stateLock) {
            ensureOpen();
            return localAddress;
        }
    }

    InetSocketAddress localAddressOrNull() {
        synchronized (stateLock) {
            return localAddress;
        }
    }

    @Override
    public Set<SocketOption<?>> supportedOptions() {
        return OPTIONS;
    }

    @Override
    public <T> ServerSocketChannel setOption(SocketOption<T> name, T value) throws IOException {
        Options.checkValue(OPTIONS, name, value);
        synchronized (stateLock) {
            ensureOpen();
            if (name == StandardSocketOptions.SO_RCVBUF) {
                receiveBufferSize = Options.bufferSize(value); // shapes the rings of connections accepted after bind
            } else if (KeepAlive.isOne(name)) {
                keepAliveTuning.set(name, value);
            } else {
                reuseAddress = (Boolean) value;
            }
        }
        return this;
    }

    @Override
    @SuppressWarnings("unchecked")
    public <T> T getOption(SocketOption<T> name) throws IOException {
        Options.checkSupported(OPTIONS, name);
        synchronized (stateLock) {
            ensureOpen();
            if (name == StandardSocketOptions.SO_RCVBUF) {
                return (T) (Integer) (receiveBufferSize > 0 ? receiveBufferSize
                        : RdmaSocketChannel.DEFAULT_BUFFER_SIZE);
            }
            if (KeepAlive.isOne(name)) {
                return (T) (Integer) keepAliveTuning.get(name);
            }
            return (T) (Boolean) reuseAddress;
        }
    }

    @Override
    public ServerSocket socket() {
        synchronized (stateLock) {
            if (adaptor == null) {
                try {
                    adaptor = new ServerSocketAdaptor(this);
                } catch (IOException e) {
                    throw new IllegalStateException("cannot create the server socket adaptor", e);
                }
            }
            return adaptor;
        }
    }

    @Override
    protected void implCloseSelectableChannel() throws IOException {
        socket.close(false); // a blocked accept wakes and fails; the port is free again
    }

    @Override
    protected void implConfigureBlocking(boolean block) {
        // Each native call says whether it may block; a blocking accept ends
        // first, as with the JDK's (its lock).
        acceptLock.lock();
        acceptLock.unlock();
    }

    @Override
    public boolean registerNative(long poller, int slot) throws IOException {
        return socket.registerWith(poller, slot);
    }

    @Override
    public String toString() {
        InetSocketAddress address = localAddressOrNull();
        return getClass().getSimpleName() + "[" + (!isOpen() ? "closed" : address == null ? "unbound" : address)
                + "]";
    }
}
