package rdmanio.nio;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertSame;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.CancelledKeyException;
import java.nio.channels.ClosedSelectorException;
import java.nio.channels.IllegalBlockingModeException;
import java.nio.channels.IllegalSelectorException;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.channels.spi.SelectorProvider;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import org.junit.Test;

/**
 * The {@link Selector} contract, after what OpenJDK's own Selector tests check
 * (wakeup before and during select, close while selecting, the key sets, cancel
 * and re-registration, interest changes from other threads, the consumer form),
 * run against every provider of {@link Providers}.
 */
public class SelectorConformanceTest extends EveryProvider {
    /** Selects until {@code key} is selected, with a bound; fails if it never is. */
    private static void selectUntil(Selector selector, SelectionKey key) throws IOException {
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(Providers.TIMEOUT_MILLIS);
        while (!selector.selectedKeys().contains(key)) {
            assertTrue("the key was never selected", System.nanoTime() < deadline);
            selector.select(100);
        }
    }

    /**
     * A channel closed while its selector waits is not selected: the JDK's
     * selector does not wake for the close of a non-blocking channel, and the
     * key is cancelled before the select ends. rdma-nio's woke for the close
     * (it rings the socket's kick for blocked threads) and selected the key,
     * which the closer then cancelled: Kafka's acceptor threads died of
     * {@code CancelledKeyException} in {@code isAcceptable} at every close.
     */
    @Test(timeout = 60_000)
    public void aChannelClosedDuringASelectIsNotSelected() throws Exception {
        int rounds = 100;
        int selectedClosed = 0;
        try (Selector selector = provider.openSelector()) {
            for (int round = 0; round < rounds; round++) {
                ServerSocketChannel listener = provider.openServerSocketChannel().bind(Providers.anyPort());
                listener.configureBlocking(false);
                SelectionKey key = listener.register(selector, SelectionKey.OP_ACCEPT);
                CompletableFuture<Integer> select = CompletableFuture.supplyAsync(() -> {
                    try {
                        return selector.select(50);
                    } catch (IOException e) {
                        throw new RuntimeException(e);
                    }
                });
                Thread.sleep(1); // mostly asleep in the select by now
                listener.close();
                select.get(10, TimeUnit.SECONDS);
                if (selector.selectedKeys().remove(key) && !key.isValid()) {
                    selectedClosed++;
                }
                selector.selectNow(); // the cancelled key leaves the selector
            }
        }
        assertEquals("rounds whose select handed back the key of the channel closed meanwhile", 0, selectedClosed);
    }

    @Test(timeout = 30_000)
    public void aWakeupBeforeSelectEndsTheNextSelectOnly() throws IOException {
        try (Selector selector = provider.openSelector()) {
            selector.wakeup();
            selector.wakeup();
            long start = System.nanoTime();
            assertEquals(0, selector.select());
            assertEquals(0, selector.select(200));
            assertTrue("a consumed wakeup ended a later select",
                    System.nanoTime() - start >= TimeUnit.MILLISECONDS.toNanos(150));
        }
    }

    @Test(timeout = 30_000)
    public void aWakeupFromAnotherThreadEndsABlockedSelect() throws Exception {
        try (Selector selector = provider.openSelector()) {
            CompletableFuture<Integer> select = CompletableFuture.supplyAsync(() -> {
                try {
                    return selector.select();
                } catch (IOException e) {
                    throw new RuntimeException(e);
                }
            });
            Thread.sleep(200);
            assertFalse("select returned with nothing to do", select.isDone());
            selector.wakeup();
            assertEquals(0, (int) select.get(10, TimeUnit.SECONDS));
        }
    }

    @Test(timeout = 30_000)
    public void anInterruptedThreadDoesNotBlockInSelect() throws IOException {
        try (Selector selector = provider.openSelector()) {
            Thread.currentThread().interrupt();
            try {
                assertEquals(0, selector.select());
                assertTrue("the interrupt status is kept", Thread.currentThread().isInterrupted());
            } finally {
                Thread.interrupted();
            }
        }
    }

    @Test(timeout = 30_000)
    public void closingASelectorWakesItsSelectAndInvalidatesItsKeys() throws Exception {
        try (Providers.Pair pair = new Providers.Pair(provider)) {
            Selector selector = provider.openSelector();
            pair.client.configureBlocking(false);
            SelectionKey key = pair.client.register(selector, SelectionKey.OP_READ);
            CompletableFuture<Integer> select = CompletableFuture.supplyAsync(() -> {
                try {
                    return selector.select();
                } catch (IOException e) {
                    throw new RuntimeException(e);
                }
            });
            Thread.sleep(200);
            selector.close();
            assertEquals(0, (int) select.get(10, TimeUnit.SECONDS));
            assertFalse(key.isValid());
            assertFalse("the channel was deregistered", pair.client.isRegistered());
            assertThrows(ClosedSelectorException.class, selector::keys);
            assertThrows(ClosedSelectorException.class, selector::selectNow);
            selector.wakeup(); // harmless after close
        }
    }

