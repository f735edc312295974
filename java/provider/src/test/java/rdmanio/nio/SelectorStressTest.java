package rdmanio.nio;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.CancelledKeyException;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;

import org.junit.Test;

/**
 * Many channels on one selector while other threads change interest sets, wake
 * the selector up and cancel keys at random: an echo server on one selecting
 * thread serves blocking clients, and every client must get exactly its bytes
 * back. A lost readiness event shows as a client that never finishes.
 */
public class SelectorStressTest extends EveryProvider {
    private static final int CLIENTS = Providers.IN_VM ? 8 : 16;
    private static final int ROUNDS = Providers.IN_VM ? 30 : 100;

    /** Rounds each client has completed (for the failure message). */
    private java.util.concurrent.atomic.AtomicIntegerArray progress;


    /** One accepted connection's echo state (the selecting thread's). */
    private static final class Echo {
        final SocketChannel channel;
        final ByteBuffer buffer = ByteBuffer.allocate(16 * 1024);

        Echo(SocketChannel channel) {
            this.channel = channel;
        }
    }

    @Test(timeout = 240_000)
    public void noEventIsLostUnderConcurrentInterestChangesWakeupsAndCancels() throws Exception {
        AtomicBoolean running = new AtomicBoolean(true);
        List<SelectionKey> live = new CopyOnWriteArrayList<>();
        ConcurrentLinkedQueue<SelectionKey> cancelled = new ConcurrentLinkedQueue<>();
        AtomicInteger chaosActions = new AtomicInteger();
        // A thread each: the common pool has one or two on this machine.
        ExecutorService threads = Executors.newCachedThreadPool();
        progress = new java.util.concurrent.atomic.AtomicIntegerArray(CLIENTS);
        try (Selector selector = provider.openSelector();
                ServerSocketChannel listener = provider.openServerSocketChannel().bind(Providers.anyPort(), 64)) {
            listener.configureBlocking(false);
            listener.register(selector, SelectionKey.OP_ACCEPT);
            CompletableFuture<Void> server = CompletableFuture.runAsync(() -> {
                try {
                    serve(selector, listener, running, live, cancelled);
                } catch (IOException e) {
                    throw new RuntimeException(e);
                }
            }, threads);
            CompletableFuture<Void> chaos = CompletableFuture.runAsync(() -> {
                ThreadLocalRandom random = ThreadLocalRandom.current();
                while (running.get()) {
                    if (!live.isEmpty()) {
                        SelectionKey key = live.get(random.nextInt(live.size()));
                        try {
                            switch (random.nextInt(4)) {
                                case 0 -> key.interestOpsAnd(~SelectionKey.OP_READ);
                                case 1 -> key.interestOpsOr(SelectionKey.OP_READ);
                                case 2 -> selector.wakeup();
                                default -> {
                                    if (random.nextInt(8) == 0 && live.remove(key)) {
                                        key.cancel();
                                        cancelled.add(key);
                                    }
                                }
                            }
                            chaosActions.incrementAndGet();
                        } catch (CancelledKeyException raced) {
                            // the key was cancelled meanwhile: fine
                        }
                    }
                    try {
                        Thread.sleep(0, 200_000);
                    } catch (InterruptedException e) {
                        return;
                    }
                }
            }, threads);
            List<CompletableFuture<Void>> clients = new ArrayList<>();
            for (int c = 0; c < CLIENTS; c++) {
                int id = c;
                clients.add(CompletableFuture.runAsync(() -> {
                    try {
                        client(listener, id);
                    } catch (IOException e) {
                        throw new RuntimeException(e);
                    }
                }, threads));
            }
            CompletableFuture<Void> allClients = CompletableFuture.allOf(clients.toArray(new CompletableFuture<?>[0]));
            try {
                // The server or the chaos thread failing ends the wait too, with its cause.
                CompletableFuture.anyOf(allClients, server, chaos).get(Providers.IN_VM ? 200 : 40, TimeUnit.SECONDS);
                allClients.get(Providers.IN_VM ? 200 : 40, TimeUnit.SECONDS);
            } catch (java.util.concurrent.TimeoutException e) {
                StringBuilder state = new StringBuilder("clients stuck; rounds done:");
                for (int c = 0; c < CLIENTS; c++) {
                    state.append(' ').append(progress.get(c));
                }
                for (SelectionKey key : live) {
                    state.append("\n  ").append(key.channel()).append(" interest=")
                            .append(key.isValid() ? key.interestOps() : -1);
                }
                throw new AssertionError(state.toString(), e);
            }
            running.set(false);
            selector.wakeup();
            server.get(20, TimeUnit.SECONDS);
            chaos.get(20, TimeUnit.SECONDS);
            assertTrue("the chaos thread did something", chaosActions.get() > 10);
        } finally {
            running.set(false);
            threads.shutdownNow();
        }
    }

