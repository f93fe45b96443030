package io.github.flashattn4j.tests;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.DLPack;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.FlashAttnException;
import io.github.flashattn4j.QuantizationMode;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The quantized dtypes as tensors: DLPack codes (DLPack 1.1: float8_e4m3fn 10, float8_e5m2 12, int 0 with
 * 8 or 4 bits) through export and import, exact round trips of every representable value, conversions
 * (nearest even; float8 overflow; integer saturation) against the tests' own brute-force rounding, INT4's
 * packing (even element in the low nibble) and layout rule, strided copies, and attention refusing plain
 * quantized inputs.
 */
class QuantizedDTypeTest {

    private static final DType[] QUANTIZED = {DType.FLOAT8_E4M3FN, DType.FLOAT8_E5M2, DType.INT8, DType.INT4};

    /** Every value the dtype represents (NaN excluded), negatives included. */
    private static float[] representable(DType dtype) {
        return switch (dtype) {
            case INT8 -> range(-128, 127);
            case INT4 -> range(-8, 7);
            case FLOAT8_E4M3FN -> signed(Precision.E4M3);
            case FLOAT8_E5M2 -> signed(Precision.E5M2);
            default -> throw new IllegalArgumentException(dtype.name());
        };
    }

    private static float[] range(int lo, int hi) {
        float[] v = new float[hi - lo + 1];
        for (int i = 0; i < v.length; i++) v[i] = lo + i;
        return v;
    }

    private static float[] signed(double[] magnitudes) {
        float[] v = new float[2 * magnitudes.length];
        for (int i = 0; i < magnitudes.length; i++) {
            v[2 * i] = (float) magnitudes[i];
            v[2 * i + 1] = (float) -magnitudes[i];
        }
        return v;
    }