    @Test(timeout = 30_000)
    public void readinessIsLevelTriggeredAndCountedOncePerNewOp() throws Exception {
        try (Providers.Pair pair = new Providers.Pair(provider); Selector selector = provider.openSelector()) {
            pair.client.configureBlocking(false);
            SelectionKey key = pair.client.register(selector, SelectionKey.OP_READ, "attachment");
            assertEquals(0, selector.selectNow());
            pair.server.write(ByteBuffer.wrap(new byte[] {1, 2, 3}));
            selectUntil(selector, key);
            assertEquals(SelectionKey.OP_READ, key.readyOps());
            assertEquals("attachment", key.attachment());
            assertEquals("already selected with the same ops: not counted", 0, selector.selectNow());
            assertTrue(selector.selectedKeys().contains(key));
            selector.selectedKeys().clear();
            assertEquals("still unread: selected again", 1, selector.selectNow());
            ByteBuffer buffer = ByteBuffer.allocate(16);
            assertEquals(3, pair.client.read(buffer));
            selector.selectedKeys().clear();
            assertEquals("all read: nothing ready", 0, selector.selectNow());

            // A new op joins the ready set of a key that is still selected.
            key.interestOps(SelectionKey.OP_READ | SelectionKey.OP_WRITE);
            assertEquals(1, selector.selectNow());
            assertEquals(SelectionKey.OP_WRITE, key.readyOps());
            pair.server.write(ByteBuffer.wrap(new byte[] {4}));
            selectUntilReadyFor(selector, key, SelectionKey.OP_READ);
            assertEquals(SelectionKey.OP_READ | SelectionKey.OP_WRITE, key.readyOps());
        }
    }

    private static void selectUntilReadyFor(Selector selector, SelectionKey key, int ops) throws IOException {
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(Providers.TIMEOUT_MILLIS);
        while ((key.readyOps() & ops) != ops) {
            assertTrue("never ready for " + ops, System.nanoTime() < deadline);
            selector.select(100);
        }
    }

    @Test(timeout = 30_000)
    public void theKeySetsCannotGrowFromOutside() throws IOException {
        try (Providers.Pair pair = new Providers.Pair(provider); Selector selector = provider.openSelector()) {
            pair.client.configureBlocking(false);
            SelectionKey key = pair.client.register(selector, SelectionKey.OP_WRITE);
            assertEquals(1, selector.select(Providers.TIMEOUT_MILLIS));
            assertThrows(UnsupportedOperationException.class, () -> selector.selectedKeys().add(key));
            assertThrows(UnsupportedOperationException.class, () -> selector.keys().add(key));
            assertThrows(UnsupportedOperationException.class, () -> selector.keys().remove(key));
            assertTrue("removal from the selected-key set is allowed", selector.selectedKeys().remove(key));
        }
    }

    @Test(timeout = 30_000)
    public void aCancelledKeyGoesWithTheNextSelectAndTheChannelMayRegisterAgain() throws IOException {
        try (Providers.Pair pair = new Providers.Pair(provider); Selector selector = provider.openSelector()) {
            pair.client.configureBlocking(false);
            SelectionKey key = pair.client.register(selector, SelectionKey.OP_WRITE);
            key.cancel();
            assertFalse(key.isValid());
            assertThrows(CancelledKeyException.class, key::interestOps);
            assertThrows(CancelledKeyException.class, () -> key.interestOps(0));
            assertThrows(CancelledKeyException.class, key::readyOps);
            assertThrows("registering again before the select", CancelledKeyException.class,
                    () -> pair.client.register(selector, SelectionKey.OP_READ));
            assertTrue("still in the key set until the next select", selector.keys().contains(key));
            assertEquals(0, selector.selectNow());
            assertFalse(selector.keys().contains(key));
            assertFalse(pair.client.isRegistered());

            SelectionKey again = pair.client.register(selector, SelectionKey.OP_WRITE);
            assertTrue(again != key && again.isValid());
            assertEquals(1, selector.selectNow());
            assertTrue(selector.selectedKeys().contains(again));
        }
    }

    @Test(timeout = 30_000)
    public void closingARegisteredChannelCancelsItsKey() throws IOException {
        try (Providers.Pair pair = new Providers.Pair(provider); Selector selector = provider.openSelector()) {
            pair.client.configureBlocking(false);
            SelectionKey key = pair.client.register(selector, SelectionKey.OP_READ);
            pair.client.close();
            assertFalse(key.isValid());
            selector.selectNow();
            assertFalse(selector.keys().contains(key));
            // The peer learns of the close while the key was still registered.
            ByteBuffer buffer = ByteBuffer.allocate(4);
            assertEquals(-1, pair.server.read(buffer));
        }
    }

