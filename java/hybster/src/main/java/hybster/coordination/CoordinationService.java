package hybster.coordination;

import java.io.ByteArrayInputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.TreeSet;

import hybster.replica.Application;

/**
 * A ZooKeeper-like coordination service as a replicated state machine: a tree
 * of nodes with data and versions. Operations: create (persistent or
 * ephemeral, each maybe sequential), delete with an expected version, exists,
 * getData, setData with an expected version, getChildren, and multi (all or
 * nothing). Every operation, reads too, goes through the ordering protocol, so
 * every result is linearizable; a read without a watch may also be answered
 * unordered, when all replicas agree ({@link #read}, {@code Client.read}).
 *
 * <p>Watches, as ZooKeeper's: exists, getData and getChildren may leave a
 * one-shot watch for their client (exists even on a missing node; the others
 * only on one that exists). The first operation that changes what was read
 * fires it: the client gets a notice (see {@code Message.Notice}) holding a
 * {@link WatchedEvent}, numbered per client in execution order, so correct
 * replicas send the same events with the same numbers. A failed operation (a
 * multi that is undone) fires nothing, and operations in a multi set no watch.
 *
 * <p>Sessions, as ZooKeeper's: a client opens one with a timeout; its
 * ephemeral nodes live as long as it does. Every ordered operation of the
 * client renews it; a session not renewed within its timeout expires, which
 * deletes its ephemeral nodes (firing their watches) and sends the client a
 * SESSION_EXPIRED event. Time is the replicated state's own, so that every
 * replica expires the same sessions at the same point of the order: each
 * replica proposes its clock reading every {@code tickMillis} as an ordered
 * operation of its own ({@code Application.clockTick}), and the service's time
 * is the (f+1)th highest of the replicas' last readings. At least one correct
 * replica's clock has reached it, so f lying replicas can neither hurry
 * expiry on nor hold it back (the f+1 correct ones keep ticking).
 *
 * <p>Operations and results travel as {@link Operation} and {@link Result}
 * encodings; {@link CoordinationClient} is the client side.
 */
public final class CoordinationService implements Application {
    /** A node of the tree. */
    private static final class Znode {
        byte[] data;
        int version;
        /** The next sequence number of a sequential child. */
        int sequence;
        /** The session an ephemeral node belongs to; 0 for a persistent one. */
        final long owner;

        Znode(byte[] data, long owner) {
            this.data = data;
            this.owner = owner;
        }
    }

    /** A client's session: its id, timeout, and the service time of its client's last operation. */
    private static final class Session {
        final long id;
        final long timeoutMillis;
        long lastHeard;

        Session(long id, long timeoutMillis, long lastHeard) {
            this.id = id;
            this.timeoutMillis = timeoutMillis;
            this.lastHeard = lastHeard;
        }
    }

    /** How often a replica proposes its clock reading, unless told otherwise. */
    public static final long DEFAULT_TICK_MILLIS = 500;
    /** Session timeouts are held within these many ticks (ZooKeeper's bounds). */
    static final int MIN_TIMEOUT_TICKS = 2;
    static final int MAX_TIMEOUT_TICKS = 20;

    private final TreeMap<String, Znode> tree = new TreeMap<>();
    /** Watching clients by path, in id order: set by exists and getData, and by getChildren. */
    private final Map<String, TreeSet<Integer>> dataWatches = new HashMap<>();
    private final Map<String, TreeSet<Integer>> childWatches = new HashMap<>();
    /** The last event number sent to each client. */
    private final Map<Integer, Long> eventsSent = new HashMap<>();
    /** What the executing operation changed, to fire once it succeeded. */
    private final List<Change> changes = new ArrayList<>();
    private Notices notices = (client, payload, proof) -> { };
    /** Replicas (their indexes are the clients that tick), and how often each ticks. */
    private final int replicas;
    private final long tickMillis;
    /** Each replica's last clock reading; the service's time is the (f+1)th highest (0 before f+1 ticked). */
    private final long[] clocks;
    private long now;
    /** Open sessions by client, in id order (expiry goes in that order). */
    private final TreeMap<Integer, Session> sessions = new TreeMap<>();
    /** Each session's ephemeral nodes (derived from the tree's owners: not in the snapshot). */
    private final Map<Long, TreeSet<String>> ephemerals = new HashMap<>();
    private long lastSessionId;

