package rdmanio.bench;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.function.BooleanSupplier;
import java.util.stream.Stream;

/**
 * Tells when the JIT compilers of some JVMs have gone quiet: their compiler
 * threads ({@code C1 CompilerThre...}, {@code C2 CompilerThre...}, as
 * {@code /proc/PID/task/TID/comm} names them) used at most
 * {@link #QUIET_TICKS} clock ticks of CPU over the last {@link #WINDOW_MILLIS}.
 *
 * <p>A warm-up of a fixed time is not enough where JVMs outnumber cores: a
 * Hybster cluster of four JVMs on two cores still compiled after 15 s of
 * load (C2 threads 0.3-1.2 s of CPU per replica in a 2.6 s phase, more than
 * the replicas' own work), and its rows measured the compiler.
 */
final class JitQuiet {
    /** The span over which the compilers must stay quiet. */
    static final long WINDOW_MILLIS = 2000;
    /** CPU ticks (10 ms each) all the compiler threads may use in a window: 1% of a core. */
    static final long QUIET_TICKS = 2;

    private final List<String> pids;

    /** Watches this JVM and the processes `otherPids` names (comma-separated, may be empty). */
    JitQuiet(String otherPids) {
        pids = new ArrayList<>();
        pids.add(Long.toString(ProcessHandle.current().pid()));
        for (String pid : otherPids.split(",")) {
            if (!pid.isBlank()) {
                pids.add(pid.trim());
            }
        }
    }

    /**
     * Waits until the compilers are quiet, `maxMillis` has passed (then says
     * so on stderr) or `giveUp` says the wait is pointless (checked every
     * tenth of a second). Returns how long it waited.
     */
    long await(long maxMillis, BooleanSupplier giveUp) throws InterruptedException {
        long start = System.currentTimeMillis();
        long before = compilerTicks();
        while (true) {
            for (long slept = 0; slept < WINDOW_MILLIS; slept += 100) {
                if (giveUp.getAsBoolean()) {
                    return System.currentTimeMillis() - start;
                }
                Thread.sleep(100);
            }
            long now = compilerTicks();
            long waited = System.currentTimeMillis() - start;
            if (now - before <= QUIET_TICKS) {
                return waited;
            }
            if (waited >= maxMillis) {
                System.err.printf("the JIT compilers still used %d ms of CPU in the last %d ms after %d s of warm-up%n",
                        10 * (now - before), WINDOW_MILLIS, waited / 1000);
                return waited;
            }
            before = now;
        }
    }

    /** The CPU ticks (user and system) all the watched compiler threads have used. */
    long compilerTicks() {
        long ticks = 0;
        for (String pid : pids) {
            try (Stream<Path> tasks = Files.list(Path.of("/proc", pid, "task"))) {
                for (Path task : (Iterable<Path>) tasks::iterator) {
                    ticks += compilerThreadTicks(task);
                }
            } catch (NoSuchFileException gone) {
                // the process ended: its compilers are quiet
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }
        return ticks;
    }

    /** The CPU ticks (user and system) of a process or thread, from its {@code stat} file. */
    static long cpuTicks(Path stat) throws IOException {
        // utime and stime, fields 14 and 15, after the parenthesised command name.
        String line = Files.readString(stat);
        String[] fields = line.substring(line.lastIndexOf(')') + 2).split(" ");
        return Long.parseLong(fields[11]) + Long.parseLong(fields[12]);
    }

    private static long compilerThreadTicks(Path task) {
        try {
            String name = Files.readString(task.resolve("comm")).strip();
            if (!name.startsWith("C1 CompilerThre") && !name.startsWith("C2 CompilerThre")) {
                return 0;
            }
            return cpuTicks(task.resolve("stat"));
        } catch (NoSuchFileException ended) {
            return 0; // the thread ended (HotSpot stops idle compiler threads)
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
