package hybster.ordering;

import java.io.Closeable;
import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Optional;
import java.util.logging.Logger;
import java.util.zip.CRC32C;

/**
 * A replica's blocks on disk: an append-only file that outlives the replica,
 * so that one restarted still serves the blocks it had (see
 * {@link OrderingService#read}), and a record of the chain it executed.
 *
 * <p>Layout: an 8-byte magic and a version (int), then one record per block,
 * block 0 first: the encoded block's length (int) and a CRC-32C of it (int),
 * the encoded block, and a CRC-32C of the length and the block (int). Each
 * append is one write, forced to the device before it returns.
 *
 * <p>Opening checks every record and that the blocks form a chain. A crash
 * while appending leaves a prefix of the last record (or, on some file
 * systems, zeros where it was to be): opening drops it, as it was never
 * acknowledged. The length's own checksum tells that apart from damage: a
 * record whose checked length runs past the end, or ends there with its block
 * failing its checksum, is such a prefix; anything else that fails (a damaged
 * length, a damaged block with more behind it) is no crash's doing, and
 * opening refuses the file, naming the record, rather than serve a chain with
 * a hole or drop the blocks after it.
 *
 * <p>Not thread-safe: the replica's event loop uses it alone.
 */
public final class BlockStore implements Closeable {
    private static final Logger LOG = Logger.getLogger(BlockStore.class.getName());
    private static final byte[] MAGIC = {'H', 'Y', 'B', 'S', 'T', 'B', 'L', 'K'};
    private static final int VERSION = 1;
    private static final int HEADER_BYTES = MAGIC.length + 4;
    /** The length and its checksum before a block. */
    private static final int HEAD_BYTES = 4 + 4;
    /** The length, its checksum and the record's checksum around a block. */
    private static final int FRAME_BYTES = HEAD_BYTES + 4;
    /** A longer record is damage, not a block (a block's transactions fit in a replica's messages). */
    private static final int MAX_BLOCK_BYTES = 256 << 20;

    private final Path path;
    private final FileChannel file;
    /** Where each block's record starts, by block number. */
    private final List<Long> offsets = new ArrayList<>();
    private long end;
    private byte[] lastHash = Block.GENESIS_PREVIOUS;

    private BlockStore(Path path, FileChannel file) {
        this.path = path;
        this.file = file;
    }

    /**
     * Opens the store at {@code path}, creating it if it does not exist.
     *
     * @throws IOException when the file is no block store, a record other than
     *     the last is damaged, or the blocks do not form a chain
     */
    public static BlockStore open(Path path) throws IOException {
        FileChannel file = FileChannel.open(path, StandardOpenOption.CREATE, StandardOpenOption.READ,
                StandardOpenOption.WRITE);
        BlockStore store = new BlockStore(path, file);
        try {
            store.load();
        } catch (IOException | RuntimeException e) {
            file.close();
            throw e;
        }
        return store;
    }

    private void load() throws IOException {
        long size = file.size();
        if (size == 0) {
            ByteBuffer header = ByteBuffer.allocate(HEADER_BYTES).put(MAGIC).putInt(VERSION).flip();
            writeFully(header, 0);
            file.force(true);
            end = HEADER_BYTES;
            return;
        }
        ByteBuffer header = ByteBuffer.allocate(HEADER_BYTES);
        if (size < HEADER_BYTES) {
            throw new IOException(path + " is not a block store: " + size + " bytes");
        }
        readFully(header, 0);
        if (!MessageDigest.isEqual(MAGIC, Arrays.copyOf(header.array(), MAGIC.length))) {
            throw new IOException(path + " is not a block store");
        }
        int version = header.getInt(MAGIC.length);
        if (version != VERSION) {
            throw new IOException(path + " is a block store of version " + version + ", not " + VERSION);
        }
        long offset = HEADER_BYTES;
        while (offset < size) {
            Optional<byte[]> encoded = record(offset, size);
            if (encoded.isEmpty()) {
                if (isAppendCutShort(offset, size)) {
                    LOG.warning(() -> path + ": dropping a last record cut short at offset " + offsets.size()
                            + " blocks in (a crash while appending)");
                    file.truncate(offset);
                    file.force(true);
                    break;
                }
                throw new IOException(path + ": the record of block " + offsets.size() + " at offset " + offset
                        + " is damaged and " + (size - offset) + " bytes follow it; the "
                        + offsets.size() + " blocks before it are intact");
            }
            Block block;
            try {
                block = Block.decode(encoded.get());
            } catch (IOException e) {
                throw new IOException(path + ": the record at offset " + offset + " holds no block", e);
            }
            if (block.number() != offsets.size() || !MessageDigest.isEqual(lastHash, block.previousHash())) {
                throw new IOException(path + ": block " + block.number() + " at offset " + offset
                        + " does not continue the chain of the " + offsets.size() + " blocks before it");
            }
            offsets.add(offset);
            lastHash = block.hash();
            offset += FRAME_BYTES + encoded.get().length;
        }
        end = offset;
    }

