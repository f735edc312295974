package rdmanio.nio;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.SocketAddress;
import java.net.SocketException;
import java.net.SocketOption;
import java.net.StandardSocketOptions;
import java.nio.ByteBuffer;
import java.nio.channels.AlreadyBoundException;
import java.nio.channels.AlreadyConnectedException;
import java.nio.channels.AsynchronousCloseException;
import java.nio.channels.ClosedChannelException;
import java.nio.channels.ConnectionPendingException;
import java.nio.channels.IllegalBlockingModeException;
import java.nio.channels.NoConnectionPendingException;
import java.nio.channels.NotYetConnectedException;
import java.nio.channels.SocketChannel;
import java.util.Objects;
import java.util.Set;
import java.util.concurrent.locks.ReentrantLock;

/**
 * A socket channel over the native engine's stream of one medium (rdma, shm or
 * tcp, as the provider's transport decides).
 *
 * <p>Locks, always in this order: {@code readLock} (held by reads and
 * connects), {@code writeLock} (writes and connects), {@code stateLock} (the
 * fields marked below; never held while an operation blocks), then the
 * native socket's. A blocked operation sleeps in native code; closing the
 * channel (also from an interrupt) wakes it there and never waits for it: the
 * last operation to leave a closing channel releases the native socket
 * ({@link NativeSocket}). Every operation on the socket is bracketed by
 * {@link #beginIo} and {@link #endIo}, as the JDK's {@code beginRead}/{@code endRead}.
 */
final class RdmaSocketChannel extends SocketChannel implements RdmaChannel {
    private static final int ST_UNCONNECTED = 0;
    private static final int ST_CONNECTION_PENDING = 1;
    private static final int ST_CONNECTED = 2;
    private static final int ST_CLOSED = 3;

    /** What SO_RCVBUF and SO_SNDBUF report until set: the native default ring. */
    static final int DEFAULT_BUFFER_SIZE = 256 * 1024;

    private static final Set<SocketOption<?>> OPTIONS = KeepAlive.with(StandardSocketOptions.SO_RCVBUF,
            StandardSocketOptions.SO_SNDBUF, StandardSocketOptions.TCP_NODELAY, StandardSocketOptions.SO_KEEPALIVE,
            StandardSocketOptions.SO_REUSEADDR, StandardSocketOptions.SO_LINGER, StandardSocketOptions.IP_TOS);

    private final Config config;
    private final NativeSocket socket;
    private final ReentrantLock readLock = new ReentrantLock();
    private final ReentrantLock writeLock = new ReentrantLock();
    private final Object stateLock = new Object();
    /**
     * The mode as {@link #implConfigureBlocking} left it under both locks; the
     * superclass's {@code isBlocking} changes only after it returned, so a
     * connect that chooses how to connect by it could race with a registration.
     */
    private volatile boolean blockingUnderLocks = true;

    // -- the fields below are guarded by stateLock
    private int state;
    private InetSocketAddress localAddress;
    private InetSocketAddress remoteAddress;
    private volatile boolean inputClosed;
    private volatile boolean outputClosed;
    private int receiveBufferSize;
    private int sendBufferSize;
    private boolean tcpNoDelay;
    private boolean keepAlive;
    private boolean reuseAddress;
    private int linger = -1;
    private int trafficClass;
    private boolean urgentInline;
    private final KeepAlive keepAliveTuning = new KeepAlive();
    private SocketAdaptor adaptor;
    // -- end of fields guarded by stateLock

    RdmaSocketChannel(RdmaSelectorProvider provider) throws IOException {
        super(provider);
        this.config = provider.config();
        this.socket = NativeSocket.open(config);
    }

    /** A channel for a connection a server socket channel accepted, or inherited on standard input. */
    RdmaSocketChannel(RdmaSelectorProvider provider, NativeSocket accepted) throws IOException {
        super(provider);
        this.config = provider.config();
        this.socket = accepted;
        this.state = ST_CONNECTED;
        this.localAddress = Addresses.parse(SocketNative.address(accepted.handle, false));
        this.remoteAddress = Addresses.parse(SocketNative.address(accepted.handle, true));
    }

