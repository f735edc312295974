package rdmanio.nio;

import java.net.SocketException;
import java.net.SocketOption;
import java.util.HashSet;
import java.util.List;
import java.util.Set;

import jdk.net.ExtendedSocketOptions;

/**
 * The TCP keep-alive tuning the JDK's channels offer ({@code jdk.net}'s
 * TCP_KEEPIDLE, TCP_KEEPINTERVAL, TCP_KEEPCOUNT), kept and reported: rdma-nio's
 * media learn of a dead peer by their own means (disconnect events, the shm
 * liveness channel), as SO_KEEPALIVE is kept and reported. Linux's defaults
 * and ranges; out of range is the JDK's SocketException. Guarded by the
 * owning channel's state lock. Offered only where the {@code jdk.net} module
 * is (a JVM run with {@code --limit-modules java.base} has none, and its
 * channels offer none).
 */
final class KeepAlive {
    static final Set<SocketOption<?>> OPTIONS =
            ModuleLayer.boot().findModule("jdk.net").isPresent() ? JdkNet.OPTIONS : Set.of();

    /** Loaded only where jdk.net is. */
    private static final class JdkNet {
        static final Set<SocketOption<?>> OPTIONS = Set.of(ExtendedSocketOptions.TCP_KEEPIDLE,
                ExtendedSocketOptions.TCP_KEEPINTERVAL, ExtendedSocketOptions.TCP_KEEPCOUNT);
    }

    private int idleSeconds = 7200;
    private int intervalSeconds = 75;
    private int count = 9;

    static boolean isOne(SocketOption<?> name) {
        return OPTIONS.contains(name);
    }

    void set(SocketOption<?> name, Object value) throws SocketException {
        int v = (Integer) value;
        int max = name.name().equals("TCP_KEEPCOUNT") ? 127 : 32767;
        if (v < 1 || v > max) {
            throw new SocketException("Invalid argument");
        }
        switch (name.name()) {
            case "TCP_KEEPIDLE":
                idleSeconds = v;
                break;
            case "TCP_KEEPINTERVAL":
                intervalSeconds = v;
                break;
            default:
                count = v;
        }
    }

    /** By name: the options' class is jdk.net's, which is loaded only where it is. */
    int get(SocketOption<?> name) {
        switch (name.name()) {
            case "TCP_KEEPIDLE":
                return idleSeconds;
            case "TCP_KEEPINTERVAL":
                return intervalSeconds;
            default:
                return count;
        }
    }

    /** {@code base} and the keep-alive options. */
    static Set<SocketOption<?>> with(SocketOption<?>... base) {
        Set<SocketOption<?>> all = new HashSet<>(OPTIONS);
        all.addAll(List.of(base));
        return Set.copyOf(all);
    }
}
