package hybster;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.nio.ByteBuffer;
import java.nio.channels.spi.SelectorProvider;
import java.nio.charset.StandardCharsets;
import java.security.KeyPair;
import java.security.KeyPairGenerator;
import java.security.PrivateKey;
import java.security.PublicKey;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.function.IntFunction;

import org.junit.After;
import org.junit.Test;

import hybster.client.Client;
import hybster.net.Node;
import hybster.coordination.CoordinationClient;
import hybster.coordination.CoordinationException;
import hybster.coordination.CoordinationService;
import hybster.coordination.DistributedLock;
import hybster.coordination.CoordinationService.Code;
import hybster.coordination.CoordinationService.CreateMode;
import hybster.coordination.CoordinationService.EventType;
import hybster.coordination.CoordinationService.Kind;
import hybster.coordination.CoordinationService.Operation;
import hybster.coordination.CoordinationService.WatchedEvent;
import hybster.ordering.Block;
import hybster.ordering.BlockStore;
import hybster.ordering.OrderingClient;
import hybster.ordering.OrderingService;
import hybster.ordering.SignedBlock;
import hybster.replica.Application;
import hybster.replica.Replica;
import hybster.trinx.SoftwareTrinx;
import hybster.wire.Message;
import rdmanio.nio.RdmaSelectorProvider;

/**
 * The two services on Hybster: the coordination service's API semantics
 * (versions, sequential names, multi-op atomicity) and the ordering service's
 * blocks, chain and signatures, each through a three-replica cluster.
 */
public class ServicesTest {
    private final List<AutoCloseable> running = new ArrayList<>();
    /** The last cluster started, and its provider. */
    private Cluster cluster;
    private SelectorProvider provider;
    private final List<Replica> replicas = new ArrayList<>();
    /** The block store each replica started last (see {@link #startWithStore}). */
    private final Map<Integer, BlockStore> blockStores = new java.util.HashMap<>();

    @After
    public void stopAll() throws Exception {
        for (int i = running.size() - 1; i >= 0; i--) {
            running.get(i).close();
        }
    }

    /** A cluster of three replicas, each running {@code application.apply(its index)}; returns a client. */
    private Client cluster(IntFunction<Application> application) throws Exception {
        return cluster(SelectorProvider.provider(), application);
    }

    /** The same on {@code provider}, the client too. */
    private Client cluster(SelectorProvider provider, IntFunction<Application> application) throws Exception {
        Cluster cluster = HybsterTest.cluster(3);
        this.cluster = cluster;
        this.provider = provider;
        for (int id = 0; id < 3; id++) {
            Replica replica = new Replica(id, cluster, new SoftwareTrinx(id, HybsterTest.TRINX_KEY, Replica.COUNTERS),
                    application.apply(id), provider);
            running.add(replica);
            replicas.add(replica);
            replica.start();
        }
        Client client = new Client(Cluster.FIRST_CLIENT, cluster, provider, 2000);
        running.add(client);
        return client;
    }

    /** An Ed25519 key pair for each of the three replicas. */
    private static List<KeyPair> replicaKeyPairs() throws Exception {
        KeyPairGenerator generator = KeyPairGenerator.getInstance("Ed25519");
        return List.of(generator.generateKeyPair(), generator.generateKeyPair(), generator.generateKeyPair());
    }

    /** rdma-nio as these tests run it: over shm on the host, over rdma in the VM. */
    private static SelectorProvider rdmaNio() {
        return RdmaSelectorProvider.withTransport(HybsterTest.IN_VM ? "rdma" : "shm");
    }

    private static byte[] bytes(String text) {
        return text.getBytes(StandardCharsets.UTF_8);
    }

    @Test(timeout = 60_000)
    public void coordinationKeepsVersionsSequencesAndAtomicity() throws Exception {
        CoordinationClient zk = new CoordinationClient(cluster(id -> new CoordinationService(3)),
                HybsterTest.TIMEOUT_MILLIS);
        assertEquals("/app", zk.create("/app", bytes("config"), CreateMode.PERSISTENT));
        assertEquals(0, zk.exists("/app"));
        assertEquals(-1, zk.exists("/nothing"));
        CoordinationException exists = assertThrows(CoordinationException.class,
                () -> zk.create("/app", bytes("again"), CreateMode.PERSISTENT));
        assertEquals(Code.NODE_EXISTS, exists.code());
        assertEquals(Code.NO_NODE,
                assertThrows(CoordinationException.class,
                        () -> zk.create("/no/parent", bytes(""), CreateMode.PERSISTENT)).code());

        // Versions: a write with the wrong expected version changes nothing.
        assertEquals(1, zk.setData("/app", bytes("v1"), 0));
        assertEquals(Code.BAD_VERSION,
                assertThrows(CoordinationException.class, () -> zk.setData("/app", bytes("stale"), 0)).code());
        assertArrayEquals(bytes("v1"), zk.getData("/app").data());
        assertEquals(1, zk.getData("/app").version());
        assertEquals(2, zk.setData("/app", bytes("v2"), -1));

        // Sequential names count up per parent, sorted children.
        assertEquals("/app/lock-0000000000", zk.create("/app/lock-", bytes(""), CreateMode.PERSISTENT_SEQUENTIAL));
        assertEquals("/app/lock-0000000001", zk.create("/app/lock-", bytes(""), CreateMode.PERSISTENT_SEQUENTIAL));
        zk.create("/app/a", bytes(""), CreateMode.PERSISTENT);
        assertEquals(List.of("a", "lock-0000000000", "lock-0000000001"), zk.getChildren("/app"));
        assertEquals(Code.NOT_EMPTY, assertThrows(CoordinationException.class, () -> zk.delete("/app", -1)).code());
        assertEquals(Code.BAD_VERSION,
                assertThrows(CoordinationException.class, () -> zk.delete("/app/a", 5)).code());
        zk.delete("/app/a", 0);

        // Multi: one failing operation and nothing happened.
        CoordinationException failed = assertThrows(CoordinationException.class, () -> zk.multi(List.of(
                Operation.create("/app/b", bytes("b"), CreateMode.PERSISTENT),
                Operation.setData("/app", bytes("v3"), 2),
                Operation.delete("/app/missing", -1))));
        assertEquals(Code.NO_NODE, failed.code());
        assertEquals(-1, zk.exists("/app/b"));
        assertEquals(2, zk.getData("/app").version());
        List<CoordinationService.Result> results = zk.multi(List.of(
                Operation.create("/app/b", bytes("b"), CreateMode.PERSISTENT),
                Operation.setData("/app", bytes("v3"), 2)));
        assertEquals("/app/b", results.get(0).text());
        assertEquals(3, results.get(1).version());
        assertEquals(List.of("b", "lock-0000000000", "lock-0000000001"), zk.getChildren("/app"));
    }

