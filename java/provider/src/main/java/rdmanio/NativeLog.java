package rdmanio;

import java.lang.System.Logger;
import java.lang.System.Logger.Level;

/**
 * Where the native engine's log records go: the platform's {@link System.Logger}
 * ({@code java.util.logging} when that module is present), under
 * {@code rdmanio.native} and one child logger per engine module (for example
 * {@code rdmanio.native.media.shm}). The engine keeps the level of
 * {@code rdmanio.native} at load as its threshold, so records below it cost
 * no JNI call; {@link #refreshLevel()} passes a later change down. Only
 * {@code java.base} is needed: as the JVM-wide provider, this loads in
 * programs run with {@code --limit-modules java.base}.
 */
public final class NativeLog {
    /** The parent of every native module's logger. */
    public static final String LOGGER = "rdmanio.native";

    private NativeLog() {}

    /** Installs the forwarding at load (see {@link NativeLibrary#load()}). */
    static void install() {
        installLogger(engineLevel(System.getLogger(LOGGER)));
    }

    /** Passes the current level of {@link #LOGGER} down to the engine. */
    public static void refreshLevel() {
        NativeLibrary.load();
        install();
    }

    /** Levels by the engine's numbers (the Rust {@code log} crate's): 1 error .. 5 trace; 0 is off. */
    private static final Level[] LEVELS = {Level.OFF, Level.ERROR, Level.WARNING, Level.INFO, Level.DEBUG,
        Level.TRACE};

    /** The engine's threshold for {@code logger}: its most detailed level that is logged, 0 if none. */
    static int engineLevel(Logger logger) {
        for (int level = LEVELS.length - 1; level > 0; level--) {
            if (logger.isLoggable(LEVELS[level])) {
                return level;
            }
        }
        return 0;
    }

    /** Called by the engine, from whichever thread logs: one record of module logger {@code name}. */
    static void publish(String name, int level, String message) {
        System.getLogger(name).log(LEVELS[Math.max(1, Math.min(level, 5))], message);
    }

    private static native void installLogger(int level);
}