    private void ensureOpen() throws ClosedChannelException {
        if (!isOpen()) {
            throw new ClosedChannelException();
        }
    }

    /** {@link #ensureOpen} for a connect, which fails as the JDK's does (see {@link RdmaChannel#closed}). */
    private void ensureOpenToConnect() throws ClosedChannelException {
        if (!isOpen()) {
            throw RdmaChannel.closed(isBlocking());
        }
    }

    private void ensureOpenAndConnected() throws ClosedChannelException {
        synchronized (stateLock) {
            ensureOpen();
            if (state != ST_CONNECTED) {
                throw new NotYetConnectedException();
            }
        }
    }

    /** Starts an operation on the connected native socket; {@link #endOperation} must follow. */
    private void beginOperation() throws ClosedChannelException {
        beginUse(true);
    }

    private void endOperation() {
        socket.end();
    }

    /** Counts a use of the native socket by an open (and, if asked, connected) channel. */
    private void beginUse(boolean connected) throws ClosedChannelException {
        if (connected) {
            ensureOpenAndConnected();
        } else {
            ensureOpen();
        }
        if (!socket.begin()) {
            throw new ClosedChannelException();
        }
    }

    /**
     * Starts a read, write or connect step on the native socket (the caller
     * holds the operation's lock): counts it and, when the channel blocks,
     * lets a close or an interrupt wake it. Returns whether it blocks;
     * {@link #endIo} must follow.
     */
    private boolean beginIo(boolean connected) throws ClosedChannelException {
        beginUse(connected);
        boolean blocking = isBlocking();
        if (blocking) {
            begin();
        }
        return blocking;
    }

    /** Ends what {@link #beginIo} started; a blocked step the channel's close ended throws here. */
    private void endIo(boolean blocking, boolean completed) throws IOException {
        try {
            if (blocking) {
                end(completed);
            }
        } finally {
            socket.end();
        }
    }

    // ---- connecting

    @Override
    public SocketChannel bind(SocketAddress local) throws IOException {
        InetSocketAddress address = local == null ? new InetSocketAddress(0) : Addresses.check(local);
        synchronized (stateLock) {
            ensureOpen();
            if (state == ST_CONNECTION_PENDING) {
                throw new ConnectionPendingException();
            }
            if (localAddress != null) {
                throw new AlreadyBoundException();
            }
            // Held at once, as the JDK's bind: a TCP connection comes from it,
            // a connection on another medium is named by it.
            localAddress = Addresses.parse(
                    SocketNative.bind(socket.handle, Addresses.ip(address), address.getPort()));
        }
        return this;
    }

    @Override
    public boolean connect(SocketAddress remote) throws IOException {
        return connect(remote, config.connectTimeoutMillis);
    }

    /**
     * {@link #connect(SocketAddress)} that fails with {@code SocketTimeoutException} after
     * {@code timeoutMillis} (the socket adaptor's {@code connect(remote, timeout)}).
     */
    boolean connect(SocketAddress remote, int timeoutMillis) throws IOException {
        InetSocketAddress address = Addresses.check(remote);
        InetAddress target = address.getAddress().isAnyLocalAddress() ? InetAddress.getLoopbackAddress()
                : address.getAddress();
        readLock.lock();
        try {
            writeLock.lock();
            try {
                // A blocking connect needs no helper thread where nothing in it blocks past a close.
                boolean blocking = blockingUnderLocks;
                boolean here = blocking && !config.transport.equals("rdma");
                synchronized (stateLock) {
                    ensureOpenToConnect();
                    if (state == ST_CONNECTED) {
                        throw new AlreadyConnectedException();
                    }
                    if (state == ST_CONNECTION_PENDING) {
                        throw new ConnectionPendingException();
                    }
                    if (!here) {
                        SocketNative.connect(socket.handle, target.getHostAddress(), address.getPort(),
                                config.transport, receiveBufferSize, timeoutMillis);
                    }
                    state = ST_CONNECTION_PENDING;
                    remoteAddress = address;
                }
                if (here) {
                    connectHere(target.getHostAddress(), address.getPort(), receiveBufferSize, timeoutMillis);
                }
                return blocking && completeConnect();
            } finally {
                writeLock.unlock();
            }
        } finally {
            readLock.unlock();
        }
    }

