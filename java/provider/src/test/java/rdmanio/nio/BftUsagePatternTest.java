package rdmanio.nio;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertSame;
import static org.junit.Assert.assertTrue;

import java.io.IOException;
import java.io.InputStream;
import java.net.SocketAddress;
import java.net.StandardSocketOptions;
import java.nio.ByteBuffer;
import java.nio.channels.CancelledKeyException;
import java.nio.channels.DatagramChannel;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyStore;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Queue;
import java.util.Random;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.atomic.AtomicInteger;

import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLEngine;
import javax.net.ssl.SSLEngineResult;
import javax.net.ssl.SSLEngineResult.HandshakeStatus;
import javax.net.ssl.TrustManagerFactory;

import org.junit.Test;

/**
 * How BFT replication systems drive NIO (Hybster's and BFT-SMaRt's network
 * layers, for instance), in one run: several selectors, each on its own
 * thread alternating selectNow and select(timeout); an acceptor handing
 * connections to the others, which register them from their own thread after
 * a wakeup; dispatch through the key's attachment with key.selector() checks;
 * a connection migrated from selector to selector by cancel and re-register;
 * interest sets changed by the selecting thread (OP_WRITE while a reply is
 * short) and by another thread (flow control pausing reads); clients that
 * connect non-blocking (OP_CONNECT, finishConnect) with TCP_NODELAY. Every
 * client must get each of its messages echoed intact. A DatagramChannel
 * control port on the selector of the links. And an SSLEngine over the
 * channels, as replicas that authenticate their links run TLS. See
 * hybster-patch.
 */
public class BftUsagePatternTest extends EveryProvider {
    private static final int WORKERS = 3;
    private static final int CLIENTS = 8;
    private static final int MESSAGES = Providers.IN_VM ? 60 : 300;
    private static final int MIGRATE_EVERY = 25;


    private final List<Throwable> failures = new CopyOnWriteArrayList<>();
    private volatile boolean stopping;

    /** A server-side connection: echoes what it reads; the key's attachment. */
    private final class Connection {
        final SocketChannel channel;
        final ByteBuffer buffer = ByteBuffer.allocateDirect(8192);
        int served;

        Connection(SocketChannel channel) {
            this.channel = channel;
        }

        /** On the selecting thread; under the connection's lock, as the flow-control thread. */
        synchronized void handle(Worker worker, SelectionKey key) throws IOException {
            if (key.isWritable()) {
                buffer.flip();
                channel.write(buffer);
                buffer.compact();
                if (buffer.position() == 0) {
                    key.interestOps(key.interestOps() & ~SelectionKey.OP_WRITE | SelectionKey.OP_READ);
                }
                return;
            }
            if (!key.isReadable()) {
                return;
            }
            int n = channel.read(buffer);
            if (n < 0) {
                key.cancel();
                channel.close();
                return;
            }
            buffer.flip();
            channel.write(buffer);
            buffer.compact();
            if (buffer.position() > 0) { // a short reply: wait for room, read nothing meanwhile
                key.interestOps(SelectionKey.OP_WRITE);
                return;
            }
            if (++served % MIGRATE_EVERY == 0) {
                key.cancel(); // to the next selector, which registers it on its own thread
                worker.next().adopt(this);
            }
        }

        /** Flow control from another thread: reads paused, then resumed. */
        synchronized void setReading(SelectionKey key, boolean on) {
            if ((key.interestOps() & SelectionKey.OP_WRITE) == 0) {
                key.interestOps(on ? SelectionKey.OP_READ : 0);
            }
        }
    }

    private final class Worker implements Runnable {
        final Selector selector;
        final Queue<Connection> inbox = new ConcurrentLinkedQueue<>();
        Worker[] all;
        int index;

        Worker() throws IOException {
            selector = provider.openSelector();
        }

        Worker next() {
            return all[(index + 1) % all.length];
        }

        void adopt(Connection connection) {
            inbox.add(connection);
            selector.wakeup();
        }

        @Override
        public void run() {
            try {
                for (long round = 0; !stopping; round++) {
                    for (Connection c; (c = inbox.poll()) != null;) {
                        c.channel.register(selector, SelectionKey.OP_READ, c);
                    }
                    int n = round % 2 == 0 ? selector.selectNow() : selector.select(20);
                    if (n == 0) {
                        continue;
                    }
                    for (SelectionKey key : selector.selectedKeys()) {
                        assertSame(selector, key.selector());
                        try {
                            if (key.attachment() instanceof ServerSocketChannel) {
                                accept((ServerSocketChannel) key.attachment());
                            } else if (key.isValid()) {
                                ((Connection) key.attachment()).handle(this, key);
                            }
                        } catch (CancelledKeyException migratedMeanwhile) {
                            // the flow-control thread's key went with a migration
                        }
                    }
                    selector.selectedKeys().clear();
                }
            } catch (Throwable t) {
                failures.add(t);
            }
        }

