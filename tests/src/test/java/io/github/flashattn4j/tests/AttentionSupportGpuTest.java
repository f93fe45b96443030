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
 * The support queries on cuda:0 against the attention v2 specification: softcap, ALiBi, sliding windows,
 * variable-length batches and head dims up to 256 (forward) are supported, forward and backward (head dims
 * up to 128), with kernel families AUTO and SM80, and the calls run; what CUDA does not implement (float32,
 * the CPU kernel family, SM90 off Hopper) is answered "unsupported" with exactly the message the call throws
 * ({@link FlashAttnException.Unsupported}); where the specification lets the backend choose (the backward
 * above head dim 128, the SM90 backward) query and call agree. Answering needs no synchronization and leaves
 * the device usable.
 */
class AttentionSupportGpuTest extends GpuTest {

    private static final long B = 2, NQ = 64, NK = 96, HQ = 4, HKV = 2, D = 64;

    private static void sameRefusal(String feature, Attention.Support s, Runnable call) {
        assertFalse(s.supported(), () -> feature + ": the query accepts it");
        FlashAttnException e = assertThrows(FlashAttnException.Unsupported.class, call::run, feature);
        assertEquals(e.getMessage(), s.reason(), feature);
        assertTrue(s.reason().startsWith("fa4j_attention: "), s::reason);
    }

    private static void supported(String feature, Attention.Support s) {
        assertTrue(s.supported(), () -> feature + " is required by the specification, but the query refuses it: " + s.reason());
    }

    /** Either both accept (and the call runs) or both refuse alike. */
    private static void queryAndCallAgree(String what, Attention.Support s, Runnable call) {
        if (s.supported()) call.run();
        else sameRefusal(what, s, call);
    }

    @Test
    void theV2FeaturesAreSupportedAndRun() {
        try (TensorScope scope = TensorScope.open()) {
            Tensor q = scope.randn(DType.BFLOAT16, CUDA0, 1, B, NQ, HQ, D);
            Tensor k = scope.randn(DType.BFLOAT16, CUDA0, 2, B, NK, HKV, D);
            Tensor v = scope.randn(DType.BFLOAT16, CUDA0, 3, B, NK, HKV, D);
            Tensor dout = scope.randn(DType.BFLOAT16, CUDA0, 4, B, NQ, HQ, D);
            AttentionOptions causal = AttentionOptions.builder().causal(true).build();
            Tensor slopes = scope.fromArray(new float[] {0.5f, 0.25f, 0.125f, 0.0625f}, DType.FLOAT32, CUDA0, HQ);
            Tensor slopesPerBatch = scope.fromArray(new float[] {0.5f, 0.25f, 0.125f, 0.0625f, 1f, 0.5f, 0.25f, 0.125f},
                    DType.FLOAT32, CUDA0, B, HQ);
            List<Map.Entry<String, AttentionOptions>> features = List.of(
                    Map.entry("softcap", causal.toBuilder().softcap(30).build()),
                    Map.entry("ALiBi [H]", causal.toBuilder().alibiSlopes(slopes).build()),
                    Map.entry("ALiBi [B,H]", AttentionOptions.builder().alibiSlopes(slopesPerBatch).build()),
                    Map.entry("causal sliding window", causal.toBuilder().window(16, 0).build()),
                    Map.entry("two-sided window", AttentionOptions.builder().window(8, 8).build()),
                    Map.entry("everything", causal.toBuilder().window(32, 0).softcap(20).alibiSlopes(slopes).build()));
            for (KernelFamily family : new KernelFamily[] {KernelFamily.AUTO, KernelFamily.SM80}) {
                for (Map.Entry<String, AttentionOptions> e : features) {
                    AttentionOptions o = e.getValue().toBuilder().kernelFamily(family).build();
                    String what = e.getKey() + " " + family;
                    supported(what + " forward", Attention.checkForward(q, k, v, o));
                    AttentionOutput fwd = scope.track(Attention.forward(q, k, v, o));
                    for (float x : fwd.out().toFloatArray()) assertTrue(Float.isFinite(x), what);
                    supported(what + " backward", Attention.checkBackward(dout, q, k, v, fwd.out(), fwd.lse(), o));
                    scope.track(Attention.backward(dout, q, k, v, fwd.out(), fwd.lse(), o));
                }
            }
            // Variable-length batches, with used key lengths.
            Tensor tq = scope.randn(DType.BFLOAT16, CUDA0, 5, B * NQ, HQ, D);
            Tensor tk = scope.randn(DType.BFLOAT16, CUDA0, 6, B * NK, HKV, D);
            Tensor td = scope.randn(DType.BFLOAT16, CUDA0, 7, B * NQ, HQ, D);
            PackedSequences pq = PackedSequences.of(tq, scope.fromInts(new int[] {0, (int) NQ, (int) (2 * NQ)}, CUDA0, 3), NQ);
            PackedSequences pk = PackedSequences.of(tk, scope.fromInts(new int[] {0, (int) NK, (int) (2 * NK)}, CUDA0, 3), NK)
                    .withUsedLengths(scope.fromInts(new int[] {(int) NK, 50}, CUDA0, 2));
            for (AttentionOptions o : new AttentionOptions[] {causal, causal.toBuilder().kernelFamily(KernelFamily.SM80).build()}) {
                supported("varlen forward " + o.kernelFamily(), Attention.checkForward(pq, pk, tk, o));
                AttentionOutput fwd = scope.track(Attention.forward(pq, pk, tk, o));
                supported("varlen backward " + o.kernelFamily(), Attention.checkBackward(td, pq, pk, tk, fwd.out(), fwd.lse(), o));
                scope.track(Attention.backward(td, pq, pk, tk, fwd.out(), fwd.lse(), o));
            }
            // Head dims above 128: the forward is required; the backward may be refused, alike by query and call.
            for (int d : new int[] {136, 192, 256}) {
                Tensor q2 = scope.randn(DType.FLOAT16, CUDA0, 8, B, NQ, HQ, d);
                Tensor k2 = scope.randn(DType.FLOAT16, CUDA0, 9, B, NK, HKV, d);
                supported("forward head_dim " + d, Attention.checkForward(q2, k2, k2, causal));
                AttentionOutput fwd = scope.track(Attention.forward(q2, k2, k2, causal));
                queryAndCallAgree("backward head_dim " + d, Attention.checkBackward(q2, q2, k2, k2, fwd.out(), fwd.lse(), causal),
                        () -> scope.track(Attention.backward(q2, q2, k2, k2, fwd.out(), fwd.lse(), causal)));
            }
            Cuda.synchronize(0);
        }
    }

