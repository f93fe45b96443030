package io.github.flashattn4j.internal;

import io.github.flashattn4j.internal.bindings.flashattn4j_h;

import java.io.IOException;
import java.io.InputStream;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.nio.file.AccessDeniedException;
import java.nio.file.DirectoryStream;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.FileSystemException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.NoSuchFileException;
import java.nio.file.NotDirectoryException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.PosixFileAttributes;
import java.nio.file.attribute.PosixFilePermission;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.Locale;
import java.util.Set;

/**
 * Finds, extracts and loads the native library exactly once per JVM, before any generated binding is
 * touched.
 *
 * <p>The library comes from the system property {@value #PATH_PROPERTY} when set, else from this JAR's
 * resource {@code io/github/flashattn4j/natives/<os>-<arch>/<library file>}, extracted under the directory
 * named by {@value #TMPDIR_PROPERTY} (default: {@code java.io.tmpdir}). It is registered with
 * {@link System#load} because the jextract-generated bindings resolve symbols through their class loader,
 * then opened with {@link SymbolLookup#libraryLookup(Path, Arena)} to check that it is ours. Its ABI
 * version must equal the one the bindings were generated from.
 *
 * <h2>Extraction</h2>
 * The copy is content-addressed: {@code flashattn4j-<uid>-<sha-256 prefix>/<library file>}, in a directory
 * only this user can enter, shared by every JVM of the user that loads the same library and reused as long
 * as its bytes are the JAR's. It is written to a temporary file and renamed into place, so a JVM killed at
 * any point leaves either no copy or a whole one, and the next JVM reuses or replaces it: copies do not
 * pile up in the temporary directory, one per library version and user at most (a partial write of a
 * killed JVM is removed by the next). A directory of that name that is not this user's own and private is
 * never trusted; a fresh private directory, deleted at exit, is used instead.
 *
 * <h2>Failure</h2>
 * If the library cannot be loaded, {@link #ensureLoaded()} throws an {@link UnsatisfiedLinkError} saying
 * what failed, why, and which property to set, and throws an equal one (same message, same cause) on
 * every later call: a failed load is never retried and never turns into a {@link NoClassDefFoundError}.
 */
public final class NativeLibrary {

    /** System property naming an explicit library file, which overrides the one inside the JAR. */
    public static final String PATH_PROPERTY = "flashattn4j.library.path";

    /** System property naming the directory to extract the library into (default: {@code java.io.tmpdir}). */
    public static final String TMPDIR_PROPERTY = "flashattn4j.tmpdir";

    private static final String LIBRARY_FILE = System.mapLibraryName("flashattn4j");
    private static final String PROBE_SYMBOL = "fa4j_get_version";
    private static final String TEMP_SUFFIX = ".tmp";
    private static final Set<PosixFilePermission> PRIVATE_DIRECTORY = PosixFilePermissions.fromString("rwx------");

    // The loaded library is the one piece of global state the design allows. Written under LOCK;
    // loadedFrom is volatile so that the common case, already loaded, takes no lock.
    private static final Object LOCK = new Object();
    private static volatile Path loadedFrom;
    private static UnsatisfiedLinkError failure;

    private NativeLibrary() {}

