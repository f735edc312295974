package rdmanio.bench;

import java.io.Closeable;
import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.channels.spi.SelectorProvider;
import java.util.Iterator;

/**
 * An echo server on one selector thread, written as NIO servers are: each
 * connection reads into its buffer and writes it back, and a write the peer
 * has no room for waits for {@code OP_WRITE} (reading stops meanwhile), so
 * messages of any size and any number of connections are echoed without
 * spinning.
 */
final class EchoServer implements Closeable {
    private final Selector selector;
    private final ServerSocketChannel listener;
    private final Thread thread;
    private volatile boolean running = true;
    private volatile IOException failure;

    EchoServer(SelectorProvider provider, InetAddress address, int bufferBytes) throws IOException {
        selector = provider.openSelector();
        listener = provider.openServerSocketChannel();
        listener.bind(new InetSocketAddress(address, 0), 1024);
        listener.configureBlocking(false);
        listener.register(selector, SelectionKey.OP_ACCEPT);
        thread = new Thread(() -> serve(bufferBytes), "echo server");
        thread.setDaemon(true);
        thread.start();
    }

    SocketAddress address() throws IOException {
        return listener.getLocalAddress();
    }

    private void serve(int bufferBytes) {
        try {
            while (running) {
                selector.select();
                Iterator<SelectionKey> keys = selector.selectedKeys().iterator();
                while (keys.hasNext()) {
                    SelectionKey key = keys.next();
                    keys.remove();
                    if (!key.isValid()) {
                        continue;
                    }
                    if (key.isAcceptable()) {
                        SocketChannel accepted;
                        while ((accepted = listener.accept()) != null) {
                            accepted.configureBlocking(false);
                            accepted.register(selector, SelectionKey.OP_READ, ByteBuffer.allocateDirect(bufferBytes));
                        }
                    } else {
                        echo(key);
                    }
                }
            }
        } catch (IOException e) {
            if (running) {
                failure = e;
            }
        }
    }

    private static void echo(SelectionKey key) throws IOException {
        SocketChannel channel = (SocketChannel) key.channel();
        ByteBuffer buffer = (ByteBuffer) key.attachment();
        try {
            if (key.isReadable() && channel.read(buffer) < 0) {
                channel.close();
                return;
            }
            buffer.flip();
            channel.write(buffer);
            boolean pending = buffer.hasRemaining();
            buffer.compact();
            key.interestOps(pending ? SelectionKey.OP_WRITE : SelectionKey.OP_READ);
        } catch (IOException e) {
            channel.close(); // a client that went away: the others go on
        }
    }

    /** The server's own failure, if it had one. */
    void check() throws IOException {
        if (failure != null) {
            throw failure;
        }
    }

    @Override
    public void close() throws IOException {
        running = false;
        selector.wakeup();
        try {
            thread.join(5000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        for (SelectionKey key : selector.keys()) {
            key.channel().close();
        }
        selector.close();
    }
}
