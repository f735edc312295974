package rdmanio.nio;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.DatagramPacket;
import java.net.DatagramSocket;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.MulticastSocket;
import java.net.NetworkInterface;
import java.net.SocketAddress;
import java.net.SocketException;
import java.net.SocketOption;
import java.net.StandardSocketOptions;
import java.nio.ByteBuffer;
import java.nio.channels.AlreadyConnectedException;
import java.nio.channels.ClosedChannelException;
import java.nio.channels.DatagramChannel;
import java.nio.channels.IllegalBlockingModeException;
import java.nio.channels.MembershipKey;
import java.util.Objects;
import java.util.Set;

/**
 * {@link RdmaDatagramChannel#socket()}: a {@link MulticastSocket} over the
 * channel, as the JDK's {@code DatagramSocketAdaptor} (every method goes to
 * the channel; its exceptions become the {@link SocketException}s java.net
 * declares). {@code MulticastSocket}'s only constructors open a socket of the
 * JDK's for the superclass to delegate to, which nothing here uses: it is
 * closed at once.
 */
final class DatagramSocketAdaptor extends MulticastSocket {
    private final RdmaDatagramChannel channel;
    private volatile int timeoutMillis;

    private DatagramSocketAdaptor(RdmaDatagramChannel channel) throws IOException {
        super((SocketAddress) null);
        super.close(); // the superclass's own socket: unused
        this.channel = channel;
    }