    /** A watch table's entry that a change fires, and the event its watchers get. */
    private record Change(Map<String, TreeSet<Integer>> watches, String path, EventType type) { }

    /** The service of a cluster of {@code replicas}, each proposing its clock every {@link #DEFAULT_TICK_MILLIS}. */
    public CoordinationService(int replicas) {
        this(replicas, DEFAULT_TICK_MILLIS);
    }

    public CoordinationService(int replicas, long tickMillis) {
        if (replicas < 3 || replicas % 2 == 0 || tickMillis < 1) {
            throw new IllegalArgumentException(replicas + " replicas ticking every " + tickMillis + " ms");
        }
        this.replicas = replicas;
        this.tickMillis = tickMillis;
        this.clocks = new long[replicas];
        tree.put("/", new Znode(new byte[0], 0));
    }

    @Override
    public long tickMillis() {
        return tickMillis;
    }

    @Override
    public byte[] clockTick(long nowMillis) {
        return Operation.tick(nowMillis).encode();
    }

    @Override
    public void attach(Notices notices) {
        this.notices = notices;
    }

    /**
     * The tree, watches, event numbers, clocks and sessions, each in key
     * order (see {@code Application.snapshot}).
     */
    @Override
    public byte[] snapshot() {
        return Codec.encode(out -> {
            out.writeInt(tree.size());
            for (Map.Entry<String, Znode> entry : tree.entrySet()) {
                Znode node = entry.getValue();
                out.writeUTF(entry.getKey());
                out.writeInt(node.data.length);
                out.write(node.data);
                out.writeInt(node.version);
                out.writeInt(node.sequence);
                out.writeLong(node.owner);
            }
            writeWatches(out, dataWatches);
            writeWatches(out, childWatches);
            TreeMap<Integer, Long> events = new TreeMap<>(eventsSent);
            out.writeInt(events.size());
            for (Map.Entry<Integer, Long> entry : events.entrySet()) {
                out.writeInt(entry.getKey());
                out.writeLong(entry.getValue());
            }
            for (long clock : clocks) {
                out.writeLong(clock);
            }
            out.writeLong(now);
            out.writeInt(sessions.size());
            for (Map.Entry<Integer, Session> entry : sessions.entrySet()) {
                Session session = entry.getValue();
                out.writeInt(entry.getKey());
                out.writeLong(session.id);
                out.writeLong(session.timeoutMillis);
                out.writeLong(session.lastHeard);
            }
            out.writeLong(lastSessionId);
        });
    }

    private static void writeWatches(DataOutputStream out, Map<String, TreeSet<Integer>> watches)
            throws IOException {
        TreeMap<String, TreeSet<Integer>> sorted = new TreeMap<>(watches);
        out.writeInt(sorted.size());
        for (Map.Entry<String, TreeSet<Integer>> entry : sorted.entrySet()) {
            out.writeUTF(entry.getKey());
            out.writeInt(entry.getValue().size());
            for (int client : entry.getValue()) {
                out.writeInt(client);
            }
        }
    }

    @Override
    public void restore(byte[] snapshot) {
        try {
            DataInputStream in = Codec.decoding(snapshot);
            TreeMap<String, Znode> nodes = new TreeMap<>();
            for (int i = Codec.readCount(in, Integer.MAX_VALUE); i > 0; i--) {
                String path = in.readUTF();
                byte[] data = Codec.readBytes(in);
                int version = in.readInt();
                int sequence = in.readInt();
                Znode node = new Znode(data, in.readLong());
                node.version = version;
                node.sequence = sequence;
                nodes.put(path, node);
            }
            Map<String, TreeSet<Integer>> data = readWatches(in);
            Map<String, TreeSet<Integer>> children = readWatches(in);
            Map<Integer, Long> events = new HashMap<>();
            for (int i = Codec.readCount(in, Integer.MAX_VALUE); i > 0; i--) {
                events.put(in.readInt(), in.readLong());
            }
            long[] readings = new long[replicas];
            for (int i = 0; i < replicas; i++) {
                readings[i] = in.readLong();
            }
            long time = in.readLong();
            TreeMap<Integer, Session> open = new TreeMap<>();
            for (int i = Codec.readCount(in, Integer.MAX_VALUE); i > 0; i--) {
                open.put(in.readInt(), new Session(in.readLong(), in.readLong(), in.readLong()));
            }
            long lastId = in.readLong();
            Codec.end(in, "snapshot");
            tree.clear();
            tree.putAll(nodes);
            dataWatches.clear();
            dataWatches.putAll(data);
            childWatches.clear();
            childWatches.putAll(children);
            eventsSent.clear();
            eventsSent.putAll(events);
            System.arraycopy(readings, 0, clocks, 0, replicas);
            now = time;
            sessions.clear();
            sessions.putAll(open);
            lastSessionId = lastId;
            indexEphemerals();
        } catch (IOException e) {
            throw new IllegalArgumentException("not a coordination snapshot of " + replicas + " replicas", e);
        }
    }

