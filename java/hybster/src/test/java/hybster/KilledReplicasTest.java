package hybster;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.net.ServerSocket;
import java.nio.channels.spi.SelectorProvider;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

import org.junit.After;
import org.junit.Test;

import hybster.client.Client;
import hybster.ordering.BlockStore;
import hybster.ordering.OrderingClient;
import hybster.ordering.SignedBlock;

/**
 * Replica processes of {@code hybster.Main}, killed with SIGKILL (kill -9)
 * under a client's load and started again from the same configuration: their
 * trusted counters survive in the seal directory, and they recover; the
 * ordering service's blocks survive in each replica's block store.
 */
public class KilledReplicasTest {
    private static final long TIMEOUT_MILLIS = HybsterTest.IN_VM ? 240_000 : 60_000;
    private final List<ReplicaProcess> processes = new ArrayList<>();

    /** A replica's JVM, its output (log and prints) kept line by line. */
    private static final class ReplicaProcess {
        final Process process;
        final List<String> lines = new ArrayList<>();

        ReplicaProcess(Path config, int id) throws IOException {
            String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
            process = new ProcessBuilder(java, "-cp", System.getProperty("java.class.path"), "hybster.Main",
                    "replica", config.toString(), Integer.toString(id)).redirectErrorStream(true).start();
            Thread reader = new Thread(() -> {
                try (BufferedReader in = new BufferedReader(
                        new InputStreamReader(process.getInputStream(), StandardCharsets.UTF_8))) {
                    for (String line; (line = in.readLine()) != null; ) {
                        synchronized (lines) {
                            lines.add(line);
                        }
                    }
                } catch (IOException e) {
                    // the process is gone
                }
            }, "replica " + id + " output");
            reader.setDaemon(true);
            reader.start();
        }

        int lineCount() {
            synchronized (lines) {
                return lines.size();
            }
        }

        /** Whether a line from {@code from} on contains {@code text}. */
        boolean printed(String text, int from) {
            synchronized (lines) {
                return lines.subList(Math.min(from, lines.size()), lines.size()).stream()
                        .anyMatch(line -> line.contains(text));
            }
        }
    }

    /** A client's requests, one after the other on a thread of their own, until stopped. */
    private static final class Load {
        /** One request; {@code done}: how many completed before it. */
        interface Step {
            void run(long done) throws Exception;
        }

        final AtomicLong done = new AtomicLong();
        final AtomicReference<Throwable> failure = new AtomicReference<>();
        private final AtomicBoolean stop = new AtomicBoolean();
        private final Thread thread;

        Load(Step step) {
            thread = new Thread(() -> {
                try {
                    while (!stop.get()) {
                        step.run(done.get());
                        done.incrementAndGet();
                    }
                } catch (Throwable e) {
                    failure.set(e);
                }
            }, "load");
            thread.start();
        }

        /** Stops after the request under way and waits for that. */
        void stop() throws InterruptedException {
            stop.set(true);
            thread.join();
        }
    }

    @After
    public void killAll() {
        processes.forEach(replica -> replica.process.destroyForcibly());
    }

    /**
     * A follower is killed and started again, then the leader: each recovers
     * and the view moves past the leader. Then the third replica is killed
     * for good: the two restarted ones change the view between them and go
     * on alone (a restarted replica whose peers refused its messages could
     * not), each making a checkpoint stable (its state's digest matched f+1
     * replicas', its own among them). Every request executes once and in the
     * client's order: each adds 1 to the counter, and the i-th result, which
     * f+1 replicas agreed on, is i.
     */
    @Test(timeout = 600_000)
    public void killedReplicasRecoverUnderLoadAndEveryRequestExecutesOnce() throws Exception {
        Path directory = Files.createTempDirectory("hybster-killed");
        Path config = writeConfig(directory, "");
        Cluster cluster = Main.Config.read(config).cluster();
        ReplicaProcess[] replica = startAll(config);
        Client client = new Client(Cluster.FIRST_CLIENT, cluster, SelectorProvider.provider(), 300);
        Load load = new Load(done -> {
            long total = HybsterTest.count(client.invoke(new byte[] {1}, TIMEOUT_MILLIS));
            assertEquals("the counter after request " + (done + 1), done + 1, total);
        });
        try {
            for (int killed : new int[] {2, 0}) { // a follower, then the leader of view 0
                awaitDone(load, load.done.get() + 50);
                replica[killed].process.destroyForcibly().waitFor(); // SIGKILL
                if (killed == 2) {
                    awaitDone(load, load.done.get() + 50); // the others go on without it
                }
                replica[killed] = start(config, killed);
                await(replica[killed], "recovered at checkpoint", 0);
            }
            awaitDone(load, load.done.get() + 50);
            replica[1].process.destroyForcibly().waitFor(); // the leader of the view the others moved to
            int[] from = {replica[0].lineCount(), 0, replica[2].lineCount()};
            awaitDone(load, load.done.get() + 250); // past a checkpoint (one every 100 orders)
            for (int id : new int[] {0, 2}) {
                await(replica[id], " stable, log truncated", from[id]);
            }
        } finally {
            load.stop();
            client.close();
        }
        assertEquals("the load's client failed; " + outputs(), null, load.failure.get());
    }

