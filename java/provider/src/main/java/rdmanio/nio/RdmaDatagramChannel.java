package rdmanio.nio;

import java.io.IOException;
import java.lang.ref.Cleaner;
import java.net.DatagramSocket;
import java.net.Inet4Address;
import java.net.Inet6Address;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.NetworkInterface;
import java.net.ProtocolFamily;
import java.net.SocketAddress;
import java.net.SocketException;
import java.net.SocketOption;
import java.net.StandardProtocolFamily;
import java.net.StandardSocketOptions;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.AlreadyBoundException;
import java.nio.channels.AlreadyConnectedException;
import java.nio.channels.ClosedChannelException;
import java.nio.channels.DatagramChannel;
import java.nio.channels.MembershipKey;
import java.nio.channels.NotYetConnectedException;
import java.nio.channels.UnsupportedAddressTypeException;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.Set;
import java.util.concurrent.locks.ReentrantLock;

/**
 * A datagram channel over a kernel UDP socket in the engine (datagrams go over
 * the kernel whatever the provider's transport), so that rdma-nio's selectors
 * take it. It follows the JDK's {@code DatagramChannelImpl}: IPv6 with IPv4
 * mapped in unless IPv4 is asked for or preferred, an unbound channel binds on
 * its first send or receive, a connect drops the datagrams that came before,
 * and the socket closes once no selector holds it.
 *
 * <p>Locks: {@code readLock} and {@code writeLock} order the receives and the
 * sends ({@code readLock} guards {@code sender}), then {@code stateLock} the
 * addresses and memberships, as in the JDK.
 */
final class RdmaDatagramChannel extends DatagramChannel implements RdmaChannel {
    private static final Set<SocketOption<?>> OPTIONS = Set.of(StandardSocketOptions.SO_SNDBUF,
            StandardSocketOptions.SO_RCVBUF, StandardSocketOptions.SO_REUSEADDR, StandardSocketOptions.SO_REUSEPORT,
            StandardSocketOptions.SO_BROADCAST, StandardSocketOptions.IP_TOS, StandardSocketOptions.IP_MULTICAST_IF,
            StandardSocketOptions.IP_MULTICAST_TTL, StandardSocketOptions.IP_MULTICAST_LOOP);

    /** Closes the sockets of channels dropped unclosed, as the JDK's datagram channels are. */
    private static final Cleaner CLEANER = Cleaner.create();

    private final ProtocolFamily family;
    private final NativeSocket socket;
    /** Closes the socket: at the channel's close, or once the channel is unreachable. */
    private final Cleaner.Cleanable closer;
    private final ReentrantLock readLock = new ReentrantLock();
    private final ReentrantLock writeLock = new ReentrantLock();
    private final Object stateLock = new Object();

    // -- guarded by readLock
    private final ByteBuffer sender =
            ByteBuffer.allocateDirect(DatagramNative.SENDER_BYTES).order(ByteOrder.BIG_ENDIAN);
    /** The last sender, as bytes and as returned: a sender that repeats is returned as the same object. */
    private final ByteBuffer lastSender = ByteBuffer.allocate(DatagramNative.SENDER_BYTES);
    private InetSocketAddress lastSenderAddress;
    // -- guarded by stateLock
    private InetSocketAddress local;
    private InetSocketAddress remote;
    private NetworkInterface multicastInterface;
    private final List<RdmaMembershipKey> memberships = new ArrayList<>();
    private DatagramSocket adaptor;
    // --

    RdmaDatagramChannel(RdmaSelectorProvider provider, ProtocolFamily family) throws IOException {
        super(provider);
        Objects.requireNonNull(family, "'family' is null");
        if (family != StandardProtocolFamily.INET && family != StandardProtocolFamily.INET6) {
            throw new UnsupportedOperationException("Protocol family not supported");
        }
        if (family == StandardProtocolFamily.INET6 && !ipv6Available()) {
            throw new UnsupportedOperationException("IPv6 not available");
        }
        this.family = family;
        this.socket = new NativeSocket(DatagramNative.open(family == StandardProtocolFamily.INET6,
                provider.config().blockingSpinMicros()));
        this.closer = CLEANER.register(this, closing(socket));
    }

