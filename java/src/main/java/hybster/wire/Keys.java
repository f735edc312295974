package hybster.wire;

import java.nio.ByteBuffer;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;

import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

/**
 * The message authentication keys: one HMAC-SHA256 key per pair of nodes,
 * derived from the deployment's master secret, so a node can authenticate what
 * it sends to each peer and nobody else can forge it (except the two ends).
 */
public final class Keys {
    public static final int MAC_LENGTH = 32;

    private final byte[] master;

    public Keys(byte[] masterSecret) {
        if (masterSecret.length < 16) {
            throw new IllegalArgumentException("the master secret needs at least 16 bytes");
        }
        this.master = masterSecret.clone();
    }

    /** The key of the link between nodes {@code a} and {@code b} (either direction). */
    byte[] linkKey(int a, int b) {
        return hmac(master, ByteBuffer.allocate(12).putInt(0x6c696e6b).putInt(Math.min(a, b))
                .putInt(Math.max(a, b)).array());
    }

    /** The MAC of {@code body} from {@code sender} to {@code receiver}. */
    public byte[] mac(int sender, int receiver, byte[] body) {
        return hmac(linkKey(sender, receiver), body);
    }

    /** Whether {@code mac} authenticates {@code body} on the link of sender and receiver. */
    public boolean verify(int sender, int receiver, byte[] body, byte[] mac) {
        return MessageDigest.isEqual(mac(sender, receiver, body), mac);
    }

    static byte[] hmac(byte[] key, byte[] data) {
        try {
            Mac mac = Mac.getInstance("HmacSHA256");
            mac.init(new SecretKeySpec(key, "HmacSHA256"));
            return mac.doFinal(data);
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("HmacSHA256 is part of every JDK", e);
        }
    }

    /** SHA-256 of {@code data}. */
    public static byte[] digest(byte[] data) {
        try {
            return MessageDigest.getInstance("SHA-256").digest(data);
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("SHA-256 is part of every JDK", e);
        }
    }
}