    @Test
    public void coordinationRefusesBadInputWithoutChange() {
        CoordinationService service = new CoordinationService(3);
        byte[] garbage = {42, 1, 2};
        assertEquals(Code.BAD_ARGUMENTS, decode(service.execute(1000, garbage)).code());
        byte[] cutShort =
                java.util.Arrays.copyOf(Operation.create("/x", new byte[8], CreateMode.PERSISTENT).encode(), 6);
        assertEquals(Code.BAD_ARGUMENTS, decode(service.execute(1000, cutShort)).code());
        for (String bad : new String[] {"relative", "/trailing/", "/a//b", "/a/../b"}) {
            CoordinationService.Result result = decode(service.execute(1000,
                    Operation.create(bad, new byte[0], CreateMode.PERSISTENT).encode()));
            assertEquals(bad, Code.BAD_ARGUMENTS, result.code());
        }
        assertEquals(List.of(), decode(service.execute(1000,
                Operation.read(CoordinationService.Kind.GET_CHILDREN, "/").encode())).names());
    }

    private static CoordinationService.Result decode(byte[] bytes) {
        try {
            return CoordinationService.Result.decode(bytes);
        } catch (java.io.IOException e) {
            throw new AssertionError(e);
        }
    }

    private static long number(byte[] result) {
        return ByteBuffer.wrap(result).getLong();
    }

    @Test(timeout = 60_000)
    public void orderingCutsBlocksThatChainAndVerify() throws Exception {
        Client client = cluster(id -> new OrderingService(10));
        for (int i = 0; i < 25; i++) {
            long block = number(client.invoke(OrderingService.submit(bytes("tx" + i)), HybsterTest.TIMEOUT_MILLIS));
            assertEquals("transaction " + i, i / 10, block);
        }
        assertEquals("the timer's cut closes the pending block", 2,
                number(client.invoke(OrderingService.cutOperation(), HybsterTest.TIMEOUT_MILLIS)));
        assertEquals("nothing pending", -1,
                number(client.invoke(OrderingService.cutOperation(), HybsterTest.TIMEOUT_MILLIS)));
        List<Block> blocks = new ArrayList<>();
        for (long n = 0; n < 3; n++) {
            blocks.add(Block.decode(client.invoke(OrderingService.getBlock(n), HybsterTest.TIMEOUT_MILLIS)));
        }
        assertEquals(0, client.invoke(OrderingService.getBlock(3), HybsterTest.TIMEOUT_MILLIS).length);
        assertTrue(Block.verifyChain(blocks));
        assertEquals(5, blocks.get(2).transactions().size());
        assertArrayEquals(bytes("tx24"), blocks.get(2).transactions().get(4));

        // A block with one transaction changed no longer chains.
        List<byte[]> altered = new ArrayList<>(blocks.get(1).transactions());
        altered.set(0, bytes("forged"));
        List<Block> tampered = List.of(blocks.get(0), new Block(1, blocks.get(1).previousHash(), altered),
                blocks.get(2));
        assertFalse(Block.verifyChain(tampered));
        assertFalse(Block.verifyChain(List.of(blocks.get(1))));
    }

    /**
     * Blocks come with f+1 replicas' signatures that a third party checks with
     * the public keys alone; replica 2 signs with a key that is not its own (a
     * Byzantine replica), and its replies do not count. On the JDK's provider
     * and on rdma-nio (shm here, rdma in the VM).
     */
    @Test(timeout = 120_000)
    public void orderingBlocksCarrySignaturesAThirdPartyChecks() throws Exception {
        orderingBlocksCarrySignaturesAThirdPartyChecks(SelectorProvider.provider());
        orderingBlocksCarrySignaturesAThirdPartyChecks(rdmaNio());
    }

    private void orderingBlocksCarrySignaturesAThirdPartyChecks(SelectorProvider provider) throws Exception {
        List<KeyPair> pairs = replicaKeyPairs();
        KeyPair impostor = KeyPairGenerator.getInstance("Ed25519").generateKeyPair();
        List<PublicKey> publicKeys = pairs.stream().map(KeyPair::getPublic).toList();
        OrderingClient orderer = new OrderingClient(
                cluster(provider, id -> new OrderingService(4, (id == 2 ? impostor : pairs.get(id)).getPrivate())),
                publicKeys, HybsterTest.TIMEOUT_MILLIS);
        for (int i = 0; i < 6; i++) {
            assertEquals(i / 4, orderer.submit(bytes("tx" + i)));
        }
        assertEquals(1, orderer.cut());
        assertEquals(Optional.empty(), orderer.block(2));

        for (long n = 0; n < 2; n++) {
            SignedBlock signed = orderer.block(n).orElseThrow();
            assertEquals(n, signed.block().number());
            for (int fetch = 0; fetch < 8; fetch++) { // whichever two replies come first
                SignedBlock again = orderer.block(n).orElseThrow();
                assertFalse("the impostor's signature was taken", again.signatures().containsKey(2));
                assertEquals(2, again.signatures().size());
            }
            // A third party: the bytes and the public keys, nothing else.
            SignedBlock received = SignedBlock.decode(signed.encode());
            assertTrue(received.verify(publicKeys));
            assertArrayEquals(bytes("tx" + 4 * n), received.block().transactions().get(0));

            List<byte[]> altered = new ArrayList<>(received.block().transactions());
            altered.set(0, bytes("forged"));
            Block forged = new Block(n, received.block().previousHash(), altered);
            assertFalse("a changed transaction", new SignedBlock(forged, received.signatures()).verify(publicKeys));
            byte[] one = received.signatures().get(0);
            assertFalse("f signatures", new SignedBlock(received.block(), Map.of(0, one)).verify(publicKeys));
            assertFalse("one replica's signature twice, under another's index",
                    new SignedBlock(received.block(), Map.of(0, one, 1, one)).verify(publicKeys));
            byte[] impostors = SignedBlock.sign(impostor.getPrivate(), received.block().hash());
            assertFalse("a signature by a key that is no replica's",
                    new SignedBlock(received.block(), Map.of(0, one, 2, impostors)).verify(publicKeys));
        }
    }

