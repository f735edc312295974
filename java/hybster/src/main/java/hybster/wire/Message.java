package hybster.wire;

import java.nio.BufferUnderflowException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

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
    /**
     * Bytes of a whole message, at most: a VIEW-CHANGE carries the PREPAREs
     * and COMMITs since a checkpoint, each with its batch, and a NEW-VIEW f+1
     * of them.
     */
    int MAX_MESSAGE = 64 << 20;
    /**
     * Levels of messages inside messages, at most (a VIEW-CHANGE's log holds
     * the view changes its sender took part in since its last stable
     * checkpoint, each a few levels): deeper is a peer's attempt to overflow
     * the decoder's stack.
     */
    int MAX_NESTING = 200;

    /** The node that sent it (a replica index, or a client id). */
    int sender();

    /** A client's operation. */
    record Request(int sender, long timestamp, byte[] operation) implements Message {
        /** What identifies the request in PREPAREs and COMMITs. */
        public byte[] digest() {
            return Keys.digest(encode(this));
        }
    }

    /**
     * The leader's order for a batch of client requests, executed in the
     * batch's order as one order number, certified with its trusted counter.
     * An empty batch is a no-op (it fills an order of an idle instance).
     */
    record Prepare(int sender, int view, long order, List<Request> batch, Certificate certificate)
            implements Message {
        public Prepare {
            batch = List.copyOf(batch);
        }

        /** What identifies the batch in the certificates of its PREPARE and COMMITs. */
        public byte[] batchDigest() {
            return batchDigest(batch);
        }

        public static byte[] batchDigest(List<Request> batch) {
            ByteBuffer digests = ByteBuffer.allocate(4 + 32 * batch.size()).putInt(batch.size());
            batch.forEach(request -> digests.put(request.digest()));
            return Keys.digest(digests.array());
        }

        /** What the leader's certificate covers. */
        public static byte[] certified(int view, long order, byte[] batchDigest) {
            return Keys.digest(ByteBuffer.allocate(12 + batchDigest.length).putInt(view).putLong(order)
                    .put(batchDigest).array());
        }
    }

    /**
     * A follower's agreement with a PREPARE, certified with its own trusted
     * counter. It carries the PREPARE, so that a view change can recover the
     * request from any replica's log.
     */
    record Commit(int sender, int view, long order, Prepare prepare, Certificate certificate) implements Message {
        public byte[] batchDigest() {
            return prepare.batchDigest();
        }

        public static byte[] certified(int view, long order, byte[] batchDigest) {
            return Keys.digest(ByteBuffer.allocate(13 + batchDigest.length).put((byte) 'C').putInt(view)
                    .putLong(order).put(batchDigest).array());
        }
    }

    /**
     * A replica's statement that its state after executing up to {@code order}
     * has this digest: its history (every request executed, in order), each
     * client's last result and the application's snapshot. f+1 matching ones
     * make the checkpoint stable, and the messages before it can go.
     */
    record Checkpoint(int sender, long order, byte[] stateDigest, Certificate certificate) implements Message {
        public static byte[] certified(long order, byte[] stateDigest) {
            return Keys.digest(ByteBuffer.allocate(9 + stateDigest.length).put((byte) 'K').putLong(order)
                    .put(stateDigest).array());
        }
    }

    /**
     * A replica's request to move to {@code newView}: its last stable
     * checkpoint (f+1 matching CHECKPOINTs, its own among them; empty before
     * the first) and every certified message it has sent since its own
     * CHECKPOINT there, in counter order. The counter values show that nothing
     * was left out.
     */
    record ViewChange(int sender, int newView, List<Checkpoint> stable, List<Message> log, Certificate certificate)
            implements Message {
        public ViewChange {
            stable = List.copyOf(stable);
            log = List.copyOf(log);
        }

        public static byte[] certified(int newView, List<Checkpoint> stable, List<Message> log) {
            return Keys.digest(ByteBuffer.allocate(69).put((byte) 'V').putInt(newView).put(digestAll(stable))
                    .put(digestAll(log)).array());
        }
    }

    /** The new leader's start of {@code view}, proved by f+1 VIEW-CHANGEs for it. */
    record NewView(int sender, int view, List<ViewChange> proofs, Certificate certificate) implements Message {
        public NewView {
            proofs = List.copyOf(proofs);
        }

        public static byte[] certified(int view, List<ViewChange> proofs) {
            return Keys.digest(ByteBuffer.allocate(37).put((byte) 'N').putInt(view).put(digestAll(proofs)).array());
        }
    }

    private static byte[] digestAll(List<? extends Message> messages) {
        Writer out = new Writer();
        for (Message message : messages) {
            out.bytes(encode(message));
        }
        return Keys.digest(out.toBytes());
    }

    /**
     * A replica's result for a client's request, and the replica's own proof of
     * it (empty unless the application gives one: see {@code Application.prove}),
     * which differs between replicas and so is not part of what replies match on.
     */
    record Reply(int sender, int view, long timestamp, byte[] result, byte[] proof) implements Message {
        /** Whether two replies say the same (they come from different replicas). */
        public boolean matches(Reply other) {
            return other.timestamp == timestamp && Arrays.equals(other.result, result);
        }
    }

    /**
     * A replica's message to a client that no request of the client's asked
     * for: made while executing an ordered operation (a block cut for a
     * subscriber), so correct replicas send the same ones, in the same order;
     * the client takes one once f+1 replicas sent it alike. {@code proof} as in
     * {@link Reply}.
     */
    record Notice(int sender, byte[] payload, byte[] proof) implements Message { }

    /**
     * A client's read that replicas answer at once from their state, without
     * ordering it (see {@code Client.read}): a {@link Reply} with its timestamp.
     */
    record Read(int sender, long timestamp, byte[] operation) implements Message { }

    /**
     * A replica's ask for the state of a stable checkpoint at {@code order} or
     * later, which it found beyond what it executed (see {@link State}).
     */
    record StateRequest(int sender, long order) implements Message { }

    /**
     * A replica's state at its last stable checkpoint: its snapshot and the
     * checkpoint's proof (f+1 matching CHECKPOINTs), whose certified digest
     * the snapshot must have; and the NEW-VIEW of the sender's view (none in
     * view 0), for a replica that missed that view change.
     */
    record State(int sender, long order, byte[] snapshot, List<Checkpoint> proof, List<NewView> view)
            implements Message {
        public State {
            proof = List.copyOf(proof);
            view = List.copyOf(view);
        }
    }

    /**
     * A restarted replica's first certified message: its sealed trusted
     * counter went on past every value it certified before the crash, and
     * its peers take this one across the gap (what they missed of it before
     * is lost with its state).
     */
    record Recover(int sender, Certificate certificate) implements Message {
        public static byte[] certified() {
            return Keys.digest(new byte[] {'R'});
        }
    }

    /**
     * A replica's answer to {@code recovering}'s RECOVER (certified with
     * counter value {@code recoverValue}): the highest order it holds a
     * PREPARE of (the recovering replica may have agreed to any order up to
     * it before its crash), and the NEW-VIEW of its view (none in view 0),
     * which proves that view to the recovering replica.
     */
    record RecoveryAnswer(int sender, int recovering, long recoverValue, long highestOrder, List<NewView> view,
            Certificate certificate) implements Message {
        public RecoveryAnswer {
            view = List.copyOf(view);
        }

        public static byte[] certified(int recovering, long recoverValue, long highestOrder, List<NewView> view) {
            return Keys.digest(ByteBuffer.allocate(53).put((byte) 'A').putInt(recovering).putLong(recoverValue)
                    .putLong(highestOrder).put(digestAll(view)).array());
        }
    }

    /**
     * A replica's suspicion of its view's leader: it asks for view
     * {@code newView} and goes on in its view meanwhile (MinBFT's
     * REQ-VIEW-CHANGE). Certified by a counter of its own (not the one that
     * orders the replica's messages, which a VIEW-CHANGE ends the view on),
     * so that no one else can suspect in the replica's name.
     */
    record Suspicion(int sender, int newView, Certificate certificate) implements Message {
        public static byte[] certified(int newView) {
            return Keys.digest(ByteBuffer.allocate(5).put((byte) 'S').putInt(newView).array());
        }
    }

    byte REQUEST = 1;
    byte PREPARE = 2;
    byte COMMIT = 3;
    byte REPLY = 4;
    byte VIEW_CHANGE = 5;
    byte NEW_VIEW = 6;
    byte CHECKPOINT = 7;
    byte NOTICE = 8;
    byte READ = 9;
    byte STATE_REQUEST = 10;
    byte STATE = 11;
    byte RECOVER = 12;
    byte RECOVERY_ANSWER = 13;
    byte SUSPICION = 14;

    static byte[] encode(Message message) {
        Writer out = new Writer();
        if (message instanceof Request r) {
            out.type(REQUEST, r.sender()).putLong(r.timestamp()).bytes(r.operation());
        } else if (message instanceof Prepare p) {
            out.type(PREPARE, p.sender()).putInt(p.view()).putLong(p.order()).putInt(p.batch().size());
            p.batch().forEach(request -> out.bytes(encode(request)));
            out.certificate(p.certificate());
        } else if (message instanceof Commit c) {
            out.type(COMMIT, c.sender()).putInt(c.view()).putLong(c.order()).bytes(encode(c.prepare()))
                    .certificate(c.certificate());
        } else if (message instanceof Checkpoint c) {
            out.type(CHECKPOINT, c.sender()).putLong(c.order()).bytes(c.stateDigest()).certificate(c.certificate());
        } else if (message instanceof ViewChange v) {
            out.type(VIEW_CHANGE, v.sender()).putInt(v.newView()).putInt(v.stable().size());
            v.stable().forEach(checkpoint -> out.bytes(encode(checkpoint)));
            out.putInt(v.log().size());
            v.log().forEach(entry -> out.bytes(encode(entry)));
            out.certificate(v.certificate());
        } else if (message instanceof NewView v) {
            out.type(NEW_VIEW, v.sender()).putInt(v.view()).putInt(v.proofs().size());
            v.proofs().forEach(proof -> out.bytes(encode(proof)));
            out.certificate(v.certificate());
        } else if (message instanceof Reply r) {
            out.type(REPLY, r.sender()).putInt(r.view()).putLong(r.timestamp()).bytes(r.result()).bytes(r.proof());
        } else if (message instanceof Read r) {
            out.type(READ, r.sender()).putLong(r.timestamp()).bytes(r.operation());
        } else if (message instanceof Notice n) {
            out.type(NOTICE, n.sender()).bytes(n.payload()).bytes(n.proof());
        } else if (message instanceof StateRequest r) {
            out.type(STATE_REQUEST, r.sender()).putLong(r.order());
        } else if (message instanceof State state) {
            out.type(STATE, state.sender()).putLong(state.order()).bytes(state.snapshot())
                    .putInt(state.proof().size());
            state.proof().forEach(checkpoint -> out.bytes(encode(checkpoint)));
            out.putInt(state.view().size());
            state.view().forEach(newView -> out.bytes(encode(newView)));
        } else if (message instanceof Recover r) {
            out.type(RECOVER, r.sender()).certificate(r.certificate());
        } else if (message instanceof RecoveryAnswer a) {
            out.type(RECOVERY_ANSWER, a.sender()).putInt(a.recovering()).putLong(a.recoverValue())
                    .putLong(a.highestOrder()).putInt(a.view().size());
            a.view().forEach(newView -> out.bytes(encode(newView)));
            out.certificate(a.certificate());
        } else if (message instanceof Suspicion suspicion) {
            out.type(SUSPICION, suspicion.sender()).putInt(suspicion.newView()).certificate(suspicion.certificate());
        }
        return out.toBytes();
    }

    static Message decode(byte[] bytes) throws MalformedMessageException {
        return decode(ByteBuffer.wrap(bytes), 0);
    }

    /** Decodes all of {@code in}, a message {@code depth} levels inside others. */
    private static Message decode(ByteBuffer in, int depth) throws MalformedMessageException {
        if (depth > MAX_NESTING) {
            throw new MalformedMessageException("messages nested more than " + MAX_NESTING + " deep");
        }
        try {
            byte type = in.get();
            int sender = in.getInt();
            Message message = switch (type) {
                case REQUEST -> new Request(sender, in.getLong(), bytes(in));
                case PREPARE -> {
                    int view = in.getInt();
                    long order = in.getLong();
                    List<Request> batch = new ArrayList<>();
                    for (int i = count(in); i > 0; i--) {
                        batch.add(nested(in, Request.class, depth));
                    }
                    yield new Prepare(sender, view, order, batch, certificate(in));
                }
                case COMMIT -> new Commit(sender, in.getInt(), in.getLong(), nested(in, Prepare.class, depth),
                        certificate(in));
                case CHECKPOINT -> new Checkpoint(sender, in.getLong(), bytes(in), certificate(in));
                case VIEW_CHANGE -> {
                    int newView = in.getInt();
                    List<Checkpoint> stable = new ArrayList<>();
                    for (int i = count(in); i > 0; i--) {
                        stable.add(nested(in, Checkpoint.class, depth));
                    }
                    List<Message> log = new ArrayList<>();
                    for (int i = count(in); i > 0; i--) {
                        log.add(nested(in, Message.class, depth));
                    }
                    yield new ViewChange(sender, newView, stable, log, certificate(in));
                }
                case NEW_VIEW -> {
                    int view = in.getInt();
                    List<ViewChange> proofs = new ArrayList<>();
                    for (int i = count(in); i > 0; i--) {
                        proofs.add(nested(in, ViewChange.class, depth));
                    }
                    yield new NewView(sender, view, proofs, certificate(in));
                }
                case REPLY -> new Reply(sender, in.getInt(), in.getLong(), bytes(in), bytes(in));
                case NOTICE -> new Notice(sender, bytes(in), bytes(in));
                case READ -> new Read(sender, in.getLong(), bytes(in));
                case STATE_REQUEST -> new StateRequest(sender, in.getLong());
                case STATE -> {
                    long order = in.getLong();
                    byte[] snapshot = bytes(in, MAX_MESSAGE);
                    List<Checkpoint> proof = new ArrayList<>();
                    for (int i = count(in); i > 0; i--) {
                        proof.add(nested(in, Checkpoint.class, depth));
                    }
                    List<NewView> view = new ArrayList<>();
                    for (int i = count(in); i > 0; i--) {
                        view.add(nested(in, NewView.class, depth));
                    }
                    yield new State(sender, order, snapshot, proof, view);
                }
                case RECOVER -> new Recover(sender, certificate(in));
                case RECOVERY_ANSWER -> {
                    int recovering = in.getInt();
                    long recoverValue = in.getLong();
                    long highestOrder = in.getLong();
                    List<NewView> view = new ArrayList<>();
                    for (int i = count(in); i > 0; i--) {
                        view.add(nested(in, NewView.class, depth));
                    }
                    yield new RecoveryAnswer(sender, recovering, recoverValue, highestOrder, view, certificate(in));
                }
                case SUSPICION -> new Suspicion(sender, in.getInt(), certificate(in));
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
        return bytes(in, MAX_PAYLOAD);
    }

    /** A byte string of at most {@code most} bytes. */
    private static byte[] bytes(ByteBuffer in, int most) throws MalformedMessageException {
        int length = in.getInt();
        if (length < 0 || length > Math.min(most, in.remaining())) {
            throw new MalformedMessageException("byte string of " + length + " bytes with " + in.remaining()
                    + " left");
        }
        byte[] bytes = new byte[length];
        in.get(bytes);
        return bytes;
    }

    /** A message inside a message, of the type expected there. */
    private static <T extends Message> T nested(ByteBuffer in, Class<T> type, int depth)
            throws MalformedMessageException {
        int length = in.getInt();
        if (length < 0 || length > in.remaining()) {
            throw new MalformedMessageException("a message of " + length + " bytes with " + in.remaining()
                    + " left");
        }
        Message inner = decode(in.slice(in.position(), length), depth + 1);
        in.position(in.position() + length);
        if (!type.isInstance(inner)) {
            throw new MalformedMessageException("a " + type.getSimpleName() + " was expected inside, not a "
                    + inner.getClass().getSimpleName());
        }
        return type.cast(inner);
    }

    private static int count(ByteBuffer in) throws MalformedMessageException {
        int count = in.getInt();
        if (count < 0 || count > in.remaining() / 4) {
            throw new MalformedMessageException("a list of " + count + " entries with " + in.remaining()
                    + " bytes left");
        }
        return count;
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