    /** The close of {@code socket}, which must not hold the channel (or it never becomes unreachable). */
    private static Runnable closing(NativeSocket socket) {
        return () -> socket.close(false);
    }

    /** A channel over a UDP socket made already (the one inherited on standard input). */
    RdmaDatagramChannel(RdmaSelectorProvider provider, ProtocolFamily family, NativeSocket inherited)
            throws IOException {
        super(provider);
        this.family = family;
        this.socket = inherited;
        this.closer = CLEANER.register(this, closing(inherited));
        this.local = Addresses.parse(SocketNative.address(inherited.handle, false));
        InetSocketAddress peer = Addresses.parse(SocketNative.address(inherited.handle, true));
        this.remote = peer.getPort() == 0 ? null : peer;
    }

    /** The family the JDK's channels default to: IPv6 unless IPv4 is preferred. */
    static ProtocolFamily defaultFamily() {
        return ipv6Available() ? StandardProtocolFamily.INET6 : StandardProtocolFamily.INET;
    }

    private static boolean ipv6Available() {
        return !Boolean.getBoolean("java.net.preferIPv4Stack");
    }

    // ---- addresses

    @Override
    public DatagramChannel bind(SocketAddress address) throws IOException {
        readLock.lock();
        writeLock.lock();
        try {
            synchronized (stateLock) {
                ensureOpen();
                if (local != null) {
                    throw new AlreadyBoundException();
                }
                bindLocked(address);
            }
        } finally {
            writeLock.unlock();
            readLock.unlock();
        }
        return this;
    }

    /** Binds to {@code address}, or to the wildcard address and any port when null. */
    @SuppressWarnings("removal")
    private void bindLocked(SocketAddress address) throws IOException {
        InetSocketAddress target = address == null ? new InetSocketAddress("0.0.0.0", 0) : checkAddress(address);
        SecurityManager security = System.getSecurityManager();
        if (security != null) {
            security.checkListen(target.getPort());
        }
        local = Addresses.parse(DatagramNative.bind(socket.handle, Addresses.ip(target), target.getPort()));
    }

    /** NIO's checks of an address, and that this channel's family takes it. */
    private InetSocketAddress checkAddress(SocketAddress address) {
        InetSocketAddress inet = Addresses.check(address);
        if (family == StandardProtocolFamily.INET && !(inet.getAddress() instanceof Inet4Address)) {
            throw new UnsupportedAddressTypeException();
        }
        return inet;
    }

    @Override
    public DatagramChannel connect(SocketAddress address) throws IOException {
        return connect(address, true);
    }

    /** Connects; {@code check}: refuses a connected channel (the adaptor reconnects). */
    DatagramChannel connect(SocketAddress address, boolean check) throws IOException {
        InetSocketAddress target = checkAddress(address);
        checkPermission(target, true);
        readLock.lock();
        writeLock.lock();
        try {
            synchronized (stateLock) {
                ensureOpen();
                if (check && remote != null) {
                    throw new AlreadyConnectedException();
                }
                if (target.getPort() == 0) {
                    throw new SocketException("Can't connect to port 0");
                }
                if (local == null) {
                    bindLocked(null);
                }
                local = Addresses.parse(DatagramNative.connect(socket.handle, Addresses.ip(target), target.getPort()));
                remote = target;
            }
        } finally {
            writeLock.unlock();
            readLock.unlock();
        }
        return this;
    }

    @Override
    public DatagramChannel disconnect() throws IOException {
        readLock.lock();
        writeLock.lock();
        try {
            synchronized (stateLock) {
                if (!isOpen() || remote == null) {
                    return this;
                }
                local = Addresses.parse(DatagramNative.disconnect(socket.handle));
                remote = null;
            }
        } finally {
            writeLock.unlock();
            readLock.unlock();
        }
        return this;
    }

