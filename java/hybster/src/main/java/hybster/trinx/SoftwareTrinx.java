package hybster.trinx;

import java.nio.ByteBuffer;
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
 */
public final class SoftwareTrinx implements TrustedCounter {
    private final int owner;
    private final SecretKeySpec key;
    private final long[] counters;

    /** Subsystem of replica {@code owner} with {@code counters} counters, all at 0. */
    public SoftwareTrinx(int owner, byte[] sharedKey, int counters) {
        if (sharedKey.length < 16) {
            throw new IllegalArgumentException("a TrInX key needs at least 16 bytes");
        }
        this.owner = owner;
        this.key = new SecretKeySpec(sharedKey, "HmacSHA256");
        this.counters = new long[counters];
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
        counters[counter] = newValue;
        return new Certificate(counter, previous, newValue, tag(owner, counter, previous, newValue, digest));
    }

    @Override
    public boolean verify(int issuer, Certificate certificate, byte[] digest) {
        byte[] expected = tag(issuer, certificate.counter(), certificate.previous(), certificate.value(), digest);
        return certificate.previous() < certificate.value() && MessageDigest.isEqual(expected, certificate.tag());
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
