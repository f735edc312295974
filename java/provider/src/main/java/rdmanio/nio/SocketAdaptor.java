package rdmanio.nio;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.SocketAddress;
import java.net.SocketException;
import java.net.SocketOption;
import java.net.StandardSocketOptions;
import java.net.UnknownHostException;
import java.nio.ByteBuffer;
import java.nio.channels.IllegalBlockingModeException;
import java.nio.channels.SocketChannel;
import java.util.Objects;
import java.util.Set;

/**
 * The {@link Socket} face of an {@link RdmaSocketChannel}, for code that asks a
 * channel for its {@code socket()}: addresses and ports, options, streams
 * (which need blocking mode, and honour {@link #setSoTimeout}), half close
 * and close.
 */
final class SocketAdaptor extends Socket {
    private final RdmaSocketChannel channel;
    private volatile int timeoutMillis;
    private volatile int trafficClass;

    SocketAdaptor(RdmaSocketChannel channel) throws SocketException {
        super(unusedImpl());
        this.channel = channel;
    }

    static UnusedSocketImpl unusedImpl() {
        return new UnusedSocketImpl();
    }

    @Override
    public SocketChannel getChannel() {
        return channel;
    }

    @Override
    public void connect(SocketAddress remote) throws IOException {
        connect(remote, 0);
    }

    @Override
    public void connect(SocketAddress remote, int timeout) throws IOException {
        if (remote == null) {
            throw new IllegalArgumentException("connect: The address can't be null"); // as java.net.Socket's
        }
        if (remote instanceof InetSocketAddress inet && inet.isUnresolved()) {
            throw new UnknownHostException(inet.getHostName()); // as java.net.Socket says it
        }
        if (timeout < 0) {
            throw new IllegalArgumentException("negative timeout");
        }
        if (!channel.isBlocking()) {
            throw new IllegalBlockingModeException();
        }
        AdaptorExceptions.translated(() -> timeout == 0
                ? channel.connect(remote) // the provider's connect timeout (rdmanio.connectTimeoutMillis)
                : channel.connect(remote, timeout), true);
    }

    @Override
    public void bind(SocketAddress local) throws IOException {
        AdaptorExceptions.translated(() -> channel.bind(local));
    }

    // The addresses as the JDK's adaptor gives them: the peer's from the start
    // of a connect on (a TLS engine made for a pending connect names its peer
    // by it), and both after a close ("a socket connected before it was
    // closed goes on returning the connected address"); only the local
    // address reads as the wildcard once closed.

    @Override
    public InetAddress getInetAddress() {
        InetSocketAddress remote = channel.remoteAddress();
        return remote == null ? null : remote.getAddress();
    }

    @Override
    public int getPort() {
        InetSocketAddress remote = channel.remoteAddress();
        return remote == null ? 0 : remote.getPort();
    }

    @Override
    public InetAddress getLocalAddress() {
        InetSocketAddress local = channel.isOpen() ? channel.localAddress() : null;
        return local == null ? new InetSocketAddress(0).getAddress() : local.getAddress();
    }

    @Override
    public int getLocalPort() {
        InetSocketAddress local = channel.localAddress();
        return local == null ? -1 : local.getPort();
    }

    @Override
    public SocketAddress getRemoteSocketAddress() {
        return channel.remoteAddress();
    }

    @Override
    public SocketAddress getLocalSocketAddress() {
        return channel.localAddress();
    }

    /** As the JDK's: the stream needs blocking mode only when it is read (IllegalBlockingModeException). */
    @Override
    public InputStream getInputStream() throws IOException {
        requireStreamable();
        if (isInputShutdown()) {
            throw new SocketException("Socket input is shutdown");
        }
        return new InputStream() {
            private final byte[] one = new byte[1];

            @Override
            public int read() throws IOException {
                int n = read(one, 0, 1);
                return n < 0 ? -1 : one[0] & 0xff;
            }

            @Override
            public int read(byte[] bytes, int offset, int length) throws IOException {
                Objects.checkFromIndexSize(offset, length, bytes.length);
                if (length == 0) {
                    return 0;
                }
                return channel.blockingRead(ByteBuffer.wrap(bytes, offset, length), timeoutMillis > 0 ? timeoutMillis : -1);
            }

            @Override
            public int available() throws IOException {
                return channel.available();
            }

            @Override
            public void close() throws IOException {
                SocketAdaptor.this.close();
            }
        };
    }

