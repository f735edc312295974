package hybster;

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

/**
 * Replica processes of {@code hybster.Main}, killed with SIGKILL (kill -9)
 * under a client's load and started again from the same configuration: their
 * trusted counters survive in the seal directory, and they recover.
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
        StringBuilder replicas = new StringBuilder();
        for (int id = 0; id < 3; id++) {
            try (ServerSocket probe = new ServerSocket(0)) {
                replicas.append(id == 0 ? "" : ",").append(HybsterTest.HOST).append(':').append(probe.getLocalPort());
            }
        }
        Path config = directory.resolve("cluster.properties");
        Files.writeString(config, "replicas=" + replicas + "\nmasterSecret=00112233445566778899aabbccddeeff\n"
                + "trinxKey=ffeeddccbbaa99887766554433221100\nprovider=jdk\nsealDirectory=" + directory + "\n");
        Cluster cluster = Main.Config.read(config).cluster();
        ReplicaProcess[] replica = new ReplicaProcess[3];
        for (int id = 0; id < 3; id++) {
            replica[id] = start(config, id);
        }
        for (int id = 0; id < 3; id++) {
            await(replica[id], "replica " + id + " on jdk at", 0); // before the first request's timeout runs
        }
        Client client = new Client(Cluster.FIRST_CLIENT, cluster, SelectorProvider.provider(), 300);
        AtomicLong done = new AtomicLong();
        AtomicBoolean stop = new AtomicBoolean();
        AtomicReference<Throwable> failure = new AtomicReference<>();
        Thread load = new Thread(() -> {
            try {
                while (!stop.get()) {
                    long total = HybsterTest.count(client.invoke(new byte[] {1}, TIMEOUT_MILLIS));
                    assertEquals("the counter after request " + (done.get() + 1), done.get() + 1, total);
                    done.incrementAndGet();
                }
            } catch (Throwable e) {
                failure.set(e);
            }
        }, "load");
        load.start();
        try {
            for (int killed : new int[] {2, 0}) { // a follower, then the leader of view 0
                awaitDone(done, failure, done.get() + 50);
                replica[killed].process.destroyForcibly().waitFor(); // SIGKILL
                if (killed == 2) {
                    awaitDone(done, failure, done.get() + 50); // the others go on without it
                }
                replica[killed] = start(config, killed);
                await(replica[killed], "recovered at checkpoint", 0);
            }
            awaitDone(done, failure, done.get() + 50);
            replica[1].process.destroyForcibly().waitFor(); // the leader of the view the others moved to
            int[] from = {replica[0].lineCount(), 0, replica[2].lineCount()};
            awaitDone(done, failure, done.get() + 250); // past a checkpoint (one every 100 orders)
            for (int id : new int[] {0, 2}) {
                await(replica[id], " stable, log truncated", from[id]);
            }
        } finally {
            stop.set(true);
            load.join();
            client.close();
        }
        assertEquals("the load's client failed; " + outputs(), null, failure.get());
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

    private void awaitDone(AtomicLong done, AtomicReference<Throwable> failure, long atLeast)
            throws InterruptedException {
        long deadline = System.currentTimeMillis() + TIMEOUT_MILLIS;
        while (done.get() < atLeast) {
            assertEquals("the load's client failed; " + outputs(), null, failure.get());
            assertTrue("requests done stayed at " + done.get() + "; " + outputs(),
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
