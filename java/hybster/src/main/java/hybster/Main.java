package hybster;

import java.io.IOException;
import java.io.Reader;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.spi.SelectorProvider;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.GeneralSecurityException;
import java.security.KeyFactory;
import java.security.KeyPair;
import java.security.KeyPairGenerator;
import java.security.PrivateKey;
import java.security.PublicKey;
import java.security.spec.PKCS8EncodedKeySpec;
import java.security.spec.X509EncodedKeySpec;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;
import java.util.Locale;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.stream.Collectors;

import hybster.client.Client;
import hybster.coordination.CoordinationService;
import hybster.ordering.BlockStore;
import hybster.ordering.OrderingService;
import hybster.replica.Application;
import hybster.replica.Replica;
import hybster.trinx.SoftwareTrinx;
import hybster.trinx.TrustedCounter;

/**
 * Runs one node of a local Hybster cluster from a configuration file:
 *
 * <pre>
 * java hybster.Main replica CONFIG ID
 * java hybster.Main client CONFIG ID REQUESTS [BYTES]
 * java hybster.Main keys CONFIG
 * </pre>
 *
 * The configuration is a properties file: {@code replicas} (host:port of each
 * replica, comma-separated; their number n = 2f+1 gives f), {@code masterSecret}
 * and {@code trinxKey} (hex), {@code provider}: {@code jdk}, or
 * {@code rdma-nio} with {@code transport} (auto, rdma, shm, tcp), and
 * {@code viewChangeMillis} (how long a request may wait before the followers
 * suspect the leader; default 2000), {@code instances} (parallel ordering
 * instances, default 1; the same on every replica), {@code maxBatch} (requests
 * a PREPARE orders at most, default 64; 1 orders each request alone, without
 * waiting for the last batch; the same on every replica), and {@code application}:
 * {@code counter} (default: each operation adds its length to a total),
 * {@code coordination} (the coordination service) or {@code ordering} (the
 * ordering service, {@code blockSize} transactions a block, default 100, its
 * blocks kept in {@code blockDirectory} as {@code replica-ID.blocks} when
 * given, and signed with {@code replica-ID.key} from {@code keyDirectory} when
 * given: {@code keys} writes each replica's key pair there, the public key as
 * {@code replica-ID.pub}, for clients), and {@code sealDirectory}:
 * where each replica seals its trusted counters ({@code replica-ID.seal}), so
 * that one killed and started again recovers (see {@code Replica}); without
 * it a restarted replica's counter starts at 0 and its peers refuse it. A replica runs
 * until killed; a client sends REQUESTS requests one after the other and prints
 * their latency percentiles and the throughput.
 */
public final class Main {
    private Main() {}

    /** The provider a configuration's {@code provider=rdma-nio} names, found on the class path. */
    static final String RDMA_NIO = "rdmanio.nio.RdmaSelectorProvider";

