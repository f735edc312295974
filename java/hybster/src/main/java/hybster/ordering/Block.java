package hybster.ordering;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import hybster.wire.Keys;

/**
 * A block of the ordering service's chain: its number, the hash of the block
 * before it (32 zero bytes before block 0), and its transactions in order. The
 * hash covers all three, so a block fetched from anywhere checks against the one
 * before it.
 */
public record Block(long number, byte[] previousHash, List<byte[]> transactions) {
    public static final byte[] GENESIS_PREVIOUS = new byte[32];
    private static final int MAX_TRANSACTIONS = 100_000;

    public Block {
        previousHash = previousHash.clone();
        transactions = List.copyOf(transactions);
    }

    @Override
    public byte[] previousHash() {
        return previousHash.clone();
    }

    public byte[] hash() {
        return Keys.digest(encode());
    }

    public byte[] encode() {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        try (DataOutputStream out = new DataOutputStream(bytes)) {
            out.writeLong(number);
            out.write(previousHash);
            out.writeInt(transactions.size());
            for (byte[] transaction : transactions) {
                out.writeInt(transaction.length);
                out.write(transaction);
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return bytes.toByteArray();
    }

    public static Block decode(byte[] bytes) throws IOException {
        DataInputStream in = new DataInputStream(new ByteArrayInputStream(bytes));
        long number = in.readLong();
        byte[] previous = in.readNBytes(32);
        if (previous.length != 32) {
            throw new IOException("block cut short");
        }
        int count = in.readInt();
        if (count < 0 || count > MAX_TRANSACTIONS) {
            throw new IOException(count + " transactions in a block");
        }
        List<byte[]> transactions = new ArrayList<>();
        for (int i = 0; i < count; i++) {
            int length = in.readInt();
            if (length < 0 || length > in.available()) {
                throw new IOException("transaction of " + length + " bytes with " + in.available() + " left");
            }
            transactions.add(in.readNBytes(length));
        }
        if (in.available() > 0) {
            throw new IOException(in.available() + " bytes after the block");
        }
        return new Block(number, previous, transactions);
    }

    /** Whether {@code next} follows this block: the next number, and this block's hash as its previous. */
    public boolean isFollowedBy(Block next) {
        return next.number == number + 1 && MessageDigest.isEqual(hash(), next.previousHash);
    }

    /** Whether {@code blocks} form a chain from block 0. */
    public static boolean verifyChain(List<Block> blocks) {
        if (blocks.isEmpty()) {
            return true;
        }
        Block first = blocks.get(0);
        if (first.number != 0 || !Arrays.equals(first.previousHash, GENESIS_PREVIOUS)) {
            return false;
        }
        for (int i = 1; i < blocks.size(); i++) {
            if (!blocks.get(i - 1).isFollowedBy(blocks.get(i))) {
                return false;
            }
        }
        return true;
    }
}
