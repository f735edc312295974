package rdmanio.nio;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.nio.channels.UnresolvedAddressException;
import java.nio.channels.UnsupportedAddressTypeException;
import java.util.Objects;

/** Socket addresses between Java and the native side ("ip:port", IPv6 in brackets). */
final class Addresses {
    private Addresses() {}

    /** The checks NIO specifies for an address to connect or bind to. */
    static InetSocketAddress check(SocketAddress address) {
        Objects.requireNonNull(address, "address");
        if (!(address instanceof InetSocketAddress)) {
            throw new UnsupportedAddressTypeException();
        }
        InetSocketAddress inet = (InetSocketAddress) address;
        if (inet.isUnresolved()) {
            throw new UnresolvedAddressException();
        }
        return inet;
    }

    /** The textual IP of an address (no host name lookups cross to native code). */
    static String ip(InetSocketAddress address) {
        return address.getAddress().getHostAddress();
    }

    /** Parses the native side's "ip:port". */
    static InetSocketAddress parse(String text) throws IOException {
        int colon = text.lastIndexOf(':');
        String host = text.substring(0, colon);
        if (host.startsWith("[")) {
            host = host.substring(1, host.length() - 1);
        }
        // A literal: getByName does no lookup.
        return new InetSocketAddress(InetAddress.getByName(host), Integer.parseInt(text.substring(colon + 1)));
    }
}
