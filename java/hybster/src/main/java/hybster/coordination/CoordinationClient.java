package hybster.coordination;

import java.io.Closeable;
import java.io.IOException;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.logging.Logger;

import hybster.client.Client;
import hybster.coordination.CoordinationService.Code;
import hybster.coordination.CoordinationService.CreateMode;
import hybster.coordination.CoordinationService.EventType;
import hybster.coordination.CoordinationService.Kind;
import hybster.coordination.CoordinationService.Operation;
import hybster.coordination.CoordinationService.Result;
import hybster.coordination.CoordinationService.WatchedEvent;
import hybster.wire.Message.Notice;

/**
 * The coordination service's API over a Hybster client (ZooKeeper's names and
 * meanings). A read given a {@link Watcher} leaves a one-shot watch; the
 * watcher gets the event once f+1 replicas sent it alike, events in the order
 * the service fired them, on this client's event thread (one for all its
 * watchers, as ZooKeeper's). With correct replicas, an event is taken before
 * the result of any operation that the service executed after it.
 *
 * <p>A session ({@link #openSession}) keeps this client's ephemeral nodes: a
 * thread renews it while it is open, and when it expires (the renewals
 * stopped reaching the service, or this process stalled) the service deletes
 * them and the session's watcher gets a SESSION_EXPIRED event. An expiry
 * names its session: that of a session this client has left since (it
 * reopened one) ends nothing.
 */
public final class CoordinationClient implements Closeable {
    private static final Logger LOG = Logger.getLogger(CoordinationClient.class.getName());
    /** Events past the next one whose copies are kept. */
    private static final int EVENT_WINDOW = 1024;

    /** Receives a fired watch's event. */
    public interface Watcher {
        void process(WatchedEvent event);
    }

    private final Client client;
    private final long timeoutMillis;
    private final boolean unorderedReads;
    private final ExecutorService events = Executors.newSingleThreadExecutor(runnable -> {
        Thread thread = new Thread(runnable, "coordination events");
        thread.setDaemon(true);
        return thread;
    });
    private final ScheduledExecutorService renewals = Executors.newSingleThreadScheduledExecutor(runnable -> {
        Thread thread = new Thread(runnable, "coordination session");
        thread.setDaemon(true);
        return thread;
    });
    // Guarded by this client: the open session's id (0: none), renewals and watcher.
    private long sessionId;
    private ScheduledFuture<?> renewing;
    private Watcher sessionWatcher;
    // Guarded by this client's watchers: what each path's watches are for, here.
    private final Map<String, Set<Watcher>> dataWatchers = new HashMap<>();
    private final Map<String, Set<Watcher>> childWatchers = new HashMap<>();
    // The client's event loop's: copies of events by number and replica, and the next number to take (0: any).
    private final Map<Long, Map<Integer, Notice>> eventCopies = new HashMap<>();
    private long nextEvent;
    private volatile long eventsTaken;

    /** A client whose reads without a watch skip ordering while every replica agrees (see {@code Client.read}). */
    public CoordinationClient(Client client, long timeoutMillis) {
        this(client, timeoutMillis, true);
    }

    /** {@code unorderedReads} false: every operation is ordered (as a benchmark of ordering wants). */
    public CoordinationClient(Client client, long timeoutMillis, boolean unorderedReads) {
        this.client = client;
        this.timeoutMillis = timeoutMillis;
        this.unorderedReads = unorderedReads;
        client.onNotice(this::onNotice);
    }

    private Result call(Operation operation) throws CoordinationException, IOException, TimeoutException,
            InterruptedException {
        return check(Result.decode(client.invoke(operation.encode(), timeoutMillis)));
    }

    /** A read without a watch: answered unordered when every replica agrees, else ordered (see {@code Client.read}). */
    private Result read(Kind kind, String path) throws CoordinationException, IOException, TimeoutException,
            InterruptedException {
        byte[] operation = Operation.read(kind, path).encode();
        return check(Result.decode(unorderedReads ? client.read(operation, timeoutMillis)
                : client.invoke(operation, timeoutMillis)));
    }

    private static Result check(Result result) throws CoordinationException {
        if (result.code() != Code.OK) {
            throw new CoordinationException(result.code(), result.text());
        }
        return result;
    }

    /**
     * Creates a node; a sequential one gets a ten-digit suffix, an ephemeral
     * one lives as long as this client's session. Returns the created path.
     */
    public String create(String path, byte[] data, CreateMode mode) throws Exception {
        return call(Operation.create(path, data, mode)).text();
    }

