package io.github.flashattn4j.tests;

import io.github.flashattn4j.DType;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertDoesNotThrow;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Host tensors: ownership, closing, scopes, views sharing memory and strides being honoured. */
class TensorLifecycleTest {

    private static float[] iota(int n) {
        float[] values = new float[n];
        for (int i = 0; i < n; i++) values[i] = i + 1;  // never zero: an unwritten element shows
        return values;
    }

    @Test
    void closeIsIdempotentAndUseAfterCloseThrows() {
        Tensor t = Tensor.fromArray(iota(6), DType.FLOAT32, Device.CPU, 2, 3);
        t.close();
        assertTrue(t.isClosed());
        assertDoesNotThrow(t::close);
        assertThrows(IllegalStateException.class, t::toFloatArray);
        assertThrows(IllegalStateException.class, () -> t.fill(1f));
        assertThrows(IllegalStateException.class, () -> t.slice(0, 0, 1));
        assertThrows(IllegalStateException.class, t::copy);
        // Metadata stays readable after close.
        assertArrayEquals(new long[] {2, 3}, t.shape());
        assertEquals(DType.FLOAT32, t.dtype());
    }

    @Test
    void closingTheOwnerRetiresItsViews() {
        Tensor owner = Tensor.fromArray(iota(12), DType.FLOAT32, Device.CPU, 3, 4);
        Tensor view = owner.slice(0, 1, 3);
        assertTrue(view.isView());
        assertFalse(owner.isView());
        owner.close();
        assertTrue(view.isClosed());
        assertThrows(IllegalStateException.class, view::toFloatArray);
    }

    @Test
    void closingAViewLeavesTheOwnerUsable() {
        try (Tensor owner = Tensor.fromArray(iota(12), DType.FLOAT32, Device.CPU, 3, 4)) {
            Tensor view = owner.transpose(0, 1);
            view.close();
            assertTrue(view.isClosed());
            assertFalse(owner.isClosed());
            assertArrayEquals(iota(12), owner.toFloatArray());
        }
    }

    @Test
    void scopeClosesEverythingMadeOrTrackedInside() {
        Tensor made, tracked;
        try (TensorScope scope = TensorScope.open()) {
            made = scope.zeros(DType.BFLOAT16, Device.CPU, 4, 4);
            tracked = scope.track(Tensor.full(2f, DType.FLOAT16, Device.CPU, 3));
            assertEquals(2, scope.size());
            assertFalse(made.isClosed());
        }
        assertTrue(made.isClosed());
        assertTrue(tracked.isClosed());
    }

    @Test
    void scopeClosesTensorsEvenWhenTheBodyThrows() {
        Tensor[] made = new Tensor[1];
        assertThrows(IllegalArgumentException.class, () -> {
            try (TensorScope scope = TensorScope.open()) {
                made[0] = scope.randn(DType.FLOAT32, Device.CPU, 7, 8);
                throw new IllegalArgumentException("boom");
            }
        });
        assertTrue(made[0].isClosed());
    }

    @Test
    void viewsShareMemoryWithoutCopying() {
        try (Tensor owner = Tensor.fromArray(iota(24), DType.FLOAT32, Device.CPU, 2, 3, 4)) {
            Tensor row = owner.select(0, 1).slice(0, 2, 3);  // element [1, 2, :]
            row.fill(-5f);
            float[] all = owner.toFloatArray();
            for (int i = 0; i < 24; i++) {
                float expected = (i >= 20) ? -5f : i + 1;
                assertEquals(expected, all[i], "element " + i);
            }
        }
    }

    @Test
    void transposeIsAStrideChangeAndReadsInLogicalOrder() {
        try (Tensor t = Tensor.fromArray(iota(6), DType.FLOAT32, Device.CPU, 2, 3)) {
            Tensor tt = t.transpose(0, 1);
            assertArrayEquals(new long[] {3, 2}, tt.shape());
            assertArrayEquals(new long[] {1, 3}, tt.strides());
            assertFalse(tt.isContiguous());
            assertTrue(t.isContiguous());
            assertArrayEquals(new float[] {1, 4, 2, 5, 3, 6}, tt.toFloatArray());
            try (Tensor packed = tt.copy()) {
                assertTrue(packed.isContiguous());
                assertArrayEquals(new long[] {2, 1}, packed.strides());
                assertArrayEquals(tt.toFloatArray(), packed.toFloatArray());
            }
        }
    }

    @Test
    void writesThroughStridedViewsLandWhereTheStridesSay() {
        try (Tensor t = Tensor.full(7f, DType.FLOAT32, Device.CPU, 4, 5)) {
            Tensor column = t.transpose(0, 1).select(0, 2);  // column 2: stride 5
            assertArrayEquals(new long[] {5}, column.strides());
            column.copyFromArray(new float[] {10, 20, 30, 40});
            float[] all = t.toFloatArray();
            for (int r = 0; r < 4; r++) {
                for (int c = 0; c < 5; c++) {
                    assertEquals(c == 2 ? 10f * (r + 1) : 7f, all[r * 5 + c], "[" + r + ", " + c + "]");
                }
            }
        }
    }