    /**
     * A security manager's permission to send to {@code to} (and, connecting,
     * to receive from it), checked as the JDK's channel does.
     */
    @SuppressWarnings("removal")
    private static void checkPermission(InetSocketAddress to, boolean connecting) {
        SecurityManager security = System.getSecurityManager();
        if (security == null) {
            return;
        }
        InetAddress ip = to.getAddress();
        if (ip.isMulticastAddress()) {
            security.checkMulticast(ip);
        } else {
            security.checkConnect(ip.getHostAddress(), to.getPort());
            if (connecting) {
                security.checkAccept(ip.getHostAddress(), to.getPort());
            }
        }
    }

    @Override
    public boolean isConnected() {
        synchronized (stateLock) {
            return remote != null;
        }
    }

    @Override
    public SocketAddress getLocalAddress() throws IOException {
        synchronized (stateLock) {
            ensureOpen();
            return local;
        }
    }

    @Override
    public SocketAddress getRemoteAddress() throws IOException {
        synchronized (stateLock) {
            ensureOpen();
            return remote;
        }
    }

    /** The local address, null while unbound (the adaptor's view: no exception once closed). */
    InetSocketAddress localAddress() {
        synchronized (stateLock) {
            return local;
        }
    }

    InetSocketAddress remoteAddress() {
        synchronized (stateLock) {
            return remote;
        }
    }

    private void ensureOpen() throws ClosedChannelException {
        if (!isOpen()) {
            throw new ClosedChannelException();
        }
    }

    /**
     * Starts an operation: the channel is open and bound (an unbound one binds
     * now, as the JDK's does), and connected if {@code mustBeConnected}; returns
     * the peer, null when not connected. Every call is followed by {@link #endOperation}.
     */
    private InetSocketAddress beginOperation(boolean blocking, boolean mustBeConnected) throws IOException {
        if (blocking) {
            begin(); // an interrupt closes the channel
        }
        synchronized (stateLock) {
            if (!isOpen() || !socket.begin()) {
                throw RdmaChannel.closed(blocking);
            }
            try {
                if (remote == null && mustBeConnected) {
                    throw new NotYetConnectedException();
                }
                if (local == null) {
                    bindLocked(null);
                }
            } catch (IOException | RuntimeException e) {
                socket.end();
                throw e;
            }
            return remote;
        }
    }

    private void endOperation(boolean blocking, boolean completed, boolean begun) throws IOException {
        if (begun) {
            socket.end();
        }
        if (blocking) {
            end(completed); // throws AsynchronousCloseException or ClosedByInterruptException if due
        }
    }

    // ---- receiving

    @Override
    public SocketAddress receive(ByteBuffer dst) throws IOException {
        if (dst.isReadOnly()) {
            throw new IllegalArgumentException("Read-only buffer");
        }
        return receive(dst, -1);
    }

    /**
     * Receives one datagram into {@code dst}: its sender, null when none waits
     * (non-blocking); a blocking receive gives up after {@code timeoutMillis}
     * (negative: never) with {@link java.net.SocketTimeoutException}.
     */
    InetSocketAddress receive(ByteBuffer dst, int timeoutMillis) throws IOException {
        readLock.lock();
        try {
            boolean blocking = isBlocking();
            boolean begun = false;
            InetSocketAddress from = null;
            try {
                beginOperation(blocking, false);
                begun = true;
                if (receiveOne(dst, blocking, timeoutMillis) >= 0) {
                    from = senderAddress();
                }
                return from;
            } finally {
                endOperation(blocking, from != null, begun);
            }
        } finally {
            readLock.unlock();
        }
    }

    /** One native receive into {@code dst}: its length, or UNAVAILABLE; under readLock. */
    private int receiveOne(ByteBuffer dst, boolean blocking, int timeoutMillis) throws IOException {
        int position = dst.position();
        int wanted = dst.remaining();
        if (dst.isDirect()) {
            int n = DatagramNative.receive(socket.handle, dst, position, wanted, blocking, timeoutMillis, sender);
            if (n > 0) {
                dst.position(position + n);
            }
            return n;
        }
        ByteBuffer direct = Staging.get(wanted);
        int n = DatagramNative.receive(socket.handle, direct, 0, Math.min(wanted, direct.capacity()), blocking,
                timeoutMillis, sender);
        if (n > 0) {
            dst.put(direct.limit(n));
        }
        return n;
    }