    /**
     * Opens this client's session (closing one it had): the service holds
     * {@code timeoutMillis} within its bounds (2 to 20 of its ticks) and
     * returns what it took. The session is renewed every third of that; when
     * it expires anyway, {@code watcher} gets a SESSION_EXPIRED event.
     */
    public long openSession(long timeoutMillis, Watcher watcher) throws Exception {
        return openSession(timeoutMillis, -1, watcher);
    }

    /** {@link #openSession(long, Watcher)}, renewing every {@code renewMillis} (-1: a third of the timeout). */
    public long openSession(long timeoutMillis, long renewMillis, Watcher watcher) throws Exception {
        stopRenewing();
        // Not holding this client's lock while calling: the event loop takes it to hand on an expiry.
        Result opened = call(Operation.openSession((int) Math.min(Integer.MAX_VALUE, timeoutMillis)));
        long timeout = opened.version();
        long every = renewMillis > 0 ? renewMillis : Math.max(1, timeout / 3);
        synchronized (this) {
            sessionId = Long.parseLong(opened.text());
            sessionWatcher = watcher;
            renewing = renewals.scheduleWithFixedDelay(this::renew, every, every, TimeUnit.MILLISECONDS);
        }
        return timeout;
    }

    /** The open session's id, as its expiry event names it (0: none open). */
    public synchronized long sessionId() {
        return sessionId;
    }

    /** Closes this client's session: its ephemeral nodes go at once. */
    public void closeSession() throws Exception {
        synchronized (this) {
            stopRenewing();
            sessionId = 0;
            sessionWatcher = null;
        }
        call(Operation.closeSession());
    }

    private synchronized void stopRenewing() {
        if (renewing != null) {
            renewing.cancel(false);
            renewing = null;
        }
    }

    /** On the session thread: renews the session; stops once the service says it expired. */
    private void renew() {
        try {
            call(Operation.ping());
        } catch (CoordinationException e) {
            if (e.code() == Code.SESSION_EXPIRED) {
                stopRenewing(); // the expiry's event tells the watcher
            }
        } catch (Exception e) {
            LOG.fine(() -> "session renewal: " + e); // tried again at the next renewal
        }
    }

    /** Deletes a node if it is at {@code version} (-1: any) and has no children. */
    public void delete(String path, int version) throws Exception {
        call(Operation.delete(path, version));
    }

    /** The node's version, or -1 when it does not exist. */
    public int exists(String path) throws Exception {
        return exists(path, null);
    }

    /** {@link #exists(String)}, leaving a watch for {@code watcher} (null: none) whether the node exists or not. */
    public int exists(String path, Watcher watcher) throws Exception {
        try {
            return watched(Kind.EXISTS, path, watcher).version();
        } catch (CoordinationException e) {
            if (e.code() == Code.NO_NODE) {
                return -1;
            }
            throw e;
        }
    }

    /** The node's data and version. */
    public Result getData(String path) throws Exception {
        return getData(path, null);
    }

    /** {@link #getData(String)}, leaving a watch for {@code watcher} (null: none) if the node exists. */
    public Result getData(String path, Watcher watcher) throws Exception {
        return watched(Kind.GET_DATA, path, watcher);
    }

    /** Sets the data if the node is at {@code version} (-1: any); returns the new version. */
    public int setData(String path, byte[] data, int version) throws Exception {
        return call(Operation.setData(path, data, version)).version();
    }

    /** The names of the node's children, sorted. */
    public List<String> getChildren(String path) throws Exception {
        return getChildren(path, null);
    }

    /** {@link #getChildren(String)}, leaving a watch for {@code watcher} (null: none) if the node exists. */
    public List<String> getChildren(String path, Watcher watcher) throws Exception {
        return watched(Kind.GET_CHILDREN, path, watcher).names();
    }

    /** A read that leaves a watch when {@code watcher} is given: registered here before the service can fire it. */
    private Result watched(Kind kind, String path, Watcher watcher) throws Exception {
        if (watcher == null) {
            return read(kind, path);
        }
        Map<String, Set<Watcher>> watchers = kind == Kind.GET_CHILDREN ? childWatchers : dataWatchers;
        synchronized (dataWatchers) {
            watchers.computeIfAbsent(path, p -> new LinkedHashSet<>()).add(watcher);
        }
        try {
            return call(Operation.watch(kind, path));
        } catch (CoordinationException e) {
            if (kind != Kind.EXISTS || e.code() != Code.NO_NODE) { // the service left no watch
                synchronized (dataWatchers) {
                    Set<Watcher> set = watchers.get(path);
                    if (set != null && set.remove(watcher) && set.isEmpty()) {
                        watchers.remove(path);
                    }
                }
            }
            throw e;
        }
    }

