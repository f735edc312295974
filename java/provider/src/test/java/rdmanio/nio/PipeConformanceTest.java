package rdmanio.nio;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.AsynchronousCloseException;
import java.nio.channels.ClosedByInterruptException;
import java.nio.channels.ClosedChannelException;
import java.nio.channels.Pipe;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.spi.SelectorProvider;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import org.junit.Test;
import org.junit.runners.Parameterized.Parameters;

/**
 * {@link Pipe} on the provider's own selectors, after what OpenJDK's Selector
 * tests do with pipes (a selector woken by a pipe, many pipes on one
 * selector, reads and writes in both blocking modes, close and interrupt of
 * a blocked end): the JDK's provider, the reference, and rdma-nio (whose
 * selectors refused the JDK's pipes with IllegalSelectorException).
 */
public class PipeConformanceTest extends EveryProvider {
    @Parameters(name = "{0}")
    public static List<Object[]> providers() {
        return List.of(new Object[] {"jdk", SelectorProvider.provider()},
                new Object[] {"rdma-nio", RdmaSelectorProvider.withTransport("tcp")});
    }

    @Test(timeout = 60_000)
    public void aSelectorWakesForBytesInAPipeAndItsEnd() throws Exception {
        Pipe pipe = provider.openPipe();
        Pipe.SinkChannel sink = pipe.sink(); // closed midway
        try (Selector selector = provider.openSelector(); Pipe.SourceChannel source = pipe.source()) {
            source.configureBlocking(false);
            SelectionKey key = source.register(selector, SelectionKey.OP_READ);
            assertEquals("nothing written", 0, selector.selectNow());
            assertEquals(0, source.read(ByteBuffer.allocate(8)));

            CompletableFuture<Void> writer = CompletableFuture.runAsync(() -> {
                try {
                    Thread.sleep(50);
                    sink.write(ByteBuffer.wrap(new byte[] {1, 2, 3}));
                } catch (IOException | InterruptedException e) {
                    throw new RuntimeException(e);
                }
            });
            assertEquals(1, selector.select(Providers.TIMEOUT_MILLIS));
            assertTrue(key.isReadable());
            writer.get();
            ByteBuffer got = ByteBuffer.allocate(8);
            assertEquals(3, source.read(got));
            selector.selectedKeys().clear();
            assertEquals("drained", 0, selector.selectNow());

            sink.close();
            assertEquals("the end is readable", 1, selector.select(Providers.TIMEOUT_MILLIS));
            assertEquals(-1, source.read(got));
        }
    }

    /** And closing them leaves their selector nothing to complain of (a pipe end's fd was swapped under it). */
    @Test(timeout = 60_000)
    public void manyPipesOnOneSelectorEachReportTheirOwn() throws Exception {
        try (Providers.EngineLog log = new Providers.EngineLog(); Selector selector = provider.openSelector()) {
            Pipe[] pipes = new Pipe[64];
            for (int i = 0; i < pipes.length; i++) {
                pipes[i] = provider.openPipe();
                pipes[i].source().configureBlocking(false).register(selector, SelectionKey.OP_READ, i);
            }
            for (int i = 0; i < pipes.length; i += 3) {
                pipes[i].sink().write(ByteBuffer.wrap(new byte[] {(byte) i}));
            }
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
            while (selector.selectedKeys().size() < (pipes.length + 2) / 3 && System.nanoTime() < deadline) {
                selector.select(100);
            }
            for (SelectionKey key : selector.selectedKeys()) {
                int i = (Integer) key.attachment();
                assertEquals(0, i % 3);
                ByteBuffer one = ByteBuffer.allocate(1);
                assertEquals(1, ((Pipe.SourceChannel) key.channel()).read(one));
                assertEquals((byte) i, one.get(0));
            }
            assertEquals((pipes.length + 2) / 3, selector.selectedKeys().size());
            for (Pipe pipe : pipes) {
                pipe.sink().close();
                pipe.source().close();
            }
            selector.selectNow(); // the closed channels' keys leave the epoll set
            assertTrue(log.messages.toString(), !log.lostAnFd());
        }
    }

