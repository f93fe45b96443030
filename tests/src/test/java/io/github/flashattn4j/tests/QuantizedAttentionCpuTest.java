package io.github.flashattn4j.tests;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.AttentionOutput;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.FlashAttnException;
import io.github.flashattn4j.PackedSequences;
import io.github.flashattn4j.QuantizationMode;
import io.github.flashattn4j.QuantizedTensor;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;
import io.github.flashattn4j.bench.AccuracyInputs;
import io.github.flashattn4j.bench.QuantAccuracy;
import io.github.flashattn4j.bench.QuantAccuracy.Metrics;
import io.github.flashattn4j.bench.QuantAccuracy.Path;
import io.github.flashattn4j.bench.QuantAccuracy.Smoothing;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import java.util.HashMap;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * Quantized attention on the CPU (the reference implementation): accuracy against float64 on the accuracy
 * harness's inputs at small sizes with fresh seeds (the issue's acceptance bounds where the arithmetic
 * meets them, regression bounds with margin where docs/ACCURACY.md shows it does not), lse, pre-quantized
 * inputs giving the call's own result bit for bit, and the refusals.
 */
class QuantizedAttentionCpuTest {

    private static final int N = 256, HQ = 4, HKV = 2, D = 64;

    private static final QuantizationMode[] MODES = {QuantizationMode.SAGE_INT8_FP8, QuantizationMode.SAGE_INT8_FP16,
            QuantizationMode.SAGE_INT4_FP8, QuantizationMode.SAGE_INT4_FP16, QuantizationMode.FP8};

    private static Path path(QuantizationMode mode, Smoothing smoothing) {
        return new Path(mode, smoothing);
    }

    /** Every path's metrics on one input set. */
    private static Map<Path, Metrics> measureAll(AccuracyInputs in, boolean causal) {
        double[] reference = in.reference(causal);
        Map<Path, Metrics> m = new HashMap<>();
        for (Path p : QuantAccuracy.paths()) m.put(p, QuantAccuracy.measure(in, reference, causal, p));
        return m;
    }

    private static void atLeast(double bound, double value, String what) {
        assertTrue(value >= bound, () -> what + " = " + value + " < " + bound);
    }

    private static void atMost(double bound, double value, String what) {
        assertTrue(value <= bound, () -> what + " = " + value + " > " + bound);
    }

    /**
     * Gaussian inputs. The issue's bound (cos >= 0.999, rel-L1 <= max(0.02, 1.5 x bf16)) holds for INT8 q·kᵀ
     * with FP16 P·v; with FP8 P·v cos >= 0.999 holds and rel-L1 is about 0.035 (P's and v's e4m3 roundings),
     * checked against 0.045 here; FP8 attention about 0.05 (bounded by 0.065) and cos 0.9985 (0.998); INT4
     * cos about 0.98 (0.97). Measured over 40 seeds: docs/ACCURACY.md.
     */
    @Test
    void gaussianInputs() {
        long seed = Seeds.fresh();
        for (boolean causal : new boolean[] {false, true}) {
            AccuracyInputs in = AccuracyInputs.of(AccuracyInputs.Distribution.GAUSSIAN, seed, 1, N, HQ, HKV, D);
            Map<Path, Metrics> m = measureAll(in, causal);
            String at = " (Gaussian, causal " + causal + ", seed " + seed + ")";
            Metrics bf16 = m.get(path(QuantizationMode.NONE, Smoothing.NONE));
            atLeast(0.99999, bf16.cosine(), "bf16 cos" + at);
            double issueL1 = Math.max(0.02, 1.5 * bf16.relativeL1());
            Metrics int8fp16 = m.get(path(QuantizationMode.SAGE_INT8_FP16, Smoothing.K));
            atLeast(0.999, int8fp16.cosine(), "SAGE_INT8_FP16 cos" + at);
            atMost(issueL1, int8fp16.relativeL1(), "SAGE_INT8_FP16 rel-L1" + at);
            Metrics int8fp8 = m.get(path(QuantizationMode.SAGE_INT8_FP8, Smoothing.K));
            atLeast(0.999, int8fp8.cosine(), "SAGE_INT8_FP8 cos" + at);
            atMost(0.045, int8fp8.relativeL1(), "SAGE_INT8_FP8 rel-L1" + at);
            Metrics fp8 = m.get(path(QuantizationMode.FP8, Smoothing.K));
            atLeast(0.998, fp8.cosine(), "FP8 cos" + at);
            atMost(0.065, fp8.relativeL1(), "FP8 rel-L1" + at);
            for (QuantizationMode mode : new QuantizationMode[] {QuantizationMode.SAGE_INT4_FP8, QuantizationMode.SAGE_INT4_FP16}) {
                atLeast(0.97, m.get(path(mode, Smoothing.K_AND_Q)).cosine(), mode + " cos" + at);
            }
        }
    }

