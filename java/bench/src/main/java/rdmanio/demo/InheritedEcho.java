package rdmanio.demo;

import java.nio.ByteBuffer;
import java.nio.channels.Channel;
import java.nio.channels.DatagramChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;

/**
 * An inetd-style service: the socket a launcher passed on standard input is
 * {@link System#inheritedChannel()}. Over a connection it first writes its
 * channel's class and peer as a line, then echoes until the peer's end; over a
 * connected datagram socket it sends that line as one datagram. It closes the
 * channel and lives on for {@code args[0]} milliseconds, so that its peer can
 * tell the close ended the connection, not the process's exit.
 *
 * <pre>bash -c 'exec java -Djava.nio.channels.spi.SelectorProvider=rdmanio.nio.RdmaSelectorProvider \
 *     -cp ... rdmanio.demo.InheritedEcho 0 0&lt;&gt;/dev/tcp/127.0.0.1/7000'</pre>
 */
public final class InheritedEcho {
    private InheritedEcho() {}

    public static void main(String[] args) throws Exception {
        Channel channel = System.inheritedChannel();
        if (channel instanceof SocketChannel) {
            SocketChannel connection = (SocketChannel) channel;
            connection.write(line(connection.getClass().getName() + " " + connection.getRemoteAddress() + "\n"));
            ByteBuffer buffer = ByteBuffer.allocate(4096);
            while (connection.read(buffer) >= 0) {
                buffer.flip();
                while (buffer.hasRemaining()) {
                    connection.write(buffer);
                }
                buffer.clear();
            }
            connection.close();
        } else if (channel instanceof DatagramChannel) {
            DatagramChannel datagrams = (DatagramChannel) channel;
            datagrams.write(line(datagrams.getClass().getName() + " " + datagrams.getRemoteAddress()));
            datagrams.close();
        } else {
            System.err.println("no socket on standard input: " + channel);
            System.exit(2);
        }
        Thread.sleep(args.length > 0 ? Long.parseLong(args[0]) : 0);
    }

    private static ByteBuffer line(String text) {
        return ByteBuffer.wrap(text.getBytes(StandardCharsets.UTF_8));
    }
}
