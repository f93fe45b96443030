package io.github.flashattn4j.tests;

import io.github.flashattn4j.internal.NativeLibrary;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Loading the bundled library, in child JVMs (a JVM loads it once): a temporary directory it cannot use
 * gives an error naming the cause and the property to set, the same error on every later call (never a
 * {@link NoClassDefFoundError}); and JVMs started over and over, killed or not, share one extracted copy
 * instead of leaving one each.
 */
class NativeLibraryLoadingTest {

    private static final String LIBRARY_FILE = System.mapLibraryName("flashattn4j");

    @BeforeAll
    static void libraryIsInsideTheJar() {
        Assumptions.assumeTrue(NativeLibrary.class.getResource("/" + NativeLibrary.resourcePath()) != null,
                "the library is not bundled on this class path (loaded through -D" + NativeLibrary.PATH_PROPERTY + ")");
    }

    /** A child JVM with this class path running {@link LoaderProbe}. */
    private static ProcessBuilder probe(List<String> properties, String... args) {
        List<String> command = new ArrayList<>();
        command.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        command.add("--enable-native-access=ALL-UNNAMED");
        command.addAll(properties);
        command.add("-cp");
        command.add(System.getProperty("java.class.path"));
        command.add(LoaderProbe.class.getName());
        command.addAll(List.of(args));
        return new ProcessBuilder(command).redirectErrorStream(true);
    }

    private static List<String> run(List<String> properties, String... args) throws IOException, InterruptedException {
        Process process = probe(properties, args).start();
        List<String> lines;
        try (BufferedReader out = new BufferedReader(new InputStreamReader(process.getInputStream(), StandardCharsets.UTF_8))) {
            lines = out.lines().toList();
        }
        assertTrue(process.waitFor(60, TimeUnit.SECONDS), "child JVM did not finish");
        assertEquals(0, process.exitValue(), () -> "child JVM failed: " + lines);
        List<String> attempts = lines.stream().filter(l -> l.startsWith("ok ") || l.startsWith("failed ") || l.startsWith("first ")).toList();
        assertEquals(args.length > 0 && args[0].equals("stream-first") ? 3 : 2, attempts.size(), () -> "unexpected child output: " + lines);
        return attempts;
    }

    private static void assertFailsTheSameWayTwice(List<String> attempts, String... messageParts) {
        String first = attempts.get(0);
        assertTrue(first.startsWith("failed java.lang.UnsatisfiedLinkError: flashattn4j: cannot load the native library"), first);
        for (String part : messageParts) assertTrue(first.contains(part), () -> "'" + first + "' lacks '" + part + "'");
        assertEquals(first, attempts.get(1), "a later call must rethrow the first failure, not NoClassDefFoundError");
    }

    private static List<Path> extractedEntries(Path root) throws IOException {
        try (Stream<Path> entries = Files.list(root)) {
            return entries.filter(p -> p.getFileName().toString().startsWith("flashattn4j-")).toList();
        }
    }

    private static List<String> names(Path directory) throws IOException {
        try (Stream<Path> entries = Files.list(directory)) {
            return entries.map(p -> p.getFileName().toString()).sorted().toList();
        }
    }

    @Test
    void anUnusableTemporaryDirectoryIsNamedWithTheCauseAndTheRemedy(@TempDir Path temp) throws Exception {
        // A path below a regular file: no directory can be made there, not even by root (as CI runs).
        Path file = Files.writeString(temp.resolve("a-file"), "not a directory");
        Path unusable = file.resolve("tmp");
        assertFailsTheSameWayTwice(run(List.of("-Djava.io.tmpdir=" + unusable)),
                unusable.toString(), "java.io.tmpdir", "Not a directory", "-Dflashattn4j.tmpdir=", "-Dflashattn4j.library.path=");
        assertFailsTheSameWayTwice(run(List.of("-Dflashattn4j.tmpdir=" + unusable)),
                unusable.toString(), "(from -Dflashattn4j.tmpdir)", "Not a directory");
    }

    @Test
    void aReadOnlyTemporaryDirectoryIsNamedWithTheCause(@TempDir Path temp) throws Exception {
        Path readOnly = Files.createDirectory(temp.resolve("read-only"));
        // Permissions stop other users; root (as CI runs) is stopped by the immutable attribute instead.
        boolean immutable = false;
        assertTrue(readOnly.toFile().setWritable(false, false));
        try {
            if (Files.isWritable(readOnly)) immutable = run("chattr", "+i", readOnly.toString());
            Assumptions.assumeTrue(!Files.isWritable(readOnly) || immutable, "no way to make a directory read-only for root here");
            String first = run(List.of("-Djava.io.tmpdir=" + readOnly)).get(0);
            assertTrue(first.contains("permission denied") || first.contains("Operation not permitted"), first);
            assertFailsTheSameWayTwice(run(List.of("-Djava.io.tmpdir=" + readOnly)), readOnly.toString(), "-Dflashattn4j.tmpdir=");
        } finally {
            if (immutable) run("chattr", "-i", readOnly.toString());
            readOnly.toFile().setWritable(true, true);
        }
    }