    @Override
    public boolean finishConnect() throws IOException {
        readLock.lock();
        try {
            writeLock.lock();
            try {
                synchronized (stateLock) {
                    ensureOpenToConnect();
                    if (state == ST_CONNECTED) {
                        return true;
                    }
                    if (state != ST_CONNECTION_PENDING) {
                        throw new NoConnectionPendingException();
                    }
                }
                return completeConnect();
            } finally {
                writeLock.unlock();
            }
        } finally {
            readLock.unlock();
        }
    }

    /**
     * A blocking connect in this thread (interruptible, as any blocking step),
     * or started in a helper thread that {@link #completeConnect} then waits
     * for; a failure closes the channel.
     */
    private void connectHere(String ip, int port, int receiveBufferSize, int timeoutMillis) throws IOException {
        try {
            boolean blocking = beginIo(false);
            boolean connected = false;
            try {
                connected = SocketNative.connectHere(socket.handle, ip, port, config.transport, receiveBufferSize,
                        timeoutMillis);
            } finally {
                endIo(blocking, connected);
            }
        } catch (IOException e) {
            close();
            throw e;
        }
    }

    /** Completes a pending connect (waiting when blocking); a failure closes the channel. */
    private boolean completeConnect() throws IOException {
        boolean connected = false;
        try {
            boolean blocking = beginIo(false);
            try {
                connected = SocketNative.finishConnect(socket.handle, blocking);
            } finally {
                endIo(blocking, connected);
            }
        } catch (IOException e) {
            close();
            throw e;
        }
        if (connected) {
            synchronized (stateLock) {
                if (state == ST_CONNECTION_PENDING) {
                    state = ST_CONNECTED;
                    localAddress = Addresses.parse(SocketNative.address(socket.handle, false));
                    if (urgentInline) {
                        SocketNative.setUrgentInline(socket.handle, true);
                    }
                }
            }
        }
        return connected;
    }

    @Override
    public boolean isConnected() {
        synchronized (stateLock) {
            return state == ST_CONNECTED;
        }
    }

    @Override
    public boolean isConnectionPending() {
        synchronized (stateLock) {
            return state == ST_CONNECTION_PENDING;
        }
    }

    // ---- reading

    @Override
    public int read(ByteBuffer dst) throws IOException {
        Objects.requireNonNull(dst, "dst");
        return read(dst, false, -1);
    }

    /**
     * The socket adaptor's stream read: blocking mode required (else
     * {@link IllegalBlockingModeException}), and it gives up with
     * {@link java.net.SocketTimeoutException} after {@code timeoutMillis}
     * (negative: never). A count, or -1 at the end of the stream.
     */
    int blockingRead(ByteBuffer dst, int timeoutMillis) throws IOException {
        return read(dst, true, timeoutMillis);
    }

    private int read(ByteBuffer dst, boolean mustBlock, int timeoutMillis) throws IOException {
        readLock.lock();
        try {
            if (mustBlock && !isBlocking()) {
                throw new IllegalBlockingModeException();
            }
            boolean blocking = beginIo(true);
            boolean completed = false;
            try {
                // After the state checks, as the JDK's: a closed channel's read fails as closed.
                if (dst.isReadOnly()) {
                    throw new IllegalArgumentException("Read-only buffer");
                }
                int n = inputClosed ? SocketNative.EOF : readInto(dst, blocking, timeoutMillis);
                completed = true;
                return n == SocketNative.UNAVAILABLE ? 0 : n;
            } finally {
                endIo(blocking, completed);
            }
        } finally {
            readLock.unlock();
        }
    }

    /** One native read into {@code dst} (see {@link NativeIo#read}); within {@link #beginOperation}, under readLock. */
    private int readInto(ByteBuffer dst, boolean block, int timeoutMillis) throws IOException {
        return NativeIo.read(socket.handle, dst, block, timeoutMillis);
    }

