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
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Bad input to the attention API becomes a typed Java exception naming the problem, never a crash; after
 * each rejected call the library still computes correctly (checked at the end of every test).
 */
class BadInputTest {

    private static final AttentionOptions OPTIONS = AttentionOptions.defaults();

    /** A valid bf16 problem: B=1, N=16, Hq=4, Hkv=2, d=64, with its outputs. */
    private static final class Valid implements AutoCloseable {
        final TensorScope scope = TensorScope.open();
        final Tensor q = scope.randn(DType.BFLOAT16, Device.CPU, 1, 1, 16, 4, 64);
        final Tensor k = scope.randn(DType.BFLOAT16, Device.CPU, 2, 1, 16, 2, 64);
        final Tensor v = scope.randn(DType.BFLOAT16, Device.CPU, 3, 1, 16, 2, 64);
        final Tensor out = scope.empty(DType.BFLOAT16, Device.CPU, 1, 16, 4, 64);
        final Tensor lse = scope.empty(DType.FLOAT32, Device.CPU, 1, 4, 16);
        final Tensor dout = scope.randn(DType.BFLOAT16, Device.CPU, 4, 1, 16, 4, 64);
        final Tensor dq = scope.empty(DType.BFLOAT16, Device.CPU, 1, 16, 4, 64);
        final Tensor dk = scope.empty(DType.BFLOAT16, Device.CPU, 1, 16, 2, 64);
        final Tensor dv = scope.empty(DType.BFLOAT16, Device.CPU, 1, 16, 2, 64);

        void forward() {
            Attention.forwardInto(q, k, v, out, lse, OPTIONS);
        }

        void backward() {
            Attention.backwardInto(dout, q, k, v, out, lse, dq, dk, dv, OPTIONS);
        }

        /** The library still works: a full forward and backward give finite results. */
        void stillWorks() {
            forward();
            backward();
            for (Tensor t : new Tensor[] {out, lse, dq, dk, dv}) {
                for (float f : t.toFloatArray()) assertTrue(Float.isFinite(f), "non-finite result after a rejected call");
            }
        }

        @Override
        public void close() {
            scope.close();
        }
    }

    private static <E extends FlashAttnException> E rejects(Class<E> type, String messagePart, Executable call) {
        E e = assertThrows(type, call);
        assertTrue(e.getMessage().contains(messagePart), () -> "message '" + e.getMessage() + "' lacks '" + messagePart + "'");
        return e;
    }

    @Test
    void mismatchedShapes() {
        try (Valid p = new Valid(); Tensor k = Tensor.randn(DType.BFLOAT16, Device.CPU, 5, 1, 16, 2, 32)) {
            rejects(FlashAttnException.InvalidArgument.class, "k", () -> Attention.forwardInto(p.q, k, p.v, p.out, p.lse, OPTIONS));
            try (Tensor v = Tensor.randn(DType.BFLOAT16, Device.CPU, 5, 1, 15, 2, 64)) {
                rejects(FlashAttnException.InvalidArgument.class, "v", () -> Attention.forwardInto(p.q, p.k, v, p.out, p.lse, OPTIONS));
            }
            try (Tensor lse = Tensor.empty(DType.FLOAT32, Device.CPU, 1, 16, 4)) {  // [B, N, H] instead of [B, H, N]
                rejects(FlashAttnException.InvalidArgument.class, "lse", () -> Attention.forwardInto(p.q, p.k, p.v, p.out, lse, OPTIONS));
            }
            try (Tensor out = Tensor.empty(DType.BFLOAT16, Device.CPU, 2, 16, 4, 64)) {
                rejects(FlashAttnException.InvalidArgument.class, "out", () -> Attention.forwardInto(p.q, p.k, p.v, out, p.lse, OPTIONS));
            }
            try (Tensor dk = Tensor.empty(DType.BFLOAT16, Device.CPU, 1, 16, 4, 64)) {
                p.forward();
                rejects(FlashAttnException.InvalidArgument.class, "dk", () -> Attention.backwardInto(p.dout, p.q, p.k, p.v, p.out, p.lse, p.dq, dk, p.dv, OPTIONS));
            }
            p.stillWorks();
        }
    }