    private static Map<String, TreeSet<Integer>> readWatches(DataInputStream in) throws IOException {
        Map<String, TreeSet<Integer>> watches = new HashMap<>();
        for (int i = Codec.readCount(in, Integer.MAX_VALUE); i > 0; i--) {
            String path = in.readUTF();
            TreeSet<Integer> clients = new TreeSet<>();
            for (int j = Codec.readCount(in, Integer.MAX_VALUE); j > 0; j--) {
                clients.add(in.readInt());
            }
            watches.put(path, clients);
        }
        return watches;
    }

    @Override
    public byte[] execute(int client, byte[] operation) {
        Operation op;
        try {
            op = Operation.decode(new DataInputStream(new ByteArrayInputStream(operation)));
        } catch (IOException | IllegalArgumentException e) {
            return Result.error(Code.BAD_ARGUMENTS, "undecodable operation: " + e.getMessage()).encode();
        }
        changes.clear();
        Result result;
        if (client < replicas) {
            result = op.kind() == Kind.TICK ? tick(client, op.data())
                    : Result.error(Code.BAD_ARGUMENTS, "a replica's operation is a clock tick");
        } else if (op.kind() == Kind.TICK) {
            result = Result.error(Code.BAD_ARGUMENTS, "a client's clock does not count");
        } else {
            Session session = sessions.get(client);
            if (session != null) {
                session.lastHeard = now; // any ordered operation renews the session
            }
            result = apply(client, op);
        }
        if (result.code() == Code.OK) {
            changes.forEach(this::fire);
        }
        changes.clear();
        return result.encode();
    }

    /** Exists, getData and getChildren without a watch, answered unordered (see {@code Client.read}). */
    @Override
    public byte[] read(byte[] operation) {
        Operation op;
        try {
            op = Operation.decode(new DataInputStream(new ByteArrayInputStream(operation)));
        } catch (IOException | IllegalArgumentException e) {
            return null;
        }
        boolean read = op.kind() == Kind.EXISTS || op.kind() == Kind.GET_DATA || op.kind() == Kind.GET_CHILDREN;
        return read && !op.watch() ? apply(-1, op).encode() : null;
    }

    private Result apply(int client, Operation op) {
        Znode node = tree.get(op.path());
        if (op.watch()) {
            Map<String, TreeSet<Integer>> watches = switch (op.kind()) {
                case EXISTS, GET_DATA -> dataWatches;
                case GET_CHILDREN -> childWatches;
                default -> null;
            };
            String problem = watches == null ? "a " + op.kind() + " sets no watch" : Paths.check(op.path());
            if (problem != null) {
                return Result.error(Code.BAD_ARGUMENTS, problem);
            }
            // exists watches a missing node too (for its creation); getData and getChildren only one that exists
            if (node != null || op.kind() == Kind.EXISTS) {
                watches.computeIfAbsent(op.path(), path -> new TreeSet<>()).add(client);
            }
        }
        return switch (op.kind()) {
            case CREATE -> create(client, op.path(), op.data(), op.mode());
            case DELETE -> delete(op.path(), op.version());
            case EXISTS -> node == null ? Result.error(Code.NO_NODE, op.path()) : Result.stat(node.version);
            case GET_DATA -> node == null ? Result.error(Code.NO_NODE, op.path())
                    : Result.data(node.data, node.version);
            case SET_DATA -> setData(op.path(), op.data(), op.version());
            case GET_CHILDREN -> node != null ? Result.children(children(op.path()))
                    : Result.error(Code.NO_NODE, op.path());
            case MULTI -> multi(client, op.operations());
            case OPEN_SESSION -> openSession(client, op.version());
            case CLOSE_SESSION -> closeSession(client);
            case PING -> sessions.containsKey(client) ? Result.ok()
                    : Result.error(Code.SESSION_EXPIRED, "client " + client + " has no session");
            case TICK -> Result.error(Code.BAD_ARGUMENTS, "a tick inside multi");
        };
    }