    /** A full pipe: a non-blocking write takes what fits, OP_WRITE waits for room, a blocking write for all. */
    @Test(timeout = 60_000)
    public void megabytesCrossAFullPipeIntact() throws Exception {
        Pipe pipe = provider.openPipe();
        byte[] data = new byte[4 << 20];
        new Random(7).nextBytes(data);
        try (Selector selector = provider.openSelector(); Pipe.SourceChannel source = pipe.source();
                Pipe.SinkChannel sink = pipe.sink()) {
            sink.configureBlocking(false);
            ByteBuffer src = ByteBuffer.wrap(data);
            int first = sink.write(src);
            assertTrue("a pipe holds less than 4 MiB: " + first, first > 0 && first < data.length);
            assertEquals("full", 0, sink.write(ByteBuffer.allocate(1)));
            SelectionKey key = sink.register(selector, SelectionKey.OP_WRITE);
            assertEquals("no room", 0, selector.selectNow());

            CompletableFuture<byte[]> reader = CompletableFuture.supplyAsync(() -> {
                ByteBuffer got = ByteBuffer.allocateDirect(data.length);
                try {
                    while (got.hasRemaining() && source.read(got) >= 0) {
                        // blocking reads until all arrived
                    }
                } catch (IOException e) {
                    throw new RuntimeException(e);
                }
                byte[] bytes = new byte[data.length];
                got.flip().get(bytes);
                return bytes;
            });
            assertEquals(1, selector.select(Providers.TIMEOUT_MILLIS));
            assertTrue(key.isWritable());
            key.cancel();
            selector.selectNow();
            sink.configureBlocking(true);
            sink.write(new ByteBuffer[] {ByteBuffer.allocate(0), src});
            assertTrue(!src.hasRemaining());
            assertArrayEquals(data, reader.get(30, TimeUnit.SECONDS));
        }
    }

    /** A source's change of blocking mode waits for a blocking read, as the JDK's (it returned at once). */
    @Test(timeout = 60_000)
    public void aBlockingModeChangeWaitsForABlockingRead() throws Exception {
        Pipe pipe = provider.openPipe();
        try (Pipe.SinkChannel sink = pipe.sink(); Pipe.SourceChannel source = pipe.source()) {
            CompletableFuture<Integer> read = CompletableFuture.supplyAsync(() -> {
                try {
                    return source.read(ByteBuffer.allocate(8));
                } catch (IOException e) {
                    throw new RuntimeException(e);
                }
            });
            Providers.assertModeChangeWaitsFor(source, read, () -> sink.write(ByteBuffer.wrap(new byte[] {7})));
            assertEquals(1, (int) read.get());
        }
    }

    @Test(timeout = 60_000)
    public void aBlockedReadEndsWithAnAsynchronousCloseOrAnInterrupt() throws Exception {
        Pipe pipe = provider.openPipe();
        try (Pipe.SinkChannel sink = pipe.sink()) {
            Pipe.SourceChannel source = pipe.source();
            CompletableFuture<Throwable> blocked = Providers.failureOf(() -> source.read(ByteBuffer.allocate(1)));
            Thread.sleep(100);
            source.close();
            assertTrue(String.valueOf(blocked.get()), blocked.get() instanceof AsynchronousCloseException);
            assertThrows(ClosedChannelException.class, () -> source.read(ByteBuffer.allocate(1)));
            assertThrows("the reader is gone", IOException.class, () -> {
                for (int i = 0; i < 1024; i++) {
                    sink.write(ByteBuffer.allocate(1024));
                }
            });
        }

        Pipe another = provider.openPipe();
        try (Pipe.SinkChannel sink = another.sink()) {
            Pipe.SourceChannel source = another.source();
            CompletableFuture<Throwable> failure = new CompletableFuture<>();
            Thread reader = new Thread(() -> {
                try {
                    source.read(ByteBuffer.allocate(1));
                    failure.complete(null);
                } catch (Throwable t) {
                    failure.complete(t);
                }
            });
            reader.start();
            Thread.sleep(100);
            reader.interrupt();
            assertTrue(String.valueOf(failure.get()), failure.get() instanceof ClosedByInterruptException);
            assertTrue("an interrupt closes the channel", !source.isOpen());
            assertTrue("not the other end", sink.isOpen());
        }
    }

}
