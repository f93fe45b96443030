package io.github.flashattn4j.tests;

import io.github.flashattn4j.DType;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;
import org.junit.jupiter.api.Test;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

/**
 * int32 tensors, the dtype of varlen offsets: exact int transfers (values beyond float's 2^24 included)
 * through factories, views and copies, and the documented float conversions (nearest, ties to even,
 * saturating, NaN to 0).
 */
class Int32TensorTest {

    /** Fresh ints over the whole range, with the edge values that float conversions would corrupt. */
    private static int[] values(long seed, int n) {
        SplittableRandom random = new SplittableRandom(seed);
        int[] v = new int[n];
        for (int i = 0; i < n; i++) v[i] = random.nextInt();
        int[] edges = {Integer.MAX_VALUE, Integer.MIN_VALUE, (1 << 24) + 1, -(1 << 24) - 1, 0, -1};
        System.arraycopy(edges, 0, v, 0, Math.min(edges.length, n));
        return v;
    }

    @Test
    void fromIntsAndToIntArrayAreExact() {
        int[] v = values(Seeds.fresh(), 24);
        try (Tensor t = Tensor.fromInts(v, Device.CPU, 2, 3, 4)) {
            assertEquals(DType.INT32, t.dtype());
            assertArrayEquals(new long[] {2, 3, 4}, t.shape());
            assertArrayEquals(v, t.toIntArray());
        }
    }

    @Test
    void stridedViewsAndCopiesAreExact() {
        int[] v = values(Seeds.fresh(), 24);
        try (TensorScope scope = TensorScope.open()) {
            Tensor t = scope.fromInts(v, Device.CPU, 2, 3, 4);
            Tensor view = scope.track(t.transpose(0, 2).slice(1, 1, 3));  // [4, 2, 2], not contiguous
            int[] expected = new int[16];
            int n = 0;
            for (int a = 0; a < 4; a++) for (int b = 1; b < 3; b++) for (int c = 0; c < 2; c++) expected[n++] = v[(c * 3 + b) * 4 + a];
            assertArrayEquals(expected, view.toIntArray());
            // Same-dtype copies move bytes: exact where a float round trip would round 2^24 + 1.
            assertArrayEquals(expected, scope.track(view.copy()).toIntArray());
            Tensor target = scope.zeros(DType.INT32, Device.CPU, 2, 4, 2).transpose(0, 1);  // non-contiguous destination
            target.copyFrom(view);
            assertArrayEquals(expected, target.toIntArray());
        }
    }

    @Test
    void floatConversionsRoundToNearestEvenSaturateAndMapNaNToZero() {
        float[] in = {2.5f, 3.5f, -2.5f, 0.49999997f, -0.5f, 1e10f, -1e10f, Float.NaN, Float.POSITIVE_INFINITY, 7f};
        int[] expected = {2, 4, -2, 0, 0, Integer.MAX_VALUE, Integer.MIN_VALUE, 0, Integer.MAX_VALUE, 7};
        try (TensorScope scope = TensorScope.open()) {
            assertArrayEquals(expected, scope.fromArray(in, DType.INT32, Device.CPU, in.length).toIntArray());
            Tensor floats = scope.fromArray(in, DType.FLOAT32, Device.CPU, in.length);
            assertArrayEquals(expected, scope.track(floats.toDType(DType.INT32)).toIntArray());
            // And back: ints read as the nearest float.
            Tensor ints = scope.fromInts(new int[] {(1 << 24) + 1, -3, Integer.MAX_VALUE}, Device.CPU, 3);
            assertArrayEquals(new float[] {1 << 24, -3f, 0x1p31f}, ints.toFloatArray());
            Tensor filled = scope.zeros(DType.INT32, Device.CPU, 3);
            filled.fill(-6.5f);
            assertArrayEquals(new int[] {-6, -6, -6}, filled.toIntArray());
        }
    }

    @Test
    void intAccessIsForInt32Only() {
        try (Tensor f = Tensor.zeros(DType.FLOAT32, Device.CPU, 2); Tensor i = Tensor.zeros(DType.INT32, Device.CPU, 2)) {
            assertThrows(UnsupportedOperationException.class, f::toIntArray);
            assertThrows(UnsupportedOperationException.class, i::toShortArray);
            assertThrows(IllegalArgumentException.class, () -> Tensor.fromInts(new int[3], Device.CPU, 2));
            assertThrows(NullPointerException.class, () -> Tensor.fromInts(null, Device.CPU, 2));
            i.close();
            assertThrows(IllegalStateException.class, i::toIntArray);
        }
    }
}
