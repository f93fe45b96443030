package io.github.flashattn4j.tests;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.AttentionOutput;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.FlashAttnException;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Deterministic mode on CUDA: every forward kernel promises it (each output element is written by one
 * block), so a deterministic forward runs and repeats bit for bit; the backward kernels accumulate dQ in
 * arrival order and do not, so a deterministic backward is refused as Unsupported, with the message the
 * support query gives, and writes nothing.
 */
class DeterminismGpuTest extends GpuTest {

    @Test
    void deterministicForwardRepeatsAndBackwardIsRefused() {
        long seed = Seeds.fresh();
        long[] shape = {2, 200, 4, 64};
        AttentionOptions options = AttentionOptions.builder().causal(true).deterministic(true).build();
        try (TensorScope scope = TensorScope.open()) {
            Tensor q = scope.randn(DType.BFLOAT16, CUDA0, seed, shape);
            Tensor k = scope.randn(DType.BFLOAT16, CUDA0, seed + 1, shape);
            Tensor v = scope.randn(DType.BFLOAT16, CUDA0, seed + 2, shape);
            Tensor dout = scope.randn(DType.BFLOAT16, CUDA0, seed + 3, shape);
            assertTrue(Attention.checkForward(q, k, v, options).supported());
            AttentionOutput a = scope.track(Attention.forward(q, k, v, options));
            AttentionOutput b = scope.track(Attention.forward(q, k, v, options));
            assertArrayEquals(a.out().toShortArray(), b.out().toShortArray(), "out differs run to run (seed " + seed + ")");
            assertArrayEquals(a.lse().toFloatArray(), b.lse().toFloatArray(), "lse differs run to run (seed " + seed + ")");

            Attention.Support support = Attention.checkBackward(dout, q, k, v, a.out(), a.lse(), options);
            assertFalse(support.supported());
            assertTrue(support.reason().contains("deterministic"), support.reason());
            Tensor dq = scope.track(Tensor.full(Float.NaN, DType.BFLOAT16, CUDA0, shape));
            Tensor dk = scope.track(Tensor.full(Float.NaN, DType.BFLOAT16, CUDA0, shape));
            Tensor dv = scope.track(Tensor.full(Float.NaN, DType.BFLOAT16, CUDA0, shape));
            FlashAttnException.Unsupported e = assertThrows(FlashAttnException.Unsupported.class,
                    () -> Attention.backwardInto(dout, q, k, v, a.out(), a.lse(), dq, dk, dv, options));
            assertEquals(support.reason(), e.getMessage());
            for (float x : dq.toFloatArray()) assertTrue(Float.isNaN(x), "a refused call wrote dq");
            AttentionOptions nondeterministic = options.toBuilder().deterministic(false).build();
            assertTrue(Attention.checkBackward(dout, q, k, v, a.out(), a.lse(), nondeterministic).supported());
        }
    }
}