    @Test
    void dtypesHaveDLPack11Codes() {
        assertEquals(10, DType.FLOAT8_E4M3FN.dlpackCode());
        assertEquals(8, DType.FLOAT8_E4M3FN.bits());
        assertEquals(12, DType.FLOAT8_E5M2.dlpackCode());
        assertEquals(8, DType.FLOAT8_E5M2.bits());
        assertEquals(0, DType.INT8.dlpackCode());
        assertEquals(8, DType.INT8.bits());
        assertEquals(0, DType.INT4.dlpackCode());
        assertEquals(4, DType.INT4.bits());
        assertEquals(1, DType.INT8.byteSize());
        assertThrows(UnsupportedOperationException.class, DType.INT4::byteSize);
        assertEquals(3, DType.INT4.bytesFor(6));
        assertEquals(4, DType.INT4.bytesFor(7));
        assertEquals(12, DType.INT8.bytesFor(12));
        for (DType d : QUANTIZED) assertTrue(d.isQuantized() && !d.isCompute(), d::name);
        assertTrue(DType.FLOAT8_E4M3FN.isFloatingPoint() && !DType.INT8.isFloatingPoint());
    }

    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"FLOAT8_E4M3FN", "FLOAT8_E5M2", "INT8", "INT4"})
    void dlpackExportCarriesTheCodeAndImportGivesTheTensorBack(DType dtype) {
        float[] values = new float[16];
        float[] all = representable(dtype);
        for (int i = 0; i < values.length; i++) values[i] = all[(i * 7) % all.length];
        try (Tensor t = Tensor.fromArray(values, dtype, Device.CPU, 2, 8)) {
            MemorySegment managed = DLPack.toDLPack(t);
            // DLManagedTensorVersioned: version (8), manager_ctx (8), deleter (8), flags (8), then the DLTensor,
            // whose dtype {code, bits, lanes} follows data (8), device (8) and ndim (4).
            MemorySegment m = managed.reinterpret(64);
            assertEquals(dtype.dlpackCode(), m.get(ValueLayout.JAVA_BYTE, 32 + 20) & 0xff);
            assertEquals(dtype.bits(), m.get(ValueLayout.JAVA_BYTE, 32 + 21) & 0xff);
            assertEquals(1, m.get(ValueLayout.JAVA_SHORT_UNALIGNED, 32 + 22));
            try (Tensor back = DLPack.fromDLPack(managed)) {
                assertEquals(dtype, back.dtype());
                assertArrayEquals(values, back.toFloatArray());
                // A view starting mid-tensor (INT4: element 8, byte 4) keeps its offset through DLPack.
                try (Tensor again = DLPack.fromDLPack(DLPack.toDLPack(back.select(0, 1)))) {
                    float[] row = new float[8];
                    System.arraycopy(values, 8, row, 0, 8);
                    assertArrayEquals(row, again.toFloatArray());
                }
            }
        }
    }

    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"FLOAT8_E4M3FN", "FLOAT8_E5M2", "INT8", "INT4"})
    void everyRepresentableValueRoundTrips(DType dtype) {
        float[] v = representable(dtype);
        try (TensorScope scope = TensorScope.open()) {
            Tensor t = scope.fromArray(v, dtype, Device.CPU, v.length);
            assertArrayEquals(v, t.toFloatArray());
            assertArrayEquals(v, scope.track(t.copy()).toFloatArray());
            assertArrayEquals(v, scope.track(t.toDType(DType.FLOAT32)).toFloatArray());
            assertArrayEquals(v, scope.track(scope.fromArray(v, DType.FLOAT32, Device.CPU, v.length).toDType(dtype)).toFloatArray());
        }
    }

    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"FLOAT8_E4M3FN", "FLOAT8_E5M2", "INT8", "INT4"})
    void conversionsRoundAsDocumented(DType dtype) {
        long seed = Seeds.fresh();
        SplittableRandom random = new SplittableRandom(seed);
        float[] special = {Float.NaN, Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY, 0f, -0f, 2.5f, -2.5f, 3.5f, 448f,
                464f, 464.1f, -470f, 480f, 57344f, 61440f, 61439f, 1e9f, -1e9f, 0x1p-10f, 0x1p-17f, 127.5f, -128.5f, 7.5f,
                -8.5f, 1e-30f};
        float[] v = new float[4096];
        System.arraycopy(special, 0, v, 0, special.length);
        for (int i = special.length; i < v.length; i++) {
            // Magnitudes across the formats' ranges, and exact midpoints between neighbours.
            double magnitude = Math.scalb(1.0 + random.nextDouble(), random.nextInt(-20, 18));
            v[i] = (float) (random.nextBoolean() ? magnitude : -magnitude);
        }
        // Ties: midpoints between neighbouring values (float8: consecutive magnitudes, both signs; integers: x.5).
        int at = 2048;
        if (dtype.isFloatingPoint()) {
            double[] magnitudes = dtype == DType.FLOAT8_E4M3FN ? Precision.E4M3 : Precision.E5M2;
            for (int m = 0; m + 1 < magnitudes.length; m++) {
                float mid = (float) ((magnitudes[m] + magnitudes[m + 1]) / 2);
                v[at++] = mid;
                v[at++] = -mid;
            }
        } else {
            for (int x = -130; x < 130; x++) v[at++] = x + 0.5f;
        }
        try (Tensor t = Tensor.fromArray(v, dtype, Device.CPU, v.length)) {
            float[] got = t.toFloatArray();
            for (int i = 0; i < v.length; i++) {
                float expected = (float) Precision.round(v[i], dtype);
                int index = i;
                assertEquals(expected, got[i], () -> dtype + ": " + v[index] + " (seed " + seed + ")");
            }
        }
    }

    @Test
    void int4IsPackedWithTheEvenElementInTheLowNibble() {
        float[] v = {1, 2, 3, -4, 7, -8};
        try (Tensor t = Tensor.fromArray(v, DType.INT4, Device.CPU, 6); Arena arena = Arena.ofConfined()) {
            MemorySegment bytes = arena.allocate(3);
            t.copyTo(bytes);
            assertArrayEquals(new byte[] {0x21, (byte) 0xC3, (byte) 0x87}, bytes.toArray(ValueLayout.JAVA_BYTE));
            MemorySegment other = arena.allocateFrom(ValueLayout.JAVA_BYTE, (byte) 0x9f, (byte) 0x01, (byte) 0x70);
            t.copyFrom(other);
            assertArrayEquals(new float[] {-1, -7, 1, 0, 0, 7}, t.toFloatArray());
            assertEquals(3, t.asSegment().byteSize());
        }
    }

    @Test
    void int4LayoutsKeepRowsOnBytes() {
        assertThrows(IllegalArgumentException.class, () -> Tensor.zeros(DType.INT4, Device.CPU, 3));
        assertThrows(IllegalArgumentException.class, () -> Tensor.zeros(DType.INT4, Device.CPU, 4, 5));
        assertThrows(IllegalArgumentException.class, () -> Tensor.zeros(DType.INT4, Device.CPU));
        float[] v = new float[24];
        for (int i = 0; i < v.length; i++) v[i] = i % 16 - 8;
        try (TensorScope scope = TensorScope.open()) {
            Tensor t = scope.fromArray(v, DType.INT4, Device.CPU, 4, 6);
            assertThrows(IllegalArgumentException.class, () -> t.slice(1, 1, 3));   // starts mid-byte
            assertThrows(IllegalArgumentException.class, () -> t.slice(1, 0, 3));   // odd row length
            assertThrows(IllegalArgumentException.class, () -> t.transpose(0, 1));  // innermost not contiguous
            assertThrows(IllegalArgumentException.class, () -> t.select(1, 2));     // a column: stride 6, not 1
            assertThrows(IllegalArgumentException.class, () -> t.reshape(8, 3));
            Tensor rows = scope.track(t.slice(0, 1, 3));
            float[] expectedRows = new float[12];
            System.arraycopy(v, 6, expectedRows, 0, 12);
            assertArrayEquals(expectedRows, rows.toFloatArray());
            // A strided view: the first four columns of every row (rows start at even elements).
            Tensor columns = scope.track(t.slice(1, 2, 6));
            float[] expected = new float[16];
            for (int r = 0; r < 4; r++) System.arraycopy(v, r * 6 + 2, expected, r * 4, 4);
            assertArrayEquals(expected, columns.toFloatArray());
            assertArrayEquals(expected, scope.track(columns.copy()).toFloatArray());
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment packed = arena.allocate(8);
                columns.copyTo(packed);
                Tensor fromBytes = scope.zeros(DType.INT4, Device.CPU, 4, 4);
                fromBytes.copyFrom(packed);
                assertArrayEquals(expected, fromBytes.toFloatArray());
            }
            // Writing through the strided view leaves the other nibbles alone.
            columns.fill(-1f);
            float[] after = t.toFloatArray();
            for (int i = 0; i < 24; i++) assertEquals(i % 6 >= 2 ? -1f : v[i], after[i], "element " + i);
            Tensor target = scope.zeros(DType.INT4, Device.CPU, 8, 6).slice(0, 2, 6);
            target.copyFrom(t);
            assertArrayEquals(t.toFloatArray(), target.toFloatArray());
            assertArrayEquals(new float[] {after[0], after[1], after[2], after[3]},
                    scope.track(t.reshape(12, 2).slice(0, 0, 2).reshape(4)).toFloatArray());
        }
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment memory = arena.allocate(16);
            assertThrows(IllegalArgumentException.class, () -> Tensor.wrap(memory, DType.INT4, new long[] {2, 4}, new long[] {5, 1}, null));
            assertThrows(IllegalArgumentException.class, () -> Tensor.wrap(memory, DType.INT4, new long[] {2, 34}, null, null));
            try (Tensor w = Tensor.wrap(memory, DType.INT4, new long[] {2, 4}, new long[] {16, 1}, null)) {
                w.fill(3f);
                assertEquals(0x33, memory.get(ValueLayout.JAVA_BYTE, 9) & 0xff);
                assertEquals(0, memory.get(ValueLayout.JAVA_BYTE, 2));
            }
        }
    }

    @Test
    void plainAttentionRefusesQuantizedInputs() {
        try (TensorScope scope = TensorScope.open()) {
            for (DType dtype : QUANTIZED) {
                Tensor q = scope.zeros(dtype, Device.CPU, 1, 8, 2, 64);
                Tensor k = scope.zeros(dtype, Device.CPU, 1, 8, 2, 64);
                Tensor v = scope.zeros(dtype, Device.CPU, 1, 8, 2, 64);
                FlashAttnException.InvalidArgument e = assertThrows(FlashAttnException.InvalidArgument.class,
                        () -> Attention.forward(q, k, v, AttentionOptions.defaults()));
                assertTrue(e.getMessage().contains("quantization mode"), e.getMessage());
                assertEquals(e.getMessage(), Attention.checkForward(q, k, v, AttentionOptions.defaults()).reason());
                // With a mode but no scales: named as a pre-quantized input without its scale (or a wrong dtype).
                AttentionOptions fp8 = AttentionOptions.builder().quantization(QuantizationMode.FP8).build();
                assertThrows(FlashAttnException.InvalidArgument.class, () -> Attention.forward(q, k, v, fp8));
            }
        }
    }
}
