package hybster.net;

import java.io.Closeable;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.StandardSocketOptions;
import java.nio.ByteBuffer;
import java.nio.channels.CancelledKeyException;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.channels.spi.SelectorProvider;
import java.security.SecureRandom;
import java.util.ArrayDeque;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;
import java.util.PriorityQueue;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.atomic.AtomicLong;
import java.util.logging.Level;
import java.util.logging.Logger;

import hybster.wire.Keys;
import hybster.wire.MalformedMessageException;
import hybster.wire.Message;

/**
 * One node's network: a non-blocking event loop on one thread, written against
 * plain {@code java.nio} (the provider it is given: the JDK's, or rdma-nio), so
 * switching the provider switches the transport.
 *
 * <p>Frames are {@code [int length][long incarnation][long number][message][HMAC-SHA256
 * of the link over all but the length]}. A frame that is too long, fails its
 * MAC or does not decode is dropped and counted; a peer that sends a bad
 * length loses its connection. A node sends to a replica over its own outgoing
 * connection, and to a client over the connection the client's last
 * authenticated message came on.
 *
 * <p>Every certified message must reach each replica, in order, so frames to
 * a replica wait while its connection is made or remade (a replica that starts
 * late, or restarts), and a broken connection loses none: a replica numbers
 * its frames to each replica from 1 (per process: its random incarnation tells
 * a restart), the last {@link #RETAINED_BYTES} written (or as many as it is
 * told to keep) go again after a
 * reconnect (what the broken connection's kernel buffers held and the peer
 * never read is among them), and a receiver hands on only frames numbered
 * past the last it handed on from that sender. Everything, including the
 * handler, runs on the loop thread; other threads hand work over with
 * {@link #execute}.
 */
public final class Node implements Closeable {
    private static final Logger LOG = Logger.getLogger(Node.class.getName());
    private static final int MAX_FRAME = Message.MAX_MESSAGE + 4096;
    /**
     * A link's input buffer: one read takes in every frame that waits, up to
     * this much. It doubles while a longer frame arrives (a peer that announces
     * a long frame must send it before it takes that memory), and shrinks back
     * once that frame was handed on.
     */
    private static final int INPUT_BUFFER = 64 * 1024;
    private static final long RECONNECT_MILLIS = 100;
    private static final long MAX_RECONNECT_MILLIS = 5000;
    /** Frames kept for a replica that cannot be reached (beyond: dropped, and counted). */
    private static final int MAX_QUEUED = 100_000;
    /**
     * Bytes of the frames last written to a replica that go again after a
     * reconnect: more than a connection's kernel buffers (send and receive) hold.
     */
    public static final long RETAINED_BYTES = 16 << 20;
    /** Frame bytes before the message: incarnation and number. */
    private static final int NUMBERING = 16;

    /** Receives authenticated messages, on the loop thread. */
    public interface Handler {
        void onMessage(Message message);
    }

    private final int id;
    private final Map<Integer, InetSocketAddress> replicas;
    private final Keys keys;
    private final SelectorProvider provider;
    private final Selector selector;
    private final ServerSocketChannel listener;
    private final Thread loop;
    private final ConcurrentLinkedQueue<Runnable> tasks = new ConcurrentLinkedQueue<>();
    private final AtomicLong dropped = new AtomicLong();
    private final AtomicLong duplicates = new AtomicLong();
    /** This process's frames to replicas: a receiver tells a restarted sender's (numbered from 1 again) by it. */
    private final long incarnation = new SecureRandom().nextLong();
    private volatile Handler handler = message -> { };
    private volatile boolean running = true;

    // The loop thread's.
    private final Map<Integer, Link> outgoing = new HashMap<>();
    private final Map<Integer, Link> routes = new HashMap<>();
    private final PriorityQueue<Timer> timers = new PriorityQueue<>();
    /** Per replica that sent to us: the incarnation and number of the last frame handed on. */
    private final Map<Integer, long[]> lastHandedOn = new HashMap<>();
    private long timerSequence;
    /** Bytes of frames to each replica kept to go again after a reconnect. */
    private final long retainedBytes;

    /**
     * A node with {@code id}; it listens on {@code listen} (null for a client)
     * and reaches replica {@code i} at {@code replicas.get(i)}.
     */
    public Node(int id, InetSocketAddress listen, Map<Integer, InetSocketAddress> replicas, Keys keys,
            SelectorProvider provider) throws IOException {
        this(id, listen, replicas, keys, provider, RETAINED_BYTES);
    }