    /** A deployment read from a configuration file (also for drivers that run clients of it). */
    public record Config(Cluster cluster, SelectorProvider provider, String providerName, Replica.Options options,
            String application, Path sealDirectory, Ordering ordering) {
        public static Config read(Path file) throws IOException {
            Properties properties = new Properties();
            try (Reader reader = Files.newBufferedReader(file)) {
                properties.load(reader);
            }
            List<InetSocketAddress> replicas = new ArrayList<>();
            for (String address : required(properties, "replicas", file).split(",")) {
                int colon = address.trim().lastIndexOf(':');
                if (colon < 0) {
                    throw new IllegalArgumentException(file + ": replica address '" + address + "' has no port");
                }
                replicas.add(new InetSocketAddress(address.trim().substring(0, colon),
                        Integer.parseInt(address.trim().substring(colon + 1))));
            }
            HexFormat hex = HexFormat.of();
            Cluster cluster = new Cluster(replicas, hex.parseHex(required(properties, "masterSecret", file)),
                    hex.parseHex(required(properties, "trinxKey", file)));
            long viewChangeMillis = number(properties, "viewChangeMillis", Replica.DEFAULT_VIEW_CHANGE_MILLIS, file);
            Replica.Options options = Replica.Options.DEFAULTS.withViewChangeMillis(viewChangeMillis)
                    .withInstances((int) number(properties, "instances", 1, file))
                    .withMaxBatch((int) number(properties, "maxBatch", Replica.DEFAULT_MAX_BATCH, file));
            String application = properties.getProperty("application", "counter").trim();
            if (!List.of("counter", "coordination", "ordering").contains(application)) {
                throw new IllegalArgumentException(file + ": application '" + application
                        + "' is not counter, coordination or ordering");
            }
            Path seals = directory(properties, "sealDirectory");
            Ordering ordering = new Ordering((int) number(properties, "blockSize", Ordering.DEFAULT_BLOCK_SIZE, file),
                    directory(properties, "blockDirectory"), directory(properties, "keyDirectory"));
            if (ordering.blockSize() < 1) {
                throw new IllegalArgumentException(file + ": blockSize " + ordering.blockSize() + " is below 1");
            }
            String provider = properties.getProperty("provider", "jdk");
            return switch (provider) {
                case "jdk" -> new Config(cluster, SelectorProvider.provider(), "jdk", options, application,
                        seals, ordering);
                case "rdma-nio" -> {
                    String transport = properties.getProperty("transport", "auto");
                    // Only replicas get a ring of a replica's memory; clients get two-sided sends.
                    String ringPeers = cluster.replicas().stream()
                            .map(replica -> {
                                if (replica.isUnresolved()) {
                                    throw new IllegalArgumentException(file + ": replica " + replica
                                            + " does not resolve to an IP address");
                                }
                                return replica.getAddress().getHostAddress();
                            })
                            .distinct().collect(Collectors.joining(","));
                    yield new Config(cluster, rdmaNio(transport, ringPeers), "rdma-nio (" + transport + ")",
                            options, application, seals, ordering);
                }
                default -> throw new IllegalArgumentException(file + ": provider '" + provider
                        + "' is not jdk or rdma-nio");
            };
        }

        /**
         * rdma-nio, found by class name: Hybster compiles against java.nio alone, and the
         * provider takes its settings from its system properties, as with the JVM-wide switch.
         */
        private static SelectorProvider rdmaNio(String transport, String ringPeers) {
            System.setProperty("rdmanio.transport", transport);
            System.setProperty("rdmanio.ringPeers", ringPeers);
            try {
                return (SelectorProvider) Class.forName(RDMA_NIO).getConstructor().newInstance();
            } catch (ReflectiveOperationException e) {
                throw new IllegalStateException("provider rdma-nio: " + RDMA_NIO + " is not on the class path", e);
            }
        }

        private static long number(Properties properties, String key, long fallback, Path file) {
            String value = properties.getProperty(key, String.valueOf(fallback)).trim();
            try {
                return Long.parseLong(value);
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException(file + ": " + key + " '" + value + "' is not a number");
            }
        }

        private static Path directory(Properties properties, String key) {
            String value = properties.getProperty(key);
            return value == null || value.isBlank() ? null : Path.of(value.trim());
        }

        private static String required(Properties properties, String key, Path file) {
            String value = properties.getProperty(key);
            if (value == null || value.isBlank()) {
                throw new IllegalArgumentException(file + ": '" + key + "' is missing");
            }
            return value.trim();
        }
    }

    /**
     * The ordering service's settings: transactions a block, where each
     * replica keeps its blocks and finds its signing key (either null: none).
     */
    public record Ordering(int blockSize, Path blockDirectory, Path keyDirectory) {
        static final int DEFAULT_BLOCK_SIZE = 100;

        /** Replica {@code id}'s block store, or null. */
        Path blocks(int id) {
            return blockDirectory == null ? null : blockDirectory.resolve("replica-" + id + ".blocks");
        }

        /** Replica {@code id}'s private key (PKCS#8), or null. */
        Path privateKey(int id) {
            return keyDirectory == null ? null : keyDirectory.resolve("replica-" + id + ".key");
        }

        /** Replica {@code id}'s public key (X.509), for clients. */
        public Path publicKey(int id) {
            if (keyDirectory == null) {
                throw new IllegalStateException("no keyDirectory: the replicas sign no blocks");
            }
            return keyDirectory.resolve("replica-" + id + ".pub");
        }

        /** Every replica's public key, by index (see {@link Main#writeKeys}). */
        public List<PublicKey> publicKeys(int replicas) throws IOException, GeneralSecurityException {
            List<PublicKey> keys = new ArrayList<>();
            for (int id = 0; id < replicas; id++) {
                keys.add(KeyFactory.getInstance("Ed25519")
                        .generatePublic(new X509EncodedKeySpec(Files.readAllBytes(publicKey(id)))));
            }
            return keys;
        }

        /** The ordering service replica {@code id} runs, its store opened. */
        OrderingService service(int id) throws IOException, GeneralSecurityException {
            PrivateKey key = privateKey(id) == null ? null : KeyFactory.getInstance("Ed25519")
                    .generatePrivate(new PKCS8EncodedKeySpec(Files.readAllBytes(privateKey(id))));
            if (blockDirectory != null) {
                Files.createDirectories(blockDirectory);
            }
            return new OrderingService(blockSize, key, blocks(id) == null ? null : BlockStore.open(blocks(id)));
        }
    }

