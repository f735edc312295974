package rdmanio;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Locale;

/**
 * Loads the native library {@code librdmanio.so}: from {@code java.library.path}
 * when it is there, otherwise from the jar ({@code META-INF/native/<os>-<arch>/}),
 * extracted to a temporary file that is deleted once loaded.
 */
public final class NativeLibrary {
    static final String NAME = "rdmanio";

    private static String loadedFrom;

    private NativeLibrary() {}

    /** Loads the library once; later calls return at once. */
    public static synchronized void load() {
        if (loadedFrom != null) {
            return;
        }
        try {
            System.loadLibrary(NAME);
            loadedFrom = "java.library.path";
        } catch (UnsatisfiedLinkError notOnLibraryPath) {
            loadedFrom = loadFromJar(notOnLibraryPath);
        }
        NativeLog.install();
    }

    /** Where the library was loaded from: "java.library.path" or the jar resource; null before loading. */
    public static synchronized String loadedFrom() {
        return loadedFrom;
    }

    static String resourcePath() {
        String os = System.getProperty("os.name").toLowerCase(Locale.ROOT).replaceAll("[^a-z0-9]", "");
        String arch = System.getProperty("os.arch").toLowerCase(Locale.ROOT);
        if (arch.equals("amd64")) {
            arch = "x86_64";
        }
        return "META-INF/native/" + os + "-" + arch + "/" + System.mapLibraryName(NAME);
    }

    private static String loadFromJar(UnsatisfiedLinkError notOnLibraryPath) {
        String resource = resourcePath();
        try (InputStream in = NativeLibrary.class.getClassLoader().getResourceAsStream(resource)) {
            if (in == null) {
                UnsatisfiedLinkError missing = new UnsatisfiedLinkError("rdma-nio's native library is neither in"
                        + " java.library.path (" + System.getProperty("java.library.path") + ") nor in the jar at "
                        + resource + ": build it with 'cargo build --release' or use the jar that gradle builds");
                missing.addSuppressed(notOnLibraryPath);
                throw missing;
            }
            Path extracted = Files.createTempFile("lib" + NAME, ".so");
            try {
                Files.copy(in, extracted, StandardCopyOption.REPLACE_EXISTING);
                System.load(extracted.toAbsolutePath().toString());
            } finally {
                Files.delete(extracted); // the loaded mapping stays valid
            }
            return "jar:" + resource;
        } catch (IOException e) {
            UnsatisfiedLinkError failed = new UnsatisfiedLinkError("cannot extract " + resource + ": " + e);
            failed.initCause(e);
            throw failed;
        }
    }

    /** Prints where the library loads from and this host's RDMA devices (or why there are none). */
    public static void main(String[] args) {
        load();
        System.out.println("rdma-nio native library loaded from " + loadedFrom());
        try {
            System.out.println("RDMA devices: " + String.join(", ", RdmaDevices.names()));
        } catch (IOException e) {
            System.out.println(e.getMessage());
        }
    }
}