    /**
     * LLM-like inputs (key offsets up to 20x the noise, outlier channels): smoothing is what makes the
     * quantized paths usable, and the 8-bit paths stay near the bf16 kernel (cos >= 0.999 with FP16 P·v;
     * about 0.9991 with FP8 P·v, checked against 0.998).
     */
    @Test
    void llmLikeInputs() {
        long seed = Seeds.fresh();
        for (boolean causal : new boolean[] {false, true}) {
            AccuracyInputs in = AccuracyInputs.of(AccuracyInputs.Distribution.LLM_LIKE, seed, 1, N, HQ, HKV, D);
            Map<Path, Metrics> m = measureAll(in, causal);
            String at = " (LLM-like, causal " + causal + ", seed " + seed + ")";
            atLeast(0.9995, m.get(path(QuantizationMode.NONE, Smoothing.NONE)).cosine(), "bf16 cos" + at);
            atLeast(0.999, m.get(path(QuantizationMode.SAGE_INT8_FP16, Smoothing.K)).cosine(), "SAGE_INT8_FP16 cos" + at);
            atMost(0.045, m.get(path(QuantizationMode.SAGE_INT8_FP16, Smoothing.K)).relativeL1(), "SAGE_INT8_FP16 rel-L1" + at);
            atLeast(0.998, m.get(path(QuantizationMode.SAGE_INT8_FP8, Smoothing.K)).cosine(), "SAGE_INT8_FP8 cos" + at);
            atMost(0.06, m.get(path(QuantizationMode.SAGE_INT8_FP8, Smoothing.K)).relativeL1(), "SAGE_INT8_FP8 rel-L1" + at);
            atLeast(0.99, m.get(path(QuantizationMode.FP8, Smoothing.K)).cosine(), "FP8 cos" + at);
            atLeast(0.90, m.get(path(QuantizationMode.SAGE_INT4_FP8, Smoothing.K_AND_Q)).cosine(), "SAGE_INT4_FP8 cos" + at);
            // Smoothing matters here: every mode is clearly worse without it.
            for (QuantizationMode mode : MODES) {
                Smoothing best = mode.dtype(QuantizedTensor.Operand.Q) == DType.INT4 ? Smoothing.K_AND_Q : Smoothing.K;
                Metrics smoothed = m.get(path(mode, best)), raw = m.get(path(mode, Smoothing.NONE));
                assertTrue(smoothed.relativeL1() < raw.relativeL1() && smoothed.cosine() > raw.cosine(),
                        () -> mode + " without smoothing " + raw + " is not worse than with " + smoothed + at);
            }
        }
    }

    /**
     * lse against float64. Without K smoothing's correction (softmax_scale·q·mean(k) added back) lse would be
     * off by about 14 on the LLM-like inputs; with it, lse errs by the scores' quantization error on top of the
     * bf16 inputs' rounding (which alone costs up to 0.2 there). Bounds: 1.7 x the maxima over 20 seeds.
     */
    @Test
    void lseMatchesTheFloat64Reference() {
        long seed = Seeds.fresh();
        for (AccuracyInputs.Distribution distribution : AccuracyInputs.Distribution.values()) {
            AccuracyInputs in = AccuracyInputs.of(distribution, seed, 1, 200, HQ, HKV, D);
            double[] reference = in.referenceLse(true);
            try (TensorScope scope = TensorScope.open()) {
                Tensor q = scope.fromArray(floats(in.q()), DType.BFLOAT16, Device.CPU, 1, 200, HQ, D);
                Tensor k = scope.fromArray(floats(in.k()), DType.BFLOAT16, Device.CPU, 1, 200, HKV, D);
                Tensor v = scope.fromArray(floats(in.v()), DType.BFLOAT16, Device.CPU, 1, 200, HKV, D);
                for (QuantizationMode mode : MODES) {
                    AttentionOptions o = AttentionOptions.builder().causal(true).quantization(mode).build();
                    float[] lse = scope.track(Attention.forward(q, k, v, o)).lse().toFloatArray();
                    double bound = mode.dtype(QuantizedTensor.Operand.Q) == DType.INT4 ? 3.5 : mode == QuantizationMode.FP8 ? 1.5 : 0.4;
                    atMost(bound, Precision.maxError(lse, reference), mode + " max |lse - fp64| (" + distribution + ", seed " + seed + ")");
                }
            }
        }
    }

