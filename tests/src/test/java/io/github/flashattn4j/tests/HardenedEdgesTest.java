package io.github.flashattn4j.tests;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.FlashAttnException;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Edges found by fuzzing the public API: arithmetic overflow, allocation failure, index errors and
 * nonsense attention shapes each give the documented exception, with a message naming the real cause.
 */
class HardenedEdgesTest {

    private static <E extends Throwable> E throwsNaming(Class<E> type, String messagePart, Executable call) {
        E e = assertThrows(type, call);
        assertTrue(e.getMessage() != null && e.getMessage().contains(messagePart),
                () -> "message '" + e.getMessage() + "' lacks '" + messagePart + "'");
        return e;
    }

    @Test
    void shapesWhoseSizesOverflowALongAreIllegalArguments() {
        // Zero elements, but the strides of the other sizes overflow.
        throwsNaming(IllegalArgumentException.class, "too large", () -> Tensor.empty(DType.FLOAT32, Device.CPU, 0, 1L << 62, 8, 64));
        // Elements fit in a long, bytes do not.
        throwsNaming(IllegalArgumentException.class, "too large", () -> Tensor.zeros(DType.FLOAT32, Device.CPU, Long.MAX_VALUE / 2));
        throwsNaming(IllegalArgumentException.class, "too large", () -> Tensor.randn(DType.BFLOAT16, Device.CPU, 1, 1L << 32, 1L << 32));
        throwsNaming(IllegalArgumentException.class, "too large", () -> Tensor.full(1f, DType.FLOAT16, Device.CPU, 3, Long.MAX_VALUE));
        try (Tensor empty = Tensor.empty(DType.FLOAT32, Device.CPU, 0)) {
            throwsNaming(IllegalArgumentException.class, "too large", () -> empty.reshape(1L << 62, 4, 0));
            throwsNaming(IllegalArgumentException.class, "too large", () -> empty.reshape(-1, 1L << 62, 4));
            throwsNaming(IllegalArgumentException.class, "too large", () -> empty.reshape(0, Long.MAX_VALUE, 2));
        }
        // A huge shape with the wrong element count is refused for the count, before any allocation.
        throwsNaming(IllegalArgumentException.class, "values", () -> Tensor.fromArray(new float[4], DType.FLOAT32, Device.CPU, 1L << 40, 8));
        throwsNaming(IllegalArgumentException.class, "randn", () -> Tensor.randn(DType.FLOAT32, Device.CPU, 1, 1L << 31));
    }

    @Test
    void hostAllocationFailureIsFlashAttnOutOfMemory() {
        // 16 TiB: more than any test machine has.
        FlashAttnException e = throwsNaming(FlashAttnException.OutOfMemory.class, "17592186044416 bytes",
                () -> Tensor.empty(DType.BFLOAT16, Device.CPU, 1L << 40, 8));
        assertEquals(FlashAttnException.Status.OUT_OF_MEMORY, e.status());
        // Byte counts just below 2^63, where size arithmetic rounding up to pages or alignments would wrap.
        throwsNaming(FlashAttnException.OutOfMemory.class, "bytes", () -> Tensor.empty(DType.FLOAT32, Device.CPU, Long.MAX_VALUE / 4));
        throwsNaming(FlashAttnException.OutOfMemory.class, "bytes", () -> Tensor.zeros(DType.FLOAT16, Device.CPU, Long.MAX_VALUE / 2));
        try (TensorScope scope = TensorScope.open()) {
            assertThrows(FlashAttnException.OutOfMemory.class, () -> scope.empty(DType.FLOAT32, Device.CPU, 1L << 41, 4));
            assertEquals(0, scope.size());
        }
    }