    static DatagramSocket create(RdmaDatagramChannel channel) {
        try {
            return new DatagramSocketAdaptor(channel);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** Runs a channel operation with java.net's exceptions (a closed channel: "Socket is closed"). */
    private static <T> T translated(AdaptorExceptions.Operation<T> operation) throws IOException {
        try {
            return AdaptorExceptions.translated(operation);
        } catch (ClosedChannelException e) {
            SocketException closed = new SocketException("Socket is closed");
            closed.initCause(e);
            throw closed;
        }
    }

    private static InetSocketAddress inet(SocketAddress address) {
        if (!(address instanceof InetSocketAddress)) {
            throw new IllegalArgumentException("Unsupported address type");
        }
        return (InetSocketAddress) address;
    }

    @Override
    public void bind(SocketAddress local) throws SocketException {
        SocketAddress address = local == null ? new InetSocketAddress(0) : inet(local);
        socketExceptions(() -> channel.bind(address));
    }

    /** Runs an operation declared to throw SocketException only. */
    private static <T> T socketExceptions(AdaptorExceptions.Operation<T> operation) throws SocketException {
        try {
            return translated(operation);
        } catch (SocketException e) {
            throw e;
        } catch (IOException e) {
            SocketException socketException = new SocketException(e.getMessage());
            socketException.initCause(e);
            throw socketException;
        }
    }

    @Override
    public void connect(InetAddress address, int port) {
        if (address == null) {
            throw new IllegalArgumentException("Address can't be null");
        }
        try {
            connect(new InetSocketAddress(address, port));
        } catch (SocketException e) {
            throw new UncheckedIOException(e);
        }
    }

    @Override
    public void connect(SocketAddress remote) throws SocketException {
        if (remote == null) {
            throw new IllegalArgumentException("Address can't be null");
        }
        InetSocketAddress address = inet(remote);
        try {
            socketExceptions(() -> channel.connect(address, false));
        } catch (SocketException e) {
            if (e.getCause() instanceof ClosedChannelException) {
                return; // as the JDK's adaptor: connecting a closed socket does nothing
            }
            throw e;
        }
    }

    @Override
    public void disconnect() {
        try {
            channel.disconnect();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    @Override
    public boolean isBound() {
        return channel.localAddress() != null;
    }

    @Override
    public boolean isConnected() {
        return channel.remoteAddress() != null;
    }

    @Override
    public InetAddress getInetAddress() {
        InetSocketAddress remote = channel.remoteAddress();
        return remote == null ? null : remote.getAddress();
    }

    @Override
    public int getPort() {
        InetSocketAddress remote = channel.remoteAddress();
        return remote == null ? -1 : remote.getPort();
    }

    @Override
    public SocketAddress getRemoteSocketAddress() {
        return channel.remoteAddress();
    }

    @Override
    public SocketAddress getLocalSocketAddress() {
        return isClosed() ? null : channel.localAddress();
    }

    @Override
    public void send(DatagramPacket packet) throws IOException {
        synchronized (packet) {
            if (!channel.isBlocking()) {
                throw new IllegalBlockingModeException();
            }
            InetSocketAddress target;
            if (packet.getAddress() == null) {
                InetSocketAddress remote = channel.remoteAddress();
                if (remote == null) {
                    throw new IllegalArgumentException("Address not set");
                }
                packet.setAddress(remote.getAddress());
                packet.setPort(remote.getPort());
                target = remote;
            } else {
                target = (InetSocketAddress) packet.getSocketAddress();
            }
            ByteBuffer data = ByteBuffer.wrap(packet.getData(), packet.getOffset(), packet.getLength());
            try {
                translated(() -> channel.send(data, target));
            } catch (AlreadyConnectedException e) {
                throw new IllegalArgumentException("Connected and packet address differ");
            }
        }
    }

    @Override
    public void receive(DatagramPacket packet) throws IOException {
        synchronized (packet) {
            if (!channel.isBlocking()) {
                throw new IllegalBlockingModeException();
            }
            ByteBuffer data =
                    ByteBuffer.wrap(packet.getData(), packet.getOffset(), DatagramNative.packetCapacity(packet));
            int timeout = timeoutMillis;
            InetSocketAddress sender = translated(() -> channel.receive(data, timeout == 0 ? -1 : timeout));
            DatagramNative.setReceivedLength(packet, data.position() - packet.getOffset());
            packet.setSocketAddress(sender);
        }
    }

    @Override
    public InetAddress getLocalAddress() {
        if (isClosed()) {
            return null;
        }
        InetSocketAddress local = channel.localAddress();
        return (local == null ? new InetSocketAddress(0) : local).getAddress();
    }

    @Override
    public int getLocalPort() {
        if (isClosed()) {
            return -1;
        }
        InetSocketAddress local = channel.localAddress();
        return local == null ? 0 : local.getPort();
    }

    @Override
    public void setSoTimeout(int timeout) throws SocketException {
        if (isClosed()) {
            throw new SocketException("Socket is closed");
        }
        if (timeout < 0) {
            throw new IllegalArgumentException("timeout < 0");
        }
        timeoutMillis = timeout;
    }

    @Override
    public int getSoTimeout() throws SocketException {
        if (isClosed()) {
            throw new SocketException("Socket is closed");
        }
        return timeoutMillis;
    }

    private <T> void set(SocketOption<T> name, T value) throws SocketException {
        socketExceptions(() -> channel.setOption(name, value));
    }

    private <T> T get(SocketOption<T> name) throws SocketException {
        return socketExceptions(() -> channel.getOption(name));
    }

    @Override
    public void setSendBufferSize(int size) throws SocketException {
        if (size <= 0) {
            throw new IllegalArgumentException("Invalid send size");
        }
        set(StandardSocketOptions.SO_SNDBUF, size);
    }

    @Override
    public int getSendBufferSize() throws SocketException {
        return get(StandardSocketOptions.SO_SNDBUF);
    }

    @Override
    public void setReceiveBufferSize(int size) throws SocketException {
        if (size <= 0) {
            throw new IllegalArgumentException("Invalid receive size");
        }
        set(StandardSocketOptions.SO_RCVBUF, size);
    }

    @Override
    public int getReceiveBufferSize() throws SocketException {
        return get(StandardSocketOptions.SO_RCVBUF);
    }

    @Override
    public void setReuseAddress(boolean on) throws SocketException {
        set(StandardSocketOptions.SO_REUSEADDR, on);
    }

    @Override
    public boolean getReuseAddress() throws SocketException {
        return get(StandardSocketOptions.SO_REUSEADDR);
    }

    @Override
    public void setBroadcast(boolean on) throws SocketException {
        set(StandardSocketOptions.SO_BROADCAST, on);
    }

    @Override
    public boolean getBroadcast() throws SocketException {
        return get(StandardSocketOptions.SO_BROADCAST);
    }

    @Override
    public void setTrafficClass(int tc) throws SocketException {
        set(StandardSocketOptions.IP_TOS, tc);
    }

    @Override
    public int getTrafficClass() throws SocketException {
        return get(StandardSocketOptions.IP_TOS);
    }

    @Override
    public void close() {
        try {
            channel.close();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    @Override
    public boolean isClosed() {
        return !channel.isOpen();
    }

    @Override
    public DatagramChannel getChannel() {
        return channel;
    }

    @Override
    public <T> DatagramSocket setOption(SocketOption<T> name, T value) throws IOException {
        channel.setOption(name, value);
        return this;
    }

    @Override
    public <T> T getOption(SocketOption<T> name) throws IOException {
        return channel.getOption(name);
    }

    @Override
    public Set<SocketOption<?>> supportedOptions() {
        return channel.supportedOptions();
    }

    // ---- MulticastSocket

    @Override
    @Deprecated
    public void setTTL(byte ttl) throws IOException {
        setTimeToLive(Byte.toUnsignedInt(ttl));
    }

    @Override
    public synchronized void setTimeToLive(int ttl) throws IOException {
        set(StandardSocketOptions.IP_MULTICAST_TTL, ttl);
    }

    @Override
    @Deprecated
    public byte getTTL() throws IOException {
        return (byte) getTimeToLive();
    }

    @Override
    public synchronized int getTimeToLive() throws IOException {
        return get(StandardSocketOptions.IP_MULTICAST_TTL);
    }

    @Override
    @Deprecated
    public void joinGroup(InetAddress group) throws IOException {
        Objects.requireNonNull(group, "group");
        try {
            joinGroup(new InetSocketAddress(group, 0), null);
        } catch (IllegalArgumentException e) {
            throw (SocketException) new SocketException("joinGroup failed").initCause(e);
        }
    }

    @Override
    @Deprecated
    public void leaveGroup(InetAddress group) throws IOException {
        Objects.requireNonNull(group, "group");
        try {
            leaveGroup(new InetSocketAddress(group, 0), null);
        } catch (IllegalArgumentException e) {
            throw (SocketException) new SocketException("leaveGroup failed").initCause(e);
        }
    }

    private static InetAddress group(SocketAddress address) throws SocketException {
        if (!(address instanceof InetSocketAddress)) {
            throw new IllegalArgumentException("Unsupported address type");
        }
        InetAddress group = ((InetSocketAddress) address).getAddress();
        if (group == null) {
            throw new IllegalArgumentException("Unresolved address");
        }
        if (!group.isMulticastAddress()) {
            throw new SocketException("Not a multicast address");
        }
        return group;
    }

    @Override
    public void joinGroup(SocketAddress address, NetworkInterface interf) throws IOException {
        InetAddress group = group(address);
        NetworkInterface on = interf != null ? interf : defaultInterface();
        if (isClosed()) {
            throw new SocketException("Socket is closed");
        }
        synchronized (this) {
            if (channel.findMembership(group, on) != null) {
                throw new SocketException("Already a member of group");
            }
            channel.join(group, on);
        }
    }

    @Override
    public void leaveGroup(SocketAddress address, NetworkInterface interf) throws IOException {
        InetAddress group = group(address);
        NetworkInterface on = interf != null ? interf : defaultInterface();
        if (isClosed()) {
            throw new SocketException("Socket is closed");
        }
        synchronized (this) {
            MembershipKey key = channel.findMembership(group, on);
            if (key == null) {
                throw new SocketException("Not a member of group");
            }
            key.drop();
        }
    }

    /**
     * The interface to join on when none is named: the outgoing multicast
     * interface if set, else the one with the default route's address, else
     * the first that is up and multicast-capable.
     */
    private NetworkInterface defaultInterface() throws SocketException {
        NetworkInterface set = get(StandardSocketOptions.IP_MULTICAST_IF);
        if (set != null) {
            return set;
        }
        return NetworkInterface.networkInterfaces().filter(DatagramSocketAdaptor::multicastCapable).findFirst()
                .orElseThrow(() -> new SocketException("No network interface takes multicast"));
    }

    private static boolean multicastCapable(NetworkInterface interf) {
        try {
            return interf.isUp() && interf.supportsMulticast() && !interf.isLoopback();
        } catch (SocketException e) {
            return false;
        }
    }

    @Override
    @Deprecated
    public void setInterface(InetAddress address) throws SocketException {
        if (address == null) {
            throw new SocketException("Invalid value 'null'");
        }
        NetworkInterface interf = NetworkInterface.getByInetAddress(address);
        if (interf == null) {
            throw new SocketException("No network interface found with address " + address.getHostAddress());
        }
        setNetworkInterface(interf);
    }

    @Override
    @Deprecated
    public InetAddress getInterface() throws SocketException {
        NetworkInterface interf = get(StandardSocketOptions.IP_MULTICAST_IF);
        if (interf != null) {
            InetAddress address = interf.inetAddresses().findFirst().orElse(null);
            if (address != null) {
                return address;
            }
        }
        return new InetSocketAddress(0).getAddress();
    }

    @Override
    public void setNetworkInterface(NetworkInterface interf) throws SocketException {
        set(StandardSocketOptions.IP_MULTICAST_IF, interf);
    }

    @Override
    public NetworkInterface getNetworkInterface() throws SocketException {
        NetworkInterface interf = get(StandardSocketOptions.IP_MULTICAST_IF);
        if (interf != null) {
            return interf;
        }
        // As the JDK's: a placeholder with index 0 and the wildcard address, when none is set.
        try (MulticastSocket plain = new MulticastSocket((SocketAddress) null)) {
            return plain.getNetworkInterface();
        } catch (IOException e) {
            throw (SocketException) new SocketException("no network interface").initCause(e);
        }
    }

    @Override
    @Deprecated
    public void setLoopbackMode(boolean disable) throws SocketException {
        set(StandardSocketOptions.IP_MULTICAST_LOOP, !disable);
    }

    @Override
    @Deprecated
    public boolean getLoopbackMode() throws SocketException {
        return !get(StandardSocketOptions.IP_MULTICAST_LOOP);
    }

    @Override
    @Deprecated
    public void send(DatagramPacket packet, byte ttl) throws IOException {
        synchronized (this) {
            int before = getTimeToLive();
            try {
                setTTL(ttl);
                send(packet);
            } finally {
                setTimeToLive(before);
            }
        }
    }
}
