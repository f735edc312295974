package hybster;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;

import org.junit.After;
import org.junit.Test;

import hybster.replica.Replica;

/** A node's configuration file: the application it replicates. */
public class MainConfigTest {
    private static final String CLUSTER = "replicas=127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002\n"
            + "masterSecret=00112233445566778899aabbccddeeff\n"
            + "trinxKey=ffeeddccbbaa99887766554433221100\n";

    private Path file;

    private Main.Config read(String extra) throws IOException {
        file = Files.createTempFile("hybster", ".properties");
        Files.writeString(file, CLUSTER + extra);
        return Main.Config.read(file);
    }

    @After
    public void removeFile() throws IOException {
        if (file != null) {
            Files.deleteIfExists(file);
        }
    }

    @Test
    public void theApplicationIsTheCounterUnlessTheFileNamesTheCoordinationService() throws IOException {
        assertEquals("counter", read("").application());
        assertEquals("coordination", read("application=coordination\n").application());
    }

    @Test
    public void theOrderingServiceTakesItsBlockSizeAndWhereItKeepsBlocksAndKeys() throws Exception {
        Main.Config defaults = read("application=ordering\n");
        assertEquals("ordering", defaults.application());
        assertEquals(100, defaults.ordering().blockSize());
        assertEquals(null, defaults.ordering().blockDirectory());
        assertThrows(IllegalStateException.class, () -> defaults.ordering().publicKey(0));

        Path directory = Files.createTempDirectory("hybster-config");
        Main.Config config = read("application=ordering\nblockSize=7\nblockDirectory=" + directory.resolve("b")
                + "\nkeyDirectory=" + directory.resolve("k") + "\n");
        assertEquals(7, config.ordering().blockSize());
        assertEquals(directory.resolve("b"), config.ordering().blockDirectory());
        Main.writeKeys(config);
        assertEquals(3, config.ordering().publicKeys(3).size());
        assertEquals("the private key is its owner's alone", "rw-------", PosixFilePermissions.toString(
                Files.getPosixFilePermissions(directory.resolve("k").resolve("replica-0.key"))));
        IOException again = assertThrows(IOException.class, () -> Main.writeKeys(config));
        assertTrue(again.getMessage(), again.getMessage().contains("keys are not replaced"));

        IllegalArgumentException refused =
                assertThrows(IllegalArgumentException.class, () -> read("application=ordering\nblockSize=0\n"));
        assertTrue(refused.getMessage(), refused.getMessage().contains("blockSize 0 is below 1"));
    }

    @Test
    public void anUnknownApplicationIsRefusedWithItsKey() {
        IllegalArgumentException refused =
                assertThrows(IllegalArgumentException.class, () -> read("application=ledger\n"));
        assertTrue(refused.getMessage(), refused.getMessage().contains("application 'ledger'"));
    }

    @Test
    public void batchesHoldSixtyFourRequestsUnlessTheFileSaysOtherwise() throws IOException {
        assertEquals(Replica.DEFAULT_MAX_BATCH, read("").options().maxBatch());
        assertEquals(8, read("maxBatch=8\n").options().maxBatch());
        assertThrows(IllegalArgumentException.class, () -> read("maxBatch=0\n"));
    }
}
