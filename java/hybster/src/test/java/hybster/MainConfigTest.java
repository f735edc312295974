package hybster;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

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
