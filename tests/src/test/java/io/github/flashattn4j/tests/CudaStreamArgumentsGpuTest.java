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

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The argument checks of the CUDA stream API, which happen in Java before any native call and so need no
 * GPU: unlike the other *GpuTest classes, these tests run (and must pass) on every machine. A CUDA stream
 * handed host tensors, a CPU "stream", a null stream: typed errors with clear messages, never a crash.
 */
class CudaStreamArgumentsGpuTest {

    private static final AttentionOptions OPTIONS = AttentionOptions.defaults();

    @Test
    void aStreamNeedsACudaDevice() {
        FlashAttnException e = assertThrows(FlashAttnException.InvalidArgument.class, () -> CudaStream.create(Device.CPU));
        assertTrue(e.getMessage().contains("CUDA device") && e.getMessage().contains("cpu"), e::getMessage);
        assertThrows(FlashAttnException.InvalidArgument.class, () -> CudaStream.defaultStream(Device.CPU));
        assertThrows(NullPointerException.class, () -> CudaStream.create(null));
    }

    @Test
    void aCudaStreamWithHostTensorsIsRejectedBeforeAnyNativeCall() {
        // Naming the default stream of cuda:0 touches no device, so this works without a GPU.
        CudaStream stream = CudaStream.defaultStream(Device.cuda(0));
        try (TensorScope scope = TensorScope.open()) {
            Tensor q = scope.randn(DType.BFLOAT16, Device.CPU, 1, 1, 16, 2, 64);
            Tensor out = scope.empty(DType.BFLOAT16, Device.CPU, 1, 16, 2, 64);
            Tensor lse = scope.empty(DType.FLOAT32, Device.CPU, 1, 2, 16);
            Tensor dq = scope.empty(DType.BFLOAT16, Device.CPU, 1, 16, 2, 64);
            FlashAttnException e = assertThrows(FlashAttnException.InvalidArgument.class,
                    () -> Attention.forwardInto(q, q, q, out, lse, OPTIONS, stream));
            assertTrue(e.getMessage().contains("cpu") && e.getMessage().contains("cuda:0"), e::getMessage);
            assertThrows(FlashAttnException.InvalidArgument.class, () -> Attention.forward(q, q, q, OPTIONS, stream));
            assertThrows(FlashAttnException.InvalidArgument.class,
                    () -> Attention.backwardInto(q, q, q, q, out, lse, dq, dq, dq, OPTIONS, stream));
            assertThrows(FlashAttnException.InvalidArgument.class,
                    () -> Attention.backward(q, q, q, q, out, lse, OPTIONS, stream));
            // Host-only copies have nothing to do with a CUDA stream.
            assertThrows(FlashAttnException.InvalidArgument.class, () -> q.toFloatArray(stream));
            assertThrows(FlashAttnException.InvalidArgument.class, () -> out.copyFromArray(new float[(int) out.numel()], stream));
            assertThrows(FlashAttnException.InvalidArgument.class, () -> out.copyFrom(q, stream));
            assertThrows(FlashAttnException.InvalidArgument.class, () -> q.to(Device.CPU, stream));
            // Null streams are programming errors.
            assertThrows(NullPointerException.class, () -> Attention.forwardInto(q, q, q, out, lse, OPTIONS, null));
            assertThrows(NullPointerException.class, () -> q.toFloatArray((CudaStream) null));
            // And the tensors are unharmed.
            Attention.forwardInto(q, q, q, out, lse, OPTIONS);
            assertTrue(Float.isFinite(out.toFloatArray()[0]));
            assertArrayEquals(q.toFloatArray(), scope.track(q.to(Device.CPU)).toFloatArray());
        }
    }

    @Test
    void withoutAGpuStreamsAreAClearError() {
        Assumptions.assumeFalse(Cuda.isAvailable(), "a CUDA device is present: this test is about machines without one");
        FlashAttnException e = assertThrows(FlashAttnException.class, () -> CudaStream.create(Device.cuda(0)));
        assertTrue(e instanceof FlashAttnException.NoDevice || e instanceof FlashAttnException.Cuda,
                () -> "unexpected " + e.getClass() + ": " + e.getMessage());
        FlashAttnException s = assertThrows(FlashAttnException.class, () -> CudaStream.defaultStream(Device.cuda(0)).synchronize());
        assertTrue(s instanceof FlashAttnException.NoDevice || s instanceof FlashAttnException.Cuda, s::getMessage);
        FlashAttnException m = assertThrows(FlashAttnException.class, () -> Cuda.memoryInfo(0));
        assertTrue(m instanceof FlashAttnException.NoDevice || m instanceof FlashAttnException.Cuda, m::getMessage);
    }
}