    /** Opens (or reopens) the client's session with a timeout held within the tick bounds. */
    private Result openSession(int client, int timeoutMillis) {
        Session old = sessions.remove(client);
        if (old != null) {
            endSession(old);
        }
        long timeout = Math.max(MIN_TIMEOUT_TICKS * tickMillis, Math.min(MAX_TIMEOUT_TICKS * tickMillis,
                timeoutMillis));
        Session session = new Session(++lastSessionId, timeout, now);
        sessions.put(client, session);
        return Result.session(session.id, (int) timeout);
    }

    private Result closeSession(int client) {
        Session session = sessions.remove(client);
        if (session == null) {
            return Result.error(Code.SESSION_EXPIRED, "client " + client + " has no session");
        }
        endSession(session);
        return Result.ok();
    }

    /** Deletes the session's ephemeral nodes (in path order: none has children). */
    private void endSession(Session session) {
        TreeSet<String> owned = ephemerals.remove(session.id);
        if (owned != null) {
            List.copyOf(owned).forEach(path -> delete(path, -1));
        }
    }

    /** Each session's ephemeral nodes, from the tree (after it was replaced whole). */
    private void indexEphemerals() {
        ephemerals.clear();
        tree.forEach((path, node) -> {
            if (node.owner != 0) {
                ephemerals.computeIfAbsent(node.owner, id -> new TreeSet<>()).add(path);
            }
        });
    }

    /**
     * Replica {@code replica}'s clock reads {@code reading}: time moves to the
     * (f+1)th highest reading, and the sessions not renewed within their
     * timeout expire, in client order.
     */
    private Result tick(int replica, byte[] reading) {
        if (reading.length != 8) {
            return Result.error(Code.BAD_ARGUMENTS, "a tick holds a clock reading of 8 bytes");
        }
        long clock = ByteBuffer.wrap(reading).getLong();
        clocks[replica] = Math.max(clocks[replica], clock);
        long[] sorted = clocks.clone();
        Arrays.sort(sorted);
        long time = sorted[sorted.length - 1 - (replicas - 1) / 2];
        if (time <= now) {
            return Result.ok();
        }
        if (now == 0) {
            // The first time f+1 replicas ticked: sessions opened before it count from here.
            sessions.values().forEach(session -> session.lastHeard = time);
        }
        now = time;
        List<Integer> expired = sessions.entrySet().stream()
                .filter(entry -> now - entry.getValue().lastHeard > entry.getValue().timeoutMillis)
                .map(Map.Entry::getKey).toList();
        for (int client : expired) {
            Session session = sessions.remove(client);
            endSession(session);
            long sequence = eventsSent.merge(client, 1L, Long::sum);
            String named = Long.toString(session.id);
            notices.send(client, new WatchedEvent(sequence, EventType.SESSION_EXPIRED, named).encode(), new byte[0]);
        }
        return Result.ok();
    }

    /** Sends {@code change}'s event to each client watching there, whose watch it ends. */
    private void fire(Change change) {
        TreeSet<Integer> watchers = change.watches().remove(change.path());
        if (watchers == null) {
            return;
        }
        for (int client : watchers) {
            long sequence = eventsSent.merge(client, 1L, Long::sum);
            notices.send(client, new WatchedEvent(sequence, change.type(), change.path()).encode(), new byte[0]);
        }
    }

