package hybster.trinx;

import java.util.Arrays;

/**
 * A trusted counter's statement: "counter {@code counter} of replica
 * {@code issuer} moved from {@code previous} to {@code value} for this digest".
 */
public record Certificate(int counter, long previous, long value, byte[] tag) {
    public Certificate {
        tag = tag.clone();
    }

    @Override
    public byte[] tag() {
        return tag.clone();
    }

    @Override
    public boolean equals(Object other) {
        return other instanceof Certificate c && c.counter == counter && c.previous == previous
                && c.value == value && Arrays.equals(c.tag, tag);
    }

    @Override
    public int hashCode() {
        return Long.hashCode(value) * 31 + Arrays.hashCode(tag);
    }

    @Override
    public String toString() {
        return "Certificate[counter=" + counter + ", " + previous + "->" + value + "]";
    }
}
