package io.github.flashattn4j.tests;

import io.github.flashattn4j.Device;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import java.util.stream.Stream;

/**
 * Softcap, ALiBi, sliding windows and head dims 8 to 256 on the CPU backend, forward and backward, against
 * the float64 reference: the cases and checks of {@link AttentionFeatures}, in float32, float16 and
 * bfloat16. {@link AttentionFeaturesGpuTest} runs the same cases on CUDA.
 */
class AttentionFeaturesCpuTest {

    static Stream<AttentionFeatures.Case> cases() {
        return AttentionFeatures.cases(false);
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("cases")
    void matchesFloat64Reference(AttentionFeatures.Case c) {
        AttentionFeatures.check(c, Device.CPU);
    }
}