    private Result create(int client, String path, byte[] data, CreateMode mode) {
        String problem = Paths.check(path);
        if (problem != null || path.equals("/")) {
            return Result.error(Code.BAD_ARGUMENTS, problem != null ? problem : "the root exists");
        }
        Session session = sessions.get(client);
        if (mode.isEphemeral() && session == null) {
            return Result.error(Code.SESSION_EXPIRED, "an ephemeral node needs a session; client " + client
                    + " has none");
        }
        Znode parent = tree.get(Paths.parent(path));
        if (parent == null) {
            return Result.error(Code.NO_NODE, Paths.parent(path));
        }
        if (parent.owner != 0) {
            return Result.error(Code.NO_CHILDREN_FOR_EPHEMERALS, Paths.parent(path));
        }
        String name = mode.isSequential() ? path + String.format("%010d", parent.sequence) : path;
        if (tree.containsKey(name)) {
            return Result.error(Code.NODE_EXISTS, name);
        }
        parent.sequence++;
        tree.put(name, new Znode(data, mode.isEphemeral() ? session.id : 0));
        if (mode.isEphemeral()) {
            ephemerals.computeIfAbsent(session.id, id -> new TreeSet<>()).add(name);
        }
        changes.add(new Change(dataWatches, name, EventType.NODE_CREATED));
        changes.add(new Change(childWatches, Paths.parent(name), EventType.NODE_CHILDREN_CHANGED));
        return Result.created(name);
    }

    private Result delete(String path, int version) {
        Znode node = tree.get(path);
        if (node == null || path.equals("/")) {
            return Result.error(path.equals("/") ? Code.BAD_ARGUMENTS : Code.NO_NODE, path);
        }
        if (version != -1 && version != node.version) {
            return Result.error(Code.BAD_VERSION, path + " is at version " + node.version);
        }
        if (!children(path).isEmpty()) {
            return Result.error(Code.NOT_EMPTY, path);
        }
        tree.remove(path);
        TreeSet<String> owned = ephemerals.get(node.owner);
        if (owned != null) {
            owned.remove(path);
        }
        changes.add(new Change(dataWatches, path, EventType.NODE_DELETED));
        changes.add(new Change(childWatches, path, EventType.NODE_DELETED));
        changes.add(new Change(childWatches, Paths.parent(path), EventType.NODE_CHILDREN_CHANGED));
        return Result.ok();
    }

    private Result setData(String path, byte[] data, int version) {
        Znode node = tree.get(path);
        if (node == null) {
            return Result.error(Code.NO_NODE, path);
        }
        if (version != -1 && version != node.version) {
            return Result.error(Code.BAD_VERSION, path + " is at version " + node.version);
        }
        node.data = data;
        node.version++;
        changes.add(new Change(dataWatches, path, EventType.NODE_DATA_CHANGED));
        return Result.stat(node.version);
    }

    private List<String> children(String path) {
        String prefix = path.equals("/") ? "/" : path + "/";
        List<String> names = new ArrayList<>();
        for (String candidate : tree.tailMap(prefix, false).keySet()) {
            if (!candidate.startsWith(prefix)) {
                break;
            }
            String rest = candidate.substring(prefix.length());
            if (!rest.isEmpty() && rest.indexOf('/') < 0) {
                names.add(rest);
            }
        }
        return names;
    }

    /** All or nothing: on the first failure the tree is as before, and that failure is the result. */
    private Result multi(int client, List<Operation> operations) {
        TreeMap<String, Znode> before = treeCopy();
        List<Result> results = new ArrayList<>();
        for (Operation op : operations) {
            String problem = op.watch() ? "a watch inside multi"
                    : !op.kind().onTree() ? "a " + op.kind() + " inside multi" : null;
            if (problem != null) {
                undo(before);
                return Result.error(Code.BAD_ARGUMENTS, problem);
            }
            Result result = apply(client, op);
            if (result.code() != Code.OK) {
                undo(before);
                return result;
            }
            results.add(result);
        }
        return Result.multi(results);
    }

    private TreeMap<String, Znode> treeCopy() {
        TreeMap<String, Znode> copy = new TreeMap<>();
        for (Map.Entry<String, Znode> entry : tree.entrySet()) {
            Znode node = new Znode(entry.getValue().data, entry.getValue().owner);
            node.version = entry.getValue().version;
            node.sequence = entry.getValue().sequence;
            copy.put(entry.getKey(), node);
        }
        return copy;
    }

    private void undo(TreeMap<String, Znode> before) {
        tree.clear();
        tree.putAll(before);
        indexEphemerals(); // (a failed multi's: rare enough to rebuild)
    }

    /** What fired a watch (ZooKeeper's event types). */
    public enum EventType {
        NODE_CREATED, NODE_DELETED, NODE_DATA_CHANGED, NODE_CHILDREN_CHANGED,
        /** The client's session expired (path empty): its ephemeral nodes are gone. */
        SESSION_EXPIRED
    }

