package rdmanio.demo;

import java.io.Closeable;
import java.io.EOFException;
import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.StandardSocketOptions;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.util.Arrays;
import java.util.Locale;

import rdmanio.RdmaConnection;
import rdmanio.RdmaListener;

/**
 * Round-trip times of a ping-pong over rdma-nio next to the same ping-pong over
 * stock NIO TCP: one process, one address, alternating blocks of round trips so
 * that both transports see the same machine load.
 *
 * <pre>java rdmanio.demo.PingPongDemo [address [round-trips [message-bytes]]]</pre>
 *
 * The address defaults to RDMANIO_TEST_ADDR (set in the Soft-RoCE VM).
 */
public final class PingPongDemo {
    private static final int TIMEOUT_MILLIS = 20_000;
    private static final int BLOCKS = 8;
    /** Long enough to cover a round trip under emulation; on hardware a few microseconds do. */
    private static final int BUSY_POLL_MICROS = 500;

    /** One ping-pong transport: a client connected to an echo server thread. */
    private interface PingPong extends Closeable {
        /** Sends the message and waits for its echo. */
        void roundTrip(ByteBuffer message, ByteBuffer reply) throws IOException;

        String describe() throws IOException;
    }

    public static void main(String[] args) throws Exception {
        String host = args.length > 0 ? args[0] : System.getenv().getOrDefault("RDMANIO_TEST_ADDR", "192.0.2.1");
        int rounds = args.length > 1 ? Integer.parseInt(args[1]) : 4000;
        int size = args.length > 2 ? Integer.parseInt(args[2]) : 64;
        InetAddress address = InetAddress.getByName(host);

        System.out.printf("ping-pong to %s: %d-byte messages, %d round trips per transport in %d alternating blocks%n",
                address.getHostAddress(), size, rounds, BLOCKS);
        String[] names = {"rdma-nio, blocking", "rdma-nio, busy-poll " + BUSY_POLL_MICROS + " us", "stock nio tcp"};
        try (PingPong blocking = new RdmaPingPong(address, 0);
                PingPong polling = new RdmaPingPong(address, BUSY_POLL_MICROS);
                PingPong tcp = new TcpPingPong(address)) {
            PingPong[] transports = {blocking, polling, tcp};
            for (int t = 0; t < transports.length; t++) {
                System.out.printf("%-28s %s%n", names[t] + ":", transports[t].describe());
            }
            long[][] nanos = measure(transports, rounds, size);
            System.out.printf("%-28s %9s %9s %9s %14s%n", "transport", "p50 us", "p99 us", "mean us", "p50 / tcp p50");
            long tcpMedian = percentile(nanos[transports.length - 1], 50);
            for (int t = 0; t < transports.length; t++) {
                System.out.printf(Locale.ROOT, "%-28s %9.1f %9.1f %9.1f %14.2f%n", names[t],
                        percentile(nanos[t], 50) / 1e3, percentile(nanos[t], 99) / 1e3, mean(nanos[t]) / 1e3,
                        (double) percentile(nanos[t], 50) / tcpMedian);
            }
        }
    }

    /** Round-trip times per transport, after a warm-up of a tenth as many. */
    private static long[][] measure(PingPong[] transports, int rounds, int size) throws IOException {
        ByteBuffer message = ByteBuffer.allocateDirect(size);
        for (int i = 0; i < size; i++) {
            message.put(i, (byte) i);
        }
        ByteBuffer reply = ByteBuffer.allocateDirect(Math.max(size, RdmaConnection.MAX_MESSAGE_SIZE));
        for (PingPong transport : transports) {
            for (int i = 0; i < rounds / 10; i++) {
                transport.roundTrip(message, reply);
            }
        }
        long[][] nanos = new long[transports.length][rounds];
        int perBlock = (rounds + BLOCKS - 1) / BLOCKS;
        for (int done = 0; done < rounds; done += perBlock) {
            for (int t = 0; t < transports.length; t++) {
                for (int i = done; i < Math.min(rounds, done + perBlock); i++) {
                    long start = System.nanoTime();
                    transports[t].roundTrip(message, reply);
                    nanos[t][i] = System.nanoTime() - start;
                }
                reply.flip();
                if (!reply.equals(message.duplicate().clear())) {
                    throw new IOException("the echo differs from the message sent");
                }
            }
        }
        return nanos;
    }

