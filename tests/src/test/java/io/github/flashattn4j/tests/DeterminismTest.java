package io.github.flashattn4j.tests;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionGradients;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.AttentionOutput;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Deterministic mode on the CPU, which promises it for every call: with {@code deterministic(true)} the
 * forward and the backward give the same bits run to run and whatever the thread count (GQA, causal,
 * ragged sizes: the case where a backward summing dK/dV over query heads could otherwise depend on the
 * order of work), and the support queries accept the option.
 */
class DeterminismTest {

    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"FLOAT32", "FLOAT16", "BFLOAT16"})
    void sameBitsRunToRunAndForEveryThreadCount(DType dtype) {
        long seed = Seeds.fresh();
        long[] qShape = {2, 77, 8, 64}, kShape = {2, 131, 2, 64};
        try (TensorScope scope = TensorScope.open()) {
            Tensor q = scope.randn(dtype, Device.CPU, seed, qShape);
            Tensor k = scope.randn(dtype, Device.CPU, seed + 1, kShape);
            Tensor v = scope.randn(dtype, Device.CPU, seed + 2, kShape);
            Tensor dout = scope.randn(dtype, Device.CPU, seed + 3, qShape);
            float[][] first = null;
            for (int threads : new int[] {1, 2, 3, 1}) {
                AttentionOptions options = AttentionOptions.builder().causal(true).deterministic(true).numThreads(threads).build();
                assertTrue(Attention.checkForward(q, k, v, options).supported());
                AttentionOutput o = scope.track(Attention.forward(q, k, v, options));
                assertTrue(Attention.checkBackward(dout, q, k, v, o.out(), o.lse(), options).supported());
                AttentionGradients g = scope.track(Attention.backward(dout, q, k, v, o.out(), o.lse(), options));
                float[][] now = {o.out().toFloatArray(), o.lse().toFloatArray(), g.dq().toFloatArray(),
                        g.dk().toFloatArray(), g.dv().toFloatArray()};
                if (first == null) {
                    first = now;
                    continue;
                }
                for (int i = 0; i < now.length; i++) {
                    assertEquals(first[i].length, now[i].length);
                    int[] a = bits(first[i]), b = bits(now[i]);
                    assertArrayEquals(a, b, "output " + i + " with " + threads + " threads differs (seed " + seed + ")");
                }
            }
        }
    }

    private static int[] bits(float[] values) {
        int[] bits = new int[values.length];
        for (int i = 0; i < values.length; i++) bits[i] = Float.floatToRawIntBits(values[i]);
        return bits;
    }
}
