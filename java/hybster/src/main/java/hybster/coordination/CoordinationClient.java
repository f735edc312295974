package hybster.coordination;

import java.io.IOException;
import java.util.List;
import java.util.concurrent.TimeoutException;

import hybster.client.Client;
import hybster.coordination.CoordinationService.Code;
import hybster.coordination.CoordinationService.Kind;
import hybster.coordination.CoordinationService.Operation;
import hybster.coordination.CoordinationService.Result;

/** The coordination service's API over a Hybster client (ZooKeeper's names and meanings). */
public final class CoordinationClient {
    private final Client client;
    private final long timeoutMillis;

    public CoordinationClient(Client client, long timeoutMillis) {
        this.client = client;
        this.timeoutMillis = timeoutMillis;
    }

    private Result call(Operation operation) throws CoordinationException, IOException, TimeoutException,
            InterruptedException {
        Result result = Result.decode(client.invoke(operation.encode(), timeoutMillis));
        if (result.code() != Code.OK) {
            throw new CoordinationException(result.code(), result.text());
        }
        return result;
    }

    /** Creates a node; a sequential one gets a ten-digit suffix. Returns the created path. */
    public String create(String path, byte[] data, boolean sequential) throws Exception {
        return call(Operation.create(path, data, sequential)).text();
    }

    /** Deletes a node if it is at {@code version} (-1: any) and has no children. */
    public void delete(String path, int version) throws Exception {
        call(Operation.delete(path, version));
    }

    /** The node's version, or -1 when it does not exist. */
    public int exists(String path) throws Exception {
        try {
            return call(Operation.read(Kind.EXISTS, path)).version();
        } catch (CoordinationException e) {
            if (e.code() == Code.NO_NODE) {
                return -1;
            }
            throw e;
        }
    }

    /** The node's data and version. */
    public Result getData(String path) throws Exception {
        return call(Operation.read(Kind.GET_DATA, path));
    }

    /** Sets the data if the node is at {@code version} (-1: any); returns the new version. */
    public int setData(String path, byte[] data, int version) throws Exception {
        return call(Operation.setData(path, data, version)).version();
    }

    /** The names of the node's children, sorted. */
    public List<String> getChildren(String path) throws Exception {
        return call(Operation.read(Kind.GET_CHILDREN, path)).names();
    }

    /** All of {@code operations} or none; the results in order. */
    public List<Result> multi(List<Operation> operations) throws Exception {
        return call(Operation.multi(operations)).results();
    }
}