    @Test
    void whatCudaDoesNotImplementIsRefusedAlikeByQueryAndCall() {
        try (TensorScope scope = TensorScope.open()) {
            Tensor q = scope.randn(DType.BFLOAT16, CUDA0, 1, B, NQ, HQ, D);
            Tensor k = scope.randn(DType.BFLOAT16, CUDA0, 2, B, NK, HKV, D);
            Tensor dout = scope.randn(DType.BFLOAT16, CUDA0, 4, B, NQ, HQ, D);
            AttentionOutput fwd = scope.track(Attention.forward(q, k, k, AttentionOptions.defaults()));
            AttentionOptions cpu = AttentionOptions.builder().kernelFamily(KernelFamily.CPU).build();
            sameRefusal("kernel family CPU forward", Attention.checkForward(q, k, k, cpu), () -> Attention.forward(q, k, k, cpu));
            sameRefusal("kernel family CPU backward", Attention.checkBackward(dout, q, k, k, fwd.out(), fwd.lse(), cpu),
                    () -> Attention.backward(dout, q, k, k, fwd.out(), fwd.lse(), cpu));

            Tensor q32 = scope.randn(DType.FLOAT32, CUDA0, 1, B, NQ, HQ, D);
            Tensor k32 = scope.randn(DType.FLOAT32, CUDA0, 2, B, NK, HKV, D);
            AttentionOptions o = AttentionOptions.defaults();
            sameRefusal("float32", Attention.checkForward(q32, k32, k32, o), () -> Attention.forward(q32, k32, k32, o));

            // CUDA calls must give the maximum lengths (they are not read on the host): refused as invalid.
            Tensor tq = scope.randn(DType.BFLOAT16, CUDA0, 3, B * NQ, HQ, D);
            Tensor tk = scope.randn(DType.BFLOAT16, CUDA0, 4, B * NK, HKV, D);
            PackedSequences noMax = PackedSequences.of(tq, scope.fromInts(new int[] {0, (int) NQ, (int) (2 * NQ)}, CUDA0, 3), 0);
            PackedSequences pk = PackedSequences.of(tk, scope.fromInts(new int[] {0, (int) NK, (int) (2 * NK)}, CUDA0, 3), NK);
            Attention.Support invalid = Attention.checkForward(noMax, pk, tk, o);
            assertFalse(invalid.supported());
            FlashAttnException e = assertThrows(FlashAttnException.InvalidArgument.class, () -> Attention.forward(noMax, pk, tk, o));
            assertEquals(e.getMessage(), invalid.reason());
            // The device still works.
            for (float x : scope.track(Attention.forward(q, k, k, o)).out().toFloatArray()) assertTrue(Float.isFinite(x));
        }
    }

    @Test
    void sm90IsSupportedExactlyOnHopperAndItsBackwardAgreesWithTheQuery() {
        boolean hopper = Cuda.properties(0).computeCapabilityMajor() == 9 && Cuda.properties(0).computeCapabilityMinor() == 0;
        try (TensorScope scope = TensorScope.open()) {
            Tensor q = scope.randn(DType.FLOAT16, CUDA0, 1, B, NQ, HQ, D);
            Tensor k = scope.randn(DType.FLOAT16, CUDA0, 2, B, NK, HKV, D);
            AttentionOptions o = AttentionOptions.builder().kernelFamily(KernelFamily.SM90).build();
            Attention.Support s = Attention.checkForward(q, k, k, o);
            AttentionOutput auto = scope.track(Attention.forward(q, k, k, AttentionOptions.defaults()));
            Attention.Support backward = Attention.checkBackward(q, q, k, k, auto.out(), auto.lse(), o);
            if (hopper) {
                assertEquals(Attention.Support.SUPPORTED, s);
                scope.track(Attention.forward(q, k, k, o));
                queryAndCallAgree("SM90 backward", backward, () -> scope.track(Attention.backward(q, q, k, k, auto.out(), auto.lse(), o)));
            } else {
                sameRefusal("SM90 off Hopper", s, () -> Attention.forward(q, k, k, o));
                sameRefusal("SM90 backward off Hopper", backward, () -> Attention.backward(q, q, k, k, auto.out(), auto.lse(), o));
            }
        }
    }
}
