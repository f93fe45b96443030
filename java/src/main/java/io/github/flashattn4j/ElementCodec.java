package io.github.flashattn4j;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * Reads and writes elements of each dtype as floats. Conversions to the float dtypes round to nearest
 * even, keep NaN and overflow to infinity, matching the native library; int32 is converted as
 * {@link DType} documents.
 */
final class ElementCodec {

    private ElementCodec() {}

    static float get(MemorySegment segment, long byteOffset, DType dtype) {
        return switch (dtype) {
            case FLOAT32 -> segment.get(ValueLayout.JAVA_FLOAT, byteOffset);
            case FLOAT16 -> Float.float16ToFloat(segment.get(ValueLayout.JAVA_SHORT, byteOffset));
            case BFLOAT16 -> bf16ToFloat(segment.get(ValueLayout.JAVA_SHORT, byteOffset));
            case INT32 -> segment.get(ValueLayout.JAVA_INT, byteOffset);
        };
    }

    static void set(MemorySegment segment, long byteOffset, DType dtype, float value) {
        switch (dtype) {
            case FLOAT32 -> segment.set(ValueLayout.JAVA_FLOAT, byteOffset, value);
            case FLOAT16 -> segment.set(ValueLayout.JAVA_SHORT, byteOffset, Float.floatToFloat16(value));
            case BFLOAT16 -> segment.set(ValueLayout.JAVA_SHORT, byteOffset, floatToBf16(value));
            case INT32 -> segment.set(ValueLayout.JAVA_INT, byteOffset, toInt(value));
        }
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

    /** {@code value} rounded to {@code dtype} and back, i.e. what storing it would keep. */
    static float round(float value, DType dtype) {
        return switch (dtype) {
            case FLOAT32 -> value;
            case FLOAT16 -> Float.float16ToFloat(Float.floatToFloat16(value));
            case BFLOAT16 -> bf16ToFloat(floatToBf16(value));
            case INT32 -> toInt(value);
        };
    }

    /** Nearest int, ties to even, saturating; NaN gives 0 (Java's narrowing of a double). */
    static int toInt(float value) {
        return (int) Math.rint(value);
    }
}