    private static float[] floats(double[] x) {
        float[] f = new float[x.length];
        for (int i = 0; i < x.length; i++) f[i] = (float) x[i];
        return f;
    }

    /**
     * Pre-quantized inputs (QuantizedTensor.quantize, the same quantizers) give the call's own result bit
     * for bit: all three pre-quantized (out; lse differs by the K smoothing correction, which uses q as
     * given), and a bf16 q with a pre-quantized key-value cache (out and lse). GQA and a window too.
     */
    @ParameterizedTest
    @EnumSource(value = QuantizationMode.class, names = "NONE", mode = EnumSource.Mode.EXCLUDE)
    void prequantizedInputsGiveTheCallsOwnResult(QuantizationMode mode) {
        long seed = Seeds.fresh();
        AccuracyInputs in = AccuracyInputs.of(AccuracyInputs.Distribution.LLM_LIKE, seed, 2, 150, HQ, HKV, D);
        try (TensorScope scope = TensorScope.open()) {
            Tensor q = scope.fromArray(floats(in.q()), DType.BFLOAT16, Device.CPU, 2, 150, HQ, D);
            Tensor k = scope.fromArray(floats(in.k()), DType.BFLOAT16, Device.CPU, 2, 150, HKV, D);
            Tensor v = scope.fromArray(floats(in.v()), DType.BFLOAT16, Device.CPU, 2, 150, HKV, D);
            AttentionOptions o = AttentionOptions.builder().causal(true).window(100, 0).quantization(mode).smoothQ(false).build();
            AttentionOutput direct = scope.track(Attention.forward(q, k, v, o));
            QuantizedTensor qq = scope.track(QuantizedTensor.quantize(q, mode, QuantizedTensor.Operand.Q));
            QuantizedTensor kq = scope.track(QuantizedTensor.quantize(k, mode, QuantizedTensor.Operand.K));
            var vq = mode.pvInFloat16() ? v : scope.track(QuantizedTensor.quantize(v, mode, QuantizedTensor.Operand.V));
            assertEquals(mode.dtype(QuantizedTensor.Operand.K), kq.data().dtype());
            AttentionOutput all = scope.track(Attention.forward(qq, kq, vq, o));
            assertEquals(DType.BFLOAT16, all.out().dtype());
            assertArrayEquals(direct.out().toShortArray(), all.out().toShortArray(), "out, seed " + seed);
            AttentionOutput cache = scope.track(Attention.forward(q, kq, vq, o));
            assertArrayEquals(direct.out().toShortArray(), cache.out().toShortArray(), "out with a quantized cache, seed " + seed);
            assertArrayEquals(direct.lse().toFloatArray(), cache.lse().toFloatArray(), "lse with a quantized cache, seed " + seed);
            // Into the caller's outputs, float32 this time where all inputs are pre-quantized (out then chooses).
            Tensor out = scope.empty(mode.pvInFloat16() ? DType.BFLOAT16 : DType.FLOAT32, Device.CPU, 2, 150, HQ, D);
            Tensor lse = scope.empty(DType.FLOAT32, Device.CPU, 2, HQ, 150);
            Attention.forwardInto(qq, kq, vq, out, lse, o);
            // The float32 result differs from the bf16 one only by that final rounding: at most one bf16 ulp
            // relative to the element (an absolute bound fails where LLM-like values are large).
            float[] wide = out.toFloatArray();
            float[] narrow = all.out().toFloatArray();
            for (int i = 0; i < wide.length; i++) {
                double allowed = 0x1p-7 * Math.abs(narrow[i]) + 1e-6;
                if (!(Math.abs(wide[i] - narrow[i]) <= allowed)) {
                    fail("float32 out[" + i + "] = " + wide[i] + " vs bf16 " + narrow[i] + ", seed " + seed);
                }
            }
        }
    }

