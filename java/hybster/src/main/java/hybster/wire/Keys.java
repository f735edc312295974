package hybster.wire;

import java.nio.ByteBuffer;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

/**
 * The message authentication keys: one HMAC-SHA256 key per pair of nodes,
 * derived from the deployment's master secret, so a node can authenticate what
 * it sends to each peer and nobody else can forge it (except the two ends).
 */
public final class Keys {
    public static final int MAC_LENGTH = 32;

    /** Mac and MessageDigest objects are not thread-safe, and costly to look up: one per thread. */
    private static final ThreadLocal<Mac> HMAC = ThreadLocal.withInitial(() -> {
        try {
            return Mac.getInstance("HmacSHA256");
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("HmacSHA256 is part of every JDK", e);
        }
    });
    private static final ThreadLocal<MessageDigest> SHA256 = ThreadLocal.withInitial(() -> {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("SHA-256 is part of every JDK", e);
        }
    });

    private final SecretKeySpec master;
    private final Map<Long, SecretKeySpec> linkKeys = new ConcurrentHashMap<>();

    public Keys(byte[] masterSecret) {
        if (masterSecret.length < 16) {
            throw new IllegalArgumentException("the master secret needs at least 16 bytes");
        }
        this.master = new SecretKeySpec(masterSecret, "HmacSHA256");
    }

    /** The key of the link between nodes {@code a} and {@code b} (either direction). */
    private SecretKeySpec linkKey(int a, int b) {
        long link = (long) Math.min(a, b) << 32 | (Math.max(a, b) & 0xffffffffL);
        return linkKeys.computeIfAbsent(link, l -> new SecretKeySpec(hmac(master,
                ByteBuffer.allocate(12).putInt(0x6c696e6b).putLong(l).array()), "HmacSHA256"));
    }

    /** The MAC of {@code body} from {@code sender} to {@code receiver}. */
    public byte[] mac(int sender, int receiver, byte[] body) {
        return hmac(linkKey(sender, receiver), body);
    }

    /** The MAC of {@code length} bytes of {@code data} from {@code offset}, from {@code sender} to {@code receiver}. */
    public byte[] mac(int sender, int receiver, byte[] data, int offset, int length) {
        return hmac(linkKey(sender, receiver), data, offset, length);
    }

    /** Whether {@code mac} authenticates {@code body} on the link of sender and receiver. */
    public boolean verify(int sender, int receiver, byte[] body, byte[] mac) {
        return MessageDigest.isEqual(mac(sender, receiver, body), mac);
    }

    /** Whether {@code mac} authenticates the {@code length} bytes of {@code data} from {@code offset}. */
    public boolean verify(int sender, int receiver, byte[] data, int offset, int length, byte[] mac) {
        return MessageDigest.isEqual(mac(sender, receiver, data, offset, length), mac);
    }

    /** HMAC-SHA256 of {@code data} under {@code key}. */
    public static byte[] hmac(SecretKeySpec key, byte[] data) {
        return hmac(key, data, 0, data.length);
    }

    private static byte[] hmac(SecretKeySpec key, byte[] data, int offset, int length) {
        Mac mac = HMAC.get();
        try {
            mac.init(key);
        } catch (GeneralSecurityException e) {
            throw new IllegalArgumentException("not an HMAC key", e);
        }
        mac.update(data, offset, length);
        return mac.doFinal();
    }

    /** SHA-256 of {@code data}. */
    public static byte[] digest(byte[] data) {
        return SHA256.get().digest(data);
    }
}
