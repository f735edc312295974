package rdmanio;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.logging.Handler;
import java.util.logging.Level;
import java.util.logging.LogRecord;
import java.util.logging.Logger;

import org.junit.After;
import org.junit.Before;
import org.junit.Test;

import rdmanio.nio.RdmaSelectorProvider;

/** The engine's log records reach java.util.logging, per module, above the level set for rdmanio.native. */
public class NativeLogTest {
    private static final String ADDRESS = System.getenv("RDMANIO_TEST_ADDR");
    private final Logger parent = Logger.getLogger(NativeLog.LOGGER);
    private final List<LogRecord> records = new CopyOnWriteArrayList<>();
    private final Handler collector = new Handler() {
        @Override
        public void publish(LogRecord record) {
            records.add(record);
        }

        @Override
        public void flush() {}

        @Override
        public void close() {}
    };
    private Level before;

    @Before
    public void collect() {
        before = parent.getLevel();
        parent.addHandler(collector);
    }

    @After
    public void restore() {
        parent.removeHandler(collector);
        parent.setLevel(before);
        NativeLog.refreshLevel();
    }

    private void atLevel(Level level) {
        parent.setLevel(level);
        NativeLog.refreshLevel();
    }

    private boolean logged(Level level, String logger, String text) {
        return records.stream().anyMatch(r -> r.getLevel().equals(level) && r.getLoggerName().equals(logger)
                && r.getMessage().contains(text));
    }

    /**
     * An auto listener on loopback: the engine logs at debug level (FINE) that it
     * found no RDMA there (a host without RDMA) or that it listens (the VM's
     * device binds loopback too), naming the address.
     */
    private void listenAutoOnLoopback() throws IOException {
        try (ServerSocketChannel server = RdmaSelectorProvider.withTransport("auto").openServerSocketChannel()) {
            server.bind(new InetSocketAddress("127.0.0.1", 0));
        }
    }

    @Test
    public void debugRecordsReachTheirModulesLoggerWhenFineIsOn() throws IOException {
        atLevel(Level.FINE);
        listenAutoOnLoopback();
        assertTrue(records.toString(), records.stream().anyMatch(r -> r.getLevel().equals(Level.FINE)
                && r.getLoggerName().startsWith(NativeLog.LOGGER + ".") && r.getMessage().contains("127.0.0.1")));
    }

    @Test
    public void recordsBelowTheLevelAreNotForwarded() throws IOException {
        atLevel(Level.INFO);
        listenAutoOnLoopback();
        assertTrue(records.toString(), records.stream().noneMatch(r -> r.getLevel().intValue() < Level.INFO.intValue()));
    }

    /**
     * A message-API client at a stream listener is refused, with a warning on the
     * listener's side. Over the VM's device; on a host without RDMA the client
     * reports the missing device instead.
     */
    @Test(timeout = 60_000)
    public void aWarningOfTheEngineReachesJavaLogging() throws Exception {
        atLevel(Level.WARNING);
        String host = ADDRESS == null ? "127.0.0.1" : ADDRESS;
        try (ServerSocketChannel server = RdmaSelectorProvider.withTransport("auto").openServerSocketChannel()) {
            server.bind(new InetSocketAddress(host, 0));
            InetSocketAddress at = (InetSocketAddress) server.getLocalAddress();
            if (ADDRESS == null) {
                NoRdmaDeviceException e = assertThrows(NoRdmaDeviceException.class, () -> RdmaConnection.connect(at, 5_000));
                assertTrue(e.getMessage(), e.getMessage().startsWith("no RDMA device: "));
                return;
            }
            assertThrows(IOException.class, () -> RdmaConnection.connect(at, 5_000).close());
            long deadline = System.nanoTime() + 10_000_000_000L;
            while (!logged(Level.WARNING, "rdmanio.native.media.transport", "refusing a message connection")
                    && System.nanoTime() < deadline) {
                Thread.sleep(10);
            }
            assertTrue(records.toString(),
                    logged(Level.WARNING, "rdmanio.native.media.transport", "refusing a message connection"));
        }
    }

    @Test
    public void javaLevelsMapOntoTheEnginesLevels() {
        Level[] levels = {Level.OFF, Level.SEVERE, Level.WARNING, Level.INFO, Level.CONFIG, Level.FINE, Level.FINEST};
        int[] engine = {0, 1, 2, 3, 3, 4, 5};
        for (int i = 0; i < levels.length; i++) {
            atLevel(levels[i]);
            assertEquals(levels[i].getName(), engine[i], NativeLog.engineLevel(System.getLogger(NativeLog.LOGGER)));
        }
    }
}