    /** The same, keeping the last {@code retainedBytes} of frames written to each replica. */
    public Node(int id, InetSocketAddress listen, Map<Integer, InetSocketAddress> replicas, Keys keys,
            SelectorProvider provider, long retainedBytes) throws IOException {
        this.id = id;
        this.retainedBytes = retainedBytes;
        this.replicas = Map.copyOf(replicas);
        this.keys = keys;
        this.provider = provider;
        this.selector = provider.openSelector();
        if (listen != null) {
            listener = provider.openServerSocketChannel().bind(listen);
            listener.configureBlocking(false);
            listener.register(selector, SelectionKey.OP_ACCEPT);
        } else {
            listener = null;
        }
        loop = new Thread(this::run, "hybster node " + id);
        loop.setDaemon(true);
    }

    public void start(Handler handler) {
        this.handler = handler;
        loop.start();
    }

    public int id() {
        return id;
    }

    /** The bound address (with the port picked for port 0), or null for a client. */
    public InetSocketAddress localAddress() throws IOException {
        return listener == null ? null : (InetSocketAddress) listener.getLocalAddress();
    }

    /** Frames dropped so far: bad MAC, malformed, too long. */
    public long dropped() {
        return dropped.get();
    }

    /** Frames from replicas that came again after a reconnect and were not handed on twice. */
    public long duplicates() {
        return duplicates.get();
    }

    /** Runs {@code task} on the loop thread. */
    public void execute(Runnable task) {
        tasks.add(task);
        selector.wakeup();
    }

    /** Runs {@code task} on the loop thread after {@code delayMillis} (loop thread only). */
    public Timer schedule(long delayMillis, Runnable task) {
        Timer timer = new Timer(System.nanoTime() + delayMillis * 1_000_000, timerSequence++, task);
        timers.add(timer);
        return timer;
    }

    /**
     * Sends {@code message} to node {@code to} (loop thread only). To a replica
     * it waits while the connection is made; to a client it is lost when the
     * client's connection is gone (the client sends its request again).
     */
    public void send(int to, Message message) {
        Link link = routes.get(to);
        if (link == null && replicas.containsKey(to)) {
            link = outgoing.get(to);
            if (link == null) {
                link = new Link(to);
                outgoing.put(to, link);
                connect(link);
            }
        }
        if (link == null || link.closed) {
            LOG.fine(() -> "node " + id + ": no way to " + to + ", message dropped");
            return;
        }
        byte[] body = Message.encode(message);
        // A replica numbers its frames to replicas (see the class comment); a client's and replies to one carry 0.
        long number = link.peer >= 0 && replicas.containsKey(id) ? ++link.numbered : 0;
        int signed = NUMBERING + body.length;
        ByteBuffer frame = ByteBuffer.allocate(4 + signed + Keys.MAC_LENGTH);
        frame.putInt(signed + Keys.MAC_LENGTH).putLong(incarnation).putLong(number).put(body);
        frame.put(keys.mac(id, to, frame.array(), 4, signed)).flip();
        link.enqueue(frame);
    }

    /** (Re)opens the connection of an outgoing link; a failure waits and tries again. */
    private void connect(Link link) {
        try {
            link.channel = provider.openSocketChannel();
            link.channel.configureBlocking(false);
            link.channel.setOption(StandardSocketOptions.TCP_NODELAY, true); // small messages, no batching delay
            boolean connected = link.channel.connect(replicas.get(link.peer));
            link.key = link.channel.register(selector, connected ? SelectionKey.OP_READ : SelectionKey.OP_CONNECT,
                    link);
            if (connected) {
                link.connected();
            }
        } catch (IOException e) {
            LOG.fine(() -> "node " + id + ": cannot connect to " + link.peer + ": " + e);
            link.close();
        }
    }

    private void run() {
        try {
            while (running) {
                Runnable task;
                while ((task = tasks.poll()) != null) {
                    task.run();
                }
                long now = System.nanoTime();
                while (!timers.isEmpty() && timers.peek().due <= now) {
                    Timer timer = timers.poll();
                    if (!timer.cancelled) {
                        timer.task.run();
                    }
                }
                long wait = timers.isEmpty() ? 0 : Math.max(1, (timers.peek().due - now) / 1_000_000);
                selector.select(wait);
                for (SelectionKey key : selector.selectedKeys()) {
                    handle(key);
                }
                selector.selectedKeys().clear();
            }
        } catch (IOException | RuntimeException e) {
            if (running) {
                LOG.log(Level.SEVERE, "node " + id + ": event loop failed", e);
            }
        } finally {
            closeAll();
        }
    }