    /** How a created node lives: as long as it is not deleted, or as long as its client's session. */
    public enum CreateMode {
        PERSISTENT, PERSISTENT_SEQUENTIAL, EPHEMERAL, EPHEMERAL_SEQUENTIAL;

        public boolean isEphemeral() {
            return this == EPHEMERAL || this == EPHEMERAL_SEQUENTIAL;
        }

        /** A sequential node's name gets a ten-digit suffix, the parent's next sequence number. */
        public boolean isSequential() {
            return this == PERSISTENT_SEQUENTIAL || this == EPHEMERAL_SEQUENTIAL;
        }
    }

    /**
     * A fired watch: the {@code sequence}th event of its client, and what
     * happened where; a SESSION_EXPIRED event's {@code path} is the expired
     * session's id (in decimal), so that a client can tell it from the one it
     * opened since.
     */
    public record WatchedEvent(long sequence, EventType type, String path) {
        public byte[] encode() {
            return Codec.encode(out -> {
                out.writeLong(sequence);
                out.writeByte(type.ordinal());
                out.writeUTF(path);
            });
        }

        public static WatchedEvent decode(byte[] bytes) throws IOException {
            DataInputStream in = new DataInputStream(new ByteArrayInputStream(bytes));
            long sequence = in.readLong();
            int type = in.readUnsignedByte();
            if (type >= EventType.values().length) {
                throw new IOException("unknown event type " + type);
            }
            String path = in.readUTF();
            if (in.available() > 0) {
                throw new IOException(in.available() + " bytes after the event");
            }
            return new WatchedEvent(sequence, EventType.values()[type], path);
        }
    }

    /** What an operation does. */
    public enum Kind {
        CREATE, DELETE, EXISTS, GET_DATA, SET_DATA, GET_CHILDREN, MULTI,
        /** Session operations (OPEN_SESSION's timeout travels in {@code version}), and a replica's clock. */
        OPEN_SESSION, CLOSE_SESSION, PING, TICK;

        /** An operation on the tree alone: what a multi may hold (its undo restores the tree only). */
        boolean onTree() {
            return switch (this) {
                case CREATE, DELETE, EXISTS, GET_DATA, SET_DATA, GET_CHILDREN -> true;
                case MULTI, OPEN_SESSION, CLOSE_SESSION, PING, TICK -> false;
            };
        }
    }

    /** How an operation ended. */
    public enum Code {
        OK, NO_NODE, NODE_EXISTS, BAD_VERSION, NOT_EMPTY, BAD_ARGUMENTS, SESSION_EXPIRED, NO_CHILDREN_FOR_EPHEMERALS
    }

