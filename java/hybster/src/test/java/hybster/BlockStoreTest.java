package hybster;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

import org.junit.After;
import org.junit.Test;

import hybster.ordering.Block;
import hybster.ordering.BlockStore;
import hybster.ordering.OrderingService;

/**
 * The ordering service's blocks on disk: they outlive the store and the
 * service, what a crash while appending leaves is dropped, damage elsewhere is
 * refused, and a service over a store serves the stored blocks before it
 * executed them again and keeps the store in line with the chain it executes.
 */
public class BlockStoreTest {
    private final List<AutoCloseable> open = new ArrayList<>();
    private final Path directory;

    public BlockStoreTest() throws IOException {
        directory = Files.createTempDirectory("hybster-blocks");
    }

    @After
    public void closeAll() throws Exception {
        for (AutoCloseable closeable : open) {
            closeable.close();
        }
    }

    private BlockStore open(Path path) throws IOException {
        BlockStore store = BlockStore.open(path);
        open.add(store);
        return store;
    }

    /** Blocks 0 to count - 1, a chain, one transaction each named after {@code prefix}. */
    private static List<Block> chain(String prefix, int count) {
        List<Block> blocks = new ArrayList<>();
        byte[] previous = Block.GENESIS_PREVIOUS;
        for (int n = 0; n < count; n++) {
            Block block = new Block(n, previous, List.of(bytes(prefix + n)));
            blocks.add(block);
            previous = block.hash();
        }
        return blocks;
    }

    private static byte[] bytes(String text) {
        return text.getBytes(StandardCharsets.UTF_8);
    }

    private Path storeOf(List<Block> blocks) throws IOException {
        Path path = directory.resolve("blocks-" + open.size());
        try (BlockStore store = BlockStore.open(path)) {
            for (Block block : blocks) {
                store.append(block);
            }
        }
        return path;
    }

    @Test
    public void blocksOutliveTheStore() throws Exception {
        List<Block> blocks = chain("tx", 3);
        BlockStore store = open(storeOf(blocks));
        assertEquals(3, store.size());
        for (Block block : blocks) {
            assertArrayEquals(block.encode(), store.encoded(block.number()).orElseThrow());
        }
        assertEquals(Optional.empty(), store.encoded(3));
        assertEquals(Optional.empty(), store.encoded(-1));
    }

    /** A last record cut short, or zeros where it was to be, is dropped; the chain goes on from there. */
    @Test
    public void whatACrashWhileAppendingLeavesIsDropped() throws Exception {
        List<Block> blocks = chain("tx", 3);
        Path path = storeOf(blocks);
        long full = Files.size(path);
        try (RandomAccessFile file = new RandomAccessFile(path.toFile(), "rw")) {
            file.setLength(full - 5);
        }
        BlockStore store = open(path);
        assertEquals("the cut record is dropped", 2, store.size());
        store.append(blocks.get(2));
        store.close();
        assertEquals(full, Files.size(path));

        try (RandomAccessFile file = new RandomAccessFile(path.toFile(), "rw")) {
            file.setLength(full + 4096); // a file system that grew the file but wrote nothing there
        }
        assertEquals("zeros at the end are dropped", 3, open(path).size());
        assertEquals(full, Files.size(path));
    }

    @Test
    public void aDamagedRecordWithBlocksBehindItIsRefused() throws Exception {
        Path path = storeOf(chain("tx", 3));
        byte[] bytes = Files.readAllBytes(path);
        int inBlockOne = indexOf(bytes, bytes("tx1"));
        bytes[inBlockOne] ^= 1;
        Files.write(path, bytes);
        IOException refused = assertThrows(IOException.class, () -> BlockStore.open(path));
        assertTrue(refused.getMessage(), refused.getMessage().contains("the record of block 1 at offset")
                && refused.getMessage().contains("the 1 blocks before it are intact"));

        bytes[inBlockOne] ^= 1;
        int lengthOfBlockOne = 12 + 12 + chain("tx", 1).get(0).encode().length; // the magic and version, record 0
        bytes[lengthOfBlockOne + 1] ^= 1; // a length that would run past the end: damage, not a cut append
        Files.write(path, bytes);
        refused = assertThrows(IOException.class, () -> BlockStore.open(path));
        assertTrue(refused.getMessage(), refused.getMessage().contains("the record of block 1 at offset"));

        bytes[lengthOfBlockOne + 1] ^= 1;
        bytes[indexOf(bytes, bytes("tx2"))] ^= 1; // the last record: as a write the crash tore
        Files.write(path, bytes);
        assertEquals(2, open(path).size());
    }

