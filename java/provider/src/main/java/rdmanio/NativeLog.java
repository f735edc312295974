package rdmanio;

import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * Where the native engine's log records go: {@code java.util.logging}, under
 * {@code rdmanio.native} and one child logger per engine module (for example
 * {@code rdmanio.native.media.shm}). The engine keeps the level of
 * {@code rdmanio.native} at load as its threshold, so records below it cost
 * no JNI call; {@link #refreshLevel()} passes a later change down.
 */
public final class NativeLog {
    /** The parent of every native module's logger. */
    public static final String LOGGER = "rdmanio.native";

    private NativeLog() {}

    /** Installs the forwarding at load (see {@link NativeLibrary#load()}). */
    static void install() {
        installLogger(engineLevel(effectiveLevel(Logger.getLogger(LOGGER))));
    }

    /** Passes the current level of {@link #LOGGER} down to the engine. */
    public static void refreshLevel() {
        NativeLibrary.load();
        install();
    }

    /** The engine's level numbers (the Rust {@code log} crate's): 0 off, 1 error .. 5 trace. */
    static int engineLevel(Level level) {
        int value = level.intValue();
        if (value == Level.OFF.intValue()) {
            return 0;
        }
        if (value >= Level.SEVERE.intValue()) {
            return 1;
        }
        if (value >= Level.WARNING.intValue()) {
            return 2;
        }
        if (value >= Level.CONFIG.intValue()) {
            return 3;
        }
        return value >= Level.FINE.intValue() ? 4 : 5;
    }

    private static Level effectiveLevel(Logger logger) {
        for (Logger l = logger; l != null; l = l.getParent()) {
            if (l.getLevel() != null) {
                return l.getLevel();
            }
        }
        return Level.INFO;
    }

    private static final Level[] JUL_LEVELS = {Level.OFF, Level.SEVERE, Level.WARNING, Level.INFO, Level.FINE,
        Level.FINEST};

    /** Called by the engine, from whichever thread logs: one record of module logger {@code name}. */
    static void publish(String name, int level, String message) {
        Logger.getLogger(name).log(JUL_LEVELS[Math.max(1, Math.min(level, 5))], message);
    }

    private static native void installLogger(int level);
}