    /**
     * Loads the library if that has not happened yet and returns the file it was loaded from.
     *
     * @throws UnsatisfiedLinkError saying what failed and what to set, if it cannot be loaded (an equal
     *                              error again on every later call)
     */
    public static Path ensureLoaded() {
        Path loaded = loadedFrom;
        if (loaded != null) return loaded;
        synchronized (LOCK) {
            if (loadedFrom != null) return loadedFrom;
            if (failure == null) {
                try {
                    loadedFrom = load();
                    return loadedFrom;
                } catch (IOException | RuntimeException | LinkageError e) {
                    failure = new UnsatisfiedLinkError("flashattn4j: cannot load the native library: " + e.getMessage());
                    failure.initCause(e);
                }
            }
            // A fresh error each time (its stack trace is this caller's), same message and cause.
            UnsatisfiedLinkError again = new UnsatisfiedLinkError(failure.getMessage());
            again.initCause(failure.getCause());
            throw again;
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
        if (explicit != null) {
            Path file = explicitFile(explicit);
            open(file, "");
            return file;
        }
        Path file = extractFromJar();
        open(file, " (if " + file.getParent() + " is on a file system mounted noexec, extract elsewhere with -D"
                + TMPDIR_PROPERTY + "=<directory> or -Djava.io.tmpdir=<directory>, or set -D" + PATH_PROPERTY
                + "=/path/to/" + LIBRARY_FILE + ")");
        return file;
    }

    /** Loads {@code file} and checks that it is a flashattn4j library of the bindings' ABI version. */
    private static void open(Path file, String hint) {
        try {
            System.load(file.toString());
        } catch (UnsatisfiedLinkError e) {
            // The message is dlopen's reason (not an ELF file, wrong architecture, noexec mount, ...).
            throw new UnsatisfiedLinkError(e.getMessage() + hint);
        }
        if (SymbolLookup.libraryLookup(file, Arena.global()).find(PROBE_SYMBOL).isEmpty()) {
            throw new UnsatisfiedLinkError(file + " does not export " + PROBE_SYMBOL + ": not a flashattn4j library");
        }
        checkAbiVersion(file);
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
        byte[] bytes;
        // The folder name "linux-x86_64" is no package name, so the resource is never module-encapsulated.
        try (InputStream in = NativeLibrary.class.getResourceAsStream("/" + resource)) {
            if (in == null) {
                throw new UnsatisfiedLinkError("no native library for platform " + platform() + " inside the flashattn4j JAR"
                        + " (looked for resource " + resource + "); set -D" + PATH_PROPERTY + "=/path/to/" + LIBRARY_FILE);
            }
            bytes = in.readAllBytes();
        }
        String property = System.getProperty(TMPDIR_PROPERTY) != null ? TMPDIR_PROPERTY : "java.io.tmpdir";
        Path root = Path.of(System.getProperty(property, "/tmp")).toAbsolutePath();
        try {
            Integer uid = currentUid();
            Path directory = uid == null ? null : sharedDirectory(root, uid, bytes);
            if (directory == null) return extractPrivately(root, bytes);
            removeAbandonedTemporaries(directory);
            Path file = directory.resolve(LIBRARY_FILE);
            if (!holds(file, bytes)) writeAtomically(directory, file, bytes);
            return file;
        } catch (IOException e) {
            throw new IOException("cannot extract it into " + root + " (from -D" + property + "): " + describe(e)
                    + "; set -D" + TMPDIR_PROPERTY + "=<a writable directory on a file system that allows executables>, or -D"
                    + PATH_PROPERTY + "=/path/to/" + LIBRARY_FILE, e);
        }
    }

    /**
     * The content-addressed directory for {@code bytes}, created private if missing; null if it exists
     * but is not this user's own private directory (someone else may control what is in it).
     */
    private static Path sharedDirectory(Path root, int uid, byte[] bytes) throws IOException {
        Path directory = root.resolve("flashattn4j-" + uid + "-" + sha256Prefix(bytes));
        try {
            Files.createDirectory(directory, PosixFilePermissions.asFileAttribute(PRIVATE_DIRECTORY));
            return directory;
        } catch (FileAlreadyExistsException e) {
            // Made by an earlier or concurrent JVM, or by someone else: checked below.
        }
        PosixFileAttributes attributes = Files.readAttributes(directory, PosixFileAttributes.class, LinkOption.NOFOLLOW_LINKS);
        Object owner = Files.getAttribute(directory, "unix:uid", LinkOption.NOFOLLOW_LINKS);
        boolean trusted = attributes.isDirectory() && Integer.valueOf(uid).equals(owner)
                && PRIVATE_DIRECTORY.containsAll(attributes.permissions());
        return trusted ? directory : null;
    }

    /** The pre-sharing behaviour, for when a shared copy cannot be trusted: a fresh directory per JVM. */
    private static Path extractPrivately(Path root, byte[] bytes) throws IOException {
        Path directory = Files.createTempDirectory(root, "flashattn4j-", PosixFilePermissions.asFileAttribute(PRIVATE_DIRECTORY));
        Path file = directory.resolve(LIBRARY_FILE);
        Files.write(file, bytes);
        // Deleted at exit in reverse order of registration: the file, then its directory.
        directory.toFile().deleteOnExit();
        file.toFile().deleteOnExit();
        return file;
    }

    /** Whether {@code file} is a regular file (not a link) holding exactly {@code bytes}. */
    private static boolean holds(Path file, byte[] bytes) throws IOException {
        if (!Files.isRegularFile(file, LinkOption.NOFOLLOW_LINKS) || Files.size(file) != bytes.length) return false;
        return Arrays.equals(Files.readAllBytes(file), bytes);
    }

    /**
     * Writes {@code bytes} to a temporary file named after this process and renames it over {@code file}:
     * readers see the old copy or the new one, never a partial one.
     */
    private static void writeAtomically(Path directory, Path file, byte[] bytes) throws IOException {
        Path temporary = directory.resolve(LIBRARY_FILE + "." + ProcessHandle.current().pid() + TEMP_SUFFIX);
        try {
            Files.write(temporary, bytes);
            Files.move(temporary, file, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } catch (IOException e) {
            Files.deleteIfExists(temporary);
            // A concurrent JVM may have put the same bytes in place meanwhile.
            if (!holds(file, bytes)) throw e;
        }
    }

    /** Deletes the temporary files of JVMs that died while writing into {@code directory}. */
    private static void removeAbandonedTemporaries(Path directory) throws IOException {
        try (DirectoryStream<Path> entries = Files.newDirectoryStream(directory, LIBRARY_FILE + ".*" + TEMP_SUFFIX)) {
            for (Path entry : entries) {
                String name = entry.getFileName().toString();
                String pid = name.substring(LIBRARY_FILE.length() + 1, name.length() - TEMP_SUFFIX.length());
                boolean writerAlive;
                try {
                    writerAlive = ProcessHandle.of(Long.parseLong(pid)).isPresent();
                } catch (NumberFormatException e) {
                    writerAlive = false;
                }
                if (!writerAlive) Files.deleteIfExists(entry);
            }
        }
    }

    /** This process's user id, or null where the platform does not tell it (then nothing is shared). */
    private static Integer currentUid() {
        try {
            return Files.getAttribute(Path.of("/proc/self"), "unix:uid") instanceof Integer uid ? uid : null;
        } catch (IOException | UnsupportedOperationException | IllegalArgumentException e) {
            return null;
        }
    }

    private static String sha256Prefix(byte[] bytes) {
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(bytes), 0, 8);
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("every Java platform has SHA-256", e);
        }
    }

    /** An I/O failure in words: the JDK's exceptions for EACCES and the like carry only the path. */
    private static String describe(IOException e) {
        String what = switch (e) {
            case AccessDeniedException _ -> "permission denied";
            case NoSuchFileException _ -> "no such file or directory";
            case NotDirectoryException _ -> "not a directory";
            case FileSystemException x -> x.getReason() != null ? x.getReason() : e.getClass().getSimpleName();
            default -> e.getClass().getSimpleName();
        };
        return e instanceof FileSystemException f && f.getFile() != null ? f.getFile() + ": " + what : what + ": " + e.getMessage();
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
