package io.github.flashattn4j;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * Reads and writes elements of each dtype as floats, at element offsets (INT4: nibble offsets, the even
 * element in the low nibble). Conversions are those {@link DType} documents, bit for bit the native
 * library's (core/dtype.hpp): round to nearest even, NaN kept, overflow to infinity (float8_e4m3fn: NaN);
 * integers to nearest even, saturating, NaN to 0.
 */
final class ElementCodec {

    private ElementCodec() {}

    static float get(MemorySegment segment, long element, DType dtype) {
        return switch (dtype) {
            case FLOAT32 -> segment.get(ValueLayout.JAVA_FLOAT, element * 4);
            case FLOAT16 -> Float.float16ToFloat(segment.get(ValueLayout.JAVA_SHORT, element * 2));
            case BFLOAT16 -> bf16ToFloat(segment.get(ValueLayout.JAVA_SHORT, element * 2));
            case INT32 -> segment.get(ValueLayout.JAVA_INT, element * 4);
            case FLOAT8_E4M3FN -> e4m3ToFloat(segment.get(ValueLayout.JAVA_BYTE, element));
            case FLOAT8_E5M2 -> e5m2ToFloat(segment.get(ValueLayout.JAVA_BYTE, element));
            case INT8 -> segment.get(ValueLayout.JAVA_BYTE, element);
            case INT4 -> int4(segment.get(ValueLayout.JAVA_BYTE, element >> 1), element);
        };
    }

    static void set(MemorySegment segment, long element, DType dtype, float value) {
        switch (dtype) {
            case FLOAT32 -> segment.set(ValueLayout.JAVA_FLOAT, element * 4, value);
            case FLOAT16 -> segment.set(ValueLayout.JAVA_SHORT, element * 2, Float.floatToFloat16(value));
            case BFLOAT16 -> segment.set(ValueLayout.JAVA_SHORT, element * 2, floatToBf16(value));
            case INT32 -> segment.set(ValueLayout.JAVA_INT, element * 4, toInt(value));
            case FLOAT8_E4M3FN -> segment.set(ValueLayout.JAVA_BYTE, element, floatToE4m3(value));
            case FLOAT8_E5M2 -> segment.set(ValueLayout.JAVA_BYTE, element, floatToE5m2(value));
            case INT8 -> segment.set(ValueLayout.JAVA_BYTE, element, (byte) saturate(value, -128, 127));
            case INT4 -> {
                long at = element >> 1;
                int old = segment.get(ValueLayout.JAVA_BYTE, at) & 0xff;
                int nibble = saturate(value, -8, 7) & 0xf;
                int updated = (element & 1) == 0 ? (old & 0xf0) | nibble : (old & 0x0f) | (nibble << 4);
                segment.set(ValueLayout.JAVA_BYTE, at, (byte) updated);
            }
        }
    }

    /** The int4 value of element {@code element} in its byte. */
    static int int4(byte packed, long element) {
        int nibble = (element & 1) == 0 ? packed & 0xf : (packed >> 4) & 0xf;
        return nibble >= 8 ? nibble - 16 : nibble;
    }

    static float bf16ToFloat(short bits) {
        return Float.intBitsToFloat((bits & 0xffff) << 16);
    }

    static short floatToBf16(float value) {
        int bits = Float.floatToRawIntBits(value);
        if ((bits & 0x7fffffff) > 0x7f800000) return (short) ((bits >>> 16) | 0x40);  // quiet NaN
        bits += 0x7fff + ((bits >>> 16) & 1);
        return (short) (bits >>> 16);
    }

    static float e4m3ToFloat(byte code) {
        int magnitude = code & 0x7f;
        float sign = code < 0 ? -1f : 1f;
        if (magnitude == 0x7f) return Float.NaN;
        int exponent = magnitude >> 3, mantissa = magnitude & 7;
        if (exponent == 0) return sign * mantissa * 0x1p-9f;
        return sign * Float.intBitsToFloat(((exponent + 120) << 23) | (mantissa << 20));
    }

    static float e5m2ToFloat(byte code) {
        return Float.float16ToFloat((short) ((code & 0xff) << 8));
    }

    /** float8_e4m3fn, to nearest even; past ±448 (and for infinities and NaN) NaN. */
    static byte floatToE4m3(float value) {
        int sign = (Float.floatToRawIntBits(value) >>> 24) & 0x80;
        if (Float.isNaN(value) || Float.isInfinite(value)) return (byte) (sign | 0x7f);
        int magnitude = smallFloatMagnitude(value, 3, 7);
        return (byte) (sign | Math.min(magnitude, 0x7f));
    }

    /** float8_e5m2, to nearest even (directly, no double rounding through float16); past ±57344 infinity. */
    static byte floatToE5m2(float value) {
        int sign = (Float.floatToRawIntBits(value) >>> 24) & 0x80;
        if (Float.isNaN(value)) return (byte) (sign | 0x7e);
        if (Float.isInfinite(value)) return (byte) (sign | 0x7c);
        int magnitude = smallFloatMagnitude(value, 2, 15);
        return (byte) (sign | Math.min(magnitude, 0x7c));
    }

    /**
     * The magnitude code (biased exponent, mantissa) of the nearest value to finite {@code |x|} in a small
     * float format with {@code mantissaBits} explicit mantissa bits and exponent bias {@code bias}, ties to
     * even; codes past the format's largest value are returned as computed (core/dtype.hpp's
     * small_float_magnitude).
     */
    static int smallFloatMagnitude(float x, int mantissaBits, int bias) {
        int u = Float.floatToRawIntBits(x) & 0x7fffffff;
        int biased = u >>> 23;
        if (biased == 0) return 0;
        int exponent = biased - 127;
        int minExponent = 1 - bias;
        long significand = (u & 0x7fffff) | 0x800000;
        int shift = 23 - mantissaBits;
        if (exponent < minExponent) shift += minExponent - exponent;
        if (shift >= 25) return 0;
        long half = 1L << (shift - 1);
        long q = significand >>> shift;
        long rest = significand & ((1L << shift) - 1);
        if (rest > half || (rest == half && (q & 1) != 0)) q++;
        if (exponent < minExponent) return (int) q;
        return ((exponent + bias) << mantissaBits) + (int) (q - (1L << mantissaBits));
    }

    /** {@code value} rounded to {@code dtype} and back, i.e. what storing it would keep. */
    static float round(float value, DType dtype) {
        return switch (dtype) {
            case FLOAT32 -> value;
            case FLOAT16 -> Float.float16ToFloat(Float.floatToFloat16(value));
            case BFLOAT16 -> bf16ToFloat(floatToBf16(value));
            case INT32 -> toInt(value);
            case FLOAT8_E4M3FN -> e4m3ToFloat(floatToE4m3(value));
            case FLOAT8_E5M2 -> e5m2ToFloat(floatToE5m2(value));
            case INT8 -> saturate(value, -128, 127);
            case INT4 -> saturate(value, -8, 7);
        };
    }

    /** Nearest int, ties to even, saturating; NaN gives 0 (Java's narrowing of a double). */
    static int toInt(float value) {
        return (int) Math.rint(value);
    }

    private static int saturate(float value, int lo, int hi) {
        return Math.max(lo, Math.min(hi, toInt(value)));
    }
}
