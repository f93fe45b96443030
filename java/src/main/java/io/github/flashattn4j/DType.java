package io.github.flashattn4j;

/** Element types of tensors. Attention accumulates in float32 whatever the dtype. */
public enum DType {
    FLOAT32(4, 2, 32),
    FLOAT16(2, 2, 16),
    BFLOAT16(2, 4, 16);

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
}
