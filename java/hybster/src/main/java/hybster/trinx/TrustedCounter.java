package hybster.trinx;

/**
 * TrInX, Hybster's trusted subsystem: monotonic counters whose certificates
 * bind a counter value to a message digest. Because a counter only moves
 * forward, a replica cannot certify two different messages for one counter
 * value: a leader cannot send different PREPAREs for one order number.
 *
 * <p>{@link SoftwareTrinx} implements it with an HMAC key in process memory; an
 * SGX enclave holding the key would implement the same interface.
 */
public interface TrustedCounter {
    /** The replica this subsystem belongs to. */
    int owner();

    /** How many counters it has (numbered from 0). */
    int counters();

    /** The counter's current value (0 before the first certificate). */
    long value(int counter);

    /**
     * Moves {@code counter} to {@code newValue} and certifies {@code digest} for
     * it, stating the previous value too (so a receiver sees a gap).
     *
     * @throws IllegalStateException when {@code newValue} does not move forward
     */
    Certificate certify(int counter, long newValue, byte[] digest);

    /** Whether {@code certificate} was issued by {@code issuer}'s subsystem for {@code digest}. */
    boolean verify(int issuer, Certificate certificate, byte[] digest);
}
