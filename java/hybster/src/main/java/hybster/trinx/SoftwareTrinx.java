package hybster.trinx;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.security.MessageDigest;
import java.util.Arrays;

import javax.crypto.spec.SecretKeySpec;

import hybster.wire.Keys;

/**
 * TrInX in software: counters and an HMAC-SHA256 key shared by the trusted
 * subsystems of all replicas. It enforces the counter rules against the replica
 * code that calls it, but it is not tamper-proof: a process that reads its own
 * memory finds the key and can certify anything. Only trusted hardware (the
 * paper's SGX enclave) makes the guarantee hold against a compromised host.
 *
 * <p>Sealed ({@link #sealed}), its counters survive a restart as an enclave's
 * sealed state would: before it certifies a value beyond what the seal file
 * reserves, it reserves {@link #SEAL_AHEAD} values more there (written,
 * forced to the disk and renamed into place, then certified), and a
 * subsystem opened from the file starts at its reservations, past every
 * value it may have certified before. The file is authenticated with the
 * key, so a changed one is refused; a file rolled back to an older copy is
 * not detected (an enclave's monotonic counter would be).
 */
public final class SoftwareTrinx implements TrustedCounter {
    /** Values reserved per seal write: one write and one fsync per this many certificates. */
    public static final long SEAL_AHEAD = 1024;
    private static final int SEAL_MAGIC = 0x54724958; // "TrIX"

    private final int owner;
    private final SecretKeySpec key;
    private final long[] counters;
    /** The seal file, or null; and per counter the value it reserves up to. */
    private final Path seal;
    private final long[] reserved;

    /** Subsystem of replica {@code owner} with {@code counters} counters, all at 0. */
    public SoftwareTrinx(int owner, byte[] sharedKey, int counters) {
        this(owner, sharedKey, new long[counters], null);
    }

    private SoftwareTrinx(int owner, byte[] sharedKey, long[] start, Path seal) {
        if (sharedKey.length < 16) {
            throw new IllegalArgumentException("a TrInX key needs at least 16 bytes");
        }
        this.owner = owner;
        this.key = new SecretKeySpec(sharedKey, "HmacSHA256");
        this.counters = start.clone();
        this.seal = seal;
        this.reserved = start.clone();
    }

    /**
     * Subsystem of replica {@code owner} sealed in {@code file}: it starts
     * where the file says (past everything certified before a restart), or
     * at 0 with {@code counters} counters when there is no file yet.
     *
     * @throws IOException when the file cannot be read, or is not a seal of
     *         this key and owner with {@code counters} counters
     */
    public static SoftwareTrinx sealed(int owner, byte[] sharedKey, int counters, Path file) throws IOException {
        long[] start = new long[counters];
        if (Files.exists(file)) {
            ByteBuffer in = ByteBuffer.wrap(Files.readAllBytes(file));
            SecretKeySpec key = new SecretKeySpec(sharedKey, "HmacSHA256");
            int body = 12 + 8 * counters;
            if (in.capacity() != body + 32 || in.getInt() != SEAL_MAGIC || in.getInt() != owner
                    || in.getInt() != counters
                    || !MessageDigest.isEqual(Keys.hmac(key, Arrays.copyOf(in.array(), body)),
                            Arrays.copyOfRange(in.array(), body, body + 32))) {
                throw new IOException(file + " is no seal of replica " + owner + "'s " + counters
                        + " trusted counters (changed, or another key's)");
            }
            for (int i = 0; i < counters; i++) {
                start[i] = in.getLong();
            }
        }
        return new SoftwareTrinx(owner, sharedKey, start, file);
    }

    @Override
    public int owner() {
        return owner;
    }

    @Override
    public int counters() {
        return counters.length;
    }

    @Override
    public synchronized long value(int counter) {
        return counters[counter];
    }

    @Override
    public synchronized Certificate certify(int counter, long newValue, byte[] digest) {
        long previous = counters[counter];
        if (newValue <= previous) {
            throw new IllegalStateException("counter " + counter + " is at " + previous + ": cannot certify "
                    + newValue + " again or backwards");
        }
        if (seal != null && newValue > reserved[counter]) {
            reserved[counter] = newValue + SEAL_AHEAD;
            writeSeal();
        }
        counters[counter] = newValue;
        return new Certificate(counter, previous, newValue, tag(owner, counter, previous, newValue, digest));
    }

    @Override
    public boolean verify(int issuer, Certificate certificate, byte[] digest) {
        byte[] expected = tag(issuer, certificate.counter(), certificate.previous(), certificate.value(), digest);
        return certificate.previous() < certificate.value() && MessageDigest.isEqual(expected, certificate.tag());
    }

    /** Writes the reservations to the seal file: a new file forced to the disk, then renamed over the old. */
    private void writeSeal() {
        ByteBuffer out = ByteBuffer.allocate(12 + 8 * reserved.length + 32).putInt(SEAL_MAGIC).putInt(owner)
                .putInt(reserved.length);
        for (long value : reserved) {
            out.putLong(value);
        }
        out.put(Keys.hmac(key, Arrays.copyOf(out.array(), out.position())));
        Path next = seal.resolveSibling(seal.getFileName() + ".next");
        try (FileChannel file = FileChannel.open(next, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                StandardOpenOption.TRUNCATE_EXISTING)) {
            file.write(out.flip());
            file.force(true);
            Files.move(next, seal, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot seal the trusted counters in " + seal, e);
        }
    }

    private byte[] tag(int issuer, int counter, long previous, long value, byte[] digest) {
        byte[] statement = ByteBuffer.allocate(24 + digest.length).putInt(issuer).putInt(counter).putLong(previous)
                .putLong(value).put(digest).array();
        return Keys.hmac(key, statement);
    }

    @Override
    public synchronized String toString() {
        return "SoftwareTrinx[replica " + owner + ", counters " + Arrays.toString(counters) + "]";
    }
}
