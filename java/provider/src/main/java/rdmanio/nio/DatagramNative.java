package rdmanio.nio;

import java.io.IOException;
import java.nio.ByteBuffer;
import rdmanio.NativeLibrary;

/**
 * The native methods behind {@link RdmaDatagramChannel}, implemented in
 * native/src/bindings/jni/datagram_native.rs. A datagram socket's handle is a
 * socket handle: {@link SocketNative}'s close, release and poller calls take
 * it (through {@link NativeSocket}). Failures are thrown as in {@link SocketNative}.
 */
final class DatagramNative {
    static {
        NativeLibrary.load();
    }

    // Option numbers: the engine's DatagramOption, in its order.
    static final int SO_SNDBUF = 0;
    static final int SO_RCVBUF = 1;
    static final int SO_REUSEADDR = 2;
    static final int SO_REUSEPORT = 3;
    static final int SO_BROADCAST = 4;
    static final int IP_TOS = 5;
    static final int IP_MULTICAST_TTL = 6;
    static final int IP_MULTICAST_LOOP = 7;
    /** Set only, by interface index. */
    static final int IP_MULTICAST_IF = 8;

    // Membership operations: the engine's Membership, in its order.
    static final int JOIN = 0;
    static final int LEAVE = 1;
    static final int BLOCK = 2;
    static final int UNBLOCK = 3;

    /** The size of the direct buffer {@link #receive} writes the sender into. */
    static final int SENDER_BYTES = 24;

    private DatagramNative() {}

    /** A new UDP socket: IPv6 with IPv4 mapped in, or IPv4 only. See {@link SocketNative#open} for the spin. */
    static native long open(boolean ipv6, long spinMicros) throws IOException;

    /** Binds; returns "ip:port" bound. */
    static native String bind(long socket, String ip, int port) throws IOException;

    /** Connects (dropping what arrived before); returns the local "ip:port". */
    static native String connect(long socket, String ip, int port) throws IOException;

    /** Dissolves the association, keeping the local address; returns it. */
    static native String disconnect(long socket) throws IOException;

    /**
     * Sends {@code length} bytes at {@code position} as one datagram to ip:port, or to the
     * connected peer when {@code port} is negative: the length sent, or
     * {@link SocketNative#UNAVAILABLE} when there is no room and not {@code block}.
     */
    static native int send(long socket, ByteBuffer direct, int position, int length, String ip, int port,
            boolean block) throws IOException;

    /**
     * Receives one datagram into {@code length} bytes at {@code position} (the rest of a
     * longer one is dropped): its length, or {@link SocketNative#UNAVAILABLE} when none
     * waits and not {@code block}; a blocking receive gives up after {@code timeoutMillis}
     * (negative: never) with {@link java.net.SocketTimeoutException}. The sender goes into
     * {@code sender} ({@link #SENDER_BYTES} bytes): its IP version (4 or 6) in byte 0, the
     * port in bytes 2-3, the IPv6 scope id in bytes 4-7, the address from byte 8.
     */
    static native int receive(long socket, ByteBuffer direct, int position, int length, boolean block,
            int timeoutMillis, ByteBuffer sender) throws IOException;

    static native void setOption(long socket, int option, int value) throws IOException;

    static native int getOption(long socket, int option) throws IOException;

    /**
     * Joins, leaves, blocks or unblocks ({@link #JOIN} ...) {@code group} on the interface
     * with {@code index}; {@code source} "" for a membership of every source.
     */
    static native void membership(long socket, int op, String group, int index, String source)
            throws IOException;

    /**
     * A packet's buffer length (its private {@code bufLength}): what a receive may fill, which
     * {@link java.net.DatagramPacket#getLength} no longer tells once a datagram was received into it.
     */
    static native int packetCapacity(java.net.DatagramPacket packet);

    /** Sets a received packet's length, leaving its buffer length (as the JDK's receive does). */
    static native void setReceivedLength(java.net.DatagramPacket packet, int length);
}
