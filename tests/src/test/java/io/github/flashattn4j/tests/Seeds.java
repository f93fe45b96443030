package io.github.flashattn4j.tests;

import java.util.SplittableRandom;

/**
 * Seeds of the randomized tests: fresh every run, so that the inputs are never the same twice, and fixed by
 * {@code -Dfa4j.seed=N} to replay a failure (the failing seed is printed in the message).
 */
final class Seeds {
    private static final String PROPERTY = "fa4j.seed";

    private Seeds() {}

    static long fresh() {
        String fixed = System.getProperty(PROPERTY);
        return fixed != null && !fixed.isBlank() ? Long.parseLong(fixed.strip()) : new SplittableRandom().nextLong();
    }
}