    /**
     * A subscriber gets every block from the one it asked for, in order, each
     * with f+1 valid signatures: those cut before it subscribed fetched, later
     * ones from the replicas' notices (replica 2 signs with a key not its own,
     * so its copies never count). When replica 1 sends no notices, no block
     * gets f+1 valid copies, and the subscriber fetches each after its patience.
     */
    @Test(timeout = 240_000)
    public void orderingSubscribersGetEveryBlockInOrder() throws Exception {
        orderingSubscribersGetEveryBlockInOrder(SelectorProvider.provider());
        orderingSubscribersGetEveryBlockInOrder(rdmaNio());
    }

    private void orderingSubscribersGetEveryBlockInOrder(SelectorProvider provider) throws Exception {
        for (boolean silentReplica : new boolean[] {false, true}) {
            List<KeyPair> pairs = replicaKeyPairs();
            PrivateKey impostor = KeyPairGenerator.getInstance("Ed25519").generateKeyPair().getPrivate();
            List<PublicKey> publicKeys = pairs.stream().map(KeyPair::getPublic).toList();
            Client client = cluster(provider, id -> {
                OrderingService service = new OrderingService(2, id == 2 ? impostor : pairs.get(id).getPrivate());
                return silentReplica && id == 1 ? withoutNotices(service) : service;
            });
            OrderingClient orderer = new OrderingClient(client, publicKeys, HybsterTest.TIMEOUT_MILLIS);
            for (int i = 0; i < 6; i++) {
                orderer.submit(bytes("tx" + i)); // blocks 0, 1 and 2
            }
            BlockingQueue<SignedBlock> delivered = new LinkedBlockingQueue<>();
            long patienceMillis = silentReplica ? 200 : HybsterTest.TIMEOUT_MILLIS;
            try (OrderingClient.Subscription subscription = orderer.subscribe(1, patienceMillis, delivered::add)) {
                for (int i = 6; i < 10; i++) {
                    orderer.submit(bytes("tx" + i)); // blocks 3 and 4, cut after the subscription
                }
                for (long n = 1; n <= 4; n++) {
                    SignedBlock block = delivered.poll(HybsterTest.TIMEOUT_MILLIS, TimeUnit.MILLISECONDS);
                    assertEquals("silent replica: " + silentReplica, Long.valueOf(n),
                            block == null ? null : block.block().number());
                    assertTrue(block.verify(publicKeys));
                    assertArrayEquals(bytes("tx" + 2 * n), block.block().transactions().get(0));
                }
                assertEquals("blocks 1 and 2 fetched, 3 and 4 " + (silentReplica ? "fetched too" : "noticed"),
                        silentReplica ? 4 : 2, subscription.fetched());
                assertEquals(5, subscription.next());
            }
            assertEquals("the subscription's close unsubscribed", -1,
                    number(client.invoke(OrderingService.unsubscribe(), HybsterTest.TIMEOUT_MILLIS)));
            stopAll();
            running.clear();
        }
    }

    /**
     * A replica restarted over its block store serves the blocks it had
     * before it executed anything again: replica 2 restarts from its seal (it
     * recovers, so it executes nothing until a stable checkpoint past what it
     * may have agreed to), replica 1 stops, and with nothing ordered any more,
     * blocks still come with f+1 valid signatures, replica 0's and the
     * restarted replica's, read from its store. On the JDK's provider and on
     * rdma-nio (shm here, rdma in the VM).
     */
    @Test(timeout = 120_000)
    public void aRestartedReplicaServesTheBlocksItStored() throws Exception {
        aRestartedReplicaServesTheBlocksItStored(SelectorProvider.provider());
        aRestartedReplicaServesTheBlocksItStored(rdmaNio());
    }

    private void aRestartedReplicaServesTheBlocksItStored(SelectorProvider provider) throws Exception {
        List<KeyPair> pairs = replicaKeyPairs();
        List<PublicKey> publicKeys = pairs.stream().map(KeyPair::getPublic).toList();
        java.nio.file.Path disk = java.nio.file.Files.createTempDirectory("hybster-replicas");
        cluster = HybsterTest.cluster(3);
        Replica[] started = new Replica[3];
        for (int id = 0; id < 3; id++) {
            started[id] = startWithStore(id, pairs.get(id).getPrivate(), disk, provider);
        }
        Client client = new Client(Cluster.FIRST_CLIENT, cluster, provider, 2000);
        running.add(client);
        OrderingClient orderer = new OrderingClient(client, publicKeys, HybsterTest.TIMEOUT_MILLIS);
        for (int i = 0; i < 6; i++) {
            orderer.submit(bytes("tx" + i)); // blocks 0, 1 and 2
        }
        List<SignedBlock> before = new ArrayList<>();
        for (long n = 0; n < 3; n++) {
            before.add(orderer.block(n).orElseThrow());
        }
        HybsterTest.awaitCount(started[2]::executed, 6); // its blocks are stored

        started[2].close();
        started[2] = startWithStore(2, pairs.get(2).getPrivate(), disk, provider);
        assertTrue("replica 2 restarted from its seal", started[2].recovering());
        started[1].close();
        for (long n = 0; n < 3; n++) {
            SignedBlock block = orderer.block(n).orElseThrow();
            assertArrayEquals(before.get((int) n).block().encode(), block.block().encode());
            assertEquals("signed by replica 0 and the restarted replica 2", Set.of(0, 2),
                    block.signatures().keySet());
            assertTrue(block.verify(publicKeys));
        }
        assertTrue("replica 2 executed nothing since its restart", started[2].recovering());
        stopAll();
        running.clear();
    }

