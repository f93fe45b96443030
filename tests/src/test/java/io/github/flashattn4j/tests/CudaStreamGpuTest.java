package io.github.flashattn4j.tests;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.Cuda;
import io.github.flashattn4j.CudaStream;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.FlashAttnException;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertDoesNotThrow;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The life of a {@link CudaStream}: create, synchronize, close (twice), use after close, the default stream. */
class CudaStreamGpuTest extends GpuTest {

    private static final AttentionOptions OPTIONS = AttentionOptions.builder().causal(true).build();

    @Test
    void createSynchronizeCloseTwice() {
        CudaStream stream = CudaStream.create(CUDA0);
        assertEquals(CUDA0, stream.device());
        assertFalse(stream.isDefault());
        assertFalse(stream.isClosed());
        stream.synchronize();
        stream.synchronize();
        stream.close();
        assertTrue(stream.isClosed());
        assertDoesNotThrow(stream::close);
        assertTrue(stream.toString().contains("closed"), stream::toString);
    }

    @Test
    void useAfterCloseIsAnIllegalStateNotACrash() {
        try (TensorScope scope = TensorScope.open()) {
            Tensor q = scope.randn(DType.BFLOAT16, CUDA0, 1, 1, 64, 4, 64);
            Tensor k = scope.randn(DType.BFLOAT16, CUDA0, 2, 1, 64, 2, 64);
            Tensor v = scope.randn(DType.BFLOAT16, CUDA0, 3, 1, 64, 2, 64);
            Tensor out = scope.empty(DType.BFLOAT16, CUDA0, 1, 64, 4, 64);
            Tensor lse = scope.empty(DType.FLOAT32, CUDA0, 1, 4, 64);
            CudaStream stream = CudaStream.create(CUDA0);
            Attention.forwardInto(q, k, v, out, lse, OPTIONS, stream);
            stream.close();

            assertThrows(IllegalStateException.class, stream::synchronize);
            assertThrows(IllegalStateException.class, () -> Attention.forwardInto(q, k, v, out, lse, OPTIONS, stream));
            assertThrows(IllegalStateException.class, () -> Attention.forward(q, k, v, OPTIONS, stream));
            assertThrows(IllegalStateException.class, () -> Attention.backward(out, q, k, v, out, lse, OPTIONS, stream));
            assertThrows(IllegalStateException.class, () -> out.toFloatArray(stream));
            assertThrows(IllegalStateException.class, () -> out.copyFromArray(new float[(int) out.numel()], stream));
            assertThrows(IllegalStateException.class, () -> out.to(Device.CPU, stream));
            // Nothing else was disturbed: the same call on the default stream and on a new stream works.
            float[] expected = scope.track(Attention.forward(q, k, v, OPTIONS)).out().toFloatArray();
            try (CudaStream fresh = CudaStream.create(CUDA0)) {
                Attention.forwardInto(q, k, v, out, lse, OPTIONS, fresh);
                assertArrayEquals(expected, out.toFloatArray(fresh));
            }
        }
    }

    @Test
    void theDefaultStreamIsNamedNotOwned() {
        CudaStream stream = CudaStream.defaultStream(CUDA0);
        assertTrue(stream.isDefault());
        assertSame(stream, CudaStream.defaultStream(Device.cuda(0)));
        assertEquals(CUDA0, stream.device());
        stream.synchronize();
        stream.close();  // does nothing
        assertFalse(stream.isClosed());
        try (TensorScope scope = TensorScope.open()) {
            Tensor q = scope.randn(DType.FLOAT16, CUDA0, 4, 1, 32, 2, 64);
            float[] expected = scope.track(Attention.forward(q, q, q, OPTIONS)).out().toFloatArray();
            float[] onDefault = scope.track(Attention.forward(q, q, q, OPTIONS, stream)).out().toFloatArray(stream);
            assertArrayEquals(expected, onDefault);
        }
    }