        private int accepted;

        private void accept(ServerSocketChannel listener) throws IOException {
            for (SocketChannel channel; (channel = listener.accept()) != null;) {
                channel.configureBlocking(false);
                channel.setOption(StandardSocketOptions.TCP_NODELAY, true);
                all[accepted++ % all.length].adopt(new Connection(channel));
            }
        }
    }

    @Test(timeout = 240_000)
    public void replicaStyleSelectorsServeMigratingConnectionsIntact() throws Exception {
        Worker[] workers = new Worker[WORKERS];
        for (int i = 0; i < WORKERS; i++) {
            workers[i] = new Worker();
            workers[i].index = i;
            workers[i].all = workers;
        }
        List<Thread> threads = new ArrayList<>();
        ServerSocketChannel listener = provider.openServerSocketChannel().bind(Providers.anyPort());
        try {
            listener.configureBlocking(false);
            listener.register(workers[0].selector, SelectionKey.OP_ACCEPT, listener);
            for (Worker worker : workers) {
                threads.add(new Thread(worker, "worker-" + worker.index));
            }
            threads.add(new Thread(() -> throttle(workers), "flow-control"));
            threads.forEach(Thread::start);

            int done = runClients(listener);
            assertEquals(failures.toString(), CLIENTS, done);
        } finally {
            stopping = true;
            for (Worker worker : workers) {
                worker.selector.wakeup();
            }
            for (Thread thread : threads) {
                thread.join(10_000);
            }
            listener.close(); // once no worker accepts any more
            for (Worker worker : workers) {
                worker.selector.keys().forEach(key -> closeQuietly(key.channel()));
                worker.selector.close();
            }
        }
        assertTrue(failures.toString(), failures.isEmpty());
    }

    /** Another thread pauses and resumes reading on random connections, as a flow control would. */
    private void throttle(Worker[] workers) {
        Random random = new Random(1);
        try {
            while (!stopping) {
                Worker worker = workers[random.nextInt(workers.length)];
                for (SelectionKey key : worker.selector.keys().toArray(new SelectionKey[0])) {
                    if (!(key.attachment() instanceof Connection) || random.nextInt(4) != 0) {
                        continue;
                    }
                    Connection connection = (Connection) key.attachment();
                    try {
                        connection.setReading(key, false);
                        Thread.sleep(1);
                        connection.setReading(key, true);
                        worker.selector.wakeup();
                    } catch (CancelledKeyException migrated) {
                        // it moved on: its new key reads
                    }
                }
                Thread.sleep(2);
            }
        } catch (Throwable t) {
            failures.add(t);
        }
    }

    /** Non-blocking clients on one selector, each sending its messages one at a time; how many finished. */
    private int runClients(ServerSocketChannel listener) throws IOException {
        Random random = new Random(7);
        AtomicInteger finished = new AtomicInteger();
        try (Selector selector = provider.openSelector()) {
            for (int c = 0; c < CLIENTS; c++) {
                SocketChannel channel = provider.openSocketChannel();
                channel.configureBlocking(false);
                channel.setOption(StandardSocketOptions.TCP_NODELAY, true);
                Client client = new Client(c, random.nextLong());
                if (channel.connect(listener.getLocalAddress())) {
                    channel.register(selector, SelectionKey.OP_WRITE, client);
                } else {
                    channel.register(selector, SelectionKey.OP_CONNECT, client);
                }
            }
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(200);
            while (finished.get() < CLIENTS && failures.isEmpty() && System.nanoTime() < deadline) {
                selector.select(100);
                for (SelectionKey key : selector.selectedKeys()) {
                    Client client = (Client) key.attachment();
                    SocketChannel channel = (SocketChannel) key.channel();
                    if (key.isConnectable()) {
                        assertTrue(channel.finishConnect());
                        key.interestOps(SelectionKey.OP_WRITE);
                    } else if (client.step(key, channel)) {
                        finished.incrementAndGet();
                        key.cancel();
                        channel.close();
                    }
                }
                selector.selectedKeys().clear();
            }
            for (SelectionKey key : selector.keys()) {
                closeQuietly(key.channel());
            }
        }
        return finished.get();
    }

    private static final class Client {
        final int id;
        final Random random;
        int sent;
        ByteBuffer out;
        byte[] expected;
        ByteBuffer in;

        Client(int id, long seed) {
            this.id = id;
            this.random = new Random(seed);
        }

