package hybster.ordering;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.PrivateKey;
import java.security.PublicKey;
import java.security.Signature;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * A block with the replicas' Ed25519 signatures of its hash, by replica index:
 * proof that a third party checks alone, with the replicas' public keys. f+1
 * valid signatures of distinct replicas (of n = 2f+1) prove that at least one
 * correct replica cut this block; the signatures are made outside the
 * replicated state (see {@code OrderingService.prove}).
 */
public record SignedBlock(Block block, Map<Integer, byte[]> signatures) {
    /** What a signature covers besides the hash, so it signs nothing else of the replica's. */
    private static final byte[] CONTEXT = "hybster ordering block ".getBytes(StandardCharsets.US_ASCII);
    private static final int MAX_SIGNATURES = 1024;

    public SignedBlock {
        Map<Integer, byte[]> copy = new TreeMap<>();
        signatures.forEach((replica, signature) -> copy.put(replica, signature.clone()));
        signatures = java.util.Collections.unmodifiableMap(copy);
    }

    /**
     * Whether at least f+1 distinct replicas of {@code replicaKeys} (their index
     * is their replica number; n = 2f+1) signed this block.
     */
    public boolean verify(List<PublicKey> replicaKeys) {
        int f = (replicaKeys.size() - 1) / 2;
        byte[] hash = block.hash();
        long valid = signatures.entrySet().stream()
                .filter(entry -> entry.getKey() >= 0 && entry.getKey() < replicaKeys.size()
                        && signedBy(replicaKeys.get(entry.getKey()), hash, entry.getValue()))
                .count();
        return valid >= f + 1;
    }

    /** A replica's signature of the block whose hash is {@code blockHash}. */
    public static byte[] sign(PrivateKey key, byte[] blockHash) {
        try {
            Signature signer = Signature.getInstance("Ed25519");
            signer.initSign(key);
            signer.update(CONTEXT);
            signer.update(blockHash);
            return signer.sign();
        } catch (GeneralSecurityException e) {
            throw new IllegalArgumentException("not an Ed25519 private key", e);
        }
    }

    /** Whether {@code signature} is {@code key}'s signature of the block whose hash is {@code blockHash}. */
    public static boolean signedBy(PublicKey key, byte[] blockHash, byte[] signature) {
        try {
            Signature verifier = Signature.getInstance("Ed25519");
            verifier.initVerify(key);
            verifier.update(CONTEXT);
            verifier.update(blockHash);
            return verifier.verify(signature);
        } catch (GeneralSecurityException e) { // a malformed signature, or a key of another kind
            return false;
        }
    }

    public byte[] encode() {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        try (DataOutputStream out = new DataOutputStream(bytes)) {
            byte[] encoded = block.encode();
            out.writeInt(encoded.length);
            out.write(encoded);
            out.writeInt(signatures.size());
            for (Map.Entry<Integer, byte[]> entry : signatures.entrySet()) {
                out.writeInt(entry.getKey());
                out.writeInt(entry.getValue().length);
                out.write(entry.getValue());
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return bytes.toByteArray();
    }

    public static SignedBlock decode(byte[] bytes) throws IOException {
        DataInputStream in = new DataInputStream(new ByteArrayInputStream(bytes));
        Block block = Block.decode(field(in, in.readInt()));
        int count = in.readInt();
        if (count < 0 || count > MAX_SIGNATURES) {
            throw new IOException(count + " signatures of a block");
        }
        Map<Integer, byte[]> signatures = new TreeMap<>();
        for (int i = 0; i < count; i++) {
            int replica = in.readInt();
            if (signatures.put(replica, field(in, in.readInt())) != null) {
                throw new IOException("two signatures of replica " + replica);
            }
        }
        if (in.available() > 0) {
            throw new IOException(in.available() + " bytes after the signed block");
        }
        return new SignedBlock(block, signatures);
    }

    private static byte[] field(DataInputStream in, int length) throws IOException {
        if (length < 0 || length > in.available()) {
            throw new IOException("a field of " + length + " bytes with " + in.available() + " left");
        }
        return in.readNBytes(length);
    }
}
