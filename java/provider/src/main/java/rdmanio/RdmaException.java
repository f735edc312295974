package rdmanio;

import java.io.IOException;

/**
 * An RDMA operation failed. The message names the operation (a verbs or
 * rdma_cm call) and, where there is one, the errno it reported.
 */
public class RdmaException extends IOException {
    private static final long serialVersionUID = 1L;

    public RdmaException(String message) {
        super(message);
    }
}