    @Override
    public long read(ByteBuffer[] dsts, int offset, int length) throws IOException {
        Objects.checkFromIndexSize(offset, length, dsts.length);
        readLock.lock();
        try {
            ensureOpenAndConnected();
            checkBuffers(dsts, offset, length, true);
            long total = 0;
            for (int i = offset; i < offset + length; i++) {
                ByteBuffer dst = dsts[i];
                if (!dst.hasRemaining()) {
                    continue;
                }
                // The first read may block; the rest take only what is there already.
                if (total > 0) {
                    int n;
                    beginOperation();
                    try {
                        n = readInto(dst, false, -1);
                    } finally {
                        endOperation();
                    }
                    if (n <= 0) {
                        break;
                    }
                    total += n;
                } else {
                    int n = read(dst);
                    if (n <= 0) {
                        return n;
                    }
                    total = n;
                }
                if (dst.hasRemaining()) {
                    break;
                }
            }
            return total;
        } finally {
            readLock.unlock();
        }
    }

    /**
     * Checks a whole scatter or gather array before a byte moves, as the JDK
     * does: the range, no null element, no read-only buffer to read into (a
     * socket channel, as the JDK's, checks the elements after its state).
     */
    static void checkBuffers(ByteBuffer[] buffers, int offset, int length, boolean reading) {
        Objects.checkFromIndexSize(offset, length, buffers.length);
        for (int i = offset; i < offset + length; i++) {
            ByteBuffer buffer = Objects.requireNonNull(buffers[i], "buffer");
            if (reading && buffer.isReadOnly()) {
                throw new IllegalArgumentException("Read-only buffer");
            }
        }
    }

    /**
     * The socket adaptor's {@code available()}: the bytes a read returns now
     * without blocking, at least; 0 after {@link #shutdownInput}, as the JDK's.
     */
    int available() throws IOException {
        beginOperation();
        try {
            return inputClosed ? 0 : SocketNative.available(socket.handle);
        } finally {
            endOperation();
        }
    }

    // ---- writing

    @Override
    public int write(ByteBuffer src) throws IOException {
        Objects.requireNonNull(src, "src");
        return write(src, false);
    }

    /**
     * The socket adaptor's stream write: all of {@code src}, in blocking mode
     * only (else {@link IllegalBlockingModeException}).
     */
    void blockingWriteFully(ByteBuffer src) throws IOException {
        write(src, true);
    }

    private int write(ByteBuffer src, boolean mustBlock) throws IOException {
        writeLock.lock();
        try {
            if (mustBlock && !isBlocking()) {
                throw new IllegalBlockingModeException();
            }
            boolean blocking = beginIo(true);
            boolean completed = false;
            try {
                ensureOutputOpen();
                int n = writeFrom(src, blocking);
                completed = true;
                return n;
            } finally {
                endIo(blocking, completed);
            }
        } finally {
            writeLock.unlock();
        }
    }

    /**
     * Refuses a write after {@link #shutdownOutput}: with the exception the
     * JDK's gives, {@link AsynchronousCloseException} (its write reports a
     * shutdown during the write and before it alike).
     */
    private void ensureOutputOpen() throws AsynchronousCloseException {
        if (outputClosed) {
            throw new AsynchronousCloseException();
        }
    }

    /** Writes from {@code src}: all of it when {@code block}, else what the peer has room for (within an operation). */
    int writeFrom(ByteBuffer src, boolean block) throws IOException {
        return NativeIo.write(socket.handle, src, block);
    }

    @Override
    public long write(ByteBuffer[] srcs, int offset, int length) throws IOException {
        Objects.checkFromIndexSize(offset, length, srcs.length);
        writeLock.lock();
        try {
            ensureOpenAndConnected();
            ensureOutputOpen();
            checkBuffers(srcs, offset, length, false);
            long total = 0;
            for (int i = offset; i < offset + length; i++) {
                ByteBuffer src = srcs[i];
                if (!src.hasRemaining()) {
                    continue;
                }
                total += write(src);
                if (src.hasRemaining()) {
                    break; // the peer has no more room
                }
            }
            return total;
        } finally {
            writeLock.unlock();
        }
    }

