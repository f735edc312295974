package hybster.ordering;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.security.PrivateKey;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.OptionalLong;
import java.util.Set;
import java.util.TreeSet;
import java.util.logging.Level;
import java.util.logging.Logger;

import hybster.replica.Application;
import hybster.wire.Keys;

/**
 * A BFT ordering service as a replicated state machine: clients submit
 * transactions; replicas cut them into blocks of at most {@code blockSize}
 * transactions, hash-chained; clients fetch a block by number and check it.
 *
 * <p>Cutting by time must not read a replica's clock (replicas would disagree):
 * a CUT operation, ordered like any other and sent by whoever keeps time (a
 * client's or a front end's timer), closes the pending block.
 *
 * <p>Operations: {@code [1][transaction]} submit (result: the number of the
 * block it will be in), {@code [2]} cut (result: the number of the block cut, or
 * -1 if nothing was pending), {@code [3][long n]} get block n (result: the
 * encoded block, or empty while it does not exist), {@code [4]} subscribe
 * (result: the number of the next block cut; the replicas send the client each
 * block from that one on as a notice, the encoded block with their signature,
 * as it is cut), {@code [5]} unsubscribe (result: 0, or -1 if it was not subscribed).
 *
 * <p>A replica given its Ed25519 key signs each block it returns (see
 * {@link #prove}): f+1 signatures make a {@link SignedBlock} that anyone with
 * the replicas' public keys checks ({@link OrderingClient#block} collects them).
 *
 * <p>A replica given a {@link BlockStore} writes each block there as it is cut
 * (and the blocks a state transfer brings), and answers a get-block read
 * without ordering ({@link #read}) from its chain or, for a block it had
 * before it restarted and has not executed again yet, from the store.
 */
public final class OrderingService implements Application {
    private static final Logger LOG = Logger.getLogger(OrderingService.class.getName());
    public static final byte SUBMIT = 1;
    public static final byte CUT = 2;
    public static final byte GET_BLOCK = 3;
    public static final byte SUBSCRIBE = 4;
    public static final byte UNSUBSCRIBE = 5;

    private final int blockSize;
    private final PrivateKey signingKey;
    private final List<Block> chain = new ArrayList<>();
    private final List<byte[]> pending = new ArrayList<>();
    /** Clients that get each block as it is cut, in the order of their ids (the same on every replica). */
    private final Set<Integer> subscribers = new TreeSet<>();
    private Notices notices = (client, payload, proof) -> { };
    /** Where this replica keeps its blocks, or null. */
    private final BlockStore store;
    /** Blocks of the chain known to be in the store as they are in the chain (the store may hold more). */
    private long stored;
    /** Set once the store failed: the chain goes on in memory, the store is left as it was. */
    private boolean storeFailed;

    /** A service whose blocks this replica does not sign. */
    public OrderingService(int blockSize) {
        this(blockSize, null);
    }

    /** A service whose blocks this replica signs with {@code signingKey} (its own Ed25519 key). */
    public OrderingService(int blockSize, PrivateKey signingKey) {
        this(blockSize, signingKey, null);
    }

    /**
     * A service whose blocks this replica signs with {@code signingKey} (null:
     * it does not sign) and keeps in {@code store} (null: in memory only).
     * The store may hold blocks from before a restart: the state starts empty
     * all the same (the replica executes or fetches the chain again, and the
     * store then checks against it), and reads serve the stored blocks meanwhile,
     * signed: the store must be this replica's own, of this cluster.
     */
    public OrderingService(int blockSize, PrivateKey signingKey, BlockStore store) {
        if (blockSize < 1) {
            throw new IllegalArgumentException("blocks hold at least one transaction");
        }
        this.blockSize = blockSize;
        this.signingKey = signingKey;
        this.store = store;
    }