    @Test(timeout = 30_000)
    public void anInterestChangeFromAnotherThreadTakesEffectAtTheNextSelect() throws Exception {
        try (Providers.Pair pair = new Providers.Pair(provider); Selector selector = provider.openSelector()) {
            pair.client.configureBlocking(false);
            SelectionKey key = pair.client.register(selector, 0);
            pair.server.write(ByteBuffer.wrap(new byte[] {9}));
            assertEquals("no interest: nothing selected", 0, selector.select(200));
            CompletableFuture<Void> changer = CompletableFuture.runAsync(() -> {
                key.interestOps(SelectionKey.OP_READ);
                selector.wakeup();
            });
            changer.get(10, TimeUnit.SECONDS);
            selectUntil(selector, key);
            assertEquals(SelectionKey.OP_READ, key.readyOps());
            assertEquals(SelectionKey.OP_READ, key.interestOpsAnd(~SelectionKey.OP_WRITE));
            assertEquals(SelectionKey.OP_READ, key.interestOpsOr(SelectionKey.OP_WRITE));
            assertEquals(SelectionKey.OP_READ | SelectionKey.OP_WRITE, key.interestOps());
        }
    }

    @Test(timeout = 30_000)
    public void aChannelMovesFromOneSelectorToAnother() throws IOException {
        try (Providers.Pair pair = new Providers.Pair(provider);
                Selector first = provider.openSelector();
                Selector second = provider.openSelector()) {
            pair.client.configureBlocking(false);
            SelectionKey old = pair.client.register(first, SelectionKey.OP_READ);
            old.cancel();
            first.selectNow();
            SelectionKey moved = pair.client.register(second, SelectionKey.OP_READ);
            assertSame(moved, pair.client.keyFor(second));
            assertNull(pair.client.keyFor(first));
            pair.server.write(ByteBuffer.wrap(new byte[] {7}));
            selectUntil(second, moved);
            assertEquals(0, first.selectNow());
        }
    }

    /**
     * A server's many idle channels: after they sat idle for a while, with
     * another channel selected all along, data for one of them is seen by the
     * first selectNow after it arrived.
     */
    @Test(timeout = 60_000)
    public void anIdleChannelAmongManyIsSeenByTheFirstSelectAfterItsDataArrived() throws Exception {
        final int idle = 16;
        List<Providers.Pair> pairs = new ArrayList<>();
        try (Providers.Pair busy = new Providers.Pair(provider); Selector selector = provider.openSelector()) {
            List<SelectionKey> keys = new ArrayList<>();
            for (int i = 0; i < idle; i++) {
                Providers.Pair pair = new Providers.Pair(provider);
                pairs.add(pair);
                pair.client.configureBlocking(false);
                keys.add(pair.client.register(selector, SelectionKey.OP_READ));
            }
            busy.client.configureBlocking(false);
            SelectionKey writable = busy.client.register(selector, SelectionKey.OP_WRITE);
            long until = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(100);
            while (System.nanoTime() < until) {
                selector.selectedKeys().clear();
                assertEquals(1, selector.selectNow());
                assertTrue(selector.selectedKeys().contains(writable));
            }
            ByteBuffer buffer = ByteBuffer.allocate(8);
            for (int i : new int[] {0, idle - 1}) {
                pairs.get(i).server.write(ByteBuffer.wrap(new byte[] {(byte) i}));
                Thread.sleep(500); // long arrived
                selector.selectedKeys().clear();
                assertEquals("the writable channel and the one with data", 2, selector.selectNow());
                assertTrue(selector.selectedKeys().contains(keys.get(i)));
                buffer.clear();
                assertEquals(1, pairs.get(i).client.read(buffer));
            }
        } finally {
            for (Providers.Pair pair : pairs) {
                pair.close();
            }
        }
    }

    @Test(timeout = 30_000)
    public void oneChannelInTwoSelectorsIsReadyInBoth() throws IOException {
        try (Providers.Pair pair = new Providers.Pair(provider);
                Selector first = provider.openSelector();
                Selector second = provider.openSelector()) {
            pair.client.configureBlocking(false);
            SelectionKey a = pair.client.register(first, SelectionKey.OP_READ);
            SelectionKey b = pair.client.register(second, SelectionKey.OP_READ);
            pair.server.write(ByteBuffer.wrap(new byte[] {7}));
            selectUntil(first, a);
            selectUntil(second, b);
        }
    }