    @Test
    void zeroElementTensorsAreContiguous() {
        try (Tensor a = Tensor.empty(DType.FLOAT32, Device.CPU, 4, 0);
             Tensor b = Tensor.empty(DType.BFLOAT16, Device.CPU, 0, 3, 5);
             Tensor c = Tensor.randn(DType.FLOAT32, Device.CPU, 1, 3, 4)) {
            assertTrue(a.isContiguous());
            assertTrue(b.isContiguous());
            assertTrue(b.transpose(0, 2).isContiguous());
            Tensor none = c.slice(1, 2, 2).transpose(0, 1);
            assertTrue(none.isContiguous());
            assertEquals(0, none.numel());
            assertArrayEquals(new long[] {0, 3}, none.shape());
            assertEquals(0, none.reshape(-1, 5).size(0));
            assertArrayEquals(new float[0], none.toFloatArray());
            // A zero-element view whose offset lies past the end of its memory copies nothing, harmlessly.
            Tensor pastTheEnd = c.slice(0, 3, 3).slice(1, 4, 4);
            try (Tensor target = Tensor.empty(DType.FLOAT32, Device.CPU, 0, 0)) {
                target.copyFrom(pastTheEnd);
                pastTheEnd.copyFrom(target);
                pastTheEnd.fill(1f);
                pastTheEnd.copyFromArray(new float[0]);
            }
            assertFalse(c.transpose(0, 1).isContiguous());
        }
    }

    @Test
    void indicesOutOfRangeAreIndexOutOfBounds() {
        try (Tensor t = Tensor.zeros(DType.FLOAT32, Device.CPU, 3, 4)) {
            for (int dim : new int[] {2, -3, Integer.MAX_VALUE, Integer.MIN_VALUE}) {
                assertThrows(IndexOutOfBoundsException.class, () -> t.size(dim), "size " + dim);
                assertThrows(IndexOutOfBoundsException.class, () -> t.stride(dim), "stride " + dim);
                assertThrows(IndexOutOfBoundsException.class, () -> t.slice(dim, 0, 1), "slice " + dim);
                assertThrows(IndexOutOfBoundsException.class, () -> t.select(dim, 0), "select " + dim);
                assertThrows(IndexOutOfBoundsException.class, () -> t.transpose(0, dim), "transpose " + dim);
                assertThrows(IndexOutOfBoundsException.class, () -> t.transpose(dim, 1), "transpose " + dim);
            }
            assertThrows(IndexOutOfBoundsException.class, () -> t.slice(1, -1, 2));
            assertThrows(IndexOutOfBoundsException.class, () -> t.slice(1, 3, 2));
            assertThrows(IndexOutOfBoundsException.class, () -> t.slice(1, 0, 5));
            assertThrows(IndexOutOfBoundsException.class, () -> t.slice(0, Long.MIN_VALUE, Long.MAX_VALUE));
            assertThrows(IndexOutOfBoundsException.class, () -> t.select(0, 3));
            assertThrows(IndexOutOfBoundsException.class, () -> t.select(-1, -1));
            assertThrows(IndexOutOfBoundsException.class, () -> t.select(0, Long.MIN_VALUE));
            assertEquals(4, t.size(-1));
            assertEquals(4, t.stride(-2));
        }
        try (Tensor scalar = Tensor.zeros(DType.FLOAT32, Device.CPU)) {
            assertThrows(IndexOutOfBoundsException.class, () -> scalar.size(0));
            assertThrows(IndexOutOfBoundsException.class, () -> scalar.transpose(0, 0));
            assertEquals(1, scalar.numel());
        }
    }

    @Test
    void forwardRefusesAZeroHeadDimBeforeAllocating() {
        // Outputs of this q would be a 2 GiB lse; the head dim is the fault, not the infinite 1/sqrt(0).
        try (Tensor q = Tensor.empty(DType.FLOAT32, Device.CPU, 1, 32768, 16384, 0)) {
            FlashAttnException e = throwsNaming(FlashAttnException.Unsupported.class, "head_dim 0 is not supported",
                    () -> Attention.forward(q, q, q, AttentionOptions.defaults()));
            assertFalse(e.getMessage().contains("softmax_scale"), e.getMessage());
            try (Tensor lse = Tensor.empty(DType.FLOAT32, Device.CPU, 1, 16384, 32768 / 1024);
                 Tensor out = Tensor.empty(DType.FLOAT32, Device.CPU, 1, 32768, 16384, 0)) {
                throwsNaming(FlashAttnException.Unsupported.class, "head_dim 0",
                        () -> Attention.forwardInto(q, q, q, out, lse, AttentionOptions.defaults()));
            }
        }
    }

