package hybster.wire;

import java.nio.BufferUnderflowException;
import java.nio.ByteBuffer;
import java.util.Arrays;

import hybster.trinx.Certificate;

/**
 * Hybster's messages and their binary form: a type byte, the sender, then the
 * fields, big-endian; byte strings carry an int length. {@link #decode} checks
 * every length against what is there and throws {@link MalformedMessageException}
 * for anything else, so a peer's bytes never crash a replica.
 */
public sealed interface Message {
    /** Bytes of an operation or a result, at most. */
    int MAX_PAYLOAD = 1 << 20;

    /** The node that sent it (a replica index, or a client id). */
    int sender();

    /** A client's operation. */
    record Request(int sender, long timestamp, byte[] operation) implements Message {
        /** What identifies the request in PREPAREs and COMMITs. */
        public byte[] digest() {
            return Keys.digest(encode(this));
        }
    }

    /** The leader's order for a request, certified with its trusted counter (value = order). */
    record Prepare(int sender, int view, long order, Request request, Certificate certificate) implements Message {
        /** What the leader's certificate covers. */
        public static byte[] certified(int view, long order, byte[] requestDigest) {
            return Keys.digest(ByteBuffer.allocate(12 + requestDigest.length).putInt(view).putLong(order)
                    .put(requestDigest).array());
        }
    }

    /** A follower's agreement with a PREPARE, certified with its own trusted counter. */
    record Commit(int sender, int view, long order, byte[] requestDigest, Certificate certificate)
            implements Message {
        public static byte[] certified(int view, long order, byte[] requestDigest) {
            return Keys.digest(ByteBuffer.allocate(13 + requestDigest.length).put((byte) 'C').putInt(view)
                    .putLong(order).put(requestDigest).array());
        }
    }

    /** A replica's result for a client's request. */
    record Reply(int sender, int view, long timestamp, byte[] result) implements Message {
        /** Whether two replies say the same (they come from different replicas). */
        public boolean matches(Reply other) {
            return other.timestamp == timestamp && Arrays.equals(other.result, result);
        }
    }

    byte REQUEST = 1;
    byte PREPARE = 2;
    byte COMMIT = 3;
    byte REPLY = 4;

    static byte[] encode(Message message) {
        Writer out = new Writer();
        if (message instanceof Request r) {
            out.type(REQUEST, r.sender()).putLong(r.timestamp()).bytes(r.operation());
        } else if (message instanceof Prepare p) {
            out.type(PREPARE, p.sender()).putInt(p.view()).putLong(p.order()).bytes(encode(p.request()))
                    .certificate(p.certificate());
        } else if (message instanceof Commit c) {
            out.type(COMMIT, c.sender()).putInt(c.view()).putLong(c.order()).bytes(c.requestDigest())
                    .certificate(c.certificate());
        } else if (message instanceof Reply r) {
            out.type(REPLY, r.sender()).putInt(r.view()).putLong(r.timestamp()).bytes(r.result());
        }
        return out.toBytes();
    }

    static Message decode(byte[] bytes) throws MalformedMessageException {
        ByteBuffer in = ByteBuffer.wrap(bytes);
        try {
            byte type = in.get();
            int sender = in.getInt();
            Message message = switch (type) {
                case REQUEST -> new Request(sender, in.getLong(), bytes(in));
                case PREPARE -> {
                    int view = in.getInt();
                    long order = in.getLong();
                    Message inner = decode(bytes(in));
                    if (!(inner instanceof Request request)) {
                        throw new MalformedMessageException("a PREPARE that carries no request");
                    }
                    yield new Prepare(sender, view, order, request, certificate(in));
                }
                case COMMIT -> new Commit(sender, in.getInt(), in.getLong(), bytes(in), certificate(in));
                case REPLY -> new Reply(sender, in.getInt(), in.getLong(), bytes(in));
                default -> throw new MalformedMessageException("unknown message type " + type);
            };
            if (in.hasRemaining()) {
                throw new MalformedMessageException(in.remaining() + " bytes after the message");
            }
            return message;
        } catch (BufferUnderflowException e) {
            throw new MalformedMessageException("message cut short");
        }
    }

    private static byte[] bytes(ByteBuffer in) throws MalformedMessageException {
        int length = in.getInt();
        if (length < 0 || length > Math.min(MAX_PAYLOAD, in.remaining())) {
            throw new MalformedMessageException("byte string of " + length + " bytes with " + in.remaining()
                    + " left");
        }
        byte[] bytes = new byte[length];
        in.get(bytes);
        return bytes;
    }

    private static Certificate certificate(ByteBuffer in) throws MalformedMessageException {
        return new Certificate(in.getInt(), in.getLong(), in.getLong(), bytes(in));
    }

    /** Builds an encoding. */
    final class Writer {
        private ByteBuffer buffer = ByteBuffer.allocate(256);

        private Writer room(int bytes) {
            if (buffer.remaining() < bytes) {
                ByteBuffer wider = ByteBuffer.allocate(Math.max(2 * buffer.capacity(), buffer.position() + bytes));
                buffer = wider.put(buffer.flip());
            }
            return this;
        }

        Writer type(byte type, int sender) {
            room(5).buffer.put(type).putInt(sender);
            return this;
        }

        Writer putInt(int value) {
            room(4).buffer.putInt(value);
            return this;
        }

        Writer putLong(long value) {
            room(8).buffer.putLong(value);
            return this;
        }

        Writer bytes(byte[] value) {
            room(4 + value.length).buffer.putInt(value.length).put(value);
            return this;
        }

        Writer certificate(Certificate certificate) {
            return putInt(certificate.counter()).putLong(certificate.previous()).putLong(certificate.value())
                    .bytes(certificate.tag());
        }

        byte[] toBytes() {
            return Arrays.copyOf(buffer.array(), buffer.position());
        }
    }
}
