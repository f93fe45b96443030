package io.github.flashattn4j.tests;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import java.util.stream.Stream;

/**
 * The cases of {@link VarlenAttentionCpuTest} on cuda:0 (float16 and bfloat16, maximum lengths given):
 * packed sequences with cu_seqlens_q/k, with and without seqused_k, zero-length sequences, GQA, causal
 * masks aligned per sequence, windows, softcap and ALiBi per sequence, head dims up to 256, forward and
 * backward (backward required up to head dim 128), kernel families AUTO, SM80 and SM90 (see
 * {@link BackendRuns}), against the float64 reference and the CPU backend. Skipped, visibly, without a GPU.
 */
class VarlenAttentionGpuTest extends GpuTest {

    static Stream<VarlenAttention.Case> cases() {
        return VarlenAttention.cases(true);
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("cases")
    void matchesFloat64ReferencePerSequenceAndTheCpuBackend(VarlenAttention.Case c) {
        VarlenAttention.check(c, CUDA0);
    }
}