    /** This replica's signature of a block that a get-block operation returned. */
    @Override
    public byte[] prove(byte[] operation, byte[] result) {
        boolean block = operation.length > 0 && operation[0] == GET_BLOCK && result.length > 8;
        return block ? sign(result) : new byte[0];
    }

    private byte[] sign(byte[] encodedBlock) {
        return signingKey == null ? new byte[0] : SignedBlock.sign(signingKey, Keys.digest(encodedBlock));
    }

    @Override
    public void attach(Notices notices) {
        this.notices = notices;
    }

    /** The chain, the transactions not cut yet, and the subscribers (see {@code Application.snapshot}). */
    @Override
    public byte[] snapshot() {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        try (DataOutputStream out = new DataOutputStream(bytes)) {
            out.writeInt(chain.size());
            for (Block block : chain) {
                byte[] encoded = block.encode();
                out.writeInt(encoded.length);
                out.write(encoded);
            }
            out.writeInt(pending.size());
            for (byte[] transaction : pending) {
                out.writeInt(transaction.length);
                out.write(transaction);
            }
            out.writeInt(subscribers.size());
            for (int client : subscribers) {
                out.writeInt(client);
            }
        } catch (IOException e) {
            throw new UncheckedIOException("writing to memory", e);
        }
        return bytes.toByteArray();
    }

    @Override
    public void restore(byte[] snapshot) {
        try {
            DataInputStream in = new DataInputStream(new ByteArrayInputStream(snapshot));
            List<Block> blocks = new ArrayList<>();
            for (int i = count(in); i > 0; i--) {
                Block block = Block.decode(bytes(in));
                byte[] previous = blocks.isEmpty() ? Block.GENESIS_PREVIOUS : blocks.get(blocks.size() - 1).hash();
                if (block.number() != blocks.size() || !Arrays.equals(block.previousHash(), previous)) {
                    throw new IOException("block " + block.number() + " does not continue the chain");
                }
                blocks.add(block);
            }
            List<byte[]> transactions = new ArrayList<>();
            for (int i = count(in); i > 0; i--) {
                transactions.add(bytes(in));
            }
            Set<Integer> clients = new TreeSet<>();
            for (int i = count(in); i > 0; i--) {
                clients.add(in.readInt());
            }
            if (in.available() > 0) {
                throw new IOException(in.available() + " bytes after the snapshot");
            }
            chain.clear();
            chain.addAll(blocks);
            pending.clear();
            pending.addAll(transactions);
            subscribers.clear();
            subscribers.addAll(clients);
        } catch (IOException e) {
            throw new IllegalArgumentException("not an ordering snapshot", e);
        }
        stored = 0; // the store is checked against the new chain from its start
        persist();
    }

    /**
     * Brings the store in line with the chain: each block not known to be
     * stored alike is compared with the stored one, or appended. A stored block
     * that differs from the executed chain's (a store from another cluster's
     * history, or one a state transfer overrules) is dropped with all after it.
     */
    private void persist() {
        if (store == null || storeFailed) {
            return;
        }
        try {
            for (; stored < chain.size(); stored++) {
                Block block = chain.get((int) stored);
                if (stored < store.size()) {
                    if (Arrays.equals(store.encoded(stored).orElseThrow(), block.encode())) {
                        continue;
                    }
                    LOG.warning(store + ": block " + stored + " differs from the chain executed; dropping it"
                            + " and the " + (store.size() - stored - 1) + " after it");
                    store.truncate(stored);
                }
                store.append(block);
            }
        } catch (IOException e) {
            storeFailed = true;
            LOG.log(Level.SEVERE, store + " failed: blocks from " + stored + " on are kept in memory only", e);
        }
    }

    private static int count(DataInputStream in) throws IOException {
        int count = in.readInt();
        if (count < 0) {
            throw new IOException("count " + count);
        }
        return count;
    }

    private static byte[] bytes(DataInputStream in) throws IOException {
        int length = in.readInt();
        if (length < 0 || length > in.available()) {
            throw new IOException("byte string of " + length + " bytes");
        }
        return in.readNBytes(length);
    }

