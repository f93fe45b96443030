package io.github.flashattn4j.tests;

import io.github.flashattn4j.DType;

import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Dtype rounding written for the tests (not the library's), and FlashAttention's tolerance rule:
 * error(kernel vs fp64) ≤ 2 · error(plain implementation vs fp64) + ε. NaN never passes.
 *
 * <p>ε is FlashAttention-3's atol (hopper/test_flash_attn.py: {@code 2 * (ref + 0.3 - 0.3 - ref).abs().max()}
 * in the dtype): twice the rounding error the dtype makes at the reference's magnitude, the error a correct
 * result stored in that dtype may have on its own, with a flat floor per dtype. Without it, a case with only
 * a handful of rows (one query, two heads) compares two maxima over a few random rounding errors each, and the
 * plain implementation's can be the smaller by more than 2x by luck (seed 3021572601566216457, dk of a
 * one-query fp16 window case: kernel 4.1e-4, plain 1.2e-4; the rounding unit of those values is 2.4e-4).
 */
final class Precision {

    private Precision() {}

    static double round(double x, DType dtype) {
        float f = (float) x;
        return switch (dtype) {
            case FLOAT32 -> f;
            case FLOAT16 -> Float.float16ToFloat(Float.floatToFloat16(f));
            case BFLOAT16 -> roundBf16(f);
            case INT32 -> (int) Math.rint(f);  // nearest, ties to even, saturating; NaN to 0
            case INT8 -> Math.max(-128, Math.min(127, (int) Math.rint(f)));
            case INT4 -> Math.max(-8, Math.min(7, (int) Math.rint(f)));
            case FLOAT8_E4M3FN -> roundSmallFloat(f, E4M3, 464);
            case FLOAT8_E5M2 -> roundSmallFloat(f, E5M2, 61440);
        };
    }

    /** The finite non-negative values of float8_e4m3fn and float8_e5m2 by code, from the formats' definitions. */
    static final double[] E4M3 = smallFloatValues(3, 7, 0x7e);
    static final double[] E5M2 = smallFloatValues(2, 15, 0x7b);

    private static double[] smallFloatValues(int mantissaBits, int bias, int largestCode) {
        double[] values = new double[largestCode + 1];
        for (int code = 0; code <= largestCode; code++) {
            int exponent = code >> mantissaBits, mantissa = code & ((1 << mantissaBits) - 1);
            values[code] = exponent == 0 ? Math.scalb((double) mantissa, 1 - bias - mantissaBits)
                    : Math.scalb(1 + mantissa / (double) (1 << mantissaBits), exponent - bias);
        }
        return values;
    }

    /**
     * x rounded to the nearest of {@code values} (a format's finite magnitudes by code), ties to the even
     * code, by search; from {@code overflow} on (the midpoint past the largest value) the format's overflow:
     * NaN for e4m3fn (no infinity), infinity for e5m2.
     */
    static float roundSmallFloat(float x, double[] values, double overflow) {
        if (Float.isNaN(x)) return Float.NaN;
        double a = Math.abs((double) x);
        boolean e4m3 = values == E4M3;
        if (a > overflow || (a == overflow && !e4m3) || Double.isInfinite(a)) {
            return e4m3 ? Float.NaN : Math.copySign(Float.POSITIVE_INFINITY, x);
        }
        int best = 0;
        for (int code = 1; code < values.length; code++) {
            double d = Math.abs(values[code] - a), bestD = Math.abs(values[best] - a);
            if (d < bestD || (d == bestD && code % 2 == 0)) best = code;
        }
        return (float) Math.copySign(values[best], x);
    }

    /** Round-to-nearest-even to bfloat16, by adding half an ulp of the kept bits (NaN kept as NaN). */
    static float roundBf16(float f) {
        if (Float.isNaN(f)) return f;
        int bits = Float.floatToRawIntBits(f);
        int lsb = (bits >>> 16) & 1;
        return Float.intBitsToFloat((bits + 0x7fff + lsb) & 0xffff0000);
    }

    /** FlashAttention-3's atol for a reference {@code exact}: see the class comment. */
    static double epsilon(double[] exact, DType dtype) {
        return Math.max(epsilon(dtype), 2 * resolution(exact, dtype));
    }

    /** The largest {@code |(r + 0.3) - 0.3 - r|} in the dtype over the finite references r, rounded to it. */
    static double resolution(double[] exact, DType dtype) {
        double worst = 0;
        for (double x : exact) {
            if (!Double.isFinite(x)) continue;
            double r = round(x, dtype);
            worst = Math.max(worst, Math.abs(round(round(r + 0.3, dtype) - 0.3, dtype) - r));
        }
        return worst;
    }

    /** The flat floor of ε per dtype. */
    static double epsilon(DType dtype) {
        return switch (dtype) {
            case FLOAT32 -> 1e-5;
            case FLOAT16 -> 1e-4;
            case BFLOAT16 -> 1e-3;
            case INT32, INT8, INT4, FLOAT8_E4M3FN, FLOAT8_E5M2 ->
                    throw new IllegalArgumentException("attention does not compute in " + dtype);
        };
    }

    /** Largest |a - b|; equal infinities count as 0; NaN anywhere gives NaN. */
    static double maxError(float[] a, double[] b) {
        return maxError(a.length, i -> a[i], b);
    }

    static double maxError(double[] a, double[] b) {
        return maxError(a.length, i -> a[i], b);
    }

    private static double maxError(int length, java.util.function.IntToDoubleFunction a, double[] b) {
        double max = 0;
        for (int i = 0; i < length; i++) {
            double x = a.applyAsDouble(i);
            double e = x == b[i] ? 0 : Math.abs(x - b[i]);
            if (Double.isNaN(e)) return Double.NaN;
            max = Math.max(max, e);
        }
        return max;
    }

    /** Asserts the tolerance rule and returns a one-line report. */
    static String check(String name, float[] kernel, double[] exact, double[] plain, DType dtype) {
        double error = maxError(kernel, exact);
        double bound = 2 * maxError(plain, exact) + epsilon(exact, dtype);
        String line = String.format("%s err %.3e bound %.3e", name, error, bound);
        assertTrue(error <= bound, () -> name + ": max |kernel - fp64| = " + error + " exceeds " + bound);
        return line;
    }
}
