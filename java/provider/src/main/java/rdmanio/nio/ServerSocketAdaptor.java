package rdmanio.nio;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.net.SocketAddress;
import java.net.SocketException;
import java.net.SocketOption;
import java.net.StandardSocketOptions;
import java.nio.channels.IllegalBlockingModeException;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.util.Set;

/** The {@link ServerSocket} face of an {@link RdmaServerSocketChannel}. */
final class ServerSocketAdaptor extends ServerSocket {
    private final RdmaServerSocketChannel channel;
    /** {@link #accept}'s timeout; 0 waits forever. */
    private volatile int timeoutMillis;

    ServerSocketAdaptor(RdmaServerSocketChannel channel) throws IOException {
        super(SocketAdaptor.unusedImpl());
        this.channel = channel;
    }

    @Override
    public ServerSocketChannel getChannel() {
        return channel;
    }

    @Override
    public void bind(SocketAddress local) throws IOException {
        bind(local, 50);
    }

    @Override
    public void bind(SocketAddress local, int backlog) throws IOException {
        AdaptorExceptions.translated(() -> channel.bind(local, backlog));
    }

    /**
     * As the JDK's adaptor: with a timeout, a blocking accept that gives up
     * with {@link java.net.SocketTimeoutException}; without, the channel's
     * accept, which in non-blocking mode takes a waiting connection and throws
     * {@link IllegalBlockingModeException} only when none waits.
     */
    @Override
    public Socket accept() throws IOException {
        int timeout = timeoutMillis;
        SocketChannel accepted = AdaptorExceptions.translated(() -> {
            if (timeout > 0) {
                if (!channel.isBlocking()) {
                    throw new IllegalBlockingModeException();
                }
                return channel.accept(timeout);
            }
            return channel.accept();
        });
        if (accepted == null) {
            throw new IllegalBlockingModeException();
        }
        return accepted.socket();
    }

    @Override
    public void setSoTimeout(int timeout) throws SocketException {
        ensureNotClosed();
        if (timeout < 0) {
            throw new IllegalArgumentException("timeout < 0");
        }
        timeoutMillis = timeout;
    }

    @Override
    public int getSoTimeout() throws IOException {
        ensureNotClosed();
        return timeoutMillis;
    }

    @Override
    public void setReceiveBufferSize(int size) throws SocketException {
        if (size <= 0) {
            throw new IllegalArgumentException("negative receive size");
        }
        ensureNotClosed();
        set(StandardSocketOptions.SO_RCVBUF, size);
    }

    @Override
    public int getReceiveBufferSize() throws SocketException {
        ensureNotClosed();
        return get(StandardSocketOptions.SO_RCVBUF);
    }

    /** The channel's option, with its failure as the {@code SocketException} a socket throws. */
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

    private void ensureNotClosed() throws SocketException {
        if (isClosed()) {
            throw new SocketException("Socket is closed");
        }
    }

    @Override
    public InetAddress getInetAddress() {
        InetSocketAddress local = channel.localAddressOrNull();
        return local == null ? null : local.getAddress();
    }

    @Override
    public int getLocalPort() {
        InetSocketAddress local = channel.localAddressOrNull();
        return local == null ? -1 : local.getPort();
    }

    @Override
    public SocketAddress getLocalSocketAddress() {
        return channel.localAddressOrNull();
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
    public <T> ServerSocket setOption(SocketOption<T> name, T value) throws IOException {
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
    public boolean isBound() {
        return channel.localAddressOrNull() != null;
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
        InetSocketAddress local = channel.localAddressOrNull();
        return local == null ? "ServerSocket[unbound]" : "ServerSocket[addr=" + local.getAddress() + ",localport="
                + local.getPort() + "]";
    }
}
