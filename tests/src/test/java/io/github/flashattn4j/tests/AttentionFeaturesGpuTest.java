package io.github.flashattn4j.tests;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import java.util.stream.Stream;

/**
 * The cases of {@link AttentionFeaturesCpuTest} on cuda:0 (in float16 and bfloat16): softcap, ALiBi
 * ([heads_q] and [batch, heads_q]), sliding windows (causal sliding, two-sided, left-only, right-only, the
 * diagonal alone, rows with no key), everything together, and head dims 8 to 256, forward and backward
 * (backward required up to head dim 128), with kernel families AUTO, SM80 and SM90 (SM90 forward on Hopper
 * only; elsewhere it must be refused), against the float64 reference and the CPU backend. Every case the
 * specification requires must run: a refusal fails with its message (see {@link BackendRuns}). Skipped,
 * visibly, without a GPU.
 */
class AttentionFeaturesGpuTest extends GpuTest {

    static Stream<AttentionFeatures.Case> cases() {
        return AttentionFeatures.cases(true);
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("cases")
    void matchesFloat64ReferenceAndTheCpuBackend(AttentionFeatures.Case c) {
        AttentionFeatures.check(c, CUDA0);
    }
}
