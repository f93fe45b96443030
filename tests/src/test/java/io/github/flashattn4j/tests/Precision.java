package io.github.flashattn4j.tests;

import io.github.flashattn4j.DType;

import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Dtype rounding written for the tests (not the library's), and FlashAttention's tolerance rule:
 * error(kernel vs fp64) ≤ 2 · error(plain implementation vs fp64) + ε. NaN never passes.
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
        };
    }

    /** Round-to-nearest-even to bfloat16, by adding half an ulp of the kept bits (NaN kept as NaN). */
    static float roundBf16(float f) {
        if (Float.isNaN(f)) return f;
        int bits = Float.floatToRawIntBits(f);
        int lsb = (bits >>> 16) & 1;
        return Float.intBitsToFloat((bits + 0x7fff + lsb) & 0xffff0000);
    }

    static double epsilon(DType dtype) {
        return switch (dtype) {
            case FLOAT32 -> 1e-5;
            case FLOAT16 -> 1e-4;
            case BFLOAT16 -> 1e-3;
            case INT32 -> throw new IllegalArgumentException("attention does not compute in int32");
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
        double bound = 2 * maxError(plain, exact) + epsilon(dtype);
        String line = String.format("%s err %.3e bound %.3e", name, error, bound);
        assertTrue(error <= bound, () -> name + ": max |kernel - fp64| = " + error + " exceeds " + bound);
        return line;
    }
}
