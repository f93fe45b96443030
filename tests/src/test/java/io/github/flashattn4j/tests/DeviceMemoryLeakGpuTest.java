package io.github.flashattn4j.tests;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionGradients;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.AttentionOutput;
import io.github.flashattn4j.Cuda;
import io.github.flashattn4j.CudaStream;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Training-loop shaped GPU workloads leak no device memory: 2000 steps that each allocate, run attention
 * forward and backward and close everything through a {@link TensorScope}, and 2000 streams created, used
 * for a backward (which caches a workspace per stream) and closed. Free device memory is read with
 * {@link Cuda#memoryInfo} after a warm-up of the same work and a device synchronization (so that CUDA's
 * stream-ordered allocator has returned what it freed); a leak would cost gigabytes, far above the
 * allowance for other processes and allocator noise.
 */
class DeviceMemoryLeakGpuTest extends GpuTest {

    private static final long ALLOWED_GROWTH_BYTES = 64L << 20;
    private static final AttentionOptions OPTIONS = AttentionOptions.builder().causal(true).build();

    private static long usedBytes() {
        Cuda.synchronize(0);
        return Cuda.memoryInfo(0).usedBytes();
    }

    /** One training step: inputs, forward, backward, a scratch buffer; all closed by the scope. */
    private static void step(CudaStream stream) {
        try (TensorScope scope = TensorScope.open()) {
            Tensor q = scope.randn(DType.BFLOAT16, CUDA0, 1, 1, 128, 8, 64);
            Tensor k = scope.randn(DType.BFLOAT16, CUDA0, 2, 1, 128, 2, 64);
            Tensor v = scope.randn(DType.BFLOAT16, CUDA0, 3, 1, 128, 2, 64);
            Tensor dout = scope.randn(DType.BFLOAT16, CUDA0, 4, 1, 128, 8, 64);
            AttentionOutput o = scope.track(stream == null ? Attention.forward(q, k, v, OPTIONS)
                    : Attention.forward(q, k, v, OPTIONS, stream));
            AttentionGradients g = scope.track(stream == null
                    ? Attention.backward(dout, q, k, v, o.out(), o.lse(), OPTIONS)
                    : Attention.backward(dout, q, k, v, o.out(), o.lse(), OPTIONS, stream));
            scope.empty(DType.FLOAT32, CUDA0, 1024, 1024);  // 4 MiB of activations
            float first = stream == null ? g.dq().slice(1, 0, 1).toFloatArray()[0] : g.dq().slice(1, 0, 1).toFloatArray(stream)[0];
            assertTrue(Float.isFinite(first));
        }
    }

    @Test
    void trainingStepsUnderAScopeLeakNoDeviceMemory() {
        for (int i = 0; i < 100; i++) step(null);  // warm-up: lazy module loading, workspace, allocator
        long before = usedBytes();
        int steps = 2000;  // about 4.6 MiB per step: 9 GiB if nothing were freed
        for (int i = 0; i < steps; i++) step(null);
        long growth = usedBytes() - before;
        System.out.printf("device leak loop (training steps, default stream): used memory grew by %.1f MiB over %d steps%n",
                growth / 1048576.0, steps);
        assertTrue(growth < ALLOWED_GROWTH_BYTES, "device memory in use grew by " + growth + " bytes over " + steps + " steps");
    }

    @Test
    void trainingStepsOnOneStreamLeakNoDeviceMemory() {
        try (CudaStream stream = CudaStream.create(CUDA0)) {
            for (int i = 0; i < 100; i++) step(stream);
            long before = usedBytes();
            int steps = 2000;
            for (int i = 0; i < steps; i++) step(stream);
            long growth = usedBytes() - before;
            System.out.printf("device leak loop (training steps, one stream): used memory grew by %.1f MiB over %d steps%n",
                    growth / 1048576.0, steps);
            assertTrue(growth < ALLOWED_GROWTH_BYTES, "device memory in use grew by " + growth + " bytes over " + steps + " steps");
        }
    }

    @Test
    void streamsAndTheirWorkspacesAreReleased() {
        try (TensorScope scope = TensorScope.open()) {
            Tensor q = scope.randn(DType.FLOAT16, CUDA0, 1, 1, 512, 8, 128);
            Tensor dout = scope.randn(DType.FLOAT16, CUDA0, 2, 1, 512, 8, 128);
            AttentionOutput o = scope.track(Attention.forward(q, q, q, OPTIONS));
            Tensor dq = scope.empty(DType.FLOAT16, CUDA0, 1, 512, 8, 128);
            Tensor dk = scope.empty(DType.FLOAT16, CUDA0, 1, 512, 8, 128);
            Tensor dv = scope.empty(DType.FLOAT16, CUDA0, 1, 512, 8, 128);
            Runnable useAStream = () -> {
                try (CudaStream stream = CudaStream.create(CUDA0)) {
                    // Each stream gets its own backward workspace (about 2 MiB here), freed with the stream.
                    Attention.backwardInto(dout, q, q, q, o.out(), o.lse(), dq, dk, dv, OPTIONS, stream);
                }
            };
            for (int i = 0; i < 50; i++) useAStream.run();
            long before = usedBytes();
            int streams = 2000;
            for (int i = 0; i < streams; i++) useAStream.run();
            long growth = usedBytes() - before;
            System.out.printf("device leak loop (streams): used memory grew by %.1f MiB over %d streams%n",
                    growth / 1048576.0, streams);
            assertTrue(growth < ALLOWED_GROWTH_BYTES, "device memory in use grew by " + growth + " bytes over " + streams + " streams");
        }
    }
}