        /** One step of send-then-await-echo; true once every message came back. */
        boolean step(SelectionKey key, SocketChannel channel) throws IOException {
            if (key.isWritable()) {
                if (out == null) {
                    expected = Providers.pattern(1 + random.nextInt(4096), id * 100_000 + sent);
                    out = ByteBuffer.wrap(expected);
                    in = ByteBuffer.allocate(expected.length);
                }
                channel.write(out);
                if (!out.hasRemaining()) {
                    key.interestOps(SelectionKey.OP_READ);
                }
            }
            if (key.isValid() && key.isReadable()) {
                if (channel.read(in) < 0) {
                    throw new IOException("client " + id + ": the server closed after " + sent + " messages");
                }
                if (!in.hasRemaining()) {
                    assertTrue("client " + id + " message " + sent + " differs", Arrays.equals(expected, in.array()));
                    out = null;
                    if (++sent == MESSAGES) {
                        return true;
                    }
                    key.interestOps(SelectionKey.OP_WRITE);
                }
            }
            return false;
        }
    }

    /**
     * A control port beside the replica links, as BFT systems keep one (for
     * status and reconfiguration): a DatagramChannel on the same selector as
     * the listener and its connections, each answered in turn (rdma-nio's
     * selectors refused the JDK's datagram channels).
     */
    @Test(timeout = 120_000)
    public void aDatagramControlPortSharesTheSelectorWithTheLinks() throws Exception {
        try (Selector selector = provider.openSelector();
                ServerSocketChannel listener = provider.openServerSocketChannel().bind(Providers.anyPort());
                DatagramChannel control = provider.openDatagramChannel().bind(Providers.anyPort());
                SocketChannel link = provider.openSocketChannel();
                DatagramChannel operator = provider.openDatagramChannel().bind(Providers.anyPort())) {
            listener.configureBlocking(false);
            control.configureBlocking(false);
            listener.register(selector, SelectionKey.OP_ACCEPT);
            control.register(selector, SelectionKey.OP_READ);
            link.connect(listener.getLocalAddress());
            ByteBuffer in = ByteBuffer.allocate(64);
            for (int round = 0; round < 20; round++) {
                link.write(ByteBuffer.wrap(new byte[] {(byte) round}));
                operator.send(ByteBuffer.wrap(new byte[] {(byte) round}), control.getLocalAddress());
                int echoed = 0;
                int answered = 0;
                while (echoed == 0 || answered == 0) {
                    selector.select(1_000);
                    for (SelectionKey key : selector.selectedKeys()) {
                        if (key.isAcceptable()) {
                            SocketChannel accepted = listener.accept();
                            accepted.configureBlocking(false);
                            accepted.register(selector, SelectionKey.OP_READ);
                        } else if (key.channel() == control) {
                            SocketAddress from = control.receive(in.clear());
                            control.send(in.flip(), from); // the status: the round asked for
                            answered++;
                        } else {
                            SocketChannel connection = (SocketChannel) key.channel();
                            assertTrue("the link stays open", connection.read(in.clear()) > 0);
                            connection.write(in.flip());
                            echoed++;
                        }
                    }
                    selector.selectedKeys().clear();
                }
                assertEquals(1, link.read(in.clear()));
                assertEquals(round, in.get(0));
                operator.receive(in.clear());
                assertEquals(1, in.position());
                assertEquals(round, in.get(0));
            }
        }
    }

    /** TLS 1.3 over the provider's channels: an SSLEngine handshake each side, then checksummed records both ways. */
    @Test(timeout = 120_000)
    public void tlsRunsOverTheChannels() throws Exception {
        SSLContext context = selfSignedContext();
        try (Providers.Pair pair = new Providers.Pair(provider)) {
            Tls client = new Tls(context.createSSLEngine("localhost", 0), pair.client, true);
            Tls server = new Tls(context.createSSLEngine(), pair.server, false);
            CompletableFuture<byte[]> served = CompletableFuture.supplyAsync(() -> {
                try {
                    server.handshake();
                    byte[] request = server.read(100_000);
                    server.write(request); // echoed back
                    return request;
                } catch (IOException e) {
                    throw new RuntimeException(e);
                }
            });
            client.handshake();
            assertEquals("TLSv1.3", client.engine.getSession().getProtocol());
            byte[] request = Providers.pattern(100_000, 5);
            client.write(request);
            assertTrue("the echo differs", Arrays.equals(request, client.read(request.length)));
            assertTrue("the server read otherwise", Arrays.equals(request, served.get(60, TimeUnit.SECONDS)));
        }
    }