    private void handle(SelectionKey key) {
        try {
            if (key.isAcceptable()) {
                SocketChannel channel;
                while ((channel = listener.accept()) != null) {
                    channel.configureBlocking(false);
                    channel.setOption(StandardSocketOptions.TCP_NODELAY, true);
                    Link link = new Link(-1);
                    link.channel = channel;
                    link.connected = true;
                    link.key = channel.register(selector, SelectionKey.OP_READ, link);
                }
                return;
            }
            Link link = (Link) key.attachment();
            if (key.isConnectable() && link.channel.finishConnect()) {
                link.connected();
            }
            if (key.isReadable()) {
                link.read();
            }
            if (key.isValid() && key.isWritable()) {
                link.flush();
            }
        } catch (IOException | CancelledKeyException e) {
            Link link = (Link) key.attachment();
            if (link != null) {
                LOG.fine(() -> "node " + id + ": link to " + link.peer + " closed: " + e);
                link.close();
            }
        }
    }

    private void deliver(Link link, byte[] frame) {
        int signedLength = frame.length - Keys.MAC_LENGTH;
        if (signedLength < NUMBERING + 5) {
            dropped.incrementAndGet();
            return;
        }
        byte[] mac = Arrays.copyOfRange(frame, signedLength, frame.length);
        int sender = ByteBuffer.wrap(frame, NUMBERING + 1, 4).getInt();
        if (!keys.verify(sender, id, frame, 0, signedLength, mac)) {
            dropped.incrementAndGet();
            LOG.fine(() -> "node " + id + ": dropped a frame that fails its MAC (claims sender " + sender + ")");
            return;
        }
        // A replica's frames are handed on once each (a client's requests may come twice anyway).
        if (replicas.containsKey(sender) && !firstTime(sender, ByteBuffer.wrap(frame, 0, NUMBERING))) {
            duplicates.incrementAndGet();
            return;
        }
        byte[] body = Arrays.copyOfRange(frame, NUMBERING, signedLength);
        Message message;
        try {
            message = Message.decode(body);
        } catch (MalformedMessageException e) {
            dropped.incrementAndGet();
            LOG.fine(() -> "node " + id + ": dropped a malformed message from " + sender + ": " + e.getMessage());
            return;
        }
        if (!replicas.containsKey(sender)) {
            routes.put(sender, link); // replies to a client go back the way it came
        }
        handler.onMessage(message);
    }

    /**
     * Whether a replica's frame numbered as {@code numbering} says comes past
     * the last one handed on from it (else it came again after a reconnect).
     */
    private boolean firstTime(int sender, ByteBuffer numbering) {
        long senderIncarnation = numbering.getLong();
        long number = numbering.getLong();
        if (number == 0) {
            return true; // to a client
        }
        long[] last = lastHandedOn.computeIfAbsent(sender, s -> new long[] {senderIncarnation, 0});
        if (last[0] != senderIncarnation) { // the sender restarted: its frames count from 1 again
            last[0] = senderIncarnation;
            last[1] = 0;
        }
        if (number <= last[1]) {
            return false;
        }
        if (number > last[1] + 1) {
            LOG.warning("node " + id + ": frames " + (last[1] + 1) + " to " + (number - 1) + " from replica "
                    + sender + " were lost");
        }
        last[1] = number;
        return true;
    }

