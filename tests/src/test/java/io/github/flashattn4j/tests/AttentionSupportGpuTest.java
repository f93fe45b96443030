package io.github.flashattn4j.tests;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.AttentionOutput;
import io.github.flashattn4j.Cuda;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.FlashAttnException;
import io.github.flashattn4j.KernelFamily;
import io.github.flashattn4j.PackedSequences;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;
import org.junit.jupiter.api.Test;

import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The support queries on cuda:0: what the CUDA kernels do not implement (softcap, ALiBi, sliding windows,
 * variable-length batches, float32, the CPU kernel family; SM90 off Hopper) is answered "unsupported" with
 * exactly the message the call throws ({@link FlashAttnException.Unsupported}), forward and backward; what
 * they implement is answered supported and runs; answering needs no synchronization and leaves the device
 * usable.
 */
class AttentionSupportGpuTest extends GpuTest {

    private static final long B = 2, NQ = 64, NK = 96, HQ = 4, HKV = 2, D = 64;

    private static void sameRefusal(String feature, Attention.Support s, Runnable call) {
        assertFalse(s.supported(), () -> feature + ": the query accepts it");
        FlashAttnException e = assertThrows(FlashAttnException.Unsupported.class, call::run, feature);
        assertEquals(e.getMessage(), s.reason(), feature);
        assertTrue(s.reason().startsWith("fa4j_attention: "), s::reason);
    }

    @Test
    void featuresTheCudaKernelsDoNotImplementAreRefusedAlikeByQueryAndCall() {
        try (TensorScope scope = TensorScope.open()) {
            Tensor q = scope.randn(DType.BFLOAT16, CUDA0, 1, B, NQ, HQ, D);
            Tensor k = scope.randn(DType.BFLOAT16, CUDA0, 2, B, NK, HKV, D);
            Tensor v = scope.randn(DType.BFLOAT16, CUDA0, 3, B, NK, HKV, D);
            Tensor dout = scope.randn(DType.BFLOAT16, CUDA0, 4, B, NQ, HQ, D);
            AttentionOptions causal = AttentionOptions.builder().causal(true).build();
            AttentionOutput fwd = scope.track(Attention.forward(q, k, v, causal));
            Tensor slopes = scope.fromArray(new float[] {0.5f, 0.25f, 0.125f, 0.0625f}, DType.FLOAT32, CUDA0, HQ);

            List<Map.Entry<String, AttentionOptions>> refused = List.of(
                    Map.entry("softcap", causal.toBuilder().softcap(30).build()),
                    Map.entry("ALiBi", causal.toBuilder().alibiSlopes(slopes).build()),
                    Map.entry("sliding windows", causal.toBuilder().window(16, 0).build()),
                    Map.entry("sliding windows", AttentionOptions.builder().window(8, 8).build()),
                    Map.entry("kernel family CPU", causal.toBuilder().kernelFamily(KernelFamily.CPU).build()));
            for (Map.Entry<String, AttentionOptions> e : refused) {
                AttentionOptions o = e.getValue();
                Attention.Support forward = Attention.checkForward(q, k, v, o);
                sameRefusal(e.getKey() + " forward", forward, () -> Attention.forward(q, k, v, o));
                assertTrue(forward.reason().contains(e.getKey()), forward::reason);
                sameRefusal(e.getKey() + " backward", Attention.checkBackward(dout, q, k, v, fwd.out(), fwd.lse(), o),
                        () -> Attention.backward(dout, q, k, v, fwd.out(), fwd.lse(), o));
            }
            // The device still works, and what the kernels implement is supported and runs (the backward
            // needs more shared memory than GPUs other than Hopper have: there query and call must agree).
            for (AttentionOptions o : new AttentionOptions[] {causal, AttentionOptions.defaults(),
                    causal.toBuilder().kernelFamily(KernelFamily.SM80).build()}) {
                assertEquals(Attention.Support.SUPPORTED, Attention.checkForward(q, k, v, o));
                AttentionOutput again = scope.track(Attention.forward(q, k, v, o));
                for (float x : again.out().toFloatArray()) assertTrue(Float.isFinite(x));
                Attention.Support backward = Attention.checkBackward(dout, q, k, v, fwd.out(), fwd.lse(), o);
                if (backward.supported()) scope.track(Attention.backward(dout, q, k, v, fwd.out(), fwd.lse(), o));
                else sameRefusal("backward", backward, () -> Attention.backward(dout, q, k, v, fwd.out(), fwd.lse(), o));
            }
        }
    }

    @Test
    void sm90IsSupportedExactlyOnHopper() {
        boolean hopper = Cuda.properties(0).computeCapabilityMajor() == 9 && Cuda.properties(0).computeCapabilityMinor() == 0;
        try (TensorScope scope = TensorScope.open()) {
            Tensor q = scope.randn(DType.FLOAT16, CUDA0, 1, B, NQ, HQ, D);
            Tensor k = scope.randn(DType.FLOAT16, CUDA0, 2, B, NK, HKV, D);
            AttentionOptions o = AttentionOptions.builder().kernelFamily(KernelFamily.SM90).build();
            Attention.Support s = Attention.checkForward(q, k, k, o);
            if (hopper) {
                assertEquals(Attention.Support.SUPPORTED, s);
                scope.track(Attention.forward(q, k, k, o));
            } else {
                sameRefusal("SM90 off Hopper", s, () -> Attention.forward(q, k, k, o));
            }
        }
    }

    @Test
    void float32AndVarlenAreRefusedAlikeByQueryAndCall() {
        try (TensorScope scope = TensorScope.open()) {
            Tensor q = scope.randn(DType.FLOAT32, CUDA0, 1, B, NQ, HQ, D);
            Tensor k = scope.randn(DType.FLOAT32, CUDA0, 2, B, NK, HKV, D);
            AttentionOptions o = AttentionOptions.defaults();
            sameRefusal("float32", Attention.checkForward(q, k, k, o), () -> Attention.forward(q, k, k, o));

            Tensor tq = scope.randn(DType.BFLOAT16, CUDA0, 3, B * NQ, HQ, D);
            Tensor tk = scope.randn(DType.BFLOAT16, CUDA0, 4, B * NK, HKV, D);
            PackedSequences pq = PackedSequences.of(tq, scope.fromInts(new int[] {0, (int) NQ, (int) (2 * NQ)}, CUDA0, 3), NQ);
            PackedSequences pk = PackedSequences.of(tk, scope.fromInts(new int[] {0, (int) NK, (int) (2 * NK)}, CUDA0, 3), NK);
            Attention.Support s = Attention.checkForward(pq, pk, tk, o);
            sameRefusal("varlen", s, () -> Attention.forward(pq, pk, tk, o));
            assertTrue(s.reason().contains("variable-length"), s::reason);
            // CUDA calls must give the maximum lengths (they are not read on the host): refused as invalid.
            PackedSequences noMax = PackedSequences.of(tq, pq.cuSeqlens(), 0);
            Attention.Support invalid = Attention.checkForward(noMax, pk, tk, o);
            assertFalse(invalid.supported());
            FlashAttnException e = assertThrows(FlashAttnException.InvalidArgument.class, () -> Attention.forward(noMax, pk, tk, o));
            assertEquals(e.getMessage(), invalid.reason());
        }
    }
}