    /** As the JDK's: the stream needs blocking mode only when it is written. */
    @Override
    public OutputStream getOutputStream() throws IOException {
        requireStreamable();
        if (isOutputShutdown()) {
            throw new SocketException("Socket output is shutdown");
        }
        return new OutputStream() {
            @Override
            public void write(int b) throws IOException {
                write(new byte[] {(byte) b}, 0, 1);
            }

            @Override
            public void write(byte[] bytes, int offset, int length) throws IOException {
                Objects.checkFromIndexSize(offset, length, bytes.length);
                channel.blockingWriteFully(ByteBuffer.wrap(bytes, offset, length));
            }

            @Override
            public void close() throws IOException {
                SocketAdaptor.this.close();
            }
        };
    }

    private void requireStreamable() throws SocketException {
        if (isClosed()) {
            throw new SocketException("Socket is closed");
        }
        if (!isConnected()) {
            throw new SocketException("Socket is not connected");
        }
    }

    private <T> void set(SocketOption<T> name, T value) throws SocketException {
        try {
            channel.setOption(name, value);
        } catch (IOException e) {
            throw new SocketException(e.getMessage());
        }
    }

    private <T> T get(SocketOption<T> name) throws SocketException {
        try {
            return channel.getOption(name);
        } catch (IOException e) {
            throw new SocketException(e.getMessage());
        }
    }

    @Override
    public void setTcpNoDelay(boolean on) throws SocketException {
        set(StandardSocketOptions.TCP_NODELAY, on);
    }

    @Override
    public boolean getTcpNoDelay() throws SocketException {
        return get(StandardSocketOptions.TCP_NODELAY);
    }

    @Override
    public void setKeepAlive(boolean on) throws SocketException {
        set(StandardSocketOptions.SO_KEEPALIVE, on);
    }

    @Override
    public boolean getKeepAlive() throws SocketException {
        return get(StandardSocketOptions.SO_KEEPALIVE);
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
    public void setSendBufferSize(int size) throws SocketException {
        if (size <= 0) {
            throw new IllegalArgumentException("negative send size");
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
            throw new IllegalArgumentException("negative receive size");
        }
        set(StandardSocketOptions.SO_RCVBUF, size);
    }

    @Override
    public int getReceiveBufferSize() throws SocketException {
        return get(StandardSocketOptions.SO_RCVBUF);
    }

    @Override
    public void setSoLinger(boolean on, int seconds) throws SocketException {
        set(StandardSocketOptions.SO_LINGER, on ? seconds : -1); // as the JDK's adaptor: negative is off
    }

    @Override
    public int getSoLinger() throws SocketException {
        return get(StandardSocketOptions.SO_LINGER);
    }

    /** Urgent data the peer sends is read in line, else dropped (TCP and shm; RDMA carries none). */
    @Override
    public void setOOBInline(boolean on) throws SocketException {
        ensureNotClosed();
        try {
            channel.setUrgentInline(on);
        } catch (IOException e) {
            throw new SocketException(e.getMessage());
        }
    }

    @Override
    public boolean getOOBInline() throws SocketException {
        ensureNotClosed();
        try {
            return channel.urgentInline();
        } catch (IOException e) {
            throw new SocketException(e.getMessage());
        }
    }

    /** Urgent data over TCP and shm; RDMA has none (SocketException). */
    @Override
    public void sendUrgentData(int data) throws IOException {
        ensureNotClosed();
        AdaptorExceptions.translated(() -> {
            channel.sendUrgentData(data);
            return null;
        });
    }

    /** The IP type of service: kept and reported (the media send no IP header of their own to mark). */
    @Override
    public void setTrafficClass(int tc) throws SocketException {
        if (tc < 0 || tc > 255) {
            throw new IllegalArgumentException("tc is not in range 0 -- 255");
        }
        ensureNotClosed();
        trafficClass = tc;
    }

    @Override
    public int getTrafficClass() throws SocketException {
        ensureNotClosed();
        return trafficClass;
    }

    private void ensureNotClosed() throws SocketException {
        if (isClosed()) {
            throw new SocketException("Socket is closed");
        }
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

    @Override
    public <T> Socket setOption(SocketOption<T> name, T value) throws IOException {
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

    @Override
    public void shutdownInput() throws IOException {
        channel.shutdownInput();
    }

    @Override
    public void shutdownOutput() throws IOException {
        channel.shutdownOutput();
    }

    @Override
    public boolean isInputShutdown() {
        return channel.isInputClosed();
    }

    @Override
    public boolean isOutputShutdown() {
        return channel.isOutputClosed();
    }

    @Override
    public boolean isConnected() {
        return channel.isConnected();
    }

    @Override
    public boolean isBound() {
        return channel.localAddress() != null; // a close does not unbind
    }

    @Override
    public boolean isClosed() {
        return !channel.isOpen();
    }

    @Override
    public void close() throws IOException {
        channel.close();
    }

    @Override
    public String toString() {
        return isConnected() ? "Socket[addr=" + getInetAddress() + ",port=" + getPort() + ",localport="
                + getLocalPort() + "]" : "Socket[unconnected]";
    }
}
