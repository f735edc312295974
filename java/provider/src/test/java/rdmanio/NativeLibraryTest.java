package rdmanio;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertTrue;

import java.io.File;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

import org.junit.Test;

public class NativeLibraryTest {
    @Test
    public void theJarResourceIsNamedForThisPlatform() {
        assertEquals("META-INF/native/linux-x86_64/librdmanio.so", NativeLibrary.resourcePath());
    }

    /** A JVM whose java.library.path lacks the library loads it from the jar. */
    @Test
    public void theLibraryLoadsFromTheJarWhenNotOnTheLibraryPath() throws Exception {
        String jar = System.getProperty("rdmanio.jar");
        assertNotNull("the build passes the jar's path as -Drdmanio.jar", jar);
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        Process process = new ProcessBuilder(java, "-Djava.library.path=" + File.separator + "nonexistent",
                "-cp", jar, NativeLibrary.class.getName())
                .redirectErrorStream(true)
                .start();
        assertTrue("the child JVM finished", process.waitFor(120, TimeUnit.SECONDS));
        String output = new String(process.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertEquals(output, 0, process.exitValue());
        assertTrue(output, output.contains("loaded from jar:META-INF/native/linux-x86_64/librdmanio.so"));
        String device = System.getenv("RDMANIO_TEST_DEVICE");
        assertTrue(output, output.contains(device == null ? "no RDMA device: " : "RDMA devices: " + device));
    }
}
