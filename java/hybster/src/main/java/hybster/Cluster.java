package hybster;

import java.net.InetSocketAddress;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

import hybster.wire.Keys;

/**
 * A deployment: n = 2f+1 replicas (indexes 0..n-1) at their addresses, and the
 * secrets: the master secret the link keys derive from, and the key that the
 * replicas' trusted subsystems share. Clients have ids of their own, from
 * {@link #FIRST_CLIENT} up.
 */
public record Cluster(List<InetSocketAddress> replicas, byte[] masterSecret, byte[] trinxKey) {
    public static final int FIRST_CLIENT = 1000;

    public Cluster {
        if (replicas.size() < 3 || replicas.size() % 2 == 0) {
            throw new IllegalArgumentException("Hybster needs 2f+1 replicas (3, 5, ...), not " + replicas.size());
        }
        replicas = List.copyOf(replicas);
        masterSecret = masterSecret.clone();
        trinxKey = trinxKey.clone();
    }

    public int n() {
        return replicas.size();
    }

    /** How many replicas may fail (crash or be Byzantine). */
    public int f() {
        return (replicas.size() - 1) / 2;
    }

    /** Replica index to address. */
    public Map<Integer, InetSocketAddress> addresses() {
        Map<Integer, InetSocketAddress> addresses = new TreeMap<>();
        for (int i = 0; i < replicas.size(); i++) {
            addresses.put(i, replicas.get(i));
        }
        return addresses;
    }

    public Keys keys() {
        return new Keys(masterSecret);
    }

    @Override
    public byte[] masterSecret() {
        return masterSecret.clone();
    }

    @Override
    public byte[] trinxKey() {
        return trinxKey.clone();
    }
}
