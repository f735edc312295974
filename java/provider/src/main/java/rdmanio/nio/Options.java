package rdmanio.nio;

import java.net.SocketOption;
import java.util.Objects;
import java.util.Set;

/** The checks every channel's setOption and getOption make first, as the JDK's channels do. */
final class Options {
    private Options() {}

    /** Refuses an option the channel does not have. */
    static void checkSupported(Set<SocketOption<?>> supported, SocketOption<?> name) {
        Objects.requireNonNull(name, "name");
        if (!supported.contains(name)) {
            throw new UnsupportedOperationException("'" + name + "' not supported");
        }
    }

    /** Refuses an option the channel does not have, or a value of the wrong type. */
    static void checkValue(Set<SocketOption<?>> supported, SocketOption<?> name, Object value) {
        checkSupported(supported, name);
        if (!name.type().isInstance(value)) {
            throw new IllegalArgumentException("invalid value '" + value + "' for " + name);
        }
    }

    /**
     * An IP_TOS value: 0-255, as the JDK checks it. (A socket channel keeps
     * it as it keeps TCP_NODELAY, without applying it to its medium.)
     */
    static int trafficClass(Object value) {
        int tos = (Integer) value;
        if (tos < 0 || tos > 255) {
            throw new IllegalArgumentException("Invalid IP_TOS value");
        }
        return tos;
    }

    /** A buffer size (SO_RCVBUF, SO_SNDBUF): 0 (the default ring, as a kernel takes 0 for its least) or more. */
    static int bufferSize(Object value) {
        int size = (Integer) value;
        if (size < 0) {
            throw new IllegalArgumentException("Invalid send/receive buffer size");
        }
        return size;
    }
}
