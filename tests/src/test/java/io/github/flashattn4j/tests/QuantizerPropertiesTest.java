package io.github.flashattn4j.tests;

import io.github.flashattn4j.DType;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.QuantizationMode;
import io.github.flashattn4j.QuantizedTensor;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.Example;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.constraints.IntRange;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Properties of the quantizers ({@link QuantizedTensor#quantize}, the arithmetic every backend shares):
 * dequantized values within half a step of the input (integers) or within e4m3's relative precision
 * (float8), scales that are exactly amax / max of their documented groups, saturation at the group's
 * maximum, K smoothing's mean added back, and the documented results for NaN, infinite, zero and tiny
 * groups.
 */
class QuantizerPropertiesTest {

    /** A [1, seq, heads, d] float32 input whose groups span magnitudes from 1e-3 to 1e4. */
    private static float[] input(long seed, int n) {
        SplittableRandom random = new SplittableRandom(seed);
        float[] x = new float[n];
        double scale = Math.pow(10, random.nextDouble(-3, 4));
        for (int i = 0; i < n; i++) {
            double v = random.nextGaussian() * scale;
            if (random.nextInt(50) == 0) v *= 30;  // outliers that set a group's amax
            x[i] = (float) v;
        }
        return x;
    }

    @Provide
    Arbitrary<QuantizationMode> integerModes() {
        return Arbitraries.of(QuantizationMode.SAGE_INT8_FP8, QuantizationMode.SAGE_INT8_FP16, QuantizationMode.SAGE_INT4_FP8,
                QuantizationMode.SAGE_INT4_FP16);
    }

    /** Index of the scale group of element (s, h, c) for the SageAttention modes' q (per token) and k (per 128 keys). */
    private static int group(QuantizedTensor.Operand operand, int seq, int heads, int s, int h) {
        return operand == QuantizedTensor.Operand.Q ? h * seq + s : h * ((seq + 127) / 128) + s / 128;
    }

    @Property(tries = 60)
    void integersAreWithinHalfAStepOfTheInput(@ForAll("integerModes") QuantizationMode mode, @ForAll boolean keys,
                                              @ForAll @IntRange(min = 1, max = 300) int seq, @ForAll @IntRange(min = 1, max = 3) int heads,
                                              @ForAll long seed) {
        int d = 16, qmax = mode.dtype(QuantizedTensor.Operand.Q) == DType.INT4 ? 7 : 127;
        QuantizedTensor.Operand operand = keys ? QuantizedTensor.Operand.K : QuantizedTensor.Operand.Q;
        float[] x = input(seed, seq * heads * d);
        try (TensorScope scope = TensorScope.open()) {
            Tensor in = scope.fromArray(x, DType.FLOAT32, Device.CPU, 1, seq, heads, d);
            QuantizedTensor quantized = scope.track(QuantizedTensor.quantize(in, mode, operand, false));
            float[] values = quantized.data().toFloatArray(), scales = quantized.scale().toFloatArray();
            float[] amax = new float[scales.length];
            for (int s = 0; s < seq; s++)
                for (int h = 0; h < heads; h++)
                    for (int c = 0; c < d; c++) {
                        int g = group(operand, seq, heads, s, h);
                        amax[g] = Math.max(amax[g], Math.abs(x[(s * heads + h) * d + c]));
                    }
            for (int g = 0; g < scales.length; g++) assertEquals(amax[g] / qmax, scales[g], "scale of group " + g + " is amax / " + qmax);
            for (int s = 0; s < seq; s++)
                for (int h = 0; h < heads; h++)
                    for (int c = 0; c < d; c++) {
                        int i = (s * heads + h) * d + c;
                        int g = group(operand, seq, heads, s, h);
                        float q = values[i], scale = scales[g];
                        assertTrue(Math.abs(q) <= qmax && q == Math.rint(q), "value " + q + " outside [-" + qmax + ", " + qmax + "]");
                        double error = Math.abs((double) q * scale - x[i]);
                        assertTrue(error <= scale * (0.5 + 0x1p-12), () -> "|" + q + " * " + scale + " - " + x[i] + "| = " + error);
                        // Saturation: the group's largest element is exactly ±qmax.
                        if (Math.abs(x[i]) == amax[g]) assertEquals(Math.copySign(qmax, x[i]), q);
                    }
        }
    }

    @Property(tries = 40)
    void smoothedKeysDequantizeToTheInputMinusTheMean(@ForAll("integerModes") QuantizationMode mode,
                                                      @ForAll @IntRange(min = 1, max = 300) int seq, @ForAll long seed) {
        int d = 8, heads = 2;
        float[] x = input(seed, seq * heads * d);
        for (int i = 0; i < x.length; i++) x[i] += (i % d) * 50f;  // per-channel offsets
        try (TensorScope scope = TensorScope.open()) {
            Tensor in = scope.fromArray(x, DType.FLOAT32, Device.CPU, 1, seq, heads, d);
            QuantizedTensor k = scope.track(QuantizedTensor.quantize(in, mode, QuantizedTensor.Operand.K));
            float[] values = k.data().toFloatArray(), scales = k.scale().toFloatArray(), mean = k.mean().toFloatArray();
            for (int h = 0; h < heads; h++)
                for (int c = 0; c < d; c++) {
                    double exact = 0, magnitude = 0;
                    for (int s = 0; s < seq; s++) {
                        exact += x[(s * heads + h) * d + c];
                        magnitude += Math.abs(x[(s * heads + h) * d + c]);
                    }
                    exact /= seq;
                    // float32 sums of seq terms, then a division: a rounding of 2^-24 per addition at most.
                    double tolerance = (seq + 2) * 0x1p-24 * magnitude / seq + Math.abs(exact) * 0x1p-23;
                    assertEquals(exact, mean[h * d + c], tolerance, "mean of channel " + c);
                }
            for (int s = 0; s < seq; s++)
                for (int h = 0; h < heads; h++)
                    for (int c = 0; c < d; c++) {
                        int i = (s * heads + h) * d + c;
                        float scale = scales[group(QuantizedTensor.Operand.K, seq, heads, s, h)];
                        float smoothed = x[i] - mean[h * d + c];  // rounded to float, as the quantizer sees it
                        double error = Math.abs((double) values[i] * scale - smoothed);
                        assertTrue(error <= scale * (0.5 + 0x1p-12), () -> "element " + i + ": error " + error + ", scale " + scale);
                    }
        }
    }

    @Property(tries = 60)
    void float8IsWithinE4m3Precision(@ForAll @IntRange(min = 0, max = 2) int operandIndex, @ForAll @IntRange(min = 1, max = 200) int seq,
                                     @ForAll long seed) {
        QuantizedTensor.Operand operand = QuantizedTensor.Operand.values()[operandIndex];
        int d = 16, heads = 2;
        float[] x = input(seed, seq * heads * d);
        for (QuantizationMode mode : new QuantizationMode[] {QuantizationMode.FP8, QuantizationMode.SAGE_INT8_FP8}) {
            if (mode != QuantizationMode.FP8 && operand != QuantizedTensor.Operand.V) continue;  // SAGE: only v is float8
            try (TensorScope scope = TensorScope.open()) {
                Tensor in = scope.fromArray(x, DType.FLOAT32, Device.CPU, 1, seq, heads, d);
                QuantizedTensor quantized = scope.track(QuantizedTensor.quantize(in, mode, operand, false));
                assertEquals(DType.FLOAT8_E4M3FN, quantized.data().dtype());
                float[] values = quantized.data().toFloatArray(), scales = quantized.scale().toFloatArray();
                boolean perChannel = mode != QuantizationMode.FP8;
                float[] amax = new float[scales.length];
                for (int i = 0; i < x.length; i++) {
                    int g = perChannel ? (i / d % heads) * d + i % d : i / d % heads;
                    amax[g] = Math.max(amax[g], Math.abs(x[i]));
                }
                for (int g = 0; g < scales.length; g++) assertEquals(amax[g] / 448f, scales[g]);
                for (int i = 0; i < x.length; i++) {
                    int g = perChannel ? (i / d % heads) * d + i % d : i / d % heads;
                    float e = values[i], scale = scales[g];
                    assertTrue(Math.abs(e) <= 448f, "beyond the e4m3 range: " + e);
                    // Half an e4m3 step: 2^-4 relative for normal numbers, 2^-10 (in units of the scale) below 2^-6.
                    double error = Math.abs((double) e * scale - x[i]);
                    double bound = Math.max(Math.abs(x[i]) * 0x1p-4, scale * 0x1p-10) * (1 + 0x1p-10) + Math.abs(x[i]) * 0x1p-20;
                    int at = i;
                    assertTrue(error <= bound, () -> mode + " " + operand + ": |" + e + " * " + scale + " - " + x[at] + "| = " + error);
                    if (Math.abs(x[i]) == amax[g]) assertEquals(Math.copySign(448f, x[i]), e);
                }
            }
        }
    }

    @Example
    void nonFiniteZeroAndTinyGroups() {
        // Four tokens of one head: NaN, +infinity, all zero, amax 2^-101 (below 2^-100: treated as zero).
        int d = 8;
        float[] x = new float[4 * d];
        x[3] = Float.NaN;
        x[d + 1] = Float.POSITIVE_INFINITY;
        x[3 * d + 5] = 0x1p-101f;
        for (QuantizationMode mode : new QuantizationMode[] {QuantizationMode.SAGE_INT8_FP8, QuantizationMode.SAGE_INT4_FP16}) {
            try (TensorScope scope = TensorScope.open()) {
                Tensor in = scope.fromArray(x, DType.FLOAT32, Device.CPU, 1, 4, 1, d);
                QuantizedTensor q = scope.track(QuantizedTensor.quantize(in, mode, QuantizedTensor.Operand.Q));
                float[] scales = q.scale().toFloatArray();
                assertTrue(Float.isNaN(scales[0]) && Float.isNaN(scales[1]), "non-finite groups have scale NaN");
                assertEquals(0f, scales[2]);
                assertEquals(0f, scales[3]);
                for (float value : q.data().toFloatArray()) assertEquals(0f, Math.abs(value), "every value of these groups is 0");
            }
        }
        try (TensorScope scope = TensorScope.open()) {
            Tensor in = scope.fromArray(x, DType.FLOAT32, Device.CPU, 1, 4, 1, d);
            QuantizedTensor v = scope.track(QuantizedTensor.quantize(in, QuantizationMode.FP8, QuantizedTensor.Operand.V));
            assertTrue(Float.isNaN(v.scale().toFloatArray()[0]));
            for (float value : v.data().toFloatArray()) assertTrue(Float.isNaN(value), "float8 values of a non-finite group are NaN");
        }
    }
}