    /** On the client's event loop: keeps a replica's copy of an event, and takes each event f+1 sent alike. */
    private void onNotice(Notice notice) {
        WatchedEvent event;
        try {
            event = WatchedEvent.decode(notice.payload());
        } catch (IOException e) {
            return; // a lying replica's
        }
        long number = event.sequence();
        if (number < Math.max(nextEvent, 1) || nextEvent > 0 && number >= nextEvent + EVENT_WINDOW
                || nextEvent == 0 && eventCopies.size() >= EVENT_WINDOW && !eventCopies.containsKey(number)) {
            return;
        }
        eventCopies.computeIfAbsent(number, n -> new HashMap<>()).put(notice.sender(), notice);
        if (nextEvent == 0 && agreed(number) != null) {
            nextEvent = number; // the first event this client saw: later ones follow in order
            eventCopies.keySet().removeIf(n -> n < number);
        }
        for (WatchedEvent agreed; nextEvent > 0 && (agreed = agreed(nextEvent)) != null; nextEvent++) {
            eventCopies.remove(nextEvent);
            eventsTaken++; // (only the event loop writes it)
            dispatch(agreed);
        }
    }

    /** Event {@code number} if f+1 replicas sent the same, else null. */
    private WatchedEvent agreed(long number) {
        List<Notice> alike = client.agreed(eventCopies.getOrDefault(number, Map.of()).values());
        try {
            return alike.isEmpty() ? null : WatchedEvent.decode(alike.get(0).payload());
        } catch (IOException e) {
            throw new IllegalStateException("an event that decoded once", e);
        }
    }

    /** Ends the watches the event fired and hands it to their watchers, on the event thread. */
    private void dispatch(WatchedEvent event) {
        List<Watcher> fired = new ArrayList<>();
        if (event.type() == EventType.SESSION_EXPIRED) {
            synchronized (this) {
                // An earlier session's expiry may come after this client opened another.
                if (!event.path().equals(Long.toString(sessionId))) {
                    LOG.fine(() -> "session " + event.path() + " expired; the open one is " + sessionId);
                    return;
                }
                stopRenewing();
                sessionId = 0;
                if (sessionWatcher != null) {
                    fired.add(sessionWatcher);
                    sessionWatcher = null;
                }
            }
        }
        synchronized (dataWatchers) {
            if (event.type() == EventType.NODE_CREATED || event.type() == EventType.NODE_DELETED
                    || event.type() == EventType.NODE_DATA_CHANGED) {
                fired.addAll(dataWatchers.getOrDefault(event.path(), Set.of()));
                dataWatchers.remove(event.path());
            }
            if (event.type() == EventType.NODE_CHILDREN_CHANGED || event.type() == EventType.NODE_DELETED) {
                fired.addAll(childWatchers.getOrDefault(event.path(), Set.of()));
                childWatchers.remove(event.path());
            }
        }
        if (!fired.isEmpty()) {
            events.execute(() -> fired.forEach(watcher -> watcher.process(event)));
        }
    }

    /** Events taken from the replicas so far (each fired a watch of this client's). */
    public long eventsTaken() {
        return eventsTaken;
    }

    /**
     * Closes the session if one is open (its ephemeral nodes go), and stops
     * this client's threads (the Hybster client is the caller's to close).
     */
    @Override
    public void close() {
        boolean open;
        synchronized (this) {
            open = renewing != null;
        }
        if (open) {
            try {
                closeSession();
            } catch (Exception e) {
                LOG.fine(() -> "closing the session: " + e); // it expires instead
            }
        }
        renewals.shutdownNow();
        events.shutdown();
    }

    /**
     * ZooKeeper's sync: afterwards, reads see every write that completed before
     * it. Every read here is linearizable already (ordered, or agreed by all
     * replicas), so this only orders a no-op: it is for code written against
     * ZooKeeper's API.
     */
    public void sync(String path) throws Exception {
        try {
            call(Operation.read(Kind.EXISTS, path));
        } catch (CoordinationException e) {
            if (e.code() != Code.NO_NODE) {
                throw e;
            }
        }
    }

    /** All of {@code operations} or none; the results in order. */
    public List<Result> multi(List<Operation> operations) throws Exception {
        return call(Operation.multi(operations)).results();
    }
}
