package rdmanio.nio;

import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import org.junit.Assume;

/**
 * The Soft-RoCE VM's wire (tests/vm/wire): rxe1 at its far address, across a
 * veth pair from rxe0, and the script that takes its link down and up or puts
 * netem on it. Tests that need it are skipped outside the VM, where Gradle's
 * host run leaves them out anyway.
 */
final class VmWire {
    /** The wire's far address (rxe1's). */
    final String far;
    private final String script;

    private VmWire(String far, String script) {
        this.far = far;
        this.script = script;
    }

    /** The wire; in the VM it must be there. */
    static VmWire required() {
        Assume.assumeTrue("needs the Soft-RoCE VM's wire", Providers.IN_VM);
        String far = System.getenv("RDMANIO_TEST_WIRE_ADDR");
        String script = System.getenv("RDMANIO_TEST_WIRE");
        assertTrue("RDMANIO_TEST_WIRE_ADDR and RDMANIO_TEST_WIRE (tests/vm/run-in-vm sets them)",
            far != null && script != null);
        return new VmWire(far, script);
    }

    /** Runs the script with {@code args} ("down", "impair loss 100%", ...); fails the test if it fails. */
    void run(String... args) throws Exception {
        String[] command = new String[args.length + 1];
        command[0] = script;
        System.arraycopy(args, 0, command, 1, args.length);
        Process process = new ProcessBuilder(command).redirectErrorStream(true).start();
        String output = new String(process.getInputStream().readAllBytes());
        if (process.waitFor() != 0) {
            fail(String.join(" ", command) + ": " + output);
        }
    }
}
