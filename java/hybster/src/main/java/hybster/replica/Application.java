package hybster.replica;

/** The replicated service: deterministic, executed in the same order on every correct replica. */
public interface Application {
    /** Executes one client operation and returns its result. */
    byte[] execute(int client, byte[] operation);
}