    /**
     * The sender of the last datagram received; under readLock. The same
     * object as the time before when the sender is the same (as the JDK's
     * channel caches it: a server answering one client allocates nothing).
     */
    private InetSocketAddress senderAddress() throws IOException {
        if (lastSenderAddress != null && sender.clear().equals(lastSender.clear())) {
            return lastSenderAddress;
        }
        lastSender.clear().put(sender.clear());
        int port = sender.getShort(2) & 0xffff;
        byte[] address = new byte[sender.get(0) == 4 ? 4 : 16];
        sender.get(8, address);
        int scope = sender.getInt(4);
        InetAddress ip = scope == 0
                ? InetAddress.getByAddress(address)
                : Inet6Address.getByAddress(null, address, scope);
        lastSenderAddress = new InetSocketAddress(ip, port);
        return lastSenderAddress;
    }

    @Override
    public int read(ByteBuffer dst) throws IOException {
        Objects.requireNonNull(dst, "dst");
        if (dst.isReadOnly()) {
            throw new IllegalArgumentException("Read-only buffer");
        }
        return transfer(true, dst, null, 0, 0);
    }

    @Override
    public long read(ByteBuffer[] dsts, int offset, int length) throws IOException {
        RdmaSocketChannel.checkBuffers(dsts, offset, length, true);
        return transfer(true, null, dsts, offset, length);
    }

    /**
     * A connected channel's read or write of one datagram, into or out of
     * {@code single}, else across {@code buffers[offset, offset + length)}
     * (two parameters rather than a one-element array: no allocation per datagram).
     */
    private int transfer(boolean reading, ByteBuffer single, ByteBuffer[] buffers, int offset, int length)
            throws IOException {
        ReentrantLock lock = reading ? readLock : writeLock;
        lock.lock();
        try {
            boolean blocking = isBlocking();
            boolean begun = false;
            int n = 0;
            try {
                beginOperation(blocking, true);
                begun = true;
                if (single != null) {
                    n = reading ? receiveOne(single, blocking, -1) : writeOne(single, blocking);
                } else {
                    n = reading ? scatter(buffers, offset, length, blocking) : gather(buffers, offset, length, blocking);
                }
                return Math.max(n, 0);
            } finally {
                endOperation(blocking, n > 0, begun);
            }
        } finally {
            lock.unlock();
        }
    }

    /** Receives one datagram across the buffers, through the staging buffer. */
    private int scatter(ByteBuffer[] dsts, int offset, int length, boolean blocking) throws IOException {
        long wanted = 0;
        for (int i = offset; i < offset + length; i++) {
            wanted += dsts[i].remaining();
        }
        ByteBuffer direct = Staging.get((int) Math.min(wanted, Staging.MAX));
        int n = receiveOne(direct.limit((int) Math.min(wanted, direct.capacity())), blocking, -1);
        direct.flip();
        for (int i = offset; i < offset + length && direct.hasRemaining(); i++) {
            int chunk = Math.min(direct.remaining(), dsts[i].remaining());
            dsts[i].put(direct.slice().limit(chunk));
            direct.position(direct.position() + chunk);
        }
        return n;
    }

    // ---- sending

    @Override
    public int send(ByteBuffer src, SocketAddress target) throws IOException {
        Objects.requireNonNull(src, "src");
        InetSocketAddress to = checkAddress(target);
        writeLock.lock();
        try {
            boolean blocking = isBlocking();
            boolean begun = false;
            int n = -1;
            try {
                InetSocketAddress peer = beginOperation(blocking, false);
                begun = true;
                if (peer != null) {
                    if (!to.equals(peer)) {
                        throw new AlreadyConnectedException();
                    }
                    n = src.hasRemaining() ? sendOne(src, null, blocking) : 0;
                } else {
                    checkPermission(to, false);
                    if (to.getPort() == 0) {
                        throw new SocketException("Can't send to port 0");
                    }
                    n = sendOne(src, to, blocking);
                }
                return Math.max(n, 0);
            } finally {
                endOperation(blocking, n >= 0, begun);
            }
        } finally {
            writeLock.unlock();
        }
    }