    @Override
    public byte[] execute(int client, byte[] operation) {
        if (operation.length == 0) {
            return number(-2);
        }
        switch (operation[0]) {
            case SUBMIT -> {
                pending.add(Arrays.copyOfRange(operation, 1, operation.length));
                long block = chain.size();
                if (pending.size() >= blockSize) {
                    cut();
                }
                return number(block);
            }
            case CUT -> {
                return number(pending.isEmpty() ? -1 : cut());
            }
            case SUBSCRIBE -> {
                subscribers.add(client);
                return number(chain.size());
            }
            case UNSUBSCRIBE -> {
                return number(subscribers.remove(client) ? 0 : -1);
            }
            case GET_BLOCK -> {
                OptionalLong asked = blockNumber(operation);
                if (asked.isEmpty()) {
                    return number(-2);
                }
                long n = asked.getAsLong();
                return n >= 0 && n < chain.size() ? chain.get((int) n).encode() : new byte[0];
            }
            default -> {
                return number(-2); // not an operation: refused, nothing changes
            }
        }
    }

    private long cut() {
        byte[] previous = chain.isEmpty() ? Block.GENESIS_PREVIOUS : chain.get(chain.size() - 1).hash();
        Block block = new Block(chain.size(), previous, pending);
        chain.add(block);
        pending.clear();
        persist();
        if (!subscribers.isEmpty()) {
            byte[] encoded = block.encode();
            byte[] signature = sign(encoded);
            subscribers.forEach(client -> notices.send(client, encoded, signature));
        }
        return block.number();
    }

    /**
     * A get-block operation answered without ordering: the block from the
     * chain, or from the store while the chain does not reach it yet (a
     * replica that restarted serves what it had); empty when this replica has
     * no such block. A block never changes once cut, and its signature (see
     * {@link #prove}) vouches for it, so f+1 signed copies prove it whatever
     * each replica executed so far ({@link OrderingClient#block}). Other
     * operations are not reads: null.
     */
    @Override
    public byte[] read(byte[] operation) {
        OptionalLong asked = blockNumber(operation);
        if (asked.isEmpty()) {
            return null;
        }
        long n = asked.getAsLong();
        if (n >= 0 && n < chain.size()) {
            return chain.get((int) n).encode();
        }
        if (store != null && !storeFailed) {
            try {
                return store.encoded(n).orElse(new byte[0]);
            } catch (IOException e) {
                LOG.log(Level.WARNING, store + ": block " + n + " not served", e);
            }
        }
        return new byte[0];
    }

    /** The block a get-block operation asks for; empty for anything else, a malformed get-block too. */
    private static OptionalLong blockNumber(byte[] operation) {
        if (operation.length != 9 || operation[0] != GET_BLOCK) {
            return OptionalLong.empty();
        }
        return OptionalLong.of(ByteBuffer.wrap(operation, 1, 8).getLong());
    }

    private static byte[] number(long value) {
        return ByteBuffer.allocate(8).putLong(value).array();
    }

    /** An encoded submit operation. */
    public static byte[] submit(byte[] transaction) {
        return ByteBuffer.allocate(1 + transaction.length).put(SUBMIT).put(transaction).array();
    }

    /** An encoded cut operation. */
    public static byte[] cutOperation() {
        return new byte[] {CUT};
    }

    /** An encoded subscribe operation. */
    public static byte[] subscribe() {
        return new byte[] {SUBSCRIBE};
    }

    /** An encoded unsubscribe operation. */
    public static byte[] unsubscribe() {
        return new byte[] {UNSUBSCRIBE};
    }

    /** An encoded get-block operation. */
    public static byte[] getBlock(long number) {
        return ByteBuffer.allocate(9).put(GET_BLOCK).putLong(number).array();
    }
}