    /**
     * One operation; {@code version} -1 means any, {@code watch} leaves a watch
     * (exists, getData, getChildren), {@code operations} is MULTI's.
     */
    public record Operation(Kind kind, String path, byte[] data, int version, CreateMode mode, boolean watch,
            List<Operation> operations) {
        public static Operation create(String path, byte[] data, CreateMode mode) {
            return new Operation(Kind.CREATE, path, data, -1, mode, false, List.of());
        }

        public static Operation delete(String path, int version) {
            return of(Kind.DELETE, path, new byte[0], version);
        }

        public static Operation setData(String path, byte[] data, int version) {
            return of(Kind.SET_DATA, path, data, version);
        }

        public static Operation read(Kind kind, String path) {
            return of(kind, path, new byte[0], -1);
        }

        /** A read that leaves a watch for its client. */
        public static Operation watch(Kind kind, String path) {
            return new Operation(kind, path, new byte[0], -1, CreateMode.PERSISTENT, true, List.of());
        }

        public static Operation multi(List<Operation> operations) {
            return new Operation(Kind.MULTI, "", new byte[0], -1, CreateMode.PERSISTENT, false,
                    List.copyOf(operations));
        }

        /** Opens the client's session (ending one it had) with a timeout the service holds within its bounds. */
        public static Operation openSession(int timeoutMillis) {
            return of(Kind.OPEN_SESSION, "", new byte[0], timeoutMillis);
        }

        public static Operation closeSession() {
            return of(Kind.CLOSE_SESSION, "", new byte[0], -1);
        }

        /** Renews the client's session, as any ordered operation does. */
        public static Operation ping() {
            return of(Kind.PING, "", new byte[0], -1);
        }

        /** A replica's clock reading (only a replica's counts). */
        public static Operation tick(long clockMillis) {
            return of(Kind.TICK, "", ByteBuffer.allocate(8).putLong(clockMillis).array(), -1);
        }

        private static Operation of(Kind kind, String path, byte[] data, int version) {
            return new Operation(kind, path, data, version, CreateMode.PERSISTENT, false, List.of());
        }

        public byte[] encode() {
            return Codec.encode(this::write);
        }

        void write(DataOutputStream out) throws IOException {
            out.writeByte(kind.ordinal());
            out.writeUTF(path);
            out.writeInt(data.length);
            out.write(data);
            out.writeInt(version);
            out.writeByte(mode.ordinal());
            out.writeBoolean(watch);
            out.writeInt(operations.size());
            for (Operation op : operations) {
                op.write(out);
            }
        }

        static Operation decode(DataInputStream in) throws IOException {
            int kind = in.readUnsignedByte();
            if (kind >= Kind.values().length) {
                throw new IllegalArgumentException("unknown operation " + kind);
            }
            String path = in.readUTF();
            byte[] data = Codec.readBytes(in);
            int version = in.readInt();
            int mode = in.readUnsignedByte();
            if (mode >= CreateMode.values().length) {
                throw new IllegalArgumentException("unknown create mode " + mode);
            }
            boolean watch = in.readBoolean();
            int count = in.readInt();
            if (count < 0 || count > 1000) {
                throw new IllegalArgumentException(count + " operations in a multi");
            }
            List<Operation> operations = new ArrayList<>();
            for (int i = 0; i < count; i++) {
                operations.add(decode(in));
            }
            return new Operation(Kind.values()[kind], path, data, version, CreateMode.values()[mode], watch,
                    operations);
        }
    }

    /** An operation's result: a code, and what the operation returns. */
    public record Result(Code code, String text, byte[] data, int version, List<String> names, List<Result> results) {
        static Result ok() {
            return new Result(Code.OK, "", new byte[0], -1, List.of(), List.of());
        }

        static Result error(Code code, String text) {
            return new Result(code, text, new byte[0], -1, List.of(), List.of());
        }

        static Result created(String path) {
            return new Result(Code.OK, path, new byte[0], 0, List.of(), List.of());
        }

        static Result stat(int version) {
            return new Result(Code.OK, "", new byte[0], version, List.of(), List.of());
        }

        static Result data(byte[] data, int version) {
            return new Result(Code.OK, "", data, version, List.of(), List.of());
        }

        static Result children(List<String> names) {
            return new Result(Code.OK, "", new byte[0], -1, List.copyOf(names), List.of());
        }

        /** An opened session: its id in {@code text}, its timeout in milliseconds in {@code version}. */
        static Result session(long id, int timeoutMillis) {
            return new Result(Code.OK, Long.toString(id), new byte[0], timeoutMillis, List.of(), List.of());
        }

        static Result multi(List<Result> results) {
            return new Result(Code.OK, "", new byte[0], -1, List.of(), List.copyOf(results));
        }

        public byte[] encode() {
            return Codec.encode(this::write);
        }

        private void write(DataOutputStream out) throws IOException {
            out.writeByte(code.ordinal());
            out.writeUTF(text);
            out.writeInt(data.length);
            out.write(data);
            out.writeInt(version);
            out.writeInt(names.size());
            for (String name : names) {
                out.writeUTF(name);
            }
            out.writeInt(results.size());
            for (Result result : results) {
                result.write(out);
            }
        }

        public static Result decode(byte[] bytes) throws IOException {
            return read(new DataInputStream(new ByteArrayInputStream(bytes)));
        }

        private static Result read(DataInputStream in) throws IOException {
            int code = in.readUnsignedByte();
            if (code >= Code.values().length) {
                throw new IOException("unknown result code " + code);
            }
            String text = in.readUTF();
            byte[] data = Codec.readBytes(in);
            int version = in.readInt();
            List<String> names = new ArrayList<>();
            for (int i = Codec.readCount(in); i > 0; i--) {
                names.add(in.readUTF());
            }
            List<Result> results = new ArrayList<>();
            for (int i = Codec.readCount(in); i > 0; i--) {
                results.add(read(in));
            }
            return new Result(Code.values()[code], text, data, version, names, results);
        }
    }
}