    @Override
    public void close() {
        running = false;
        selector.wakeup();
        if (Thread.currentThread() != loop && loop.isAlive()) {
            try {
                loop.join(5000);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        } else if (!loop.isAlive()) {
            closeAll();
        }
    }

    private void closeAll() {
        if (!selector.isOpen()) {
            return; // closed already
        }
        for (SelectionKey key : selector.keys()) {
            try {
                key.channel().close();
            } catch (IOException e) {
                LOG.fine(() -> "node " + id + ": close: " + e);
            }
        }
        try {
            selector.close();
        } catch (IOException e) {
            LOG.fine(() -> "node " + id + ": close: " + e);
        }
    }

    /** A scheduled task; cancel it to keep it from running. */
    public static final class Timer implements Comparable<Timer> {
        final long due;
        final long sequence;
        final Runnable task;
        boolean cancelled;

        Timer(long due, long sequence, Runnable task) {
            this.due = due;
            this.sequence = sequence;
            this.task = task;
        }

        public void cancel() {
            cancelled = true;
        }

        @Override
        public int compareTo(Timer other) {
            return due != other.due ? Long.compare(due, other.due) : Long.compare(sequence, other.sequence);
        }
    }

    /**
     * A connection: frames out (queued while the peer has no room, or while an
     * outgoing link reconnects), frames in. An outgoing link (to replica
     * {@code peer}) outlives its connections; an incoming one ({@code peer} -1)
     * is one connection.
     */
    private final class Link {
        final int peer;
        SocketChannel channel;
        SelectionKey key;
        boolean connected;
        boolean closed;
        long reconnectMillis = RECONNECT_MILLIS;
        final ArrayDeque<ByteBuffer> pending = new ArrayDeque<>();
        /** An outgoing link's: frames numbered so far, and the last written ones that go again after a break. */
        long numbered;
        final ArrayDeque<ByteBuffer> retained = new ArrayDeque<>();
        long retainedSize;
        /** Bytes read and not yet handed on as frames (write mode between reads). */
        ByteBuffer input = ByteBuffer.allocate(INPUT_BUFFER);

        Link(int peer) {
            this.peer = peer;
        }

        void connected() throws IOException {
            connected = true;
            reconnectMillis = RECONNECT_MILLIS;
            flush();
        }

        void enqueue(ByteBuffer frame) {
            if (pending.size() >= MAX_QUEUED) {
                dropped.incrementAndGet();
                return;
            }
            pending.add(frame);
            if (connected) {
                try {
                    flush();
                } catch (IOException e) {
                    close();
                }
            }
        }

        void flush() throws IOException {
            while (!pending.isEmpty()) {
                ByteBuffer next = pending.peek();
                channel.write(next);
                if (next.hasRemaining()) {
                    break;
                }
                pending.poll();
                if (peer >= 0 && replicas.containsKey(id)) { // (a client sends its request again anyway)
                    retain(next);
                }
            }
            updateInterest();
        }

        /** Keeps a written frame until the node's {@code retainedBytes} of later ones were written. */
        void retain(ByteBuffer frame) {
            retained.add(frame);
            retainedSize += frame.capacity();
            while (retainedSize - retained.peek().capacity() >= retainedBytes) {
                retainedSize -= retained.poll().capacity();
            }
        }

        void updateInterest() {
            if (key != null && key.isValid()) {
                key.interestOps(SelectionKey.OP_READ | (pending.isEmpty() ? 0 : SelectionKey.OP_WRITE));
            }
        }

        /**
         * Reads what the connection holds and hands on every whole frame: one
         * read for all the frames that wait, not two each (length, then body).
         */
        void read() throws IOException {
            while (true) {
                int count = channel.read(input);
                if (count < 0) {
                    close();
                    return;
                }
                boolean drained = input.hasRemaining(); // the read took less than there was room for
                input.flip();
                while (input.remaining() >= 4) {
                    int length = input.getInt(input.position());
                    if (length < Keys.MAC_LENGTH || length > MAX_FRAME) {
                        dropped.incrementAndGet();
                        LOG.warning("node " + id + ": a peer sent a frame of " + length + " bytes: closing it");
                        close();
                        return;
                    }
                    if (input.remaining() - 4 < length) {
                        break; // the rest of it has not come yet
                    }
                    byte[] frame = new byte[length];
                    input.position(input.position() + 4).get(frame);
                    deliver(this, frame);
                    if (channel == null) {
                        return; // closed by what it delivered
                    }
                }
                input.compact();
                if (!input.hasRemaining()) {
                    // Full with the start of a frame longer than the buffer: room for more of it.
                    long frameBytes = 4L + input.getInt(0);
                    input = ByteBuffer.allocate((int) Math.min(frameBytes, 2L * input.capacity())).put(input.flip());
                } else if (input.position() == 0 && input.capacity() > INPUT_BUFFER) {
                    input = ByteBuffer.allocate(INPUT_BUFFER);
                }
                if (drained || count == 0) {
                    return;
                }
            }
        }

        /** Ends the connection: an incoming link for good, an outgoing one until it reconnects. */
        void close() {
            if (channel != null) {
                try {
                    channel.close();
                } catch (IOException e) {
                    LOG.fine(() -> "node " + id + ": close: " + e);
                }
            }
            channel = null;
            key = null;
            connected = false;
            input.clear();
            if (peer < 0) {
                closed = true;
                pending.clear();
                routes.values().removeIf(link -> link == this);
                return;
            }
            if (!pending.isEmpty()) {
                pending.peek().rewind(); // a frame cut short goes again whole
            }
            // What was written may never have reached the peer: it goes again first (the peer skips what it has).
            while (!retained.isEmpty()) {
                pending.addFirst(retained.pollLast().rewind());
            }
            retainedSize = 0;
            long delay = reconnectMillis;
            reconnectMillis = Math.min(2 * reconnectMillis, MAX_RECONNECT_MILLIS);
            schedule(delay, () -> {
                if (running && channel == null) {
                    connect(this);
                }
            });
        }
    }
}
