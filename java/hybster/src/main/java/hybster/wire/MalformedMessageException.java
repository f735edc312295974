package hybster.wire;

/** Bytes from a peer that are not a message: dropped and counted, never fatal. */
public final class MalformedMessageException extends Exception {
    private static final long serialVersionUID = 1L;

    public MalformedMessageException(String message) {
        super(message);
    }
}