    /**
     * Writes an Ed25519 key pair for each replica into the configuration's
     * {@code keyDirectory}: {@code replica-ID.key} (PKCS#8, readable by its
     * owner alone) and {@code replica-ID.pub} (X.509). Refuses to replace a key.
     */
    static void writeKeys(Config config) throws IOException, GeneralSecurityException {
        Ordering ordering = config.ordering();
        if (ordering.keyDirectory() == null) {
            throw new IllegalArgumentException("the configuration names no keyDirectory");
        }
        Files.createDirectories(ordering.keyDirectory());
        for (int id = 0; id < config.cluster().n(); id++) {
            if (Files.exists(ordering.privateKey(id))) {
                throw new IOException(ordering.privateKey(id) + " exists: keys are not replaced");
            }
        }
        KeyPairGenerator generator = KeyPairGenerator.getInstance("Ed25519");
        for (int id = 0; id < config.cluster().n(); id++) {
            KeyPair pair = generator.generateKeyPair();
            Files.createFile(ordering.privateKey(id),
                    PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rw-------")));
            Files.write(ordering.privateKey(id), pair.getPrivate().getEncoded());
            Files.write(ordering.publicKey(id), pair.getPublic().getEncoded());
        }
    }

    /** A replicated counter: each operation adds its bytes' length and returns the total. */
    static final class Counter implements Application {
        private long total;

        @Override
        public byte[] execute(int client, byte[] operation) {
            total += operation.length;
            return ByteBuffer.allocate(8).putLong(total).array();
        }

        @Override
        public byte[] snapshot() {
            return ByteBuffer.allocate(8).putLong(total).array();
        }

        @Override
        public void restore(byte[] snapshot) {
            if (snapshot.length != 8) {
                throw new IllegalArgumentException("a counter's snapshot is 8 bytes, not " + snapshot.length);
            }
            total = ByteBuffer.wrap(snapshot).getLong();
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length == 2 && args[0].equals("keys")) {
            writeKeys(Config.read(Path.of(args[1])));
            return;
        }
        if (args.length < 3) {
            System.err.println(
                    "usage: hybster.Main replica CONFIG ID | client CONFIG ID REQUESTS [BYTES] | keys CONFIG");
            System.exit(2);
        }
        Config config = Config.read(Path.of(args[1]));
        int id = Integer.parseInt(args[2]);
        switch (args[0]) {
            case "replica" -> runReplica(config, id);
            case "client" -> runClient(config, id, Integer.parseInt(args[3]),
                    args.length > 4 ? Integer.parseInt(args[4]) : 64);
            default -> throw new IllegalArgumentException("unknown role '" + args[0] + "'");
        }
    }

    private static void runReplica(Config config, int id) throws Exception {
        Cluster cluster = config.cluster();
        Application application = switch (config.application()) {
            case "coordination" -> new CoordinationService(cluster.n());
            case "ordering" -> config.ordering().service(id);
            default -> new Counter();
        };
        TrustedCounter trinx = config.sealDirectory() == null
                ? new SoftwareTrinx(id, cluster.trinxKey(), Replica.COUNTERS)
                : SoftwareTrinx.sealed(id, cluster.trinxKey(), Replica.COUNTERS,
                        config.sealDirectory().resolve("replica-" + id + ".seal"));
        Replica replica = new Replica(id, cluster, trinx, application, config.provider(), config.options());
        replica.start();
        System.out.println("replica " + id + " on " + config.providerName() + " at "
                + cluster.replicas().get(id));
        CountDownLatch forever = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            replica.close();
            // Printed, not logged: the logging's own shutdown hook may have closed its handlers already.
            System.out.println("replica " + id + " stopped after executing " + replica.executed()
                    + " requests; it led " + replica.batchesPrepared() + " batches");
        }));
        forever.await();
    }

    private static void runClient(Config config, int id, int requests, int bytes) throws Exception {
        byte[] operation = new byte[bytes];
        long[] nanos = new long[requests];
        try (Client client = new Client(id, config.cluster(), config.provider(), 2000)) {
            client.invoke(operation, 60_000); // connections up, code warm
            long start = System.nanoTime();
            for (int i = 0; i < requests; i++) {
                long begin = System.nanoTime();
                client.invoke(operation, 60_000);
                nanos[i] = System.nanoTime() - begin;
            }
            double seconds = (System.nanoTime() - start) / 1e9;
            Arrays.sort(nanos);
            System.out.printf(Locale.ROOT,
                    "%-20s %6d requests of %4d B: p50 %8.1f us, p99 %8.1f us, %8.0f requests/s%n",
                    config.providerName(), requests, bytes, nanos[requests / 2] / 1e3,
                    nanos[Math.min(requests - 1, requests * 99 / 100)] / 1e3, requests / seconds);
        }
    }
}