    /** Starts replica {@code id} of the ordering service with its seal and its blocks in {@code disk}. */
    private Replica startWithStore(int id, PrivateKey key, java.nio.file.Path disk, SelectorProvider provider)
            throws Exception {
        BlockStore previous = blockStores.get(id);
        if (previous != null) {
            previous.close(); // the stopped replica's: its file opens once at a time, as a restarted process's
        }
        BlockStore store = BlockStore.open(disk.resolve("replica-" + id + ".blocks"));
        blockStores.put(id, store);
        running.add(store);
        Replica replica = new Replica(id, cluster,
                SoftwareTrinx.sealed(id, HybsterTest.TRINX_KEY, Replica.COUNTERS,
                        disk.resolve("replica-" + id + ".seal")),
                new OrderingService(2, key, store), provider);
        running.add(replica);
        replica.start();
        return replica;
    }

    /** {@code service}, but the notices it sends go nowhere (a replica that withholds them). */
    private static Application withoutNotices(OrderingService service) {
        return new Delegating(service) {
            @Override
            public void attach(Notices notices) {
                super.attach((client, payload, proof) -> { });
            }
        };
    }

    /** An application that does what {@code inner} does: a lying replica's overrides what it lies in. */
    private static class Delegating implements Application {
        private final Application inner;

        Delegating(Application inner) {
            this.inner = inner;
        }

        @Override
        public byte[] execute(int client, byte[] operation) {
            return inner.execute(client, operation);
        }

        @Override
        public byte[] snapshot() {
            return inner.snapshot();
        }

        @Override
        public void restore(byte[] snapshot) {
            inner.restore(snapshot);
        }

        @Override
        public byte[] prove(byte[] operation, byte[] result) {
            return inner.prove(operation, result);
        }

        @Override
        public byte[] read(byte[] operation) {
            return inner.read(operation);
        }

        @Override
        public void attach(Notices notices) {
            inner.attach(notices);
        }

        @Override
        public long tickMillis() {
            return inner.tickMillis();
        }

        @Override
        public byte[] clockTick(long nowMillis) {
            return inner.clockTick(nowMillis);
        }
    }

    /** Another client of the last cluster started. */
    private Client anotherClient(int id) throws Exception {
        Client client = new Client(id, cluster, provider, 2000);
        running.add(client);
        return client;
    }

    /**
     * Watches as ZooKeeper's: one-shot, set by exists (on a missing node too),
     * getData and getChildren, fired by another client's changes and not by a
     * failed multi, each event taken once f+1 replicas sent it alike (replica 2
     * forges the path of every event it sends), in the order they fired.
     */
    @Test(timeout = 120_000)
    public void coordinationWatchesFireOnceInOrder() throws Exception {
        coordinationWatchesFireOnceInOrder(SelectorProvider.provider());
        coordinationWatchesFireOnceInOrder(rdmaNio());
    }

    private void coordinationWatchesFireOnceInOrder(SelectorProvider provider) throws Exception {
        Client client = cluster(provider, id -> id == 2 ? forgingEvents(new CoordinationService(3))
                : new CoordinationService(3));
        CoordinationClient watching = new CoordinationClient(client, HybsterTest.TIMEOUT_MILLIS);
        running.add(watching);
        CoordinationClient other = new CoordinationClient(anotherClient(Cluster.FIRST_CLIENT + 1),
                HybsterTest.TIMEOUT_MILLIS);
        running.add(other);
        BlockingQueue<String> seen = new LinkedBlockingQueue<>();
        java.util.function.Function<String, CoordinationClient.Watcher> watcher =
                name -> event -> seen.add(name + " " + event.type() + " " + event.path());

        watching.create("/app", bytes("v0"), CreateMode.PERSISTENT);
        watching.getData("/app", watcher.apply("data"));
        watching.getChildren("/app", watcher.apply("children"));
        assertEquals(-1, watching.exists("/app/x", watcher.apply("created")));
        assertThrows(CoordinationException.class, () -> watching.getData("/missing", watcher.apply("missing")));

        other.setData("/app", bytes("v1"), -1);
        assertEquals("data NODE_DATA_CHANGED /app", next(seen));
        other.setData("/app", bytes("v2"), -1); // the data watch is spent
        other.create("/app/x", new byte[0], CreateMode.PERSISTENT);
        assertEquals("created NODE_CREATED /app/x", next(seen));
        assertEquals("children NODE_CHILDREN_CHANGED /app", next(seen));
        other.create("/missing", new byte[0], CreateMode.PERSISTENT); // the failed getData left no watch

        watching.getData("/app", watcher.apply("again"));
        assertEquals(0, watching.exists("/app/x", watcher.apply("gone")));
        assertThrows(CoordinationException.class, () -> other.multi(List.of(
                Operation.setData("/app", bytes("v3"), -1), Operation.delete("/nothing", -1))));
        other.delete("/app/x", -1);
        other.setData("/app", bytes("v3"), -1);
        // In the order they fired, with nothing between: not the failed multi, nor a spent watch.
        assertEquals("gone NODE_DELETED /app/x", next(seen));
        assertEquals("again NODE_DATA_CHANGED /app", next(seen));
        watching.exists("/app", watcher.apply("last"));
        other.delete("/app", -1);
        assertEquals("last NODE_DELETED /app", next(seen));
        assertEquals("the service sent only the events of live watches", 6, watching.eventsTaken());
        assertThrows(CoordinationException.class, () -> other.multi(List.of(Operation.watch(Kind.EXISTS, "/"))));
        stopAll();
        running.clear();
        replicas.clear();
    }

    private static String next(BlockingQueue<String> seen) throws InterruptedException {
        return seen.poll(HybsterTest.TIMEOUT_MILLIS, TimeUnit.MILLISECONDS);
    }

    /** {@code service}, but each event it sends names the path "/forged" (a lying replica). */
    private static Application forgingEvents(CoordinationService service) {
        return new Delegating(service) {
            @Override
            public void attach(Notices notices) {
                super.attach((client, payload, proof) -> {
                    try {
                        WatchedEvent event = WatchedEvent.decode(payload);
                        notices.send(client, new WatchedEvent(event.sequence(), event.type(), "/forged").encode(),
                                proof);
                    } catch (java.io.IOException e) {
                        throw new AssertionError(e);
                    }
                });
            }
        };
    }