    /** One native send of {@code src}'s remaining bytes to {@code to} (null: the peer); under writeLock. */
    private int sendOne(ByteBuffer src, InetSocketAddress to, boolean blocking) throws IOException {
        String ip = to == null ? "" : Addresses.ip(to);
        int port = to == null ? -1 : to.getPort();
        int position = src.position();
        int length = src.remaining();
        ByteBuffer direct = src;
        int from = position;
        if (!src.isDirect()) {
            direct = Staging.get(length);
            length = Math.min(length, direct.capacity()); // longer than any datagram: the kernel refuses it
            direct.put(0, src, position, length);
            from = 0;
        }
        int n = DatagramNative.send(socket.handle, direct, from, length, ip, port, blocking);
        if (n > 0) {
            src.position(position + n);
        }
        return n;
    }

    @Override
    public int write(ByteBuffer src) throws IOException {
        Objects.requireNonNull(src, "src");
        return transfer(false, src, null, 0, 0);
    }

    @Override
    public long write(ByteBuffer[] srcs, int offset, int length) throws IOException {
        RdmaSocketChannel.checkBuffers(srcs, offset, length, false);
        return transfer(false, null, srcs, offset, length);
    }

    private int writeOne(ByteBuffer src, boolean blocking) throws IOException {
        return src.hasRemaining() ? sendOne(src, null, blocking) : 0;
    }

    /** Sends the buffers' bytes as one datagram, through the staging buffer. */
    private int gather(ByteBuffer[] srcs, int offset, int length, boolean blocking) throws IOException {
        long total = 0;
        for (int i = offset; i < offset + length; i++) {
            total += srcs[i].remaining();
        }
        if (total == 0) {
            return 0;
        }
        ByteBuffer direct = Staging.get((int) Math.min(total, Staging.MAX));
        for (int i = offset; i < offset + length && direct.hasRemaining(); i++) {
            ByteBuffer src = srcs[i];
            int chunk = Math.min(src.remaining(), direct.remaining());
            direct.put(src.slice().limit(chunk));
        }
        int n = writeOne(direct.flip(), blocking);
        for (int i = offset, left = Math.max(n, 0); i < offset + length && left > 0; i++) {
            int chunk = Math.min(left, srcs[i].remaining());
            srcs[i].position(srcs[i].position() + chunk);
            left -= chunk;
        }
        return n;
    }

    // ---- options

    @Override
    public <T> DatagramChannel setOption(SocketOption<T> name, T value) throws IOException {
        Options.checkValue(OPTIONS, name, value);
        synchronized (stateLock) {
            ensureOpen();
            if (name == StandardSocketOptions.IP_MULTICAST_IF) {
                NetworkInterface interf = (NetworkInterface) value;
                DatagramNative.setOption(socket.handle, DatagramNative.IP_MULTICAST_IF, interfaceIndex(interf));
                multicastInterface = interf;
            } else {
                DatagramNative.setOption(socket.handle, optionNumber(name), nativeValue(name, value));
            }
        }
        return this;
    }

    private static int optionNumber(SocketOption<?> name) {
        if (name == StandardSocketOptions.SO_SNDBUF) {
            return DatagramNative.SO_SNDBUF;
        } else if (name == StandardSocketOptions.SO_RCVBUF) {
            return DatagramNative.SO_RCVBUF;
        } else if (name == StandardSocketOptions.SO_REUSEADDR) {
            return DatagramNative.SO_REUSEADDR;
        } else if (name == StandardSocketOptions.SO_REUSEPORT) {
            return DatagramNative.SO_REUSEPORT;
        } else if (name == StandardSocketOptions.SO_BROADCAST) {
            return DatagramNative.SO_BROADCAST;
        } else if (name == StandardSocketOptions.IP_TOS) {
            return DatagramNative.IP_TOS;
        } else if (name == StandardSocketOptions.IP_MULTICAST_TTL) {
            return DatagramNative.IP_MULTICAST_TTL;
        } else {
            return DatagramNative.IP_MULTICAST_LOOP;
        }
    }