    @Test
    public void aStoreHoldsOnlyAChain() throws Exception {
        List<Block> blocks = chain("tx", 2);
        BlockStore store = open(directory.resolve("chain"));
        assertThrows("block 1 first", IllegalArgumentException.class, () -> store.append(blocks.get(1)));
        store.append(blocks.get(0));
        Block stranger = chain("other", 2).get(1);
        IllegalArgumentException refused =
                assertThrows(IllegalArgumentException.class, () -> store.append(stranger));
        assertTrue(refused.getMessage(), refused.getMessage().contains("does not continue the chain"));
        store.append(blocks.get(1));

        store.truncate(1);
        assertEquals(1, store.size());
        store.append(chain("tx", 2).get(1)); // the chain goes on from block 0 again
        assertEquals(2, store.size());

        Path notAStore = directory.resolve("not-a-store");
        Files.write(notAStore, bytes("some other file's bytes"));
        IOException wrong = assertThrows(IOException.class, () -> BlockStore.open(notAStore));
        assertTrue(wrong.getMessage(), wrong.getMessage().contains("is not a block store"));
    }

    /** A record damaged after the store opened is not served. */
    @Test
    public void aBlockDamagedOnDiskIsNotServed() throws Exception {
        Path path = storeOf(chain("tx", 2));
        BlockStore store = open(path);
        byte[] bytes = Files.readAllBytes(path);
        int inBlockZero = indexOf(bytes, bytes("tx0"));
        try (RandomAccessFile file = new RandomAccessFile(path.toFile(), "rw")) {
            file.seek(inBlockZero);
            file.write(bytes[inBlockZero] ^ 1);
        }
        IOException damaged = assertThrows(IOException.class, () -> store.encoded(0));
        assertTrue(damaged.getMessage(), damaged.getMessage().contains("block 0"));
        assertArrayEquals(chain("tx", 2).get(1).encode(), store.encoded(1).orElseThrow());
    }

    /**
     * A service started again over its store has an empty state (its replica
     * executes or fetches the chain again) but serves the stored blocks to
     * reads meanwhile; a restored state's chain is checked against the store,
     * blocks alike kept, a differing one replaced with all after it.
     */
    @Test
    public void aServiceServesItsStoredBlocksAndKeepsTheStoreInLineWithItsChain() throws Exception {
        Path path = directory.resolve("replica");
        OrderingService before = new OrderingService(2, null, open(path));
        int client = Cluster.FIRST_CLIENT;
        for (int i = 0; i < 7; i++) { // blocks 0, 1 and 2; tx6 waits
            before.execute(client, OrderingService.submit(bytes("tx" + i)));
        }
        byte[] blockOne = before.execute(client, OrderingService.getBlock(1));
        open.remove(0).close();

        BlockStore store = open(path);
        OrderingService after = new OrderingService(2, null, store);
        assertEquals("nothing executed yet", 0, after.execute(client, OrderingService.getBlock(1)).length);
        assertArrayEquals("a read serves the stored block", blockOne, after.read(OrderingService.getBlock(1)));
        assertEquals("block 3 was never cut", 0, after.read(OrderingService.getBlock(3)).length);
        assertEquals("not a read", null, after.read(OrderingService.cutOperation()));

        OrderingService shorter = new OrderingService(2);
        for (int i = 0; i < 4; i++) {
            shorter.execute(client, OrderingService.submit(bytes("tx" + i)));
        }
        after.restore(shorter.snapshot()); // an earlier checkpoint of the same chain
        assertEquals("blocks alike are kept, and block 2 too", 3, store.size());
        assertArrayEquals(blockOne, store.encoded(1).orElseThrow());

        OrderingService otherHistory = new OrderingService(2);
        for (String transaction : List.of("tx0", "tx1", "other2", "other3")) {
            otherHistory.execute(client, OrderingService.submit(bytes(transaction)));
        }
        after.restore(otherHistory.snapshot());
        assertEquals("block 1 and all after it replaced", 2, store.size());
        assertArrayEquals(otherHistory.execute(client, OrderingService.getBlock(1)),
                store.encoded(1).orElseThrow());
        after.execute(client, OrderingService.submit(bytes("tx4")));
        after.execute(client, OrderingService.submit(bytes("tx5")));
        assertEquals("a block cut is stored", 3, store.size());
        assertArrayEquals(after.execute(client, OrderingService.getBlock(2)), store.encoded(2).orElseThrow());
    }

    private static int indexOf(byte[] haystack, byte[] needle) {
        outer:
        for (int i = 0; i + needle.length <= haystack.length; i++) {
            for (int j = 0; j < needle.length; j++) {
                if (haystack[i + j] != needle[j]) {
                    continue outer;
                }
            }
            return i;
        }
        throw new AssertionError("not found");
    }
}
