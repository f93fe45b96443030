package io.github.flashattn4j.tests;

import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The committed jextract bindings match the C header: every function, enum constant, integer macro, struct
 * and struct field the header declares has its generated counterpart (and the macro's value agrees). CI has
 * no jextract, so this is how a header change without regenerated bindings (bindings/regenerate.sh) is caught.
 * Paths come from the system properties fa4j.header and fa4j.bindings.sources (set by the tests' pom).
 */
class BindingsFreshnessTest {

    private static final String PACKAGE_DIR = "io/github/flashattn4j/internal/bindings";

    private static String header() throws IOException {
        String path = System.getProperty("fa4j.header");
        assertTrue(path != null && Files.isRegularFile(Path.of(path)), "system property fa4j.header must name the C header: " + path);
        // Comments out, so that names inside them are not mistaken for declarations.
        return Files.readString(Path.of(path)).replaceAll("(?s)/\\*.*?\\*/", " ").replaceAll("//[^\n]*", " ");
    }

    private static Path bindings() {
        String path = System.getProperty("fa4j.bindings.sources");
        assertTrue(path != null && Files.isDirectory(Path.of(path, PACKAGE_DIR)), "system property fa4j.bindings.sources must name bindings/src/main/java: " + path);
        return Path.of(path, PACKAGE_DIR);
    }

    private static String generatedHeaderClass() throws IOException {
        StringBuilder all = new StringBuilder();
        try (var files = Files.list(bindings())) {
            for (Path p : files.filter(f -> f.getFileName().toString().startsWith("flashattn4j_h")).toList()) {
                all.append(Files.readString(p));
            }
        }
        return all.toString();
    }

    private static List<String> all(Pattern pattern, String text) {
        List<String> found = new ArrayList<>();
        Matcher m = pattern.matcher(text);
        while (m.find()) found.add(m.group(1));
        return found;
    }

    @Test
    void everyFunctionHasABinding() throws IOException {
        List<String> functions = all(Pattern.compile("FA4J_API\\s+[\\w\\s\\*]+?\\b(fa4j_\\w+)\\s*\\("), header());
        assertTrue(functions.size() >= 15, "the header parser found only " + functions);
        String generated = generatedHeaderClass();
        List<String> missing = functions.stream()
                .filter(f -> !Pattern.compile("public static \\w+ " + f + "\\(").matcher(generated).find()).toList();
        assertTrue(missing.isEmpty(), "functions declared in the header but missing from the bindings (run bindings/regenerate.sh): " + missing);
        // ... and nothing stale: every generated fa4j_ function is still declared.
        List<String> stale = all(Pattern.compile("public static \\w+ (fa4j_\\w+)\\("), generated).stream()
                .distinct().filter(f -> !functions.contains(f)).toList();
        assertTrue(stale.isEmpty(), "bindings for functions the header no longer declares: " + stale);
    }

    @Test
    void everyConstantHasABindingWithTheSameValue() throws IOException {
        String header = header();
        Map<String, Long> constants = new LinkedHashMap<>();
        Matcher macro = Pattern.compile("#define\\s+(FA4J_\\w+)\\s+(-?\\d+)\\b").matcher(header);
        while (macro.find()) constants.put(macro.group(1), Long.parseLong(macro.group(2)));
        Matcher enumerator = Pattern.compile("\\b(FA4J_[A-Z0-9_]+)\\s*=\\s*(-?\\d+)").matcher(header);
        while (enumerator.find()) constants.put(enumerator.group(1), Long.parseLong(enumerator.group(2)));
        assertTrue(constants.size() >= 10, "the header parser found only " + constants.keySet());
        String generated = generatedHeaderClass();
        List<String> wrong = new ArrayList<>();
        constants.forEach((name, value) -> {
            Matcher m = Pattern.compile("private static final \\w+ " + name + " = \\(\\w+\\)(-?\\d+)L;").matcher(generated);
            if (!m.find()) wrong.add(name + " missing");
            else if (Long.parseLong(m.group(1)) != value) wrong.add(name + " = " + m.group(1) + " in the bindings, " + value + " in the header");
        });
        assertTrue(wrong.isEmpty(), "constants out of date (run bindings/regenerate.sh): " + wrong);
    }

    @Test
    void everyStructAndFieldHasABinding() throws IOException {
        Matcher struct = Pattern.compile("typedef\\s+struct\\s+(\\w+)\\s*\\{([^}]*)\\}\\s*\\w+\\s*;").matcher(header());
        int structs = 0;
        List<String> missing = new ArrayList<>();
        while (struct.find()) {
            structs++;
            String name = struct.group(1);
            Path file = bindings().resolve(name + ".java");
            if (!Files.isRegularFile(file)) {
                missing.add(name + " (no " + file.getFileName() + ")");
                continue;
            }
            String generated = Files.readString(file);
            for (String field : all(Pattern.compile("(\\w+)\\s*(?:\\[\\s*\\w+\\s*\\])?\\s*;"), struct.group(2))) {
                if (!generated.contains("public static ") || !Pattern.compile("\\b" + field + "\\(MemorySegment struct\\)").matcher(generated).find()) {
                    missing.add(name + "." + field);
                }
            }
        }
        assertTrue(structs >= 5, "the header parser found only " + structs + " structs");
        assertTrue(missing.isEmpty(), "structs or fields missing from the bindings (run bindings/regenerate.sh): " + missing);
    }

    @Test
    void bindingsAreMarkedGenerated() throws IOException {
        try (var files = Files.list(bindings())) {
            List<Path> sources = files.filter(f -> f.toString().endsWith(".java")).toList();
            assertFalse(sources.isEmpty());
            for (Path p : sources) {
                assertTrue(Files.readString(p).contains("Generated by jextract"), p + " does not look jextract-generated");
            }
        }
    }
}