    @Test
    void headsNotAMultiple() {
        try (Valid p = new Valid();
             Tensor k = Tensor.randn(DType.BFLOAT16, Device.CPU, 5, 1, 16, 3, 64);
             Tensor v = Tensor.randn(DType.BFLOAT16, Device.CPU, 6, 1, 16, 3, 64)) {
            rejects(FlashAttnException.InvalidArgument.class, "heads", () -> Attention.forwardInto(p.q, k, v, p.out, p.lse, OPTIONS));
            p.stillWorks();
        }
    }

    @Test
    void wrongRank() {
        try (Valid p = new Valid(); Tensor q3 = Tensor.randn(DType.BFLOAT16, Device.CPU, 5, 16, 4, 64)) {
            assertThrows(RuntimeException.class, () -> Attention.forwardInto(q3, p.k, p.v, p.out, p.lse, OPTIONS));
            assertThrows(RuntimeException.class, () -> Attention.forward(q3, p.k, p.v, OPTIONS));
            p.stillWorks();
        }
    }

    @Test
    void mismatchedDtypes() {
        try (Valid p = new Valid(); Tensor k = Tensor.randn(DType.FLOAT16, Device.CPU, 5, 1, 16, 2, 64)) {
            rejects(FlashAttnException.InvalidArgument.class, "dtype", () -> Attention.forwardInto(p.q, k, p.v, p.out, p.lse, OPTIONS));
            try (Tensor lse = Tensor.empty(DType.BFLOAT16, Device.CPU, 1, 4, 16)) {
                rejects(FlashAttnException.InvalidArgument.class, "lse", () -> Attention.forwardInto(p.q, p.k, p.v, p.out, lse, OPTIONS));
            }
            p.stillWorks();
        }
    }

    @ParameterizedTest
    @ValueSource(ints = {12, 4, 264, 512})
    void unsupportedHeadDims(int headDim) {
        try (TensorScope s = TensorScope.open()) {
            Tensor q = s.randn(DType.FLOAT32, Device.CPU, 1, 1, 8, 2, headDim);
            Tensor k = s.randn(DType.FLOAT32, Device.CPU, 2, 1, 8, 2, headDim);
            Tensor v = s.randn(DType.FLOAT32, Device.CPU, 3, 1, 8, 2, headDim);
            FlashAttnException e = rejects(FlashAttnException.Unsupported.class, "head_dim " + headDim,
                    () -> Attention.forward(q, k, v, OPTIONS));
            assertEquals(FlashAttnException.Status.UNSUPPORTED, e.status());
        }
        try (Valid p = new Valid()) {
            p.stillWorks();
        }
    }

    @Test
    void nonContiguousHeadDim() {
        try (Valid p = new Valid(); Tensor wide = Tensor.randn(DType.BFLOAT16, Device.CPU, 9, 1, 16, 4, 128)) {
            Tensor q = wide.reshape(1, 16, 4, 64, 2).select(4, 0);  // every other element: head_dim stride 2
            assertEquals(2, q.stride(3));
            assertFalse(q.isContiguous());
            rejects(FlashAttnException.InvalidArgument.class, "contiguous", () -> Attention.forwardInto(q, p.k, p.v, p.out, p.lse, OPTIONS));
            p.stillWorks();
        }
    }

    @Test
    void nullArguments() {
        try (Valid p = new Valid()) {
            assertThrows(NullPointerException.class, () -> Attention.forwardInto(null, p.k, p.v, p.out, p.lse, OPTIONS));
            assertThrows(NullPointerException.class, () -> Attention.forwardInto(p.q, p.k, p.v, p.out, null, OPTIONS));
            assertThrows(NullPointerException.class, () -> Attention.forwardInto(p.q, p.k, p.v, p.out, p.lse, null));
            assertThrows(NullPointerException.class, () -> Attention.forward(p.q, null, p.v, OPTIONS));
            assertThrows(NullPointerException.class, () -> Attention.backward(p.dout, p.q, p.k, p.v, p.out, null, OPTIONS));
            p.stillWorks();
        }
    }