    /**
     * A read without a watch skips ordering while every replica answers alike,
     * and still sees each write completed before it; when a replica answers
     * otherwise (replica 2 lies in its reads) or not at all (replica 2 is
     * down), the read is ordered and sees the same.
     */
    @Test(timeout = 120_000)
    public void coordinationReadsSkipOrderingOnlyWhileEveryReplicaAgrees() throws Exception {
        for (boolean lyingReplica : new boolean[] {false, true}) {
            Client client = cluster(id -> lyingReplica && id == 2 ? lyingInReads(new CoordinationService(3))
                    : new CoordinationService(3));
            CoordinationClient reader = new CoordinationClient(client, HybsterTest.TIMEOUT_MILLIS);
            CoordinationClient writer = new CoordinationClient(anotherClient(Cluster.FIRST_CLIENT + 1),
                    HybsterTest.TIMEOUT_MILLIS);
            writer.create("/k", bytes("v0"), CreateMode.PERSISTENT);
            for (int i = 1; i <= 20; i++) {
                writer.setData("/k", bytes("v" + i), -1);
                assertArrayEquals("lying replica: " + lyingReplica, bytes("v" + i), reader.getData("/k").data());
                assertEquals(List.of(), reader.getChildren("/k"));
            }
            assertEquals(-1, reader.exists("/nothing"));
            long unordered = client.unorderedReads();
            if (lyingReplica) {
                assertEquals("reads taken although a replica answered otherwise", 0, unordered);
            } else {
                assertTrue("no read skipped ordering: " + unordered, unordered > 0);
                replicas.get(2).close();
                writer.setData("/k", bytes("after"), -1);
                assertArrayEquals(bytes("after"), reader.getData("/k").data());
                assertArrayEquals(bytes("after"), reader.getData("/k").data());
                assertEquals("reads are ordered while a replica is down", unordered, client.unorderedReads());
            }
            stopAll();
            running.clear();
            replicas.clear();
        }
    }

    /** {@code service}, but its unordered reads answer "lie" (a lying replica). */
    private static Application lyingInReads(CoordinationService service) {
        return new Delegating(service) {
            @Override
            public byte[] read(byte[] operation) {
                return super.read(operation) == null ? null : bytes("lie");
            }
        };
    }

    /**
     * Ticks of the session tests' services: sessions of 0.2 s to 2 s, five
     * times that under emulation (an ordered operation takes far longer there).
     */
    private static final long TICK_MILLIS = HybsterTest.IN_VM ? 500 : 100;

    /**
     * Sessions as ZooKeeper's: an ephemeral node lives while its client's
     * session is renewed and goes, firing watches, when the session expires
     * (the expired client hears of it and can open another) or closes. Replica
     * 2's clock runs an hour ahead, which must not hurry any expiry on.
     */
    @Test(timeout = 120_000)
    public void coordinationSessionsKeepEphemeralNodesUntilTheyExpire() throws Exception {
        coordinationSessionsKeepEphemeralNodesUntilTheyExpire(SelectorProvider.provider());
        coordinationSessionsKeepEphemeralNodesUntilTheyExpire(rdmaNio());
    }

    private void coordinationSessionsKeepEphemeralNodesUntilTheyExpire(SelectorProvider provider) throws Exception {
        Client client = cluster(provider, id -> id == 2
                ? clockAhead(new CoordinationService(3, TICK_MILLIS), TimeUnit.HOURS.toMillis(1))
                : new CoordinationService(3, TICK_MILLIS));
        CoordinationClient live = coordinationClient(client);
        CoordinationClient lapsing = coordinationClient(anotherClient(Cluster.FIRST_CLIENT + 1));
        CoordinationClient watching = coordinationClient(anotherClient(Cluster.FIRST_CLIENT + 2));
        BlockingQueue<String> seen = new LinkedBlockingQueue<>();
        java.util.function.Function<String, CoordinationClient.Watcher> watcher =
                name -> event -> seen.add(name + " " + event.type() + " " + event.path());

        assertEquals("an ephemeral node needs a session", Code.SESSION_EXPIRED, assertThrows(
                CoordinationException.class, () -> live.create("/live", bytes(""), CreateMode.EPHEMERAL)).code());
        assertEquals(10 * TICK_MILLIS, live.openSession(10 * TICK_MILLIS, watcher.apply("live")));
        // held to the service's bounds (2 to 20 ticks), and never renewed: as a client that hangs
        assertEquals(20 * TICK_MILLIS,
                lapsing.openSession(60_000, TimeUnit.DAYS.toMillis(1), watcher.apply("lapsing")));
        assertEquals(6 * TICK_MILLIS, lapsing.openSession(6 * TICK_MILLIS, TimeUnit.DAYS.toMillis(1),
                watcher.apply("lapsing")));
        long lapsingSession = lapsing.sessionId();
        String lapsed = lapsing.create("/lapsing-", bytes("x"), CreateMode.EPHEMERAL_SEQUENTIAL);
        live.create("/live", bytes("y"), CreateMode.EPHEMERAL);
        assertEquals(Code.NO_CHILDREN_FOR_EPHEMERALS, assertThrows(CoordinationException.class,
                () -> live.create("/live/child", bytes(""), CreateMode.PERSISTENT)).code());
        assertEquals(0, watching.exists(lapsed, watcher.apply("watching")));
        forgeClockTicks(TimeUnit.HOURS.toMillis(1));

        Set<String> expiry = new java.util.HashSet<>();
        for (int i = 0; i < 2; i++) {
            expiry.add(seen.poll(20, TimeUnit.SECONDS));
        }
        assertEquals(Set.of("lapsing SESSION_EXPIRED " + lapsingSession, "watching NODE_DELETED " + lapsed), expiry);
        assertEquals(-1, watching.exists(lapsed));
        assertEquals(Code.SESSION_EXPIRED, assertThrows(CoordinationException.class,
                () -> lapsing.create("/again", bytes(""), CreateMode.EPHEMERAL)).code());

        Thread.sleep(15 * TICK_MILLIS); // one and a half of its timeouts more: renewed, it stays
        assertEquals(0, watching.exists("/live", watcher.apply("watching")));
        assertEquals("nothing else expired", null, seen.poll());
        live.closeSession();
        assertEquals("watching NODE_DELETED /live", seen.poll(20, TimeUnit.SECONDS));
        assertEquals(-1, watching.exists("/live"));

        lapsing.openSession(10 * TICK_MILLIS, null);
        String back = lapsing.create("/back", bytes(""), CreateMode.EPHEMERAL);
        lapsing.close(); // closes the session
        assertEquals(-1, watching.exists(back));
        assertEquals(null, seen.poll());
        stopAll();
        running.clear();
        replicas.clear();
    }

