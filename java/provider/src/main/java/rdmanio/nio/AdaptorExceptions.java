package rdmanio.nio;

import java.io.IOException;
import java.net.SocketException;
import java.net.UnknownHostException;
import java.nio.channels.AlreadyBoundException;
import java.nio.channels.ClosedChannelException;
import java.nio.channels.NotYetBoundException;
import java.nio.channels.NotYetConnectedException;
import java.nio.channels.UnresolvedAddressException;
import java.nio.channels.UnsupportedAddressTypeException;

/**
 * What the socket adaptors throw for a channel's exception, as the JDK's
 * adaptors do: java.net's methods declare {@code IOException}, so the
 * channel's unchecked exceptions for a bad state or address become
 * {@link SocketException}s (a second {@code bind} is "Already bound", not
 * {@link AlreadyBoundException}); the rest pass unchanged.
 */
final class AdaptorExceptions {
    private AdaptorExceptions() {}

    /** A channel operation the adaptor calls. */
    interface Operation<T> {
        T run() throws IOException;
    }

    static <T> T translated(Operation<T> operation) throws IOException {
        return translated(operation, false);
    }

    /** As {@link #translated(Operation)}, an unresolved address being an {@link UnknownHostException} (connect). */
    static <T> T translated(Operation<T> operation, boolean unknownHostForUnresolved) throws IOException {
        try {
            return operation.run();
        } catch (UnresolvedAddressException e) {
            if (unknownHostForUnresolved) {
                throw (UnknownHostException) new UnknownHostException().initCause(e);
            }
            throw socketException("Unresolved address", e);
        } catch (ClosedChannelException e) {
            throw e; // an IOException already, as the JDK's adaptors leave it
        } catch (AlreadyBoundException e) {
            throw socketException("Already bound", e);
        } catch (NotYetBoundException e) {
            throw socketException("Socket is not bound yet", e);
        } catch (NotYetConnectedException e) {
            throw socketException("Socket is not connected", e);
        } catch (UnsupportedAddressTypeException e) {
            throw socketException("Unsupported address type", e);
        }
    }

    private static SocketException socketException(String message, Exception cause) {
        SocketException e = new SocketException(message);
        e.initCause(cause);
        return e;
    }
}