    // ---- half close, addresses, options

    @Override
    public SocketChannel shutdownInput() throws IOException {
        synchronized (stateLock) {
            ensureOpen();
            if (state != ST_CONNECTED) {
                throw new NotYetConnectedException();
            }
            if (!inputClosed) {
                SocketNative.shutdownInput(socket.handle);
                inputClosed = true;
            }
        }
        return this;
    }

    @Override
    public SocketChannel shutdownOutput() throws IOException {
        synchronized (stateLock) {
            ensureOpen();
            if (state != ST_CONNECTED) {
                throw new NotYetConnectedException();
            }
            if (!outputClosed) {
                SocketNative.shutdownOutput(socket.handle);
                outputClosed = true;
            }
        }
        return this;
    }

    boolean isInputClosed() {
        return inputClosed;
    }

    boolean isOutputClosed() {
        return outputClosed;
    }

    @Override
    public SocketAddress getLocalAddress() throws IOException {
        synchronized (stateLock) {
            ensureOpen();
            return localAddress;
        }
    }

    @Override
    public SocketAddress getRemoteAddress() throws IOException {
        synchronized (stateLock) {
            ensureOpen();
            return remoteAddress;
        }
    }

    /**
     * The address a connect named, from the moment it starts, or null; after
     * a close too (the socket adaptor's getters: the JDK's keep answering).
     */
    InetSocketAddress remoteAddress() {
        synchronized (stateLock) {
            return remoteAddress;
        }
    }

    /** The local address once bound or connected, or null; after a close too (see {@link #remoteAddress()}). */
    InetSocketAddress localAddress() {
        synchronized (stateLock) {
            return localAddress;
        }
    }

    /**
     * The socket adaptor's {@code setOOBInline}: urgent data the peer sends is
     * read in line, else dropped (as the JDK's); a connection made later
     * takes it too. TCP and shm carry urgent data.
     */
    void setUrgentInline(boolean inline) throws IOException {
        synchronized (stateLock) {
            ensureOpen();
            urgentInline = inline;
            if (state == ST_CONNECTED) {
                SocketNative.setUrgentInline(socket.handle, inline);
            }
        }
    }

    boolean urgentInline() throws IOException {
        synchronized (stateLock) {
            ensureOpen();
            return urgentInline;
        }
    }

    /**
     * The socket adaptor's {@code sendUrgentData}: one byte of urgent data (TCP's
     * own, or a record of its own in a shm ring), waiting for room in blocking
     * mode ("Socket buffer full" without, as the JDK's); a SocketException over
     * RDMA, which has none.
     */
    void sendUrgentData(int data) throws IOException {
        String medium = medium();
        if (!medium.equals("tcp") && !medium.equals("shm")) {
            throw new SocketException("Urgent data not supported over " + medium + ": only TCP and shm carry it");
        }
        writeLock.lock();
        try {
            boolean blocking = beginIo(true);
            boolean sent = false;
            try {
                sent = SocketNative.sendUrgentData(socket.handle, data, blocking);
            } finally {
                endIo(blocking, sent);
            }
            if (!sent) {
                throw new IOException("Socket buffer full");
            }
        } finally {
            writeLock.unlock();
        }
    }

    /** The medium the connection took: "rdma", "shm" or "tcp". */
    String medium() throws IOException {
        synchronized (stateLock) {
            ensureOpenAndConnected();
            return SocketNative.medium(socket.handle);
        }
    }

    @Override
    public Set<SocketOption<?>> supportedOptions() {
        return OPTIONS;
    }