    @Test
    void allocatingCallsCheckTheirInputsFirstWithTheNativeMessages() {
        AttentionOptions options = AttentionOptions.defaults();
        try (TensorScope s = TensorScope.open()) {
            Tensor q = s.randn(DType.BFLOAT16, Device.CPU, 1, 2, 16, 4, 64);
            Tensor k = s.randn(DType.BFLOAT16, Device.CPU, 2, 2, 16, 2, 64);
            Tensor v = s.randn(DType.BFLOAT16, Device.CPU, 3, 2, 16, 2, 64);
            throwsNaming(FlashAttnException.InvalidArgument.class, "q must have 4 dimensions, has 3",
                    () -> Attention.forward(q.select(0, 0), k, v, options));
            throwsNaming(FlashAttnException.InvalidArgument.class, "k must have the dtype of q (bfloat16)",
                    () -> Attention.forward(q, s.randn(DType.FLOAT16, Device.CPU, 4, 2, 16, 2, 64), v, options));
            throwsNaming(FlashAttnException.InvalidArgument.class, "v shape [2, 15, 2, 64] strides [1920, 128, 64, 1] does not match the expected shape [2, 16, 2, 64]",
                    () -> Attention.forward(q, k, s.randn(DType.BFLOAT16, Device.CPU, 5, 2, 15, 2, 64), options));
            throwsNaming(FlashAttnException.InvalidArgument.class, "k shape",
                    () -> Attention.forward(q, s.randn(DType.BFLOAT16, Device.CPU, 6, 1, 16, 2, 64), v, options));
            throwsNaming(FlashAttnException.InvalidArgument.class, "heads of q (4) must be a multiple of heads of k and v (3)",
                    () -> Attention.forward(q, s.randn(DType.BFLOAT16, Device.CPU, 7, 2, 16, 3, 64),
                            s.randn(DType.BFLOAT16, Device.CPU, 8, 2, 16, 3, 64), options));
            throwsNaming(FlashAttnException.InvalidArgument.class, "at least 1",
                    () -> Attention.forward(q.slice(2, 0, 0), k.slice(2, 0, 0), v.slice(2, 0, 0), options));
            throwsNaming(FlashAttnException.Unsupported.class, "head_dim 264",
                    () -> Attention.forward(s.empty(DType.BFLOAT16, Device.CPU, 2, 16, 4, 264), s.empty(DType.BFLOAT16, Device.CPU, 2, 16, 2, 264),
                            s.empty(DType.BFLOAT16, Device.CPU, 2, 16, 2, 264), options));

            var fwd = s.track(Attention.forward(q, k, v, options));
            Tensor dout = s.randn(DType.BFLOAT16, Device.CPU, 9, 2, 16, 4, 64);
            throwsNaming(FlashAttnException.InvalidArgument.class, "dout shape",
                    () -> Attention.backward(dout.slice(1, 0, 8), q, k, v, fwd.out(), fwd.lse(), options));
            throwsNaming(FlashAttnException.InvalidArgument.class, "out must have the dtype of q",
                    () -> Attention.backward(dout, q, k, v, s.empty(DType.FLOAT32, Device.CPU, 2, 16, 4, 64), fwd.lse(), options));
            throwsNaming(FlashAttnException.InvalidArgument.class, "lse must be float32",
                    () -> Attention.backward(dout, q, k, v, fwd.out(), s.empty(DType.BFLOAT16, Device.CPU, 2, 4, 16), options));
            throwsNaming(FlashAttnException.InvalidArgument.class, "lse shape",
                    () -> Attention.backward(dout, q, k, v, fwd.out(), fwd.lse().transpose(1, 2), options));
            throwsNaming(FlashAttnException.InvalidArgument.class, "lse must have 3 dimensions",
                    () -> Attention.backward(dout, q, k, v, fwd.out(), fwd.out(), options));
            Tensor closed = Tensor.randn(DType.BFLOAT16, Device.CPU, 10, 2, 16, 2, 64);
            closed.close();
            throwsNaming(IllegalStateException.class, "v is closed", () -> Attention.forward(q, k, closed, options));
            throwsNaming(IllegalStateException.class, "k is closed", () -> Attention.backward(dout, q, closed, v, fwd.out(), fwd.lse(), options));
            assertThrows(NullPointerException.class, () -> Attention.backward(dout, q, k, v, null, fwd.lse(), options));
            // Still a working library after all that.
            var g = s.track(Attention.backward(dout, q, k, v, fwd.out(), fwd.lse(), options));
            for (float f : g.dk().toFloatArray()) assertTrue(Float.isFinite(f));
        }
    }
}
