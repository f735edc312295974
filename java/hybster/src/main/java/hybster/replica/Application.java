package hybster.replica;

/** The replicated service: deterministic, executed in the same order on every correct replica. */
public interface Application {
    /** Executes one client operation and returns its result. */
    byte[] execute(int client, byte[] operation);

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