    private static long percentile(long[] samples, int percent) {
        long[] sorted = samples.clone();
        Arrays.sort(sorted);
        return sorted[Math.min(sorted.length - 1, sorted.length * percent / 100)];
    }

    private static double mean(long[] samples) {
        return Arrays.stream(samples).average().orElse(0);
    }

    private static Thread daemon(String name, Runnable body) {
        Thread thread = new Thread(body, name);
        thread.setDaemon(true);
        thread.start();
        return thread;
    }

    private static final class RdmaPingPong implements PingPong {
        private final RdmaListener listener;
        private final RdmaConnection client;

        RdmaPingPong(InetAddress address, int busyPollMicros) throws IOException {
            listener = RdmaListener.bind(new InetSocketAddress(address, 0), 1);
            daemon("rdma echo", () -> {
                try (RdmaConnection server = listener.accept(TIMEOUT_MILLIS)) {
                    server.setBusyPoll(busyPollMicros);
                    ByteBuffer buffer = ByteBuffer.allocateDirect(RdmaConnection.MAX_MESSAGE_SIZE);
                    while (server.receive(buffer.clear(), TIMEOUT_MILLIS) >= 0) {
                        server.send(buffer.flip(), TIMEOUT_MILLIS);
                    }
                } catch (IOException e) {
                    System.err.println("rdma echo server: " + e);
                }
            });
            client = RdmaConnection.connect(listener.localAddress(), TIMEOUT_MILLIS);
            client.setBusyPoll(busyPollMicros);
        }

        @Override
        public void roundTrip(ByteBuffer message, ByteBuffer reply) throws IOException {
            client.send(message.clear(), TIMEOUT_MILLIS);
            if (client.receive(reply.clear(), TIMEOUT_MILLIS) < 0) {
                throw new EOFException("the rdma echo server closed");
            }
        }

        @Override
        public String describe() throws IOException {
            return "device " + client.deviceName() + ", client queue pair " + client.queuePairNumber()
                    + ", listener " + listener.localAddress();
        }

        @Override
        public void close() {
            client.close();
            listener.close();
        }
    }

    private static final class TcpPingPong implements PingPong {
        private final ServerSocketChannel listener;
        private final SocketChannel client;

        TcpPingPong(InetAddress address) throws IOException {
            listener = ServerSocketChannel.open().bind(new InetSocketAddress(address, 0));
            daemon("tcp echo", () -> {
                try (SocketChannel server = listener.accept()) {
                    server.setOption(StandardSocketOptions.TCP_NODELAY, true);
                    ByteBuffer buffer = ByteBuffer.allocateDirect(64 * 1024);
                    while (server.read(buffer.clear()) >= 0) {
                        buffer.flip();
                        while (buffer.hasRemaining()) {
                            server.write(buffer);
                        }
                    }
                } catch (IOException e) {
                    System.err.println("tcp echo server: " + e);
                }
            });
            client = SocketChannel.open(listener.getLocalAddress());
            client.setOption(StandardSocketOptions.TCP_NODELAY, true);
        }

        @Override
        public void roundTrip(ByteBuffer message, ByteBuffer reply) throws IOException {
            message.clear();
            while (message.hasRemaining()) {
                client.write(message);
            }
            reply.clear().limit(message.capacity());
            while (reply.hasRemaining()) {
                if (client.read(reply) < 0) {
                    throw new EOFException("the tcp echo server closed");
                }
            }
        }

        @Override
        public String describe() throws IOException {
            return "stock provider, listener " + listener.getLocalAddress();
        }

        @Override
        public void close() throws IOException {
            client.close();
            listener.close();
        }
    }
}
