package hybster.coordination;

import java.io.ByteArrayInputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.TreeSet;

import hybster.replica.Application;

/**
 * A ZooKeeper-like coordination service as a replicated state machine: a tree
 * of nodes with data and versions. Operations: create (persistent or
 * sequential), delete with an expected version, exists, getData, setData with an
 * expected version, getChildren, and multi (all or nothing). Every operation,
 * reads too, goes through the ordering protocol, so every result is
 * linearizable; a read without a watch may also be answered unordered, when all
 * replicas agree ({@link #read}, {@code Client.read}).
 *
 * <p>Watches, as ZooKeeper's: exists, getData and getChildren may leave a
 * one-shot watch for their client (exists even on a missing node; the others
 * only on one that exists). The first operation that changes what was read
 * fires it: the client gets a notice (see {@code Message.Notice}) holding a
 * {@link WatchedEvent}, numbered per client in execution order, so correct
 * replicas send the same events with the same numbers. A failed operation (a
 * multi that is undone) fires nothing, and operations in a multi set no watch.
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

        Znode(byte[] data) {
            this.data = data;
        }
    }

    private final TreeMap<String, Znode> tree = new TreeMap<>();
    /** Watching clients by path, in id order: set by exists and getData, and by getChildren. */
    private final Map<String, TreeSet<Integer>> dataWatches = new HashMap<>();
    private final Map<String, TreeSet<Integer>> childWatches = new HashMap<>();
    /** The last event number sent to each client. */
    private final Map<Integer, Long> eventsSent = new HashMap<>();
    /** What the executing operation changed, to fire once it succeeded. */
    private final List<Change> changes = new ArrayList<>();
    private Notices notices = (client, payload, proof) -> { };

    /** A watch table's entry that a change fires, and the event its watchers get. */
    private record Change(Map<String, TreeSet<Integer>> watches, String path, EventType type) { }

    public CoordinationService() {
        tree.put("/", new Znode(new byte[0]));
    }

    @Override
    public void attach(Notices notices) {
        this.notices = notices;
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
        Result result = apply(client, op);
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
            case CREATE -> create(op.path(), op.data(), op.sequential());
            case DELETE -> delete(op.path(), op.version());
            case EXISTS -> node == null ? Result.error(Code.NO_NODE, op.path()) : Result.stat(node.version);
            case GET_DATA -> node == null ? Result.error(Code.NO_NODE, op.path())
                    : Result.data(node.data, node.version);
            case SET_DATA -> setData(op.path(), op.data(), op.version());
            case GET_CHILDREN -> node != null ? Result.children(children(op.path()))
                    : Result.error(Code.NO_NODE, op.path());
            case MULTI -> multi(client, op.operations());
        };
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

    private Result create(String path, byte[] data, boolean sequential) {
        String problem = Paths.check(path);
        if (problem != null || path.equals("/")) {
            return Result.error(Code.BAD_ARGUMENTS, problem != null ? problem : "the root exists");
        }
        Znode parent = tree.get(Paths.parent(path));
        if (parent == null) {
            return Result.error(Code.NO_NODE, Paths.parent(path));
        }
        String name = sequential ? path + String.format("%010d", parent.sequence) : path;
        if (tree.containsKey(name)) {
            return Result.error(Code.NODE_EXISTS, name);
        }
        parent.sequence++;
        tree.put(name, new Znode(data));
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
        TreeMap<String, Znode> before = snapshot();
        List<Result> results = new ArrayList<>();
        for (Operation op : operations) {
            if (op.kind() == Kind.MULTI || op.watch()) {
                restore(before);
                return Result.error(Code.BAD_ARGUMENTS, op.watch() ? "a watch inside multi" : "multi inside multi");
            }
            Result result = apply(client, op);
            if (result.code() != Code.OK) {
                restore(before);
                return result;
            }
            results.add(result);
        }
        return Result.multi(results);
    }

    private TreeMap<String, Znode> snapshot() {
        TreeMap<String, Znode> copy = new TreeMap<>();
        for (Map.Entry<String, Znode> entry : tree.entrySet()) {
            Znode node = new Znode(entry.getValue().data);
            node.version = entry.getValue().version;
            node.sequence = entry.getValue().sequence;
            copy.put(entry.getKey(), node);
        }
        return copy;
    }

    private void restore(TreeMap<String, Znode> snapshot) {
        tree.clear();
        tree.putAll(snapshot);
    }

    /** What fired a watch (ZooKeeper's event types). */
    public enum EventType { NODE_CREATED, NODE_DELETED, NODE_DATA_CHANGED, NODE_CHILDREN_CHANGED }

    /** A fired watch: the {@code sequence}th event of its client, and what happened where. */
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
    public enum Kind { CREATE, DELETE, EXISTS, GET_DATA, SET_DATA, GET_CHILDREN, MULTI }

    /** How an operation ended. */
    public enum Code { OK, NO_NODE, NODE_EXISTS, BAD_VERSION, NOT_EMPTY, BAD_ARGUMENTS }

    /**
     * One operation; {@code version} -1 means any, {@code watch} leaves a watch
     * (exists, getData, getChildren), {@code operations} is MULTI's.
     */
    public record Operation(Kind kind, String path, byte[] data, int version, boolean sequential, boolean watch,
            List<Operation> operations) {
        public static Operation create(String path, byte[] data, boolean sequential) {
            return new Operation(Kind.CREATE, path, data, -1, sequential, false, List.of());
        }

        public static Operation delete(String path, int version) {
            return new Operation(Kind.DELETE, path, new byte[0], version, false, false, List.of());
        }

        public static Operation setData(String path, byte[] data, int version) {
            return new Operation(Kind.SET_DATA, path, data, version, false, false, List.of());
        }

        public static Operation read(Kind kind, String path) {
            return new Operation(kind, path, new byte[0], -1, false, false, List.of());
        }

        /** A read that leaves a watch for its client. */
        public static Operation watch(Kind kind, String path) {
            return new Operation(kind, path, new byte[0], -1, false, true, List.of());
        }

        public static Operation multi(List<Operation> operations) {
            return new Operation(Kind.MULTI, "", new byte[0], -1, false, false, List.copyOf(operations));
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
            out.writeBoolean(sequential);
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
            boolean sequential = in.readBoolean();
            boolean watch = in.readBoolean();
            int count = in.readInt();
            if (count < 0 || count > 1000) {
                throw new IllegalArgumentException(count + " operations in a multi");
            }
            List<Operation> operations = new ArrayList<>();
            for (int i = 0; i < count; i++) {
                operations.add(decode(in));
            }
            return new Operation(Kind.values()[kind], path, data, version, sequential, watch, operations);
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