    private void client(ServerSocketChannel listener, int id) throws IOException {
        try (SocketChannel channel = provider.openSocketChannel()) {
            channel.connect(listener.getLocalAddress());
            ThreadLocalRandom random = ThreadLocalRandom.current();
            for (int round = 0; round < ROUNDS; round++) {
                byte[] message = Providers.pattern(1 + random.nextInt(8192), id * 1000 + round);
                ByteBuffer src = ByteBuffer.wrap(message);
                while (src.hasRemaining()) {
                    channel.write(src);
                }
                assertArrayEquals("client " + id + " round " + round, message,
                        Providers.readFully(channel, message.length));
                progress.incrementAndGet(id);
            }
        }
    }

    /** Echoes on every accepted channel; keys cancelled by the chaos thread come back after the next select. */
    private static void serve(Selector selector, ServerSocketChannel listener, AtomicBoolean running,
            List<SelectionKey> live, ConcurrentLinkedQueue<SelectionKey> cancelled) throws IOException {
        List<SocketChannel> accepted = new ArrayList<>();
        List<SelectionKey> cancelledBefore = new ArrayList<>();
        while (running.get()) {
            // Keys cancelled before a select begins are gone when it returns (not
            // those cancelled during it): then their channels register again.
            SelectionKey old;
            while ((old = cancelled.poll()) != null) {
                cancelledBefore.add(old);
            }
            selector.select(1000);
            for (SelectionKey key : cancelledBefore) {
                if (key.channel().isOpen()) {
                    live.add(key.channel().register(selector, SelectionKey.OP_READ, key.attachment()));
                }
            }
            cancelledBefore.clear();
            for (SelectionKey key : selector.selectedKeys()) {
                if (!key.isValid()) {
                    continue;
                }
                if (key.attachment() == null) { // the listener's key, which the chaos thread leaves alone
                    if (key.isAcceptable()) {
                        SocketChannel channel;
                        while ((channel = listener.accept()) != null) {
                            channel.configureBlocking(false);
                            accepted.add(channel);
                            live.add(channel.register(selector, SelectionKey.OP_READ, new Echo(channel)));
                        }
                    }
                    continue;
                }
                Echo echo = (Echo) key.attachment();
                try {
                    // Any of these may find the key cancelled by the chaos thread since isValid.
                    if (key.isReadable() && echo.buffer.hasRemaining()) {
                        if (echo.channel.read(echo.buffer) < 0) {
                            echo.channel.close();
                            continue;
                        }
                    }
                    echo.buffer.flip();
                    echo.channel.write(echo.buffer);
                    echo.buffer.compact();
                    if (echo.buffer.position() > 0) {
                        key.interestOpsOr(SelectionKey.OP_WRITE);
                    } else {
                        key.interestOpsAnd(~SelectionKey.OP_WRITE);
                    }
                } catch (CancelledKeyException raced) {
                    // cancelled by the chaos thread after the select: it comes back
                }
            }
            selector.selectedKeys().clear();
        }
        for (SocketChannel channel : accepted) {
            channel.close();
        }
    }
}