    /** The block whose record starts at {@code offset}, or empty when the record is cut short or fails a checksum. */
    private Optional<byte[]> record(long offset, long size) throws IOException {
        int bytes = checkedLength(offset, size);
        if (bytes < 0 || bytes > size - offset - FRAME_BYTES) {
            return Optional.empty();
        }
        ByteBuffer body = ByteBuffer.allocate(bytes + 4);
        readFully(body, offset + HEAD_BYTES);
        CRC32C crc = new CRC32C();
        crc.update(ByteBuffer.allocate(4).putInt(0, bytes).array());
        crc.update(body.array(), 0, bytes);
        if ((int) crc.getValue() != body.getInt(bytes)) {
            return Optional.empty();
        }
        return Optional.of(Arrays.copyOf(body.array(), bytes));
    }

    /** The length at {@code offset} if its checksum holds and it is a block's, else -1. */
    private int checkedLength(long offset, long size) throws IOException {
        if (size - offset < HEAD_BYTES) {
            return -1;
        }
        ByteBuffer head = ByteBuffer.allocate(HEAD_BYTES);
        readFully(head, offset);
        CRC32C crc = new CRC32C();
        crc.update(head.array(), 0, 4);
        int bytes = head.getInt(0);
        boolean checked = (int) crc.getValue() == head.getInt(4) && bytes >= 0 && bytes <= MAX_BLOCK_BYTES;
        return checked ? bytes : -1;
    }

    /**
     * Whether a bad record at {@code offset} is what a crash while appending
     * leaves (see the class comment): less than a length and its checksum,
     * a checked length whose record runs past the end or ends at it, or zeros
     * to the end.
     */
    private boolean isAppendCutShort(long offset, long size) throws IOException {
        if (size - offset < HEAD_BYTES) {
            return true;
        }
        int bytes = checkedLength(offset, size);
        if (bytes >= 0 && offset + FRAME_BYTES + bytes >= size) {
            return true;
        }
        ByteBuffer rest = ByteBuffer.allocate((int) Math.min(size - offset, 1 << 20));
        for (long at = offset; at < size; at += rest.capacity()) {
            rest.clear().limit((int) Math.min(rest.capacity(), size - at));
            readFully(rest, at);
            for (int i = 0; i < rest.limit(); i++) {
                if (rest.get(i) != 0) {
                    return false;
                }
            }
        }
        return true;
    }

    /** Blocks stored: block numbers 0 to size() - 1. */
    public long size() {
        return offsets.size();
    }

    /**
     * Appends {@code block}, which must continue the stored chain, and forces it to the device.
     *
     * @throws IllegalArgumentException when it does not continue the chain
     */
    public void append(Block block) throws IOException {
        if (block.number() != offsets.size() || !MessageDigest.isEqual(lastHash, block.previousHash())) {
            throw new IllegalArgumentException("block " + block.number() + " does not continue the chain of the "
                    + offsets.size() + " blocks in " + path);
        }
        byte[] encoded = block.encode();
        ByteBuffer record = ByteBuffer.allocate(FRAME_BYTES + encoded.length);
        CRC32C crc = new CRC32C();
        record.putInt(encoded.length);
        crc.update(record.array(), 0, 4);
        record.putInt((int) crc.getValue());
        crc.update(encoded); // the record's checksum covers the length and the block
        record.put(encoded).putInt((int) crc.getValue()).flip();
        writeFully(record, end);
        file.force(false);
        offsets.add(end);
        end += record.capacity();
        lastHash = block.hash();
    }

    /**
     * The encoded block {@code number}, checked against its checksum again, or
     * empty when it is not stored.
     *
     * @throws IOException when its record was damaged since the store opened
     */
    public Optional<byte[]> encoded(long number) throws IOException {
        if (number < 0 || number >= offsets.size()) {
            return Optional.empty();
        }
        long offset = offsets.get((int) number);
        long next = number + 1 < offsets.size() ? offsets.get((int) number + 1) : end;
        Optional<byte[]> encoded = record(offset, next);
        if (encoded.isEmpty()) {
            throw new IOException(path + ": the record of block " + number + " at offset " + offset
                    + " is damaged");
        }
        return encoded;
    }

    /** Drops block {@code from} and every block after it. */
    public void truncate(long from) throws IOException {
        if (from < 0 || from >= offsets.size()) {
            return;
        }
        end = offsets.get((int) from);
        file.truncate(end);
        file.force(true);
        offsets.subList((int) from, offsets.size()).clear();
        lastHash = from == 0 ? Block.GENESIS_PREVIOUS
                : Block.decode(encoded(from - 1).orElseThrow()).hash();
    }

    @Override
    public void close() throws IOException {
        file.close();
    }

    @Override
    public String toString() {
        return "block store " + path + " (" + offsets.size() + " blocks)";
    }

    private void readFully(ByteBuffer buffer, long position) throws IOException {
        int read = 0;
        while (buffer.hasRemaining()) {
            int n = file.read(buffer, position + read);
            if (n < 0) {
                throw new EOFException(path + " ends at " + (position + read));
            }
            read += n;
        }
    }

    private void writeFully(ByteBuffer buffer, long position) throws IOException {
        long at = position;
        while (buffer.hasRemaining()) {
            at += file.write(buffer, at);
        }
    }
}
