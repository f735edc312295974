package rdmanio.nio;

import java.util.Locale;
import java.util.regex.Pattern;

/**
 * The provider's settings, read once from system properties and validated:
 *
 * <ul>
 *   <li>{@code rdmanio.transport}: {@code auto} (default: shared memory for a peer
 *       on this host, RDMA when a device reaches the peer, else TCP), {@code rdma},
 *       {@code shm} or {@code tcp}.
 *   <li>{@code rdmanio.poll}: how a selector, and a channel's blocking operation,
 *       wait when nothing is ready: {@code adaptive} (default: spin, then sleep),
 *       {@code busy} (never sleeps: lowest latency, one core per waiting thread)
 *       or {@code blocking}.
 *   <li>{@code rdmanio.spinMicros}: how long {@code adaptive} spins (default 50).
 *   <li>{@code rdmanio.connectTimeoutMillis}: how long a connect may take before it
 *       fails (default 30000).
 *   <li>{@code rdmanio.ringPeers}: the peers a listener grants one-sided RDMA (a ring
 *       of its memory they write into, under an rkey): {@code all} (default),
 *       {@code none}, or a comma-separated list of IP addresses, such as a
 *       deployment's replicas. Every other peer gets two-sided RDMA sends, which
 *       expose none of the listener's memory; it falls back to them by itself.
 *   <li>{@code rdmanio.sendPoolSlots}: the receive slots (2 KiB each) a listener
 *       shares among its two-sided connections, 7 per connection (default 7168:
 *       1024 connections); a listener whose slots are all promised refuses more.
 * </ul>
 */
final class Config {
    final String transport;
    final String pollMode;
    final long spinMicros;
    final int connectTimeoutMillis;
    final String ringPeers;
    final int sendPoolSlots;

    private Config(String transport, String pollMode, long spinMicros, int connectTimeoutMillis,
            String ringPeers, int sendPoolSlots) {
        this.transport = transport;
        this.pollMode = pollMode;
        this.spinMicros = spinMicros;
        this.connectTimeoutMillis = connectTimeoutMillis;
        this.ringPeers = ringPeers;
        this.sendPoolSlots = sendPoolSlots;
    }

    static Config fromSystemProperties() {
        return new Config(
                engineName("rdmanio.transport", "auto", false),
                engineName("rdmanio.poll", "adaptive", true),
                number("rdmanio.spinMicros", 50, 0, 1_000_000),
                (int) number("rdmanio.connectTimeoutMillis", 30_000, 1, Integer.MAX_VALUE),
                ringPeers(System.getProperty("rdmanio.ringPeers", "all")),
                (int) number("rdmanio.sendPoolSlots", 7168, 7, 1 << 22));
    }

    /** IP literals only (no name lookups here); the engine parses them exactly. */
    private static final Pattern IP_LITERALS = Pattern.compile("[0-9A-Fa-f.:]+(\\s*,\\s*[0-9A-Fa-f.:]+)*");

    private static String ringPeers(String value) {
        String peers = value.trim().toLowerCase(Locale.ROOT);
        if (peers.equals("all") || peers.equals("none") || IP_LITERALS.matcher(peers).matches()) {
            return peers;
        }
        throw new IllegalArgumentException("-Drdmanio.ringPeers=" + value
                + " is not all, none or a comma-separated list of IP addresses");
    }

    /** A transport or polling mode name, checked by the engine that parses it (one list of names). */
    private static String engineName(String property, String fallback, boolean pollMode) {
        return checked(property, System.getProperty(property, fallback).trim().toLowerCase(Locale.ROOT), pollMode);
    }

    private static String checked(String property, String value, boolean pollMode) {
        try {
            SocketNative.checkName(value, pollMode);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("-D" + property + "=" + value + ": " + e.getMessage(), e);
        }
        return value;
    }

    private static long number(String property, long fallback, long min, long max) {
        String text = System.getProperty(property);
        if (text == null) {
            return fallback;
        }
        try {
            long value = Long.parseLong(text.trim());
            if (value >= min && value <= max) {
                return value;
            }
        } catch (NumberFormatException ignored) {
            // reported below
        }
        throw new IllegalArgumentException("-D" + property + "=" + text + " is not a number in [" + min + ", "
                + max + "]");
    }

    /** How long a blocking channel operation polls before it sleeps; -1: until ready. */
    long blockingSpinMicros() {
        switch (pollMode) {
            case "busy":
                return -1;
            case "blocking":
                return 0;
            default:
                return spinMicros;
        }
    }

    /** The same settings with another transport (tests run each provider on each transport). */
    Config withTransport(String transport) {
        return new Config(checked("rdmanio.transport", transport, false), pollMode, spinMicros,
                connectTimeoutMillis, ringPeers, sendPoolSlots);
    }

    /** The same settings with other ring peers. */
    Config withRingPeers(String peers) {
        return new Config(transport, pollMode, spinMicros, connectTimeoutMillis, ringPeers(peers), sendPoolSlots);
    }
}
