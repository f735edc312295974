package hybster.replica;

import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

import hybster.Cluster;
import hybster.trinx.Certificate;
import hybster.trinx.TrustedCounter;
import hybster.wire.Message;
import hybster.wire.Message.Checkpoint;
import hybster.wire.Message.NewView;
import hybster.wire.Message.ViewChange;

/**
 * The view change's own state and checks, apart from the replica's ordering
 * state: which view a change is under way to, how long a request may wait
 * before its leader is suspected, the VIEW-CHANGEs collected per view, and the
 * proofs a VIEW-CHANGE and a NEW-VIEW must carry. The replica acts on what
 * this decides (sending, entering the view).
 */
final class ViewChanges {
    /** What the replica does about a VIEW-CHANGE it took. */
    enum Step {
        /** Nothing yet. */
        WAIT,
        /** f+1 replicas want the view: join them with a VIEW-CHANGE of its own. */
        JOIN,
        /** This replica leads the view and has its f+1 proofs: send NEW-VIEW and enter it. */
        LEAD
    }

    private final int self;
    private final Cluster cluster;
    private final TrustedCounter trinx;
    private final long viewChangeMillis;
    /** A view change is under way to this view (0: none). */
    private int changingTo;
    /** How long a request may wait now: doubles with each view change that brings no progress. */
    private long suspectAfterMillis;
    private final Map<Integer, Map<Integer, ViewChange>> received = new HashMap<>();
    /** The highest view each replica asked for by SUSPICION, while beyond the replica's view. */
    private final Map<Integer, Integer> suspicions = new HashMap<>();

    ViewChanges(int self, Cluster cluster, TrustedCounter trinx, long viewChangeMillis) {
        this.self = self;
        this.cluster = cluster;
        this.trinx = trinx;
        this.viewChangeMillis = viewChangeMillis;
        this.suspectAfterMillis = viewChangeMillis;
    }

    /** The view a change is under way to; 0 when none is. */
    int changingTo() {
        return changingTo;
    }

    boolean underWay() {
        return changingTo != 0;
    }

    long suspectAfterMillis() {
        return suspectAfterMillis;
    }

    /** A request executed: the leader is fine, requests wait a plain timeout again. */
    void progressed() {
        suspectAfterMillis = viewChangeMillis;
    }

    /**
     * Starts a change from {@code view} to {@code newView}; false when one to
     * it (or beyond) is under way already or the replica is past it.
     */
    boolean start(int view, int newView) {
        if (newView <= view || newView <= changingTo) {
            return false;
        }
        changingTo = newView;
        suspectAfterMillis = Math.min(2 * suspectAfterMillis, 64 * viewChangeMillis); // until a request executes
        return true;
    }

    /** Whether this replica asked for {@code newView} (or a later view) already. */
    boolean suspects(int newView) {
        return suspicions.getOrDefault(self, 0) >= newView;
    }

    /**
     * Takes {@code sender}'s SUSPICION asking for {@code newView} (verified by
     * the caller); true once f+1 replicas asked to leave {@code view}: at
     * least one of them is correct, so every replica changes view then. One
     * replica's suspicion alone (a slow host, a request its leader never got)
     * leaves the view as it is.
     */
    boolean suspected(int sender, int newView, int view) {
        suspicions.merge(sender, newView, Math::max);
        return suspicions.values().stream().filter(asked -> asked > view).count() >= cluster.f() + 1;
    }

    /**
     * Takes a VIEW-CHANGE (its log checked by the caller, see {@link #logIsComplete})
     * for a view beyond the replica's, and says what the replica does next.
     */
    Step take(ViewChange viewChange) {
        Map<Integer, ViewChange> forView = received.computeIfAbsent(viewChange.newView(), v -> new HashMap<>());
        forView.put(viewChange.sender(), viewChange);
        if (forView.size() < cluster.f() + 1) {
            return Step.WAIT;
        }
        // f+1 replicas want the view: join them (at least one of them is correct).
        if (!forView.containsKey(self)) {
            return Step.JOIN;
        }
        return Replica.primary(viewChange.newView(), cluster) == self && changingTo == viewChange.newView()
                ? Step.LEAD : Step.WAIT;
    }

    /** The f+1 VIEW-CHANGEs a NEW-VIEW of {@code view} carries, by sender. */
    List<ViewChange> proofs(int view) {
        return received.get(view).values().stream()
                .sorted((a, b) -> Integer.compare(a.sender(), b.sender())).limit(cluster.f() + 1L).toList();
    }

    /** The replica entered {@code view}: the change is over, and VIEW-CHANGEs up to it are spent. */
    void entered(int view) {
        changingTo = 0;
        received.keySet().removeIf(v -> v <= view);
        suspicions.values().removeIf(asked -> asked <= view);
    }

    /**
     * Why a NEW-VIEW from {@code newView}'s primary cannot be entered; null when
     * it proves itself: f+1 VIEW-CHANGEs for its view, each complete.
     */
    String refusal(NewView newView) {
        Set<Integer> senders = new HashSet<>();
        for (ViewChange proof : newView.proofs()) {
            if (proof.newView() != newView.view() || !logIsComplete(proof)) {
                return "a VIEW-CHANGE in it does not prove itself";
            }
            senders.add(proof.sender());
        }
        if (senders.size() < cluster.f() + 1) {
            return "it has VIEW-CHANGEs from " + senders.size() + " replicas, not f+1";
        }
        return null;
    }

    /**
     * Whether a VIEW-CHANGE proves its stable checkpoint and its log is
     * everything its sender certified since its own CHECKPOINT there: each
     * entry verifies, and the counter values run on without a gap up to the
     * VIEW-CHANGE's own.
     */
    boolean logIsComplete(ViewChange viewChange) {
        long expected = 0;
        if (!viewChange.stable().isEmpty()) {
            Checkpoint first = viewChange.stable().get(0);
            Set<Integer> senders = new HashSet<>();
            Checkpoint own = null;
            for (Checkpoint checkpoint : viewChange.stable()) {
                if (checkpoint.order() != first.order()
                        || !Arrays.equals(checkpoint.stateDigest(), first.stateDigest())
                        || checkpoint.sender() < 0 || checkpoint.sender() >= cluster.n()
                        || !trinx.verify(checkpoint.sender(), checkpoint.certificate(),
                                Certified.certified(checkpoint))) {
                    return false;
                }
                senders.add(checkpoint.sender());
                own = checkpoint.sender() == viewChange.sender() ? checkpoint : own;
            }
            if (senders.size() < cluster.f() + 1 || own == null) {
                return false;
            }
            expected = own.certificate().value();
        }
        for (Message entry : viewChange.log()) {
            Certificate certificate = Certified.certificateOf(entry);
            if (certificate == null || entry.sender() != viewChange.sender() || certificate.previous() != expected
                    || certificate.value() != expected + 1
                    || !trinx.verify(entry.sender(), certificate, Certified.certified(entry))) {
                return false;
            }
            expected = certificate.value();
        }
        return viewChange.certificate().previous() == expected
                && trinx.verify(viewChange.sender(), viewChange.certificate(), Certified.certified(viewChange));
    }
}
