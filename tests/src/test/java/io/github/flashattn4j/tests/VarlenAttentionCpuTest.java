package io.github.flashattn4j.tests;

import io.github.flashattn4j.Device;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import java.util.stream.Stream;

/**
 * Variable-length batches on the CPU backend against the float64 reference computed sequence by sequence:
 * the cases and checks of {@link VarlenAttention}. {@link VarlenAttentionGpuTest} runs the same cases on CUDA.
 */
class VarlenAttentionCpuTest {

    static Stream<VarlenAttention.Case> cases() {
        return VarlenAttention.cases(false);
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("cases")
    void matchesFloat64ReferencePerSequence(VarlenAttention.Case c) {
        VarlenAttention.check(c, Device.CPU);
    }
}