    /** The int the kernel takes, after the JDK's range checks. */
    private static int nativeValue(SocketOption<?> name, Object value) {
        if (value instanceof Boolean) {
            return (Boolean) value ? 1 : 0;
        }
        int i = (Integer) value;
        if (name == StandardSocketOptions.SO_SNDBUF || name == StandardSocketOptions.SO_RCVBUF) {
            return Options.bufferSize(value);
        }
        if (name == StandardSocketOptions.IP_TOS) {
            return Options.trafficClass(value);
        }
        if (name == StandardSocketOptions.IP_MULTICAST_TTL && (i < 0 || i > 255)) {
            throw new IllegalArgumentException("Invalid TTL/hop value");
        }
        return i;
    }

    /** An interface's index; on an IPv4 socket it must have an IPv4 address, as the JDK asks. */
    private int interfaceIndex(NetworkInterface interf) throws IOException {
        int index = interf.getIndex();
        if (index == -1) {
            throw new IOException("Network interface cannot be identified");
        }
        if (family == StandardProtocolFamily.INET
                && interf.inetAddresses().noneMatch(address -> address instanceof Inet4Address)) {
            throw new IOException("Network interface not configured for IPv4");
        }
        return index;
    }

    @Override
    @SuppressWarnings("unchecked")
    public <T> T getOption(SocketOption<T> name) throws IOException {
        Options.checkSupported(OPTIONS, name);
        synchronized (stateLock) {
            ensureOpen();
            if (name == StandardSocketOptions.IP_MULTICAST_IF) {
                return (T) multicastInterface;
            }
            int value = DatagramNative.getOption(socket.handle, optionNumber(name));
            return (T) (name.type() == Boolean.class ? (Object) (value != 0) : (Object) value);
        }
    }

    @Override
    public Set<SocketOption<?>> supportedOptions() {
        return OPTIONS;
    }

    // ---- multicast

    @Override
    public MembershipKey join(InetAddress group, NetworkInterface interf) throws IOException {
        return join(group, interf, null, false);
    }

    @Override
    public MembershipKey join(InetAddress group, NetworkInterface interf, InetAddress source) throws IOException {
        Objects.requireNonNull(source, "source");
        return join(group, interf, source, true);
    }

    private MembershipKey join(InetAddress group, NetworkInterface interf, InetAddress source, boolean specific)
            throws IOException {
        Objects.requireNonNull(group, "group");
        Objects.requireNonNull(interf, "interf");
        if (!group.isMulticastAddress()) {
            throw new IllegalArgumentException("Group not a multicast address");
        }
        if (group instanceof Inet6Address && family != StandardProtocolFamily.INET6) {
            throw new IllegalArgumentException("Only IPv6 sockets can join IPv6 multicast group");
        }
        if (specific) {
            checkSource(group, source);
        }
        @SuppressWarnings("removal")
        SecurityManager security = System.getSecurityManager();
        if (security != null) {
            security.checkMulticast(group);
        }
        synchronized (stateLock) {
            ensureOpen();
            for (RdmaMembershipKey key : memberships) {
                if (!key.group().equals(group) || !key.networkInterface().equals(interf)) {
                    continue;
                }
                if (source == null) {
                    if (key.sourceAddress() == null) {
                        return key;
                    }
                    throw new IllegalStateException("Already have source-specific membership");
                }
                if (key.sourceAddress() == null) {
                    throw new IllegalStateException("Already a member to receive all packets");
                }
                if (source.equals(key.sourceAddress())) {
                    return key;
                }
            }
            int index = interfaceIndex(interf);
            DatagramNative.membership(socket.handle, DatagramNative.JOIN, group.getHostAddress(), index,
                    source == null ? "" : source.getHostAddress());
            RdmaMembershipKey key = new RdmaMembershipKey(this, group, interf, source);
            memberships.add(key);
            return key;
        }
    }

