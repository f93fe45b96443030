package io.github.flashattn4j;

/**
 * Element types of tensors. Attention computes on the floating-point types (float32, float16, bfloat16)
 * and accumulates in float32 whatever the dtype; {@link #INT32} holds the sequence offsets and lengths of
 * variable-length batches ({@link PackedSequences}), and attention refuses it for q, k and v.
 *
 * <p>The float conversions of {@link Tensor} ({@link Tensor#toFloatArray()}, {@link Tensor#fromArray},
 * {@link Tensor#fill}, {@link Tensor#toDType}) work on every dtype: int32 elements read as the nearest
 * float (exact up to 2^24 in magnitude), and floats written to int32 round to the nearest integer (ties
 * to even), saturating at the int range, with NaN becoming 0, as Java's {@code (int) Math.rint(x)} does.
 * {@link Tensor#fromInts} and {@link Tensor#toIntArray()} move int32 values exactly.
 */
public enum DType {
    FLOAT32(4, 2, 32),
    FLOAT16(2, 2, 16),
    BFLOAT16(2, 4, 16),
    /** 32-bit signed integers (DLPack {@code kDLInt}, 32 bits). */
    INT32(4, 0, 32);

    private final int byteSize;
    private final int dlpackCode;
    private final int bits;

    DType(int byteSize, int dlpackCode, int bits) {
        this.byteSize = byteSize;
        this.dlpackCode = dlpackCode;
        this.bits = bits;
    }

    /** Bytes per element. */
    public int byteSize() {
        return byteSize;
    }

    /** The DLPack {@code DLDataTypeCode} of this dtype. */
    public int dlpackCode() {
        return dlpackCode;
    }

    /** Bits per element. */
    public int bits() {
        return bits;
    }

    /** Whether this is a floating-point dtype, one attention computes on. */
    public boolean isFloatingPoint() {
        return this != INT32;
    }
}