    @Test
    void closedTensors() {
        try (Valid p = new Valid()) {
            Tensor q = Tensor.randn(DType.BFLOAT16, Device.CPU, 1, 1, 16, 4, 64);
            q.close();
            assertThrows(IllegalStateException.class, () -> Attention.forwardInto(q, p.k, p.v, p.out, p.lse, OPTIONS));
            Tensor out = Tensor.empty(DType.BFLOAT16, Device.CPU, 1, 16, 4, 64);
            Tensor view = out.slice(1, 0, 4);
            out.close();
            assertThrows(IllegalStateException.class, () -> Attention.forwardInto(p.q, p.k, p.v, out, p.lse, OPTIONS));
            assertThrows(IllegalStateException.class, () -> Attention.forward(p.q, p.k, view, OPTIONS));
            p.stillWorks();
        }
    }

    @Test
    void outputsAliasingInputsOrEachOther() {
        try (Valid p = new Valid()) {
            rejects(FlashAttnException.InvalidArgument.class, "q", () -> Attention.forwardInto(p.q, p.k, p.v, p.q, p.lse, OPTIONS));
            p.forward();
            rejects(FlashAttnException.InvalidArgument.class, "share", () -> Attention.backwardInto(p.dout, p.q, p.k, p.v, p.out, p.lse, p.dq, p.dk, p.dk, OPTIONS));
            rejects(FlashAttnException.InvalidArgument.class, "input v", () -> Attention.backwardInto(p.dout, p.q, p.k, p.v, p.out, p.lse, p.dq, p.dk, p.v, OPTIONS));
            p.stillWorks();
        }
    }

    @Test
    void interleavedViewsOfOnePackedBufferAreNotAliases() {
        // q, k, v and dq, dk, dv as head slices of packed [B, N, Hq + 2·Hkv, d] buffers, with GQA: the
        // views interleave in memory but share no element, so the library must accept them.
        try (TensorScope s = TensorScope.open()) {
            Tensor qkv = s.randn(DType.FLOAT32, Device.CPU, 11, 2, 24, 8, 32);
            Tensor dqkv = s.zeros(DType.FLOAT32, Device.CPU, 2, 24, 8, 32);
            Tensor q = qkv.slice(2, 0, 4), k = qkv.slice(2, 4, 6), v = qkv.slice(2, 6, 8);
            Tensor dout = s.randn(DType.FLOAT32, Device.CPU, 12, 2, 24, 4, 32);
            var fwd = s.track(Attention.forward(q, k, v, OPTIONS));
            Attention.backwardInto(dout, q, k, v, fwd.out(), fwd.lse(), dqkv.slice(2, 0, 4), dqkv.slice(2, 4, 6),
                    dqkv.slice(2, 6, 8), OPTIONS);
            for (float f : dqkv.toFloatArray()) assertTrue(Float.isFinite(f));
            // ... while two views that do share elements are refused.
            rejects(FlashAttnException.InvalidArgument.class, "share", () -> Attention.backwardInto(dout, q, k, v,
                    fwd.out(), fwd.lse(), dqkv.slice(2, 0, 4), dqkv.slice(2, 3, 5), dqkv.slice(2, 6, 8), OPTIONS));
        }
    }

    @Test
    void nonFiniteSoftmaxScale() {
        try (Valid p = new Valid()) {
            assertThrows(IllegalArgumentException.class, () -> AttentionOptions.builder().softmaxScale(Float.NaN));
            assertThrows(IllegalArgumentException.class, () -> AttentionOptions.builder().softmaxScale(Float.POSITIVE_INFINITY));
            p.stillWorks();
        }
    }

    @Test
    void cudaDeviceWithoutCudaIsAClearError() {
        org.junit.jupiter.api.Assumptions.assumeFalse(io.github.flashattn4j.Cuda.isAvailable(),
                "a CUDA device is present: this test is about machines without one");
        FlashAttnException e = assertThrows(FlashAttnException.class, () -> Tensor.zeros(DType.FLOAT32, Device.cuda(0), 4));
        assertTrue(e instanceof FlashAttnException.NoDevice || e instanceof FlashAttnException.Cuda,
                () -> "unexpected " + e.getClass() + ": " + e.getMessage());
    }
}