    @Test(timeout = 30_000)
    public void selectWithAnActionLeavesTheSelectedKeySetAlone() throws IOException {
        try (Providers.Pair pair = new Providers.Pair(provider); Selector selector = provider.openSelector()) {
            pair.client.configureBlocking(false);
            SelectionKey key = pair.client.register(selector, SelectionKey.OP_WRITE);
            List<SelectionKey> seen = new ArrayList<>();
            assertEquals(1, selector.select(k -> {
                seen.add(k);
                assertEquals(SelectionKey.OP_WRITE, k.readyOps());
            }, Providers.TIMEOUT_MILLIS));
            assertEquals(List.of(key), seen);
            assertTrue(selector.selectedKeys().isEmpty());
            assertEquals(1, selector.selectNow(k -> { }));
            assertThrows("select from within a select action", IllegalStateException.class,
                    () -> selector.selectNow(k -> {
                        try {
                            selector.selectNow();
                        } catch (IOException e) {
                            throw new RuntimeException(e);
                        }
                    }));
        }
    }

    @Test(timeout = 30_000)
    public void acceptAndConnectReadinessCompleteANonBlockingConnection() throws IOException {
        try (Selector selector = provider.openSelector();
                ServerSocketChannel listener = provider.openServerSocketChannel().bind(Providers.anyPort());
                SocketChannel client = provider.openSocketChannel()) {
            listener.configureBlocking(false);
            assertNull("nothing to accept yet", listener.accept());
            SelectionKey acceptKey = listener.register(selector, SelectionKey.OP_ACCEPT);
            client.configureBlocking(false);
            boolean connected = client.connect(listener.getLocalAddress());
            SelectionKey connectKey = client.register(selector, connected ? 0 : SelectionKey.OP_CONNECT);
            if (!connected) {
                assertTrue(client.isConnectionPending());
                selectUntil(selector, connectKey);
                assertEquals(SelectionKey.OP_CONNECT, connectKey.readyOps());
                assertTrue(client.finishConnect());
            }
            assertTrue(client.isConnected());
            assertFalse(client.isConnectionPending());
            selectUntil(selector, acceptKey);
            assertEquals(SelectionKey.OP_ACCEPT, acceptKey.readyOps());
            try (SocketChannel accepted = listener.accept()) {
                assertNotNull(accepted);
                assertTrue("an accepted channel starts in blocking mode", accepted.isBlocking());
                assertNull("one connection, one accept", listener.accept());
                connectKey.interestOps(SelectionKey.OP_READ);
                accepted.write(ByteBuffer.wrap(new byte[] {1}));
                selector.selectedKeys().clear();
                selectUntil(selector, connectKey);
                assertEquals(SelectionKey.OP_READ, connectKey.readyOps());
            }
        }
    }

    @Test(timeout = 30_000)
    public void registrationNeedsNonBlockingModeAndValidOps() throws IOException {
        try (Providers.Pair pair = new Providers.Pair(provider); Selector selector = provider.openSelector()) {
            assertThrows(IllegalBlockingModeException.class,
                    () -> pair.client.register(selector, SelectionKey.OP_READ));
            pair.client.configureBlocking(false);
            assertThrows(IllegalArgumentException.class, () -> pair.client.register(selector, SelectionKey.OP_ACCEPT));
            SelectionKey key = pair.client.register(selector, SelectionKey.OP_READ);
            assertThrows(IllegalArgumentException.class, () -> key.interestOps(SelectionKey.OP_ACCEPT));
            assertThrows(IllegalBlockingModeException.class, () -> pair.client.configureBlocking(true));
            assertSame(key, pair.client.register(selector, SelectionKey.OP_WRITE, "again"));
            assertEquals(SelectionKey.OP_WRITE, key.interestOps());
            assertEquals("again", key.attachment());
            assertEquals("again", key.attach("other"));
        }
    }

    @Test(timeout = 30_000)
    public void channelsAndSelectorsOfDifferentProvidersDoNotMix() throws IOException {
        SelectorProvider other = provider instanceof RdmaSelectorProvider ? SelectorProvider.provider()
                : RdmaSelectorProvider.withTransport("tcp");
        try (Selector selector = provider.openSelector(); SocketChannel foreign = other.openSocketChannel()) {
            foreign.configureBlocking(false);
            assertThrows(IllegalSelectorException.class, () -> foreign.register(selector, SelectionKey.OP_READ));
        }
    }

    @Test(timeout = 30_000)
    public void selectTimesOutWithNothingReady() throws IOException {
        try (Providers.Pair pair = new Providers.Pair(provider); Selector selector = provider.openSelector()) {
            pair.client.configureBlocking(false);
            pair.client.register(selector, SelectionKey.OP_READ);
            long start = System.nanoTime();
            assertEquals(0, selector.select(300));
            assertTrue(System.nanoTime() - start >= TimeUnit.MILLISECONDS.toNanos(250));
            assertThrows(IllegalArgumentException.class, () -> selector.select(-1));
        }
    }
}