    /**
     * An expiry ends only the session it names: one that reaches a client
     * after it opened another (replica 1 is slow to send its notices, replica
     * 2 sends no expiry at all, so the client takes the expiry once replica
     * 1's copy comes) leaves the new session its renewals, its watcher and its
     * ephemeral nodes.
     */
    @Test(timeout = 240_000)
    public void coordinationAnEarlierSessionsExpiryEndsNoLaterSession() throws Exception {
        coordinationAnEarlierSessionsExpiryEndsNoLaterSession(SelectorProvider.provider());
        coordinationAnEarlierSessionsExpiryEndsNoLaterSession(rdmaNio());
    }

    private void coordinationAnEarlierSessionsExpiryEndsNoLaterSession(SelectorProvider provider)
            throws Exception {
        long late = 10 * TICK_MILLIS;
        Client client = cluster(provider, id -> switch (id) {
            case 1 -> noticesLate(new CoordinationService(3, TICK_MILLIS), late);
            case 2 -> withoutSessionExpiries(new CoordinationService(3, TICK_MILLIS));
            default -> new CoordinationService(3, TICK_MILLIS);
        });
        CoordinationClient reopening = coordinationClient(client);
        CoordinationClient watching = coordinationClient(anotherClient(Cluster.FIRST_CLIENT + 1));
        BlockingQueue<String> seen = new LinkedBlockingQueue<>();
        java.util.function.Function<String, CoordinationClient.Watcher> watcher =
                name -> event -> seen.add(name + " " + event.type() + " " + event.path());

        // Never renewed; long enough for the create after it under emulation (an ordered operation is slow there).
        reopening.openSession(10 * TICK_MILLIS, TimeUnit.DAYS.toMillis(1), watcher.apply("first"));
        String first = reopening.create("/first", bytes(""), CreateMode.EPHEMERAL);
        assertEquals(0, watching.exists(first, watcher.apply("watching")));
        assertEquals("the first session expired", "watching NODE_DELETED /first", next(seen));
        long timeout = reopening.openSession(10 * TICK_MILLIS, watcher.apply("second"));
        String second = reopening.create("/second", bytes(""), CreateMode.EPHEMERAL);
        HybsterTest.awaitCount(reopening::eventsTaken, 1); // the first session's expiry, after the reopening
        Thread.sleep(3 * timeout);
        assertEquals("no watcher was told of an expiry", null, seen.poll());
        assertEquals("the second session's node stays", 0, watching.exists(second));
        reopening.closeSession();
        stopAll();
        running.clear();
        replicas.clear();
    }

    /** {@code service}, but each notice goes out {@code lateMillis} late (a slow replica), at a later execution. */
    private static Application noticesLate(CoordinationService service, long lateMillis) {
        return new Delegating(service) {
            // The replica's loop thread's, as every call here is: each held notice's sending and when it is due.
            private final java.util.ArrayDeque<Runnable> held = new java.util.ArrayDeque<>();
            private final java.util.ArrayDeque<Long> due = new java.util.ArrayDeque<>();

            @Override
            public void attach(Notices notices) {
                super.attach((client, payload, proof) -> {
                    held.add(() -> notices.send(client, payload, proof));
                    due.add(System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(lateMillis));
                });
            }

            @Override
            public byte[] execute(int client, byte[] operation) {
                while (!due.isEmpty() && due.peek() <= System.nanoTime()) {
                    due.poll();
                    held.poll().run();
                }
                return super.execute(client, operation);
            }
        };
    }

    /** {@code service}, but it sends no SESSION_EXPIRED event (a lying replica). */
    private static Application withoutSessionExpiries(CoordinationService service) {
        return new Delegating(service) {
            @Override
            public void attach(Notices notices) {
                super.attach((client, payload, proof) -> {
                    try {
                        if (WatchedEvent.decode(payload).type() != EventType.SESSION_EXPIRED) {
                            notices.send(client, payload, proof);
                        }
                    } catch (java.io.IOException e) {
                        throw new AssertionError(e);
                    }
                });
            }
        };
    }

    /**
     * A coordination snapshot holds the whole state: restored into a fresh
     * service it gives the same snapshot, and the same operations then give
     * the same results and events on both (sequence numbers, versions, a
     * watch, a session's expiry at the next tick).
     */
    @Test
    public void coordinationSnapshotsRestoreTheWholeState() {
        CoordinationService original = new CoordinationService(3, 100);
        List<String> originalEvents = new ArrayList<>();
        original.attach((client, payload, proof) -> originalEvents.add(client + " " + decodeEvent(payload)));
        int client = Cluster.FIRST_CLIENT;
        for (int replica = 0; replica < 3; replica++) {
            original.execute(replica, Operation.tick(1_000).encode());
        }
        original.execute(client, Operation.openSession(200).encode());
        original.execute(client, Operation.create("/queue-", bytes("a"), CreateMode.PERSISTENT_SEQUENTIAL).encode());
        original.execute(client, Operation.create("/mine", bytes("b"), CreateMode.EPHEMERAL).encode());
        original.execute(client + 1, Operation.watch(Kind.GET_DATA, "/mine").encode());
        original.execute(client + 1, Operation.create("/kept", bytes("c"), CreateMode.PERSISTENT).encode());
        original.execute(client + 1, Operation.setData("/kept", bytes("d"), 0).encode());

        CoordinationService restored = new CoordinationService(3, 100);
        List<String> restoredEvents = new ArrayList<>();
        restored.attach((to, payload, proof) -> restoredEvents.add(to + " " + decodeEvent(payload)));
        restored.restore(original.snapshot());
        assertArrayEquals(original.snapshot(), restored.snapshot());
        List<byte[]> next = List.of(
                Operation.create("/queue-", bytes("e"), CreateMode.PERSISTENT_SEQUENTIAL).encode(),
                Operation.setData("/kept", bytes("f"), 1).encode(),
                Operation.read(Kind.GET_DATA, "/kept").encode());
        for (byte[] operation : next) {
            assertArrayEquals(original.execute(client + 1, operation), restored.execute(client + 1, operation));
        }
        for (int replica = 0; replica < 3; replica++) { // the session (200 ms, unrenewed) expires
            byte[] tick = Operation.tick(2_000).encode();
            assertArrayEquals(original.execute(replica, tick), restored.execute(replica, tick));
        }
        assertFalse("the session expired, firing the watch", originalEvents.isEmpty());
        assertEquals(originalEvents, restoredEvents);
        assertArrayEquals(original.snapshot(), restored.snapshot());
        assertThrows(IllegalArgumentException.class, () -> restored.restore(bytes("not a snapshot")));
    }

