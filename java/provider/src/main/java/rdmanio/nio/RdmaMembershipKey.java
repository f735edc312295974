package rdmanio.nio;

import java.io.IOException;
import java.net.InetAddress;
import java.net.NetworkInterface;
import java.nio.channels.MembershipKey;
import java.nio.channels.MulticastChannel;
import java.util.HashSet;
import java.util.Set;

/** A multicast membership of an {@link RdmaDatagramChannel}, as the JDK's {@code MembershipKeyImpl}. */
final class RdmaMembershipKey extends MembershipKey {
    private final RdmaDatagramChannel channel;
    private final InetAddress group;
    private final NetworkInterface interf;
    private final InetAddress source;
    private volatile boolean invalid;
    /** Sources blocked; guarded by the channel's stateLock. */
    private final Set<InetAddress> blocked = new HashSet<>();

    RdmaMembershipKey(RdmaDatagramChannel channel, InetAddress group, NetworkInterface interf, InetAddress source) {
        this.channel = channel;
        this.group = group;
        this.interf = interf;
        this.source = source;
    }

    @Override
    public boolean isValid() {
        return !invalid;
    }

    void invalidate() {
        invalid = true;
    }

    @Override
    public void drop() {
        channel.drop(this);
    }

    @Override
    public MembershipKey block(InetAddress toBlock) throws IOException {
        if (source != null) {
            throw new IllegalStateException("key is source-specific");
        }
        synchronized (channel.stateLock()) {
            if (!blocked.contains(toBlock)) {
                channel.blockSource(this, toBlock, true);
                blocked.add(toBlock);
            }
        }
        return this;
    }

    @Override
    public MembershipKey unblock(InetAddress toUnblock) {
        synchronized (channel.stateLock()) {
            if (!blocked.contains(toUnblock)) {
                throw new IllegalStateException("not blocked");
            }
            try {
                channel.blockSource(this, toUnblock, false);
            } catch (IOException e) {
                throw new IllegalStateException("cannot unblock " + toUnblock, e);
            }
            blocked.remove(toUnblock);
        }
        return this;
    }

    @Override
    public MulticastChannel channel() {
        return channel;
    }

    @Override
    public InetAddress group() {
        return group;
    }

    @Override
    public NetworkInterface networkInterface() {
        return interf;
    }

    @Override
    public InetAddress sourceAddress() {
        return source;
    }

    @Override
    public String toString() {
        return "<" + group.getHostAddress() + "," + interf.getName()
                + (source == null ? "" : "," + source.getHostAddress()) + ">";
    }
}