    /** A context whose key and trust are one self-signed key pair, made by the JDK's keytool. */
    private static SSLContext selfSignedContext() throws Exception {
        Path dir = Files.createTempDirectory("rdmanio-tls");
        Path store = dir.resolve("store.p12");
        char[] password = "changeit".toCharArray();
        try {
            String keytool = Path.of(System.getProperty("java.home"), "bin", "keytool").toString();
            Process process = new ProcessBuilder(keytool, "-genkeypair", "-alias", "replica", "-keyalg", "EC",
                    "-groupname", "secp256r1", "-dname", "CN=localhost", "-validity", "2", "-storetype", "PKCS12",
                    "-keystore", store.toString(), "-storepass", "changeit").redirectErrorStream(true).start();
            String output = new String(process.getInputStream().readAllBytes());
            assertEquals(output, 0, process.waitFor());
            KeyStore keys = KeyStore.getInstance("PKCS12");
            try (InputStream in = Files.newInputStream(store)) {
                keys.load(in, password);
            }
            KeyManagerFactory keyManagers = KeyManagerFactory.getInstance("PKIX");
            keyManagers.init(keys, password);
            TrustManagerFactory trust = TrustManagerFactory.getInstance("PKIX");
            trust.init(keys);
            SSLContext context = SSLContext.getInstance("TLSv1.3");
            context.init(keyManagers.getKeyManagers(), trust.getTrustManagers(), null);
            return context;
        } finally {
            Files.deleteIfExists(store);
            Files.deleteIfExists(dir);
        }
    }

    /** An SSLEngine driven over a blocking channel. */
    private static final class Tls {
        final SSLEngine engine;
        final SocketChannel channel;
        final ByteBuffer netIn;
        final ByteBuffer netOut;
        final ByteBuffer appIn;

        Tls(SSLEngine engine, SocketChannel channel, boolean client) {
            this.engine = engine;
            this.channel = channel;
            engine.setUseClientMode(client);
            int packet = engine.getSession().getPacketBufferSize();
            netIn = ByteBuffer.allocateDirect(packet);
            netOut = ByteBuffer.allocateDirect(packet);
            appIn = ByteBuffer.allocate(engine.getSession().getApplicationBufferSize());
        }

        void handshake() throws IOException {
            engine.beginHandshake();
            HandshakeStatus status = engine.getHandshakeStatus();
            while (status != HandshakeStatus.FINISHED && status != HandshakeStatus.NOT_HANDSHAKING) {
                switch (status) {
                    case NEED_WRAP:
                        status = wrap(ByteBuffer.allocate(0));
                        break;
                    case NEED_UNWRAP:
                        status = unwrap();
                        break;
                    case NEED_TASK:
                        for (Runnable task; (task = engine.getDelegatedTask()) != null;) {
                            task.run();
                        }
                        status = engine.getHandshakeStatus();
                        break;
                    default:
                        throw new IOException("handshake: " + status);
                }
            }
        }

        private HandshakeStatus wrap(ByteBuffer app) throws IOException {
            netOut.clear();
            SSLEngineResult result = engine.wrap(app, netOut);
            assertEquals(SSLEngineResult.Status.OK, result.getStatus());
            netOut.flip();
            while (netOut.hasRemaining()) {
                channel.write(netOut);
            }
            return result.getHandshakeStatus();
        }

        /** Unwraps one record into appIn, reading from the channel as long as it is short of one. */
        private HandshakeStatus unwrap() throws IOException {
            while (true) {
                netIn.flip();
                SSLEngineResult result = engine.unwrap(netIn, appIn);
                netIn.compact();
                if (result.getStatus() == SSLEngineResult.Status.OK) {
                    return result.getHandshakeStatus();
                }
                assertEquals(SSLEngineResult.Status.BUFFER_UNDERFLOW, result.getStatus());
                if (channel.read(netIn) < 0) {
                    throw new IOException("the peer closed mid-record");
                }
            }
        }

        void write(byte[] data) throws IOException {
            ByteBuffer app = ByteBuffer.wrap(data);
            while (app.hasRemaining()) {
                wrap(app);
            }
        }

        byte[] read(int length) throws IOException {
            ByteBuffer got = ByteBuffer.allocate(length);
            while (got.hasRemaining()) {
                HandshakeStatus status = unwrap(); // post-handshake messages (session tickets) come here too
                if (status == HandshakeStatus.NEED_TASK) {
                    for (Runnable task; (task = engine.getDelegatedTask()) != null;) {
                        task.run();
                    }
                }
                appIn.flip();
                while (appIn.hasRemaining() && got.hasRemaining()) {
                    got.put(appIn.get());
                }
                appIn.compact();
            }
            return got.array();
        }
    }

    private static void closeQuietly(java.nio.channels.Channel channel) {
        try {
            channel.close();
        } catch (IOException ignored) {
            // closing anyway
        }
    }
}
