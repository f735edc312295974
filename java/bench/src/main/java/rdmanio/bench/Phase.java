package rdmanio.bench;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.PrintStream;
import java.io.Writer;
import java.lang.management.ManagementFactory;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;
import java.util.concurrent.TimeUnit;

import org.HdrHistogram.Histogram;

/**
 * The measured part of a benchmark row: its latencies (an HdrHistogram), its
 * wall time, and the CPU time the whole JVM spent in it, per operation. When
 * {@code -Dbench.perfControl=CONTROL_FIFO:ACK_FIFO} names a {@code perf stat
 * --control} pair, perf counts only between {@link #start} and {@link #end}
 * (syscalls and context switches per operation, without start-up and warm-up).
 */
final class Phase {
    /** The columns {@link #report} prints, in order. */
    static final String HEADER = "row,provider,param,ops,seconds,ops_per_s,p50_us,p90_us,p99_us,p999_us,max_us,cpu_us_per_op";

    private final Histogram latencies = new Histogram(TimeUnit.SECONDS.toNanos(60), 3);
    private final com.sun.management.OperatingSystemMXBean os =
            (com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean();
    private long startNanos;
    private long startCpu;
    private long endNanos;
    private long endCpu;
    private long ops;

    void start() throws IOException {
        perf("enable");
        startCpu = cpuNanos();
        startNanos = System.nanoTime();
    }

    /** Records one operation's latency (from any thread). */
    synchronized void record(long nanos) {
        latencies.recordValue(Math.max(0, Math.min(nanos, latencies.getHighestTrackableValue())));
        ops++;
    }

    /** Ends the phase; `operations` counts them when {@link #record} was not called per operation. */
    void end(long operations) throws IOException {
        endNanos = System.nanoTime();
        endCpu = cpuNanos();
        perf("disable");
        if (ops == 0) {
            ops = operations;
        }
    }

    /**
     * Prints the row's CSV line and, if it recorded latencies, writes their
     * percentile distribution (HdrHistogram's text form, in microseconds) to
     * {@code histogram}.
     */
    void report(PrintStream out, String row, String provider, String param, Path histogram) throws IOException {
        double seconds = (endNanos - startNanos) / 1e9;
        double cpuPerOp = (endCpu - startCpu) / 1e3 / Math.max(1, ops);
        if (latencies.getTotalCount() > 0 && histogram != null) {
            try (PrintStream file = new PrintStream(Files.newOutputStream(histogram), false, StandardCharsets.UTF_8)) {
                latencies.outputPercentileDistribution(file, 5, 1000.0);
            }
        }
        boolean timed = latencies.getTotalCount() > 0;
        out.printf(Locale.ROOT, "%s,%s,%s,%d,%.3f,%.1f,%s,%s,%s,%s,%s,%.2f%n", row, provider, param, ops, seconds,
                ops / seconds, micros(timed, 50), micros(timed, 90), micros(timed, 99), micros(timed, 99.9),
                timed ? String.format(Locale.ROOT, "%.1f", latencies.getMaxValue() / 1e3) : "", cpuPerOp);
    }

    private String micros(boolean timed, double percentile) {
        return timed ? String.format(Locale.ROOT, "%.1f", latencies.getValueAtPercentile(percentile) / 1e3) : "";
    }

    /**
     * The CPU time of this JVM and of the processes {@code -Dbench.otherPids}
     * names (comma-separated: the servers of a cluster row), in nanoseconds.
     */
    private long cpuNanos() throws IOException {
        long nanos = os.getProcessCpuTime();
        String others = System.getProperty("bench.otherPids", "");
        for (String pid : others.split(",")) {
            if (!pid.isBlank()) {
                nanos += JitQuiet.cpuTicks(Path.of("/proc", pid.trim(), "stat")) * NANOS_PER_TICK;
            }
        }
        return nanos;
    }

    /** /proc's clock ticks (USER_HZ, 100 on Linux). */
    private static final long NANOS_PER_TICK = 10_000_000L;

    /** Tells perf (if it listens) to `command` ("enable", "disable") and waits for its ack. */
    private static void perf(String command) throws IOException {
        String control = System.getProperty("bench.perfControl");
        if (control == null || control.isEmpty()) {
            return;
        }
        String[] fifos = control.split(":", 2);
        try (Writer writer = Files.newBufferedWriter(Path.of(fifos[0]), StandardCharsets.US_ASCII)) {
            writer.write(command + "\n");
        }
        try (BufferedReader ack = Files.newBufferedReader(Path.of(fifos[1]), StandardCharsets.US_ASCII)) {
            ack.readLine();
        }
    }
}
