package hybster.coordination;

/** An operation the service refused, with the reason's code (as ZooKeeper's KeeperException). */
public final class CoordinationException extends Exception {
    private static final long serialVersionUID = 1L;

    private final CoordinationService.Code code;

    public CoordinationException(CoordinationService.Code code, String detail) {
        super(code + ": " + detail);
        this.code = code;
    }

    public CoordinationService.Code code() {
        return code;
    }
}
