package io.github.flashattn4j;

/**
 * Element types of tensors, with their DLPack codes (DLPack 1.1's {@code DLDataTypeCode}).
 *
 * <ul>
 *   <li>{@link #FLOAT32}, {@link #FLOAT16}, {@link #BFLOAT16}: what attention computes on (accumulating in
 *       float32 whatever the dtype) and returns.</li>
 *   <li>{@link #INT32}: the sequence offsets and lengths of variable-length batches ({@link PackedSequences});
 *       attention refuses it for q, k and v.</li>
 *   <li>{@link #FLOAT8_E4M3FN}, {@link #INT8}, {@link #INT4}: the inputs of quantized attention
 *       ({@link QuantizationMode}), pre-quantized as a {@link QuantizedTensor} with their scales. Plain
 *       attention refuses them. {@link #FLOAT8_E5M2} is a storage and exchange dtype only.</li>
 * </ul>
 *
 * <h2>INT4: packed, two elements per byte</h2>
 * The element at even element offset {@code e} lives in the <b>low</b> nibble (bits 0-3) of byte
 * {@code e / 2}, the element at offset {@code e + 1} in the high nibble: DLPack 1.1's "little bit-endian"
 * order for packed sub-byte types. Shapes and strides count elements; an INT4 tensor has at least one
 * dimension, an innermost dimension of even size with stride 1, and even strides elsewhere (so every row
 * starts on a byte), unless it has no element. Factories and views that would break this rule throw
 * {@link IllegalArgumentException}; {@link #byteSize()} is undefined for INT4 (it throws), use
 * {@link #bytesFor(long)}.
 *
 * <h2>Conversions</h2>
 * The float conversions of {@link Tensor} ({@link Tensor#toFloatArray()}, {@link Tensor#fromArray},
 * {@link Tensor#fill}, {@link Tensor#toDType}) work on every dtype and are exact where the value is
 * representable. Reading gives the exact value (integers exactly up to 2^24). Writing rounds:
 * <ul>
 *   <li>to the float dtypes: to nearest, ties to even, NaN kept; beyond the largest finite value float16,
 *       bfloat16 and float8_e5m2 give infinity, float8_e4m3fn (which has no infinity) gives NaN, as PyTorch's
 *       conversion does. (Quantizers saturate instead: {@link QuantizationMode} states their rules.)</li>
 *   <li>to the integer dtypes: to the nearest integer, ties to even, saturating at the type's range
 *       (int32, int8 [-128, 127], int4 [-8, 7]), NaN becoming 0, as Java's {@code (int) Math.rint(x)} does.</li>
 * </ul>
 * {@link Tensor#fromInts} and {@link Tensor#toIntArray()} move int32 values exactly.
 */
public enum DType {
    FLOAT32(2, 32),
    FLOAT16(2, 16),
    BFLOAT16(4, 16),
    /** 32-bit signed integers (DLPack {@code kDLInt}, 32 bits). */
    INT32(0, 32),
    /**
     * 8-bit float, 1 sign, 4 exponent (bias 7) and 3 mantissa bits, no infinity, NaN {@code S.1111.111};
     * largest finite ±448, smallest subnormal 2^-9 (DLPack {@code kDLFloat8_e4m3fn} = 10).
     */
    FLOAT8_E4M3FN(10, 8),
    /**
     * 8-bit float, 1 sign, 5 exponent (bias 15) and 2 mantissa bits, IEEE-like with infinities (the top byte
     * of a float16); largest finite ±57344 (DLPack {@code kDLFloat8_e5m2} = 12).
     */
    FLOAT8_E5M2(12, 8),
    /** 8-bit signed integers (DLPack {@code kDLInt}, 8 bits). */
    INT8(0, 8),
    /** 4-bit signed integers, packed two per byte, the even element in the low nibble (DLPack {@code kDLInt}, 4 bits). */
    INT4(0, 4);

    private final int dlpackCode;
    private final int bits;

    DType(int dlpackCode, int bits) {
        this.dlpackCode = dlpackCode;
        this.bits = bits;
    }

    /**
     * Bytes per element.
     *
     * @throws UnsupportedOperationException for {@link #INT4}, whose elements are half a byte: use
     *                                       {@link #bytesFor(long)} or {@link #bits()}
     */
    public int byteSize() {
        if (this == INT4) throw new UnsupportedOperationException("INT4 packs two elements per byte: use bytesFor(count) or bits()");
        return bits / 8;
    }

    /**
     * Bytes that {@code count} consecutive elements take: {@code count * byteSize()}, or for INT4
     * {@code ceil(count / 2)}.
     *
     * @throws ArithmeticException if the result overflows a long
     */
    public long bytesFor(long count) {
        return this == INT4 ? count / 2 + (count & 1) : Math.multiplyExact(count, (long) (bits / 8));
    }

    /** The DLPack {@code DLDataTypeCode} of this dtype. */
    public int dlpackCode() {
        return dlpackCode;
    }

    /** Bits per element. */
    public int bits() {
        return bits;
    }

    /** Whether this is a floating-point dtype (the float8 ones included). */
    public boolean isFloatingPoint() {
        return this == FLOAT32 || this == FLOAT16 || this == BFLOAT16 || this == FLOAT8_E4M3FN || this == FLOAT8_E5M2;
    }

    /** Whether attention computes on this dtype: float32, float16, bfloat16. */
    public boolean isCompute() {
        return this == FLOAT32 || this == FLOAT16 || this == BFLOAT16;
    }

    /** Whether this is a dtype of quantized data: float8_e4m3fn, float8_e5m2, int8, int4. */
    public boolean isQuantized() {
        return this == FLOAT8_E4M3FN || this == FLOAT8_E5M2 || this == INT8 || this == INT4;
    }

    /** Whether elements are smaller than a byte and packed ({@link #INT4}). */
    public boolean isPacked() {
        return this == INT4;
    }
}