    /**
     * A session's end deletes each of its ephemeral nodes, also one that a
     * failed multi deleted and its undo restored, and one created in a
     * snapshot's state; nodes of other sessions stay.
     */
    @Test
    public void coordinationSessionEndsDeleteEveryEphemeralNodeOfTheirOwn() {
        CoordinationService service = new CoordinationService(3, 100);
        int client = Cluster.FIRST_CLIENT;
        for (int owner : new int[] {client, client + 1}) {
            service.execute(owner, Operation.openSession(200).encode());
            service.execute(owner, Operation.create("/e" + owner, bytes(""), CreateMode.EPHEMERAL).encode());
        }
        CoordinationService.Result failed = decode(service.execute(client, Operation.multi(List.of(
                Operation.delete("/e" + client, -1),
                Operation.create("/missing/child", bytes(""), CreateMode.PERSISTENT))).encode()));
        assertEquals(Code.NO_NODE, failed.code());
        CoordinationService restored = new CoordinationService(3, 100);
        restored.restore(service.snapshot());
        for (CoordinationService each : List.of(service, restored)) {
            assertEquals(Code.OK, decode(each.execute(client, Operation.closeSession().encode())).code());
            assertEquals("the multi's undo restored it, the session's end took it", Code.NO_NODE,
                    decode(each.execute(client, Operation.read(Kind.EXISTS, "/e" + client).encode())).code());
            assertEquals("another session's stays", Code.OK,
                    decode(each.execute(client, Operation.read(Kind.EXISTS, "/e" + (client + 1)).encode())).code());
        }
    }

    /** An application that ticks needs the trusted subsystem's tick counter: a replica without it refuses to start. */
    @Test
    public void aTickingApplicationNeedsTheTickCounter() throws Exception {
        IllegalArgumentException refused = assertThrows(IllegalArgumentException.class, () -> new Replica(0,
                HybsterTest.cluster(3), new SoftwareTrinx(0, HybsterTest.TRINX_KEY, 1), new CoordinationService(3),
                SelectorProvider.provider()));
        assertTrue(refused.getMessage(), refused.getMessage().contains("give it " + Replica.COUNTERS + " counters"));
    }

    /** An ordering snapshot holds the chain, what waits to be cut and the subscribers. */
    @Test
    public void orderingSnapshotsRestoreTheWholeState() {
        OrderingService original = new OrderingService(2);
        List<String> originalNotices = new ArrayList<>();
        original.attach((client, payload, proof) -> originalNotices.add(client + " " + Arrays.toString(payload)));
        int client = Cluster.FIRST_CLIENT;
        original.execute(client, OrderingService.subscribe());
        for (String transaction : List.of("t1", "t2", "t3")) { // block 0 cut, t3 waits
            original.execute(client + 1, OrderingService.submit(bytes(transaction)));
        }
        OrderingService restored = new OrderingService(2);
        List<String> restoredNotices = new ArrayList<>();
        restored.attach((to, payload, proof) -> restoredNotices.add(to + " " + Arrays.toString(payload)));
        restored.restore(original.snapshot());
        assertArrayEquals(original.snapshot(), restored.snapshot());
        originalNotices.clear();
        for (byte[] operation : List.of(OrderingService.submit(bytes("t4")), OrderingService.getBlock(0),
                OrderingService.getBlock(1), OrderingService.cutOperation())) {
            assertArrayEquals(original.execute(client + 1, operation), restored.execute(client + 1, operation));
        }
        assertEquals("block 1 went to the subscriber", 1, originalNotices.size());
        assertEquals(originalNotices, restoredNotices);
        assertThrows(IllegalArgumentException.class, () -> restored.restore(bytes("not a snapshot")));
    }

    /**
     * A checkpoint certifies the replica's state, the application's snapshot
     * among it, not only what it executed: replica 2, whose snapshot differs
     * from the others' (its state went another way without its results
     * showing it), finds no checkpoint stable, while the others do, with the
     * same snapshot.
     */
    @Test(timeout = 120_000)
    public void checkpointsCertifyTheApplicationsState() throws Exception {
        cluster = HybsterTest.cluster(3);
        provider = SelectorProvider.provider();
        Replica.Options options = Replica.Options.DEFAULTS.withCheckpointInterval(10);
        for (int id = 0; id < 3; id++) {
            Application application = id == 2 ? divergingSnapshot(new CoordinationService(3, TICK_MILLIS))
                    : new CoordinationService(3, TICK_MILLIS);
            Replica replica = new Replica(id, cluster, new SoftwareTrinx(id, HybsterTest.TRINX_KEY, Replica.COUNTERS),
                    application, provider, options);
            running.add(replica);
            replicas.add(replica);
            replica.start();
        }
        CoordinationClient client = coordinationClient(anotherClient(Cluster.FIRST_CLIENT));
        for (int i = 0; i < 30; i++) {
            client.create("/n" + i, bytes("x"), CreateMode.PERSISTENT);
        }
        HybsterTest.awaitCount(replicas.get(0)::stableCheckpoint, 20);
        HybsterTest.awaitCount(replicas.get(1)::stableCheckpoint, 20);
        assertEquals("replica 2's checkpoints match no other's", 0, replicas.get(2).stableCheckpoint());
        for (int i = 0; i < 1000 && replicas.get(0).stableCheckpoint() != replicas.get(1).stableCheckpoint(); i++) {
            Thread.sleep(10); // one of them may have taken the next already
        }
        assertArrayEquals(replicas.get(0).stableSnapshot(), replicas.get(1).stableSnapshot());
    }

    /** {@code service}, but its snapshot has a byte more than its state (a replica gone another way). */
    private static Application divergingSnapshot(CoordinationService service) {
        return new Delegating(service) {
            @Override
            public byte[] snapshot() {
                return Arrays.copyOf(super.snapshot(), super.snapshot().length + 1);
            }
        };
    }