    /** The JDK's checks of a source address (to join from or to block). */
    static void checkSource(InetAddress group, InetAddress source) {
        if (source.isAnyLocalAddress()) {
            throw new IllegalArgumentException("Source address is a wildcard address");
        }
        if (source.isMulticastAddress()) {
            throw new IllegalArgumentException("Source address is multicast address");
        }
        if (source.getClass() != group.getClass()) {
            throw new IllegalArgumentException("Source address is different type to group");
        }
    }

    /** The key's membership joined for every source and on {@code interf}, if there is one. */
    MembershipKey findMembership(InetAddress group, NetworkInterface interf) {
        synchronized (stateLock) {
            return memberships.stream()
                    .filter(key -> key.group().equals(group) && key.networkInterface().equals(interf)
                            && key.sourceAddress() == null)
                    .findFirst().orElse(null);
        }
    }

    /** Leaves a key's group (the key's drop); nothing once invalid. */
    void drop(RdmaMembershipKey key) {
        synchronized (stateLock) {
            if (!key.isValid()) {
                return;
            }
            key.invalidate();
            memberships.remove(key);
            if (!isOpen()) {
                return;
            }
            try {
                membership(DatagramNative.LEAVE, key, key.sourceAddress());
            } catch (IOException e) {
                throw new IllegalStateException("cannot leave " + key, e);
            }
        }
    }

    /** Blocks or unblocks {@code source} of a key's group (the key checked it). */
    void blockSource(RdmaMembershipKey key, InetAddress source, boolean block) throws IOException {
        synchronized (stateLock) {
            if (!key.isValid()) {
                throw new IllegalStateException("key is no longer valid");
            }
            if (block) {
                checkSource(key.group(), source);
            }
            membership(block ? DatagramNative.BLOCK : DatagramNative.UNBLOCK, key, source);
        }
    }

    private void membership(int op, RdmaMembershipKey key, InetAddress source) throws IOException {
        DatagramNative.membership(socket.handle, op, key.group().getHostAddress(), key.networkInterface().getIndex(),
                source == null ? "" : source.getHostAddress());
    }

    /** The stateLock, which the keys' blocked sets share. */
    Object stateLock() {
        return stateLock;
    }

    // ---- the rest

    @Override
    public DatagramSocket socket() {
        synchronized (stateLock) {
            if (adaptor == null) {
                adaptor = DatagramSocketAdaptor.create(this);
            }
            return adaptor;
        }
    }

    @Override
    protected void implCloseSelectableChannel() {
        synchronized (stateLock) {
            for (RdmaMembershipKey key : memberships) {
                key.invalidate(); // the kernel leaves the groups with the socket
            }
            memberships.clear();
        }
        closer.clean(); // blocked operations wake and fail; the fd goes with the last selector
    }

    @Override
    protected void implConfigureBlocking(boolean block) {
        // Each native call says whether it may block; a blocking receive or
        // send ends first, as with the JDK's (its locks, in their order).
        readLock.lock();
        try {
            writeLock.lock();
            writeLock.unlock();
        } finally {
            readLock.unlock();
        }
    }

    @Override
    public boolean registerNative(long poller, int slot) throws IOException {
        return socket.registerWith(poller, slot);
    }

    @Override
    public String toString() {
        StringBuilder text = new StringBuilder(getClass().getSuperclass().getName()).append('[');
        if (!isOpen()) {
            text.append("closed");
        } else {
            synchronized (stateLock) {
                text.append(remote != null ? "connected" : "unconnected");
                if (local != null) {
                    text.append(" local=").append(local);
                }
                if (remote != null) {
                    text.append(" remote=").append(remote);
                }
            }
        }
        return text.append(']').toString();
    }
}
