package hybster.ordering;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.security.PublicKey;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.TimeoutException;

import hybster.client.Client;
import hybster.wire.Keys;

/**
 * The ordering service's client API over a Hybster {@link Client}: submit
 * transactions, cut, and fetch blocks with the replicas' signatures, taking a
 * replica's reply only when its signature verifies under that replica's key.
 */
public final class OrderingClient {
    private final Client client;
    private final List<PublicKey> replicaKeys;
    private final long timeoutMillis;

    /** {@code replicaKeys}: each replica's Ed25519 public key, by replica index. */
    public OrderingClient(Client client, List<PublicKey> replicaKeys, long timeoutMillis) {
        this.client = client;
        this.replicaKeys = List.copyOf(replicaKeys);
        this.timeoutMillis = timeoutMillis;
    }

    /** Submits {@code transaction}; returns the number of the block it will be in. */
    public long submit(byte[] transaction) throws IOException, TimeoutException, InterruptedException {
        return number(client.invoke(OrderingService.submit(transaction), timeoutMillis));
    }

    /** Cuts the pending block; returns its number, or -1 when nothing was pending. */
    public long cut() throws IOException, TimeoutException, InterruptedException {
        return number(client.invoke(OrderingService.cutOperation(), timeoutMillis));
    }

    /** Block {@code number} with f+1 valid signatures, or empty while it is not cut. */
    public Optional<SignedBlock> block(long number) throws IOException, TimeoutException, InterruptedException {
        Client.Proven proven = client.invoke(OrderingService.getBlock(number), timeoutMillis,
                reply -> reply.result().length == 0 || reply.sender() < replicaKeys.size()
                        && SignedBlock.signedBy(replicaKeys.get(reply.sender()), Keys.digest(reply.result()),
                                reply.proof()));
        if (proven.result().length == 0) {
            return Optional.empty();
        }
        return Optional.of(new SignedBlock(Block.decode(proven.result()), proven.proofs()));
    }

    private static long number(byte[] result) {
        return ByteBuffer.wrap(result).getLong();
    }
}
