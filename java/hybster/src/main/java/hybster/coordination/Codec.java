package hybster.coordination;

import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;

/** Length-checked reads: a peer's bytes never make a replica allocate without bound. */
final class Codec {
    static final int MAX_BYTES = 1 << 20;

    private Codec() {}

    /** Writes something to a data stream. */
    interface Writable {
        void write(DataOutputStream out) throws IOException;
    }

    /** The bytes {@code value} writes. */
    static byte[] encode(Writable value) {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        try (DataOutputStream out = new DataOutputStream(bytes)) {
            value.write(out);
        } catch (IOException e) {
            throw new UncheckedIOException("writing to memory", e);
        }
        return bytes.toByteArray();
    }

    static byte[] readBytes(DataInputStream in) throws IOException {
        int length = in.readInt();
        if (length < 0 || length > MAX_BYTES) {
            throw new IOException("byte string of " + length + " bytes");
        }
        return in.readNBytes(length);
    }

    static int readCount(DataInputStream in) throws IOException {
        return readCount(in, 100_000);
    }

    static int readCount(DataInputStream in, int most) throws IOException {
        int count = in.readInt();
        if (count < 0 || count > most) {
            throw new IOException("count " + count);
        }
        return count;
    }

    /** The data stream of {@code bytes}: decoding is to use all of them ({@link #end}). */
    static DataInputStream decoding(byte[] bytes) {
        return new DataInputStream(new java.io.ByteArrayInputStream(bytes));
    }

    /** Refuses bytes left over after decoding. */
    static void end(DataInputStream in, String what) throws IOException {
        if (in.available() > 0) {
            throw new IOException(in.available() + " bytes after the " + what);
        }
    }
}