    @Override
    public <T> SocketChannel setOption(SocketOption<T> name, T value) throws IOException {
        Options.checkValue(OPTIONS, name, value);
        synchronized (stateLock) {
            ensureOpen();
            if (name == StandardSocketOptions.SO_RCVBUF || name == StandardSocketOptions.SO_SNDBUF) {
                int size = Options.bufferSize(value);
                // The receive size shapes the ring of connections made after it.
                if (name == StandardSocketOptions.SO_RCVBUF) {
                    receiveBufferSize = size;
                } else {
                    sendBufferSize = size;
                }
            } else if (name == StandardSocketOptions.TCP_NODELAY) {
                tcpNoDelay = (Boolean) value; // every medium sends each write at once anyway
            } else if (name == StandardSocketOptions.SO_KEEPALIVE) {
                keepAlive = (Boolean) value;
            } else if (name == StandardSocketOptions.SO_REUSEADDR) {
                reuseAddress = (Boolean) value;
            } else if (KeepAlive.isOne(name)) {
                keepAliveTuning.set(name, value);
            } else if (name == StandardSocketOptions.IP_TOS) {
                trafficClass = Options.trafficClass(value);
            } else {
                // As the JDK's: negative is off, and the kernel's linger field is 16 bits.
                linger = Math.min(Math.max(-1, (Integer) value), 65_535);
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
            Object value;
            if (name == StandardSocketOptions.SO_RCVBUF) {
                value = receiveBufferSize > 0 ? receiveBufferSize : DEFAULT_BUFFER_SIZE;
            } else if (name == StandardSocketOptions.SO_SNDBUF) {
                value = sendBufferSize > 0 ? sendBufferSize : DEFAULT_BUFFER_SIZE;
            } else if (name == StandardSocketOptions.TCP_NODELAY) {
                value = tcpNoDelay;
            } else if (name == StandardSocketOptions.SO_KEEPALIVE) {
                value = keepAlive;
            } else if (name == StandardSocketOptions.SO_REUSEADDR) {
                value = reuseAddress;
            } else if (KeepAlive.isOne(name)) {
                value = keepAliveTuning.get(name);
            } else if (name == StandardSocketOptions.IP_TOS) {
                value = trafficClass;
            } else {
                value = linger;
            }
            return (T) value;
        }
    }

    @Override
    public Socket socket() {
        synchronized (stateLock) {
            if (adaptor == null) {
                try {
                    adaptor = new SocketAdaptor(this);
                } catch (java.net.SocketException e) {
                    throw new IllegalStateException("cannot create the socket adaptor", e);
                }
            }
            return adaptor;
        }
    }

    // ---- closing and selection

    @Override
    protected void implCloseSelectableChannel() throws IOException {
        synchronized (stateLock) {
            state = ST_CLOSED;
            // Blocked threads wake and fail; the peer sees end of stream, or a
            // reset with SO_LINGER 0. A channel still registered keeps its
            // connection until its keys go (holdForKey), as the JDK's its file.
            socket.close(linger == 0, isRegistered());
        }
    }

    @Override
    protected void implConfigureBlocking(boolean block) {
        // Each native call says whether it may block. The locks, as the JDK's:
        // a blocking read, write or connect ends first, so no selector
        // registers the channel while one is under way (the native blocking
        // connect relies on it: it tells no selector of its new fds).
        readLock.lock();
        try {
            writeLock.lock();
            try {
                blockingUnderLocks = block;
            } finally {
                writeLock.unlock();
            }
        } finally {
            readLock.unlock();
        }
    }

    @Override
    public boolean registerNative(long poller, int slot) throws IOException {
        return socket.registerWith(poller, slot);
    }

    @Override
    public boolean holdForKey() {
        return socket.begin();
    }

    @Override
    public void keyGone() {
        socket.end();
    }

    @Override
    public String toString() {
        StringBuilder text = new StringBuilder(getClass().getSimpleName()).append('[');
        synchronized (stateLock) {
            text.append(state == ST_CLOSED ? "closed" : state == ST_CONNECTED ? "connected"
                    : state == ST_CONNECTION_PENDING ? "connection-pending" : "unconnected");
            if (localAddress != null) {
                text.append(" local=").append(localAddress);
            }
            if (remoteAddress != null) {
                text.append(" remote=").append(remoteAddress);
            }
        }
        return text.append(']').toString();
    }
}
