package rdmanio;

import java.io.Closeable;
import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.channels.ClosedChannelException;
import java.nio.channels.UnresolvedAddressException;

/**
 * A listening RDMA endpoint, bound like a TCP server socket to an IP address
 * and port of an RDMA-capable interface. Accepts {@link RdmaConnection}s.
 *
 * <p>Thread-safe. {@link #close()} waits for an {@link #accept} in progress,
 * which its timeout bounds.
 */
public final class RdmaListener implements Closeable {
    private final Object lock = new Object();
    private final InetSocketAddress localAddress;
    private long handle; // guarded by lock; 0 once closed

    private RdmaListener(long handle, InetSocketAddress localAddress) {
        this.handle = handle;
        this.localAddress = localAddress;
    }

    /**
     * Binds {@code local} (port 0 picks a free port) and listens.
     *
     * @throws NoRdmaDeviceException on a host without RDMA
     * @throws RdmaException when no RDMA device has the address, or the port is taken
     */
    public static RdmaListener bind(InetSocketAddress local, int backlog) throws IOException {
        InetAddress ip = ipOf(local);
        long handle = Native.listen(ip.getHostAddress(), local.getPort(), backlog);
        return new RdmaListener(handle, new InetSocketAddress(ip, Native.listenerPort(handle)));
    }

    static InetAddress ipOf(InetSocketAddress address) {
        if (address.isUnresolved()) {
            throw new UnresolvedAddressException();
        }
        return address.getAddress();
    }

    /** The bound address, with the actual port. */
    public InetSocketAddress localAddress() {
        return localAddress;
    }

    /**
     * Waits up to {@code timeoutMillis} (negative: forever) for a connection.
     *
     * @throws java.net.SocketTimeoutException when none arrives in time
     */
    public RdmaConnection accept(int timeoutMillis) throws IOException {
        synchronized (lock) {
            if (handle == 0) {
                throw new ClosedChannelException();
            }
            return new RdmaConnection(Native.accept(handle, timeoutMillis));
        }
    }

    @Override
    public void close() {
        synchronized (lock) {
            if (handle != 0) {
                Native.closeListener(handle);
                handle = 0;
            }
        }
    }
}
