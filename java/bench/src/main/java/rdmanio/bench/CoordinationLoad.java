package rdmanio.bench;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.BooleanSupplier;

import hybster.Main;
import hybster.client.Client;
import hybster.coordination.CoordinationClient;
import hybster.coordination.CoordinationService.CreateMode;

/**
 * The coordination-service workload of the benchmark suite against a running
 * Hybster cluster ({@code application=coordination}): CLIENTS clients, each
 * with its own connections, send REQUESTS requests one after the other: 90%
 * reads ({@code getData}) and 10% writes ({@code setData}) of 64-byte values
 * on 16 nodes, all ordered ({@code -Dbench.unorderedReads=true}: reads skip
 * ordering while every replica answers alike, {@code Client.read}). The
 * clients warm up for {@code -Dbench.warmUpSeconds} (15), each on a fifth of
 * REQUESTS at least, and then until the JIT compilers of all the cluster's JVMs
 * are quiet ({@link JitQuiet}; at most {@code -Dbench.warmUpMaxSeconds}, 180)
 * before the measured phase.
 *
 * <pre>
 * java rdmanio.bench.CoordinationLoad CONFIG CLIENTS REQUESTS HISTOGRAM_FILE
 * </pre>
 *
 * Prints one CSV line ({@link Phase#HEADER}); {@code -Dbench.otherPids} (the
 * replicas' pids) adds their CPU time to the client JVM's.
 */
public final class CoordinationLoad {
    private static final int NODES = 16;
    private static final long TIMEOUT_MILLIS = 60_000;
    /** Hybster's client ids start here (the one that makes the nodes), then one per load client. */
    private static final int FIRST_CLIENT = 1000;
    private static final boolean UNORDERED_READS = Boolean.getBoolean("bench.unorderedReads");

    private CoordinationLoad() {}

    public static void main(String[] args) throws Exception {
        if (args.length < 4) {
            System.err.println("usage: rdmanio.bench.CoordinationLoad CONFIG CLIENTS REQUESTS HISTOGRAM_FILE");
            System.exit(2);
        }
        Main.Config config = Main.Config.read(Path.of(args[0]));
        int clients = Integer.parseInt(args[1]);
        int requests = Integer.parseInt(args[2]);
        byte[] value = new byte[64];
        try (Client setup = new Client(FIRST_CLIENT, config.cluster(), config.provider(), 2000)) {
            CoordinationClient coordination = new CoordinationClient(setup, TIMEOUT_MILLIS);
            coordination.create("/bench", new byte[0], CreateMode.PERSISTENT);
            for (int node = 0; node < NODES; node++) {
                coordination.create("/bench/" + node, value, CreateMode.PERSISTENT);
            }
        }
        Phase phase = new Phase();
        int warmUp = Math.max(50, requests / 5);
        // Four JVMs on two cores: their JIT compilers still work after 15 s of load
        // (with 20 clients for about a minute more), and a phase that measures
        // them measures the compiler. Set once they are quiet.
        AtomicBoolean warm = new AtomicBoolean();
        CyclicBarrier measuring = new CyclicBarrier(clients, () -> {
            try {
                phase.start();
            } catch (Exception e) {
                throw new IllegalStateException(e);
            }
        });
        AtomicLong unordered = new AtomicLong();
        AtomicLong reordered = new AtomicLong();
        List<Thread> threads = new ArrayList<>();
        List<Throwable> failures = new ArrayList<>();
        for (int c = 0; c < clients; c++) {
            int id = FIRST_CLIENT + 1 + c;
            Thread thread = new Thread(() -> {
                try (Client client = new Client(id, config.cluster(), config.provider(), 2000)) {
                    CoordinationClient coordination = new CoordinationClient(client, TIMEOUT_MILLIS, UNORDERED_READS);
                    SplittableRandom random = new SplittableRandom(id);
                    for (int i = 0; i < warmUp || !warm.get(); i++) {
                        request(coordination, random, value);
                    }
                    measuring.await();
                    for (int i = 0; i < requests; i++) {
                        long start = System.nanoTime();
                        request(coordination, random, value);
                        phase.record(System.nanoTime() - start);
                    }
                    unordered.addAndGet(client.unorderedReads());
                    reordered.addAndGet(client.readsOrdered());
                } catch (Throwable e) {
                    synchronized (failures) {
                        failures.add(e);
                    }
                    measuring.reset();
                }
            }, "client " + id);
            thread.start();
            threads.add(thread);
        }
        // A client that failed fails the run: no waiting for the compilers then.
        BooleanSupplier aClientFailed = () -> {
            synchronized (failures) {
                return !failures.isEmpty();
            }
        };
        long warmUpEnds = System.nanoTime() + TimeUnit.SECONDS.toNanos(Long.getLong("bench.warmUpSeconds", 15));
        while (System.nanoTime() < warmUpEnds && !aClientFailed.getAsBoolean()) {
            Thread.sleep(100);
        }
        long quietAfter = new JitQuiet(System.getProperty("bench.otherPids", ""))
                .await(TimeUnit.SECONDS.toMillis(Long.getLong("bench.warmUpMaxSeconds", 180)), aClientFailed);
        System.err.printf("warm-up: the JIT compilers quiet after %d s more%n", quietAfter / 1000);
        warm.set(true);
        if (aClientFailed.getAsBoolean()) {
            // The others would wait at the barrier for it: an interrupted thread breaks it.
            threads.forEach(Thread::interrupt);
        }
        for (Thread thread : threads) {
            thread.join();
        }
        if (!failures.isEmpty()) {
            throw new IllegalStateException("a client failed", failures.get(0));
        }
        phase.end((long) clients * requests);
        if (UNORDERED_READS) {
            System.err.println("reads answered unordered: " + unordered + "; tried unordered, then ordered: " + reordered);
        }
        phase.report(System.out, "cluster", config.providerName().replace(' ', '-'), clients + "clients",
                Path.of(args[3]));
    }

    private static void request(CoordinationClient coordination, SplittableRandom random, byte[] value)
            throws Exception {
        String node = "/bench/" + random.nextInt(NODES);
        if (random.nextInt(10) == 0) {
            coordination.setData(node, value, -1);
        } else {
            coordination.getData(node);
        }
    }
}