    @Test
    void reshapeNeedsContiguousMemoryAndInfersOneSize() {
        try (Tensor t = Tensor.fromArray(iota(12), DType.FLOAT32, Device.CPU, 3, 4)) {
            Tensor r = t.reshape(2, -1, 2);
            assertArrayEquals(new long[] {2, 3, 2}, r.shape());
            assertArrayEquals(iota(12), r.toFloatArray());
            assertThrows(IllegalStateException.class, () -> t.transpose(0, 1).reshape(12));
            assertThrows(IllegalArgumentException.class, () -> t.reshape(5, -1));
        }
    }

    @Test
    void outOfRangeViewsThrow() {
        try (Tensor t = Tensor.zeros(DType.FLOAT32, Device.CPU, 3, 4)) {
            assertThrows(IndexOutOfBoundsException.class, () -> t.slice(1, 2, 5));
            assertThrows(IndexOutOfBoundsException.class, () -> t.select(0, 3));
            assertThrows(RuntimeException.class, () -> t.transpose(0, 2));
        }
    }

    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"FLOAT32", "FLOAT16", "BFLOAT16"})  // Int32TensorTest, QuantizedDTypeTest
    void dtypesRoundTripExactlyRepresentableValues(DType dtype) {
        float[] values = {1f, -2.5f, 0.125f, 1024f, -0.75f, 3f};
        try (Tensor t = Tensor.fromArray(values, dtype, Device.CPU, 2, 3)) {
            assertArrayEquals(values, t.toFloatArray());
            assertEquals(dtype.byteSize() * 6L, t.numel() * dtype.byteSize());
        }
    }

    @Test
    void conversionRoundsToNearestEven() {
        // Ties: for bfloat16, 1 + 2^-8 lies halfway between 1 and 1 + 2^-7 and rounds to 1 (even), while
        // 1 + 3·2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6 and rounds up; float16 sees 65519 round
        // to 65504 and 1e-8 flush to 0. The expected values come from the tests' own rounding.
        float[] values = {1f + 0x1p-8f, 1f + 3 * 0x1p-8f, 1f + 0x1p-11f, 65519f, 1e-8f};
        for (DType dtype : new DType[] {DType.BFLOAT16, DType.FLOAT16}) {
            try (Tensor t = Tensor.fromArray(values, DType.FLOAT32, Device.CPU, values.length);
                 Tensor c = t.toDType(dtype)) {
                float[] got = c.toFloatArray();
                for (int i = 0; i < values.length; i++) {
                    assertEquals((float) Precision.round(values[i], dtype), got[i], dtype + " of " + values[i]);
                }
            }
        }
    }

    @Test
    void randnIsSeededAndNotDegenerate() {
        try (Tensor a = Tensor.randn(DType.FLOAT32, Device.CPU, 42, 1000);
             Tensor b = Tensor.randn(DType.FLOAT32, Device.CPU, 42, 1000);
             Tensor c = Tensor.randn(DType.FLOAT32, Device.CPU, 43, 1000)) {
            float[] x = a.toFloatArray();
            assertArrayEquals(x, b.toFloatArray());
            assertNotEquals(x[0], c.toFloatArray()[0]);
            double mean = 0, square = 0;
            for (float f : x) {
                mean += f;
                square += f * f;
            }
            mean /= x.length;
            double variance = square / x.length - mean * mean;
            assertTrue(Math.abs(mean) < 0.15, "mean " + mean);
            assertTrue(Math.abs(variance - 1) < 0.15, "variance " + variance);
        }
    }

    @Test
    void copyFromConvertsBetweenDtypesAndLayouts() {
        try (Tensor src = Tensor.fromArray(iota(6), DType.FLOAT32, Device.CPU, 2, 3);
             Tensor dst = Tensor.full(Float.NaN, DType.BFLOAT16, Device.CPU, 3, 2)) {
            dst.transpose(0, 1).copyFrom(src);
            assertArrayEquals(new float[] {1, 4, 2, 5, 3, 6}, dst.toFloatArray());
            assertThrows(IllegalArgumentException.class, () -> dst.copyFrom(src));  // shapes differ
        }
    }

    @Test
    void toSameDeviceCopies() {
        try (Tensor t = Tensor.fromArray(iota(4), DType.FLOAT16, Device.CPU, 4);
             Tensor u = t.to(Device.CPU)) {
            u.fill(0.5f);
            assertArrayEquals(iota(4), t.toFloatArray());
        }
    }

    @Test
    void factoriesRejectBadShapes() {
        assertThrows(IllegalArgumentException.class, () -> Tensor.zeros(DType.FLOAT32, Device.CPU, 2, -1));
        assertThrows(IllegalArgumentException.class, () -> Tensor.fromArray(new float[5], DType.FLOAT32, Device.CPU, 2, 3));
        assertThrows(NullPointerException.class, () -> Tensor.zeros(null, Device.CPU, 2));
        assertThrows(NullPointerException.class, () -> Tensor.zeros(DType.FLOAT32, null, 2));
    }
}