    private static String decodeEvent(byte[] payload) {
        try {
            WatchedEvent event = WatchedEvent.decode(payload);
            return event.sequence() + " " + event.type() + " " + event.path();
        } catch (java.io.IOException e) {
            throw new AssertionError(e);
        }
    }

    /**
     * ZooKeeper's lock recipe ({@code DistributedLock}): three contenders take
     * the lock one at a time, each holder with a higher fencing token; a
     * holder whose session expires (it stopped renewing) loses the lock to the
     * next in line; a contender that gives up withdraws.
     */
    @Test(timeout = 120_000)
    public void coordinationLockAdmitsOneHolderAtATime() throws Exception {
        coordinationLockAdmitsOneHolderAtATime(SelectorProvider.provider());
        coordinationLockAdmitsOneHolderAtATime(rdmaNio());
    }

    private void coordinationLockAdmitsOneHolderAtATime(SelectorProvider provider) throws Exception {
        CoordinationClient setup = coordinationClient(cluster(provider, id -> new CoordinationService(3, TICK_MILLIS)));
        setup.create("/lock", bytes(""), CreateMode.PERSISTENT);
        java.util.concurrent.atomic.AtomicInteger holding = new java.util.concurrent.atomic.AtomicInteger();
        List<Long> tokens = java.util.Collections.synchronizedList(new ArrayList<>());
        List<String> problems = java.util.Collections.synchronizedList(new ArrayList<>());
        List<Thread> contenders = new ArrayList<>();
        for (int c = 0; c < 3; c++) {
            CoordinationClient zk = coordinationClient(anotherClient(Cluster.FIRST_CLIENT + 1 + c));
            zk.openSession(20 * TICK_MILLIS, null);
            Thread contender = new Thread(() -> {
                DistributedLock lock = new DistributedLock(zk, "/lock");
                try {
                    for (int round = 0; round < 5; round++) {
                        if (!lock.tryLock(HybsterTest.TIMEOUT_MILLIS)) {
                            problems.add("no lock in time");
                            return;
                        }
                        if (holding.incrementAndGet() != 1) {
                            problems.add("two holders at once");
                        }
                        tokens.add(lock.token());
                        Thread.sleep(2);
                        holding.decrementAndGet();
                        lock.unlock();
                    }
                } catch (Exception e) {
                    problems.add(e.toString());
                }
            });
            contenders.add(contender);
            contender.start();
        }
        for (Thread contender : contenders) {
            contender.join();
        }
        assertEquals(List.of(), problems);
        assertEquals(15, tokens.size());
        for (int i = 1; i < tokens.size(); i++) {
            assertTrue("tokens grow from holder to holder: " + tokens, tokens.get(i) > tokens.get(i - 1));
        }

        BlockingQueue<String> seen = new LinkedBlockingQueue<>();
        CoordinationClient hanging = coordinationClient(anotherClient(Cluster.FIRST_CLIENT + 4));
        hanging.openSession(6 * TICK_MILLIS, TimeUnit.DAYS.toMillis(1), event -> seen.add("hanging " + event.type()));
        DistributedLock held = new DistributedLock(hanging, "/lock");
        assertTrue(held.tryLock(HybsterTest.TIMEOUT_MILLIS));
        CoordinationClient next = coordinationClient(anotherClient(Cluster.FIRST_CLIENT + 5));
        next.openSession(20 * TICK_MILLIS, null);
        DistributedLock waiting = new DistributedLock(next, "/lock");
        assertTrue("the next contender gets the lock once the holder's session expired",
                waiting.tryLock(HybsterTest.TIMEOUT_MILLIS));
        assertTrue(waiting.token() > held.token());
        assertEquals("hanging SESSION_EXPIRED", seen.poll(20, TimeUnit.SECONDS));

        setup.openSession(20 * TICK_MILLIS, null);
        DistributedLock impatient = new DistributedLock(setup, "/lock");
        assertFalse(impatient.tryLock(3 * TICK_MILLIS));
        assertEquals("the impatient contender withdrew", 1, setup.getChildren("/lock").size());
        waiting.unlock();
        assertTrue(impatient.tryLock(HybsterTest.TIMEOUT_MILLIS));
        stopAll();
        running.clear();
        replicas.clear();
    }

    /**
     * Sends every replica a clock tick {@code aheadMillis} ahead as if from
     * replicas 1 and 2, as a client can (link keys derive from the master
     * secret it holds), but without their trusted counters' certificates:
     * each replica must refuse them.
     */
    private void forgeClockTicks(long aheadMillis) throws Exception {
        long[] rejectedBefore = replicas.stream().mapToLong(Replica::rejected).toArray();
        byte[] tick = Operation.tick(System.currentTimeMillis() + aheadMillis).encode();
        byte[] uncertified = ByteBuffer.allocate(40 + tick.length).putLong(0).put(new byte[32]).put(tick).array();
        for (int impersonated = 1; impersonated <= 2; impersonated++) {
            Node forger = new Node(impersonated, null, cluster.addresses(), cluster.keys(), provider);
            running.add(forger);
            forger.start(message -> { });
            int as = impersonated;
            forger.execute(() -> {
                for (int replica = 0; replica < 3; replica++) {
                    if (replica != as) {
                        forger.send(replica, new Message.Request(as, 1_000_000, uncertified));
                    }
                }
            });
        }
        for (int replica = 0; replica < 3; replica++) {
            int forged = replica == 0 ? 2 : 1; // a replica is not sent its own
            HybsterTest.awaitCount(replicas.get(replica)::rejected, rejectedBefore[replica] + forged);
        }
    }

    private CoordinationClient coordinationClient(Client client) {
        CoordinationClient zk = new CoordinationClient(client, HybsterTest.TIMEOUT_MILLIS);
        running.add(zk);
        return zk;
    }

    /** {@code service}, but this replica's clock ticks run {@code aheadMillis} ahead (a lying replica). */
    private static Application clockAhead(CoordinationService service, long aheadMillis) {
        return new Delegating(service) {
            @Override
            public byte[] clockTick(long nowMillis) {
                return super.clockTick(nowMillis + aheadMillis);
            }
        };
    }
}
