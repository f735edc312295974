package rdmanio;

/**
 * The host has no usable RDMA device, or its kernel has no RDMA support at all.
 * This is the normal outcome on a machine without RDMA, not a malfunction.
 */
public class NoRdmaDeviceException extends RdmaException {
    private static final long serialVersionUID = 1L;

    public NoRdmaDeviceException(String message) {
        super(message);
    }
}