    @Test
    void manyStreamsComeAndGo() {
        try (TensorScope scope = TensorScope.open()) {
            Tensor q = scope.randn(DType.BFLOAT16, CUDA0, 5, 1, 128, 4, 64);
            Tensor dout = scope.randn(DType.BFLOAT16, CUDA0, 6, 1, 128, 4, 64);
            float[] expected = scope.track(Attention.forward(q, q, q, OPTIONS)).out().toFloatArray();
            List<CudaStream> streams = new ArrayList<>();
            try {
                for (int i = 0; i < 64; i++) {
                    CudaStream s = CudaStream.create(CUDA0);
                    streams.add(s);
                    try (TensorScope step = TensorScope.open()) {
                        var fwd = step.track(Attention.forward(q, q, q, OPTIONS, s));
                        step.track(Attention.backward(dout, q, q, q, fwd.out(), fwd.lse(), OPTIONS, s));  // workspace per stream
                        if (i % 16 == 0) assertArrayEquals(expected, fwd.out().toFloatArray(s));
                    }
                }
            } finally {
                for (CudaStream s : streams) s.close();
            }
        }
    }

    @Test
    void aStreamOfAnotherDeviceIsRejected() {
        Assumptions.assumeTrue(Cuda.deviceCount() >= 2, "needs two CUDA devices");
        try (TensorScope scope = TensorScope.open(); CudaStream other = CudaStream.create(Device.cuda(1))) {
            Tensor q = scope.randn(DType.BFLOAT16, CUDA0, 1, 1, 16, 2, 64);
            Tensor out = scope.empty(DType.BFLOAT16, CUDA0, 1, 16, 2, 64);
            Tensor lse = scope.empty(DType.FLOAT32, CUDA0, 1, 2, 16);
            FlashAttnException e = assertThrows(FlashAttnException.InvalidArgument.class,
                    () -> Attention.forwardInto(q, q, q, out, lse, OPTIONS, other));
            assertTrue(e.getMessage().contains("cuda:1") && e.getMessage().contains("cuda:0"), e::getMessage);
            assertThrows(FlashAttnException.InvalidArgument.class, () -> q.toFloatArray(other));
            assertThrows(FlashAttnException.InvalidArgument.class, () -> q.to(Device.CPU, other));
            // Tensors on two devices in one call.
            try (Tensor k1 = Tensor.randn(DType.BFLOAT16, Device.cuda(1), 2, 1, 16, 2, 64)) {
                FlashAttnException mixed = assertThrows(FlashAttnException.InvalidArgument.class,
                        () -> Attention.forwardInto(q, k1, q, out, lse, OPTIONS));
                assertTrue(mixed.getMessage().contains("k is on cuda:1"), mixed::getMessage);
            }
        }
    }

    @Test
    void tensorsOnTheHostAndTheDeviceInOneCallAreRejected() {
        try (TensorScope scope = TensorScope.open(); CudaStream stream = CudaStream.create(CUDA0)) {
            Tensor q = scope.randn(DType.BFLOAT16, CUDA0, 1, 1, 16, 2, 64);
            Tensor kHost = scope.randn(DType.BFLOAT16, Device.CPU, 2, 1, 16, 2, 64);
            Tensor out = scope.empty(DType.BFLOAT16, CUDA0, 1, 16, 2, 64);
            Tensor lse = scope.empty(DType.FLOAT32, Device.CPU, 1, 2, 16);
            FlashAttnException e = assertThrows(FlashAttnException.InvalidArgument.class,
                    () -> Attention.forwardInto(q, kHost, q, out, lse, OPTIONS));
            assertTrue(e.getMessage().contains("k is on cpu but q is on cuda:0"), e::getMessage);
            FlashAttnException f = assertThrows(FlashAttnException.InvalidArgument.class,
                    () -> Attention.forwardInto(q, q, q, out, lse, OPTIONS, stream));
            assertTrue(f.getMessage().contains("lse"), f::getMessage);
            assertThrows(FlashAttnException.InvalidArgument.class,
                    () -> Attention.backward(q, q, kHost, q, out, lse, OPTIONS, stream));
            // A CUDA stream with host-only work.
            assertThrows(FlashAttnException.InvalidArgument.class, () -> kHost.toFloatArray(stream));
            assertThrows(FlashAttnException.InvalidArgument.class, () -> Attention.forward(kHost, kHost, kHost, OPTIONS, stream));
            stream.synchronize();  // still usable
        }
    }

    @Test
    void aDeviceThatDoesNotExistIsAnInvalidArgument() {
        Device missing = Device.cuda(Cuda.deviceCount());
        assertThrows(FlashAttnException.InvalidArgument.class, () -> CudaStream.create(missing));
        assertThrows(FlashAttnException.InvalidArgument.class, () -> CudaStream.defaultStream(missing).synchronize());
    }
}
