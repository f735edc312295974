package hybster.replica;

import java.util.ArrayList;
import java.util.List;
import java.util.TreeMap;
import java.util.function.Consumer;

import hybster.Cluster;
import hybster.trinx.Certificate;
import hybster.trinx.TrustedCounter;
import hybster.wire.Message;
import hybster.wire.Message.Checkpoint;
import hybster.wire.Message.Recover;
import hybster.wire.Message.RecoveryAnswer;

/**
 * Each peer's certified messages in the order of its trusted counter: a
 * message must verify, a counter value shown before is refused (a replay or an
 * equivocation), and a message ahead of a missing one waits for it. So every
 * correct replica sees the same sequence of messages from each peer.
 *
 * <p>Three ways past a gap: a state transfer goes past a peer's messages up
 * to its CHECKPOINT of the state taken ({@link #skipTo}); a restarted peer's
 * RECOVER comes after values it certified and lost with its state; and a
 * restarted replica, knowing nothing of its peers' counters, starts each
 * peer's sequence at its RECOVERY-ANSWER to this replica's RECOVER ({@link #startAtAnswersTo}).
 */
final class CounterOrder {
    /** Messages of one peer kept while they wait for a missing one (a bound against a flooding peer). */
    static final int MAX_WAITING = 10_000;

    private final int self;
    private final Cluster cluster;
    private final TrustedCounter trinx;
    /** Per sender, the counter value of the last message handed on. */
    private final long[] lastSeen;
    /** Per sender, the counter value up to which its messages were gone past (see {@link #skipTo}). */
    private final long[] skipped;
    /** Per sender, the messages that came ahead of a missing one, by their previous value. */
    private final List<TreeMap<Long, Message>> waiting = new ArrayList<>();
    /** This replica's RECOVER's counter value, whose answers start their senders' sequences (0: none). */
    private long recoverValue;
    /** Per sender, whether its sequence started at its answer. */
    private final boolean[] answered;

    CounterOrder(int self, Cluster cluster, TrustedCounter trinx) {
        this.self = self;
        this.cluster = cluster;
        this.trinx = trinx;
        this.lastSeen = new long[cluster.n()];
        this.skipped = new long[cluster.n()];
        this.answered = new boolean[cluster.n()];
        for (int i = 0; i < cluster.n(); i++) {
            waiting.add(new TreeMap<>());
        }
    }

    /** Messages that wait for a missing one, of all senders. */
    int waiting() {
        return waiting.stream().mapToInt(TreeMap::size).sum();
    }

    /** The CHECKPOINTs that wait for a missing message (each verified when it came). */
    List<Checkpoint> waitingCheckpoints() {
        List<Checkpoint> found = new ArrayList<>();
        for (TreeMap<Long, Message> messages : waiting) {
            for (Message message : messages.values()) {
                if (message instanceof Checkpoint checkpoint) {
                    found.add(checkpoint);
                }
            }
        }
        return found;
    }

    /**
     * Goes past {@code sender}'s messages up to counter value {@code value}
     * (its CHECKPOINT of a stable checkpoint whose state this replica took:
     * what the sender certified before it is in that state), dropping those
     * that wait, and hands {@code inOrder} the ones that wait after it.
     */
    void skipTo(int sender, long value, Consumer<Message> inOrder) {
        if (value <= lastSeen[sender]) {
            return;
        }
        jumpTo(sender, value);
        TreeMap<Long, Message> ahead = waiting.get(sender);
        Message next;
        while ((next = ahead.remove(lastSeen[sender])) != null) {
            lastSeen[sender] = Certified.certificateOf(next).value();
            inOrder.accept(next);
        }
    }

    /**
     * Starts each peer's sequence at its RECOVERY-ANSWER to this replica's
     * RECOVER of counter value {@code value}: a restarted replica knows
     * nothing of what its peers certified before.
     */
    void startAtAnswersTo(long value) {
        recoverValue = value;
    }

    /** Goes past {@code sender}'s values up to {@code value}, dropping its messages that wait below it. */
    private void jumpTo(int sender, long value) {
        lastSeen[sender] = value;
        skipped[sender] = Math.max(skipped[sender], value);
        waiting.get(sender).headMap(value).clear();
    }

    /**
     * Takes a message from the network: hands it to {@code inOrder} if it
     * continues its sender's counter (then every message that waited for it),
     * keeps it if it is ahead, and otherwise returns why it is refused (null
     * when it was taken).
     */
    String offer(Message message, Consumer<Message> inOrder) {
        Certificate certificate = Certified.certificateOf(message);
        int sender = message.sender();
        if (certificate == null || sender < 0 || sender >= cluster.n() || sender == self) {
            return "not a certified message from another replica";
        }
        if (certificate.counter() != Replica.COUNTER
                || !trinx.verify(sender, certificate, Certified.certified(message))) {
            return "its certificate does not verify";
        }
        if (certificate.value() <= skipped[sender]) {
            return null; // a message of what a state transfer took in, late: nothing to do
        }
        if (certificate.previous() < lastSeen[sender]) {
            return "counter value " + certificate.value() + " was shown before (replay or equivocation)";
        }
        if (message instanceof Recover
                || message instanceof RecoveryAnswer answer && recoverValue != 0 && !answered[sender]
                        && answer.recovering() == self && answer.recoverValue() == recoverValue) {
            answered[sender] |= message instanceof RecoveryAnswer;
            jumpTo(sender, certificate.previous()); // the gap: values lost with a restarted replica's state
        }
        if (certificate.value() != certificate.previous() + 1) {
            return "counter values move by one";
        }
        if (certificate.previous() > lastSeen[sender]) {
            if (waiting.get(sender).size() >= MAX_WAITING) {
                return MAX_WAITING + " of its messages already wait for a missing one";
            }
            waiting.get(sender).put(certificate.previous(), message); // until the missing ones come
            return null;
        }
        Message next = message;
        do {
            lastSeen[sender] = Certified.certificateOf(next).value();
            inOrder.accept(next);
        } while ((next = waiting.get(sender).remove(lastSeen[sender])) != null);
        return null;
    }
}
