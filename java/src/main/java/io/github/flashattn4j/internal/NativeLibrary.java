package io.github.flashattn4j.internal;

import io.github.flashattn4j.internal.bindings.flashattn4j_h;

import java.io.IOException;
import java.io.InputStream;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.Locale;

/**
 * Finds, extracts and loads the native library exactly once per JVM, before any generated binding is
 * touched.
 *
 * <p>The library comes from the system property {@value #PATH_PROPERTY} when set, else from this JAR's
 * resource {@code io/github/flashattn4j/natives/<os>-<arch>/<library file>}, copied into a fresh directory
 * only this user can read. It is opened with {@link SymbolLookup#libraryLookup(Path, Arena)} to check it
 * is ours, then registered with {@link System#load} because the jextract-generated bindings resolve
 * symbols through their class loader. Its ABI version must equal the one the bindings were generated
 * from.
 */
public final class NativeLibrary {

    /** System property naming an explicit library file, which overrides the one inside the JAR. */
    public static final String PATH_PROPERTY = "flashattn4j.library.path";

    private static final String LIBRARY_FILE = System.mapLibraryName("flashattn4j");
    private static final String PROBE_SYMBOL = "fa4j_get_version";

    // The loaded library is the one piece of global state the design allows: guarded by this lock.
    private static final Object LOCK = new Object();
    private static Path loadedFrom;
    private static String failure;

    private NativeLibrary() {}

    /**
     * Loads the library if that has not happened yet and returns the file it was loaded from.
     *
     * @throws UnsatisfiedLinkError saying what was looked for, if it cannot be loaded (again on every call)
     */
    public static Path ensureLoaded() {
        synchronized (LOCK) {
            if (loadedFrom != null) return loadedFrom;
            if (failure != null) throw new UnsatisfiedLinkError(failure);
            try {
                loadedFrom = load();
                return loadedFrom;
            } catch (IOException | RuntimeException | UnsatisfiedLinkError e) {
                failure = "flashattn4j: cannot load the native library: " + e.getMessage();
                throw new UnsatisfiedLinkError(failure);
            }
        }
    }

    /** The platform folder name used inside the JAR, e.g. {@code linux-x86_64}. */
    public static String platform() {
        String os = System.getProperty("os.name", "").toLowerCase(Locale.ROOT);
        String arch = System.getProperty("os.arch", "").toLowerCase(Locale.ROOT);
        String osName = os.startsWith("linux") ? "linux" : os.startsWith("mac") ? "macos" : os.startsWith("windows") ? "windows" : os;
        String archName = switch (arch) {
            case "amd64", "x86_64" -> "x86_64";
            case "aarch64", "arm64" -> "aarch64";
            default -> arch;
        };
        return osName + "-" + archName;
    }

    /** The resource path of the library for this platform. */
    public static String resourcePath() {
        return "io/github/flashattn4j/natives/" + platform() + "/" + LIBRARY_FILE;
    }

    private static Path load() throws IOException {
        String explicit = System.getProperty(PATH_PROPERTY);
        Path file = explicit != null ? explicitFile(explicit) : extractFromJar();
        // Opening it through libraryLookup first turns "not our library" into a clear message.
        if (SymbolLookup.libraryLookup(file, Arena.global()).find(PROBE_SYMBOL).isEmpty()) {
            throw new UnsatisfiedLinkError(file + " does not export " + PROBE_SYMBOL + ": not a flashattn4j library");
        }
        System.load(file.toString());
        checkAbiVersion(file);
        return file;
    }

    private static Path explicitFile(String value) {
        Path file = Path.of(value).toAbsolutePath();
        if (!Files.isRegularFile(file)) {
            throw new UnsatisfiedLinkError("-D" + PATH_PROPERTY + "=" + value + " does not name a file");
        }
        return file;
    }

    private static Path extractFromJar() throws IOException {
        String resource = resourcePath();
        // The folder name "linux-x86_64" is no package name, so the resource is never module-encapsulated.
        try (InputStream in = NativeLibrary.class.getResourceAsStream("/" + resource)) {
            if (in == null) {
                throw new UnsatisfiedLinkError("no native library for platform " + platform() + " inside the flashattn4j JAR"
                        + " (looked for resource " + resource + "); set -D" + PATH_PROPERTY + "=/path/to/" + LIBRARY_FILE);
            }
            Path directory = Files.createTempDirectory("flashattn4j-",
                    PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rwx------")));
            Path file = directory.resolve(LIBRARY_FILE);
            Files.copy(in, file, StandardCopyOption.REPLACE_EXISTING);
            // Deleted at exit in reverse order of registration: the file, then its directory.
            directory.toFile().deleteOnExit();
            file.toFile().deleteOnExit();
            return file;
        }
    }

    private static void checkAbiVersion(Path file) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment abi = arena.allocate(ValueLayout.JAVA_INT);
            MemorySegment major = arena.allocate(ValueLayout.JAVA_INT);
            MemorySegment minor = arena.allocate(ValueLayout.JAVA_INT);
            MemorySegment patch = arena.allocate(ValueLayout.JAVA_INT);
            int status = flashattn4j_h.fa4j_get_version(abi, major, minor, patch);
            int expected = flashattn4j_h.FA4J_ABI_VERSION();
            if (status != flashattn4j_h.FA4J_OK() || abi.get(ValueLayout.JAVA_INT, 0) != expected) {
                throw new UnsatisfiedLinkError(file + " implements ABI version " + abi.get(ValueLayout.JAVA_INT, 0)
                        + " but these bindings were generated for version " + expected);
            }
        }
    }
}