    /** Runs a command; whether it succeeded (false also when it does not exist). */
    private static boolean run(String... command) throws InterruptedException {
        try {
            Process p = new ProcessBuilder(command).redirectErrorStream(true).redirectOutput(ProcessBuilder.Redirect.DISCARD).start();
            return p.waitFor(30, TimeUnit.SECONDS) && p.exitValue() == 0;
        } catch (IOException e) {
            return false;
        }
    }

    @Test
    void aNoexecTemporaryDirectoryIsNamedWithTheRemedy() throws Exception {
        // Only where the machine offers a writable noexec mount (none can be made without privileges).
        Path noexec = null;
        for (String line : Files.readAllLines(Path.of("/proc/mounts"))) {
            String[] fields = line.split(" ");
            if (fields.length > 3 && List.of(fields[3].split(",")).contains("noexec") && List.of(fields[3].split(",")).contains("rw")) {
                Path mount = Path.of(fields[1]);
                if (Files.isDirectory(mount) && Files.isWritable(mount) && !mount.startsWith("/proc") && !mount.startsWith("/sys")
                        && !mount.startsWith("/dev") && !mount.startsWith("/run")) {
                    noexec = mount;
                    break;
                }
            }
        }
        Assumptions.assumeTrue(noexec != null, "no writable noexec mount on this machine");
        Path root = Files.createTempDirectory(noexec, "fa4j-test-");
        try {
            assertFailsTheSameWayTwice(run(List.of("-Djava.io.tmpdir=" + root)), "noexec", "-Dflashattn4j.tmpdir=",
                    "-Dflashattn4j.library.path=");
        } finally {
            try (Stream<Path> all = Files.walk(root)) {
                for (Path p : all.sorted(java.util.Comparator.reverseOrder()).toList()) Files.deleteIfExists(p);
            }
        }
    }

    @Test
    void aFileThatIsNotALibraryIsRefusedWithDlopensReason(@TempDir Path temp) throws Exception {
        Path bogus = Files.writeString(temp.resolve(LIBRARY_FILE), "not an ELF file");
        assertFailsTheSameWayTwice(run(List.of("-D" + NativeLibrary.PATH_PROPERTY + "=" + bogus)), bogus.toString());
        assertFailsTheSameWayTwice(run(List.of("-D" + NativeLibrary.PATH_PROPERTY + "=" + temp.resolve("missing.so"))),
                "does not name a file");
    }

    @Test
    void jvmsShareOneExtractedCopyEvenWhenKilled(@TempDir Path root) throws Exception {
        List<String> properties = List.of("-Djava.io.tmpdir=" + root);
        // Several JVMs starting together on an empty directory.
        List<Process> together = new ArrayList<>();
        for (int i = 0; i < 3; i++) together.add(probe(properties).start());
        for (Process p : together) {
            String output = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
            assertTrue(p.waitFor(60, TimeUnit.SECONDS) && p.exitValue() == 0, output);
            assertTrue(output.lines().filter(l -> l.startsWith("ok ")).count() == 2, output);
        }
        List<Path> entries = extractedEntries(root);
        assertEquals(1, entries.size(), () -> "copies: " + entries);
        Path directory = entries.get(0);
        Path library = directory.resolve(LIBRARY_FILE);
        assertEquals(List.of(LIBRARY_FILE), names(directory));

        // JVMs killed with SIGKILL after loading (no shutdown hook, no deleteOnExit) leave nothing new.
        for (int i = 0; i < 2; i++) {
            Process held = probe(properties, "hold").start();
            BufferedReader out = new BufferedReader(new InputStreamReader(held.getInputStream(), StandardCharsets.UTF_8));
            String line = out.readLine();
            assertTrue(line != null && line.equals("ok " + library), "child said " + line);
            held.destroyForcibly();
            assertTrue(held.waitFor(60, TimeUnit.SECONDS));
        }

        // A partial write of a JVM killed while extracting, and a damaged copy: the next JVM removes the
        // one and replaces the other.
        long deadPid = together.get(0).pid();
        Path partial = directory.resolve(LIBRARY_FILE + "." + deadPid + ".tmp");
        Files.writeString(partial, "half a library");
        long size = Files.size(library);
        Files.writeString(library, "damaged");
        List<String> attempts = run(properties);
        assertEquals("ok " + library, attempts.get(0));
        assertEquals(List.of(LIBRARY_FILE), names(directory));
        assertEquals(size, Files.size(library));

        // Eight JVMs in all, one copy.
        run(properties);
        assertEquals(List.of(directory), extractedEntries(root));
    }

    @Test
    void aDefaultStreamAsTheFirstTouchLoadsTheLibrary(@TempDir Path root) throws Exception {
        List<String> lines = run(List.of("-Djava.io.tmpdir=" + root), "stream-first");
        String first = lines.get(0);
        // Without a GPU: the typed error of a missing device, not an error of class initialization.
        assertTrue(first.equals("first ok") || first.startsWith("first io.github.flashattn4j.FlashAttnException"), first);
        assertTrue(lines.get(1).startsWith("ok "), lines::toString);
    }
}
