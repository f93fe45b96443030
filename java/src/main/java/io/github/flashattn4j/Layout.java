package io.github.flashattn4j;

import java.util.Arrays;
import java.util.function.LongConsumer;

/**
 * Shape, strides (in elements) and element offset of a tensor view into its storage. Immutable; arrays
 * never escape.
 */
record Layout(long[] shape, long[] strides, long offset) {

    Layout {
        shape = shape.clone();
        strides = strides.clone();
    }

    /**
     * The row-major contiguous layout of {@code shape}.
     *
     * @throws IllegalArgumentException if a size is negative, or the strides (products of the sizes, a
     *                                  size 0 counting as 1) do not fit in a long
     */
    static Layout contiguous(long... shape) {
        long[] strides = new long[shape.length];
        long stride = 1;
        for (int i = shape.length - 1; i >= 0; i--) {
            if (shape[i] < 0) throw new IllegalArgumentException("negative size " + shape[i] + " in shape " + Arrays.toString(shape));
            strides[i] = stride;
            stride = multiply(stride, Math.max(shape[i], 1), shape);
        }
        return new Layout(shape, strides, 0);
    }

    /**
     * The layout of {@code shape} with the given {@code strides} (in elements, non-negative) at offset 0,
     * checked so that every addressed offset fits in 63 bits.
     */
    static Layout strided(long[] shape, long[] strides) {
        if (shape.length != strides.length) {
            throw new IllegalArgumentException("shape " + Arrays.toString(shape) + " and strides " + Arrays.toString(strides)
                    + " differ in rank");
        }
        contiguous(shape);  // checks the sizes and the element count
        long last = 0;
        boolean empty = false;
        for (int i = 0; i < shape.length; i++) {
            if (strides[i] < 0) throw new IllegalArgumentException("negative stride in " + Arrays.toString(strides));
            if (shape[i] == 0) empty = true;
        }
        if (!empty) {
            for (int i = 0; i < shape.length; i++) {
                if (shape[i] > 1 && strides[i] > 0 && shape[i] - 1 > (Long.MAX_VALUE - 1 - last) / strides[i]) {
                    throw new IllegalArgumentException("shape " + Arrays.toString(shape) + " with strides "
                            + Arrays.toString(strides) + " addresses more than 2^63 elements");
                }
                last += (shape[i] - 1) * strides[i];
            }
        }
        return new Layout(shape, strides, 0);
    }

    /**
     * {@code a * b} for the sizes of {@code shape}.
     *
     * @throws IllegalArgumentException if the product does not fit in a long
     */
    static long multiply(long a, long b, long[] shape) {
        try {
            return Math.multiplyExact(a, b);
        } catch (ArithmeticException e) {
            throw new IllegalArgumentException("shape " + Arrays.toString(shape) + " is too large: the product of its sizes overflows a long", e);
        }
    }

    int rank() {
        return shape.length;
    }

    long size(int dim) {
        return shape[dim];
    }

    long stride(int dim) {
        return strides[dim];
    }

    long[] shapeCopy() {
        return shape.clone();
    }

    long[] stridesCopy() {
        return strides.clone();
    }

    long elementCount() {
        long n = 1;
        for (long s : shape) n = Math.multiplyExact(n, s);
        return n;
    }

    /** Elements from the offset to one past the last addressed element; 0 when empty. */
    long span() {
        if (elementCount() == 0) return 0;
        long last = 0;
        for (int i = 0; i < shape.length; i++) last += (shape[i] - 1) * strides[i];
        return last + 1;
    }

    /**
     * Why this layout cannot hold packed INT4 elements, or null if it can: at least one dimension, an even
     * innermost size with stride 1, even strides in the other dimensions of size > 1, an even offset (every
     * row starts on a byte); anything goes without elements but the even innermost size.
     */
    String packedProblem() {
        if (shape.length == 0) return "an INT4 tensor needs at least one dimension";
        int inner = shape.length - 1;
        if (shape[inner] % 2 != 0) {
            return "an INT4 tensor's innermost dimension must have an even size (two elements per byte), not " + shape[inner];
        }
        if (elementCount() == 0) return null;
        if (strides[inner] != 1) {
            return "an INT4 tensor's innermost dimension must be contiguous (stride 1), not stride " + strides[inner];
        }
        for (int i = 0; i < inner; i++) {
            if (shape[i] > 1 && strides[i] % 2 != 0) {
                return "an INT4 tensor's strides must be even outside the innermost dimension (rows start on a byte): "
                        + "dimension " + i + " has stride " + strides[i];
            }
        }
        if (offset % 2 != 0) return "an INT4 view must start on a byte (an even element offset), not at element " + offset;
        return null;
    }

    /**
     * A packed INT4 layout (one without {@link #packedProblem()}) in bytes: each byte one unit holding two
     * elements, so the innermost size and every other stride and the offset are halved.
     */
    Layout packedBytes() {
        if (elementCount() == 0) return new Layout(new long[] {0}, new long[] {1}, offset / 2);
        long[] s = shape.clone(), t = strides.clone();
        int inner = s.length - 1;
        s[inner] /= 2;
        for (int i = 0; i < inner; i++) t[i] /= 2;
        t[inner] = 1;
        return new Layout(s, t, offset / 2);
    }

    /** Row-major dense; a tensor without elements counts as contiguous, whatever its strides. */
    boolean isContiguous() {
        if (elementCount() == 0) return true;
        long expected = 1;
        for (int i = shape.length - 1; i >= 0; i--) {
            if (shape[i] != 1 && strides[i] != expected) return false;
            expected *= shape[i];
        }
        return true;
    }

    /** Calls {@code action} with the element offset of every element, in row-major order. */
    void forEachOffset(LongConsumer action) {
        long count = elementCount();
        if (count == 0) return;
        int rank = shape.length;
        if (rank == 0) {
            action.accept(offset);
            return;
        }
        long[] index = new long[rank];
        long position = offset;
        long inner = shape[rank - 1];
        long innerStride = strides[rank - 1];
        for (long done = 0; done < count; done += inner) {
            for (long j = 0; j < inner; j++) action.accept(position + j * innerStride);
            // Advance the odometer over the outer dimensions.
            for (int d = rank - 2; d >= 0; d--) {
                index[d]++;
                position += strides[d];
                if (index[d] < shape[d]) break;
                position -= strides[d] * shape[d];
                index[d] = 0;
            }
        }
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof Layout l && Arrays.equals(shape, l.shape) && Arrays.equals(strides, l.strides) && offset == l.offset;
    }

    @Override
    public int hashCode() {
        return 31 * (31 * Arrays.hashCode(shape) + Arrays.hashCode(strides)) + Long.hashCode(offset);
    }

    @Override
    public String toString() {
        return "shape " + Arrays.toString(shape) + " strides " + Arrays.toString(strides) + " offset " + offset;
    }
}