    @Test
    void unsupportedCombinationsAreRefusedWithTheirReason() {
        try (TensorScope scope = TensorScope.open()) {
            Tensor q = scope.randn(DType.BFLOAT16, Device.CPU, 1, 1, 16, HQ, D);
            Tensor k = scope.randn(DType.BFLOAT16, Device.CPU, 2, 1, 16, HKV, D);
            Tensor v = scope.randn(DType.BFLOAT16, Device.CPU, 3, 1, 16, HKV, D);
            AttentionOptions sage = AttentionOptions.builder().quantization(QuantizationMode.SAGE_INT8_FP8).build();
            AttentionOutput fwd = scope.track(Attention.forward(q, k, v, AttentionOptions.defaults()));
            // Backward: forward only.
            FlashAttnException.Unsupported backward = assertThrows(FlashAttnException.Unsupported.class,
                    () -> Attention.backward(fwd.out(), q, k, v, fwd.out(), fwd.lse(), sage));
            assertTrue(backward.getMessage().contains("forward only"), backward.getMessage());
            // Softcap.
            Attention.Support softcap = Attention.checkForward(q, k, v, sage.toBuilder().softcap(30).build());
            FlashAttnException e = assertThrows(FlashAttnException.Unsupported.class,
                    () -> Attention.forward(q, k, v, sage.toBuilder().softcap(30).build()));
            assertEquals(e.getMessage(), softcap.reason());
            // Varlen.
            Tensor cu = scope.fromInts(new int[] {0, 16}, Device.CPU, 2);
            Tensor packedQ = q.reshape(16, HQ, D), packedK = k.reshape(16, HKV, D), packedV = v.reshape(16, HKV, D);
            assertThrows(FlashAttnException.Unsupported.class,
                    () -> Attention.forward(PackedSequences.of(packedQ, cu, 16), PackedSequences.of(packedK, cu, 16), packedV, sage));
            // A pre-quantized input whose scale has the wrong shape, or that belongs to another mode.
            QuantizedTensor kq = scope.track(QuantizedTensor.quantize(k, QuantizationMode.SAGE_INT8_FP8, QuantizedTensor.Operand.K));
            Tensor wrongScale = scope.zeros(DType.FLOAT32, Device.CPU, 1, HKV, 2);
            FlashAttnException.InvalidArgument shape = assertThrows(FlashAttnException.InvalidArgument.class,
                    () -> Attention.forward(q, QuantizedTensor.of(kq.data(), wrongScale), v, sage));
            assertTrue(shape.getMessage().contains("k_scale"), shape.getMessage());
            AttentionOptions int4 = AttentionOptions.builder().quantization(QuantizationMode.SAGE_INT4_FP8).build();
            FlashAttnException.InvalidArgument dtype = assertThrows(FlashAttnException.InvalidArgument.class,
                    () -> Attention.forward(q, kq, v, int4));
            assertTrue(dtype.getMessage().contains("int4"), dtype.getMessage());
            assertEquals(dtype.getMessage(), Attention.checkForward(q, kq, v, int4).reason());
            // A pre-quantized input without a mode.
            assertThrows(FlashAttnException.InvalidArgument.class, () -> Attention.forward(q, kq, v, AttentionOptions.defaults()));
            // v is not quantized for FP16 P·v.
            assertThrows(FlashAttnException.InvalidArgument.class,
                    () -> QuantizedTensor.quantize(v, QuantizationMode.SAGE_INT8_FP16, QuantizedTensor.Operand.V));
        }
    }

    @Test
    void optionsCarryTheModeAndSmoothing() {
        AttentionOptions o = AttentionOptions.builder().quantization(QuantizationMode.SAGE_INT4_FP8).smoothK(false).build();
        assertEquals(QuantizationMode.SAGE_INT4_FP8, o.quantization());
        assertTrue(!o.smoothK() && o.smoothQ());
        assertEquals(o, o.toBuilder().build());
        assertTrue(!o.equals(o.toBuilder().smoothQ(false).build()));
        assertEquals(QuantizationMode.NONE, AttentionOptions.defaults().quantization());
        assertTrue(o.toString().contains("SAGE_INT4_FP8"), o::toString);
        assertArrayEquals(new long[] {2, 3, 5}, QuantizationMode.SAGE_INT8_FP8.scaleShape(QuantizedTensor.Operand.K, 2, 600, 3, 64));
        assertArrayEquals(new long[] {2, 3, 600}, QuantizationMode.SAGE_INT8_FP8.scaleShape(QuantizedTensor.Operand.Q, 2, 600, 3, 64));
        assertArrayEquals(new long[] {2, 3, 64}, QuantizationMode.SAGE_INT8_FP8.scaleShape(QuantizedTensor.Operand.V, 2, 600, 3, 64));
        assertArrayEquals(new long[] {2, 3}, QuantizationMode.FP8.scaleShape(QuantizedTensor.Operand.Q, 2, 600, 3, 64));
        assertEquals(null, QuantizationMode.SAGE_INT4_FP16.scaleShape(QuantizedTensor.Operand.V, 2, 600, 3, 64));
    }
}
