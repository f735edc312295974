package rdmanio;

import java.io.IOException;
import java.util.List;

/** The RDMA devices of this host. */
public final class RdmaDevices {
    private RdmaDevices() {}

    /**
     * Names of this host's RDMA devices, e.g. {@code [rxe0]}.
     *
     * @throws NoRdmaDeviceException when there are none (the normal case on a host without RDMA)
     */
    public static List<String> names() throws IOException {
        return List.of(Native.deviceNames());
    }
}
