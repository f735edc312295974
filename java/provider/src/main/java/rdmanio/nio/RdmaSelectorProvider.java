package rdmanio.nio;

import java.io.IOException;
import java.net.ProtocolFamily;
import java.net.StandardProtocolFamily;
import java.nio.channels.Channel;
import java.nio.channels.DatagramChannel;
import java.nio.channels.Pipe;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.channels.spi.AbstractSelector;
import java.nio.channels.spi.SelectorProvider;
import java.util.Objects;

/**
 * The rdma-nio provider: selectors, socket channels and server socket channels
 * over RDMA, shared memory or TCP (see {@link Config} for the system
 * properties that choose). Existing code uses it unchanged when the JVM starts
 * with {@code -Djava.nio.channels.spi.SelectorProvider=rdmanio.nio.RdmaSelectorProvider},
 * or by opening channels from an instance explicitly
 * ({@code new RdmaSelectorProvider().openSocketChannel()}).
 *
 * <p>Pipes and datagram channels are rdma-nio's too, over the kernel (datagrams
 * never go over RDMA), so its selectors take every channel a program opens.
 * Unix domain sockets are the JDK's own: they come from the platform provider,
 * and cannot be registered with an rdma-nio selector. When this class is the
 * JVM-wide provider, reaching the platform provider needs
 * {@code --add-exports java.base/sun.nio.ch=ALL-UNNAMED}.
 */
public class RdmaSelectorProvider extends SelectorProvider {
    private final Config config;

    /** A provider configured by system properties. */
    public RdmaSelectorProvider() {
        this(Config.fromSystemProperties());
    }

    private RdmaSelectorProvider(Config config) {
        this.config = config;
    }

    /** A provider that uses {@code transport} ("auto", "rdma", "shm" or "tcp") for its connections. */
    public static RdmaSelectorProvider withTransport(String transport) {
        Objects.requireNonNull(transport, "transport");
        Config defaults = Config.fromSystemProperties();
        return new RdmaSelectorProvider(defaults.withTransport(transport));
    }

    /**
     * This provider with other ring peers: the peers its listeners grant one-sided RDMA
     * ("all", "none", or comma-separated IP addresses; see {@code rdmanio.ringPeers}).
     */
    public RdmaSelectorProvider withRingPeers(String peers) {
        Objects.requireNonNull(peers, "peers");
        return new RdmaSelectorProvider(config.withRingPeers(peers));
    }

    Config config() {
        return config;
    }

    /** The transport this provider's connections use. */
    public String transport() {
        return config.transport;
    }

    @Override
    public AbstractSelector openSelector() throws IOException {
        return new RdmaSelector(this);
    }

    @Override
    public SocketChannel openSocketChannel() throws IOException {
        return new RdmaSocketChannel(this);
    }

    @Override
    public ServerSocketChannel openServerSocketChannel() throws IOException {
        return new RdmaServerSocketChannel(this);
    }

    /** Unix domain sockets are the JDK's own (they cannot join an rdma-nio selector). */
    @Override
    public SocketChannel openSocketChannel(ProtocolFamily family) throws IOException {
        return isInet(family) ? openSocketChannel() : platform().openSocketChannel(family);
    }

    @Override
    public ServerSocketChannel openServerSocketChannel(ProtocolFamily family) throws IOException {
        return isInet(family) ? openServerSocketChannel() : platform().openServerSocketChannel(family);
    }

    private static boolean isInet(ProtocolFamily family) {
        Objects.requireNonNull(family, "family");
        return family == StandardProtocolFamily.INET || family == StandardProtocolFamily.INET6;
    }

    @Override
    public DatagramChannel openDatagramChannel() throws IOException {
        return new RdmaDatagramChannel(this, RdmaDatagramChannel.defaultFamily());
    }

    /** IPv4 or IPv6 (the JDK's datagram channels have no Unix domain family). */
    @Override
    public DatagramChannel openDatagramChannel(ProtocolFamily family) throws IOException {
        return new RdmaDatagramChannel(this, family);
    }

    @Override
    public Pipe openPipe() throws IOException {
        return new RdmaPipe(this);
    }

    // The channel inherited on standard input: looked for once per JVM, as the JDK does.
    private static boolean inheritedLooked;
    private static Channel inherited;

    /**
     * The socket a launcher (inetd, systemd's {@code Accept=yes}) passed on
     * standard input, as the JDK gives it: a socket, server socket or datagram
     * channel of this provider's (over TCP or UDP, whatever the transport), or
     * null when standard input is no socket. Its close points the standard
     * streams at /dev/null. A Unix domain socket there is the JDK's channel.
     */
    @Override
    public Channel inheritedChannel() throws IOException {
        synchronized (RdmaSelectorProvider.class) {
            if (!inheritedLooked) {
                inherited = openInherited();
                inheritedLooked = true;
            }
            return inherited;
        }
    }

    private Channel openInherited() throws IOException {
        long[] found = SocketNative.inherited(config.blockingSpinMicros());
        long kind = found[0];
        if (kind == SocketNative.INHERITED_NONE) {
            return null;
        }
        if (kind == SocketNative.INHERITED_OTHER_FAMILY) {
            try {
                return platform().inheritedChannel();
            } catch (UnsupportedOperationException e) {
                throw new IOException("standard input is a Unix domain socket, which is the JDK's provider's", e);
            }
        }
        NativeSocket socket = new NativeSocket(found[1]);
        socket.detachStdStreamsOnClose();
        if (kind == SocketNative.INHERITED_CONNECTION) {
            return new RdmaSocketChannel(this, socket);
        } else if (kind == SocketNative.INHERITED_LISTENER) {
            return new RdmaServerSocketChannel(this, socket);
        }
        ProtocolFamily family = kind == SocketNative.INHERITED_DATAGRAM_IPV6
                ? StandardProtocolFamily.INET6 : StandardProtocolFamily.INET;
        return new RdmaDatagramChannel(this, family, socket);
    }

    /** The JDK's own provider, for what rdma-nio does not implement (Unix domain sockets). */
    static SelectorProvider platform() {
        SelectorProvider systemWide = SelectorProvider.provider();
        if (!(systemWide instanceof RdmaSelectorProvider)) {
            return systemWide;
        }
        try {
            Class<?> defaults = Class.forName("sun.nio.ch.DefaultSelectorProvider");
            return (SelectorProvider) defaults.getMethod("get").invoke(null);
        } catch (ReflectiveOperationException | RuntimeException e) {
            throw new UnsupportedOperationException("Unix domain sockets come from the JDK's own provider,"
                    + " which needs --add-exports java.base/sun.nio.ch=ALL-UNNAMED while rdma-nio is the"
                    + " system-wide provider", e);
        }
    }
}
