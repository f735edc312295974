package hybster.replica;

/** The replicated service: deterministic, executed in the same order on every correct replica. */
public interface Application {
    /**
     * Executes one client operation and returns its result. {@code client} is
     * a replica's index (below {@code Cluster.FIRST_CLIENT}) for that
     * replica's clock tick (see {@link #clockTick}).
     */
    byte[] execute(int client, byte[] operation);

    /**
     * The state as bytes that {@link #restore} rebuilds it from, on this
     * replica or another. Taken at every checkpoint, whose certified digest
     * covers it: two correct replicas that executed the same operations give
     * the same bytes (no iteration order of a hash table, nothing of the
     * replica's own such as keys or the notices it was attached to).
     */
    byte[] snapshot();

    /**
     * Replaces the state with the one {@code snapshot} holds (the bytes of
     * {@link #snapshot}, which a checkpoint's digest certified).
     *
     * @throws IllegalArgumentException when the bytes are no snapshot
     */
    void restore(byte[] snapshot);

    /**
     * How often each replica proposes its clock reading, in milliseconds; 0
     * (the default) for an application that needs no time. The state must
     * read no clock (replicas would differ), so time enters it as ordered
     * operations: every so often each replica sends every replica a request
     * of its own holding {@link #clockTick}'s operation, ordered as a client's
     * (one at a time, sent again while unexecuted), and executed with the
     * replica's index as the client. A lying replica may tick anything: the
     * application should take a time that f+1 replicas' readings reached.
     */
    default long tickMillis() {
        return 0;
    }

    /** The operation that tells the state this replica's clock reads {@code nowMillis} (see {@link #tickMillis}). */
    default byte[] clockTick(long nowMillis) {
        throw new UnsupportedOperationException("an application that needs no time gets no clock ticks");
    }

    /**
     * This replica's proof of {@code result}, the result of {@code operation},
     * for a third party (a signature with the replica's own key): sent with the
     * reply but outside the replicated state and outside what clients match, as
     * it differs between replicas. Empty by default.
     */
    default byte[] prove(byte[] operation, byte[] result) {
        return new byte[0];
    }

    /**
     * The result of {@code operation} on the current state, which it must not
     * change, for a read that is not ordered (see {@code Client.read}); null
     * when the operation is not such a read (the client then orders it).
     */
    default byte[] read(byte[] operation) {
        return null;
    }

    /** How an application sends clients notices (see {@code Message.Notice}). */
    interface Notices {
        /** Sends {@code payload} to {@code client} with this replica's {@code proof}; only from {@code execute}. */
        void send(int client, byte[] payload, byte[] proof);
    }

    /** Hands the application its replica's notices, once, before the first {@code execute}. */
    default void attach(Notices notices) {
    }
}