    /**
     * The ordering service's replica processes, each keeping its blocks in its
     * store and signing them with the key {@code Main keys} wrote: a follower
     * killed under load (perhaps in the middle of an append) and started again
     * recovers, its store holds what it had and grows on from there, and every
     * store holds the same chain as far as it reaches, the longest at least
     * the blocks of every transaction submitted.
     */
    @Test(timeout = 600_000)
    public void aKilledOrderingReplicaKeepsItsBlocksAndItsStoreGoesOnWithTheChain() throws Exception {
        Path directory = Files.createTempDirectory("hybster-killed-ordering");
        Path blocks = directory.resolve("blocks");
        Path config = writeConfig(directory, "application=ordering\nblockSize=2\nblockDirectory=" + blocks
                + "\nkeyDirectory=" + directory.resolve("keys") + "\n");
        Main.Config read = Main.Config.read(config);
        Main.writeKeys(read);
        ReplicaProcess[] replica = startAll(config);
        Client client = new Client(Cluster.FIRST_CLIENT, read.cluster(), SelectorProvider.provider(), 300);
        OrderingClient orderer = new OrderingClient(client, read.ordering().publicKeys(3), TIMEOUT_MILLIS);
        Load load = new Load(done -> assertEquals("the block of transaction " + done, done / 2,
                orderer.submit(("tx" + done).getBytes(StandardCharsets.UTF_8))));
        long hadBeforeItsRestart;
        try {
            awaitDone(load, 50);
            replica[2].process.destroyForcibly().waitFor(); // SIGKILL
            try (BlockStore store = BlockStore.open(blocks.resolve("replica-2.blocks"))) {
                hadBeforeItsRestart = store.size();
            }
            awaitDone(load, load.done.get() + 50);
            replica[2] = start(config, 2);
            await(replica[2], "recovered at checkpoint", 0);
            awaitDone(load, load.done.get() + 50);
            SignedBlock first = orderer.block(0).orElseThrow();
            assertTrue("block 0 verifies with the keys Main wrote", first.verify(read.ordering().publicKeys(3)));
        } finally {
            load.stop();
            client.close();
        }
        assertEquals("the load's client failed; " + outputs(), null, load.failure.get());
        long done = load.done.get();
        for (ReplicaProcess process : processes) {
            process.process.destroyForcibly().waitFor();
        }
        List<BlockStore> stores = new ArrayList<>();
        try {
            for (int id = 0; id < 3; id++) {
                stores.add(BlockStore.open(blocks.resolve("replica-" + id + ".blocks")));
            }
            long longest = stores.stream().mapToLong(BlockStore::size).max().orElseThrow();
            assertTrue(longest + " blocks stored for " + done + " transactions", longest >= done / 2);
            assertTrue("replica 2 had blocks before its restart", hadBeforeItsRestart > 0);
            assertTrue("replica 2's store went on past its " + hadBeforeItsRestart + " blocks: "
                    + stores.get(2).size(), stores.get(2).size() > hadBeforeItsRestart);
            BlockStore reference = stores.stream().filter(store -> store.size() == longest).findFirst().orElseThrow();
            for (int id = 0; id < 3; id++) {
                for (long n = 0; n < stores.get(id).size(); n++) {
                    assertArrayEquals("replica " + id + "'s block " + n, reference.encoded(n).orElseThrow(),
                            stores.get(id).encoded(n).orElseThrow());
                }
            }
        } finally {
            for (BlockStore store : stores) {
                store.close();
            }
        }
    }

    /** A configuration of three replicas on free ports, on the JDK's provider, sealing in {@code directory}. */
    private static Path writeConfig(Path directory, String extra) throws IOException {
        StringBuilder replicas = new StringBuilder();
        for (int id = 0; id < 3; id++) {
            try (ServerSocket probe = new ServerSocket(0)) {
                replicas.append(id == 0 ? "" : ",").append(HybsterTest.HOST).append(':').append(probe.getLocalPort());
            }
        }
        Path config = directory.resolve("cluster.properties");
        Files.writeString(config, "replicas=" + replicas + "\nmasterSecret=00112233445566778899aabbccddeeff\n"
                + "trinxKey=ffeeddccbbaa99887766554433221100\nprovider=jdk\nsealDirectory=" + directory + "\n"
                + extra);
        return config;
    }

    /** Starts the three replicas of {@code config} and waits until each listens. */
    private ReplicaProcess[] startAll(Path config) throws IOException, InterruptedException {
        ReplicaProcess[] replica = new ReplicaProcess[3];
        for (int id = 0; id < 3; id++) {
            replica[id] = start(config, id);
        }
        for (int id = 0; id < 3; id++) {
            await(replica[id], "replica " + id + " on jdk at", 0); // before the first request's timeout runs
        }
        return replica;
    }

    /** Waits until {@code replica} printed a line with {@code text} from its line {@code from} on. */
    private void await(ReplicaProcess replica, String text, int from) throws InterruptedException {
        long deadline = System.currentTimeMillis() + TIMEOUT_MILLIS;
        while (!replica.printed(text, from)) {
            assertTrue("no '" + text + "' from a replica; " + outputs(), System.currentTimeMillis() < deadline);
            Thread.sleep(20);
        }
    }

    private ReplicaProcess start(Path config, int id) throws IOException {
        ReplicaProcess started = new ReplicaProcess(config, id);
        processes.add(started);
        return started;
    }

    private void awaitDone(Load load, long atLeast) throws InterruptedException {
        long deadline = System.currentTimeMillis() + TIMEOUT_MILLIS;
        while (load.done.get() < atLeast) {
            assertEquals("the load's client failed; " + outputs(), null, load.failure.get());
            assertTrue("requests done stayed at " + load.done.get() + "; " + outputs(),
                    System.currentTimeMillis() < deadline);
            Thread.sleep(5);
        }
    }

    /** What every replica process printed, for a failure's message. */
    private String outputs() {
        StringBuilder text = new StringBuilder();
        for (ReplicaProcess replica : processes) {
            synchronized (replica.lines) {
                text.append("\n---- a replica process:\n").append(String.join("\n", replica.lines));
            }
        }
        return text.toString();
    }
}
