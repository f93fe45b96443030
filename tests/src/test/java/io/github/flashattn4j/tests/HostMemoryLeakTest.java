package io.github.flashattn4j.tests;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionGradients;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.AttentionOutput;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Training-loop shaped workloads leak no native memory: many steps allocate tensors (off-heap, outside the
 * GC's view) and close them through a scope. The resident set size is read from /proc after a warm-up
 * phase of the same work (which lets the Java heap, malloc's arenas and the JIT settle); a leak of the
 * sizes used here would then grow it by gigabytes, far above the allowance for that noise.
 */
class HostMemoryLeakTest {

    private static final long ALLOWED_GROWTH_BYTES = 128L << 20;

    private static long residentBytes() {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
                if (line.startsWith("VmRSS:")) return Long.parseLong(line.replaceAll("\\D", "")) * 1024;
            }
        } catch (IOException e) {
            return -1;
        }
        return -1;
    }

    @Test
    void bigAllocationsAreReturnedOnClose() {
        Runnable allocate = () -> {
            try (Tensor t = Tensor.empty(DType.FLOAT32, Device.CPU, 2048, 1024)) {
                t.slice(0, 0, 1).fill(1f);  // touch the memory so a leak would be resident
                t.slice(0, 2047, 2048).fill(1f);
            }
        };
        for (int i = 0; i < 500; i++) allocate.run();
        long before = residentBytes();
        Assumptions.assumeTrue(before > 0, "no /proc/self/status on this OS");
        for (int i = 0; i < 2000; i++) allocate.run();  // 2000 × 8 MiB = 16 GiB if nothing were freed
        long growth = residentBytes() - before;
        System.out.printf("host leak loop (allocations): RSS grew by %.1f MiB over 2000 × 8 MiB tensors%n", growth / 1048576.0);
        assertTrue(growth < ALLOWED_GROWTH_BYTES, "resident memory grew by " + growth + " bytes");
    }

    @Test
    void trainingStepsUnderAScopeLeakNothing() {
        AttentionOptions options = AttentionOptions.builder().causal(true).build();
        Runnable step = () -> {
            try (TensorScope scope = TensorScope.open()) {
                Tensor q = scope.randn(DType.BFLOAT16, Device.CPU, 1, 2, 64, 4, 64);
                Tensor k = scope.randn(DType.BFLOAT16, Device.CPU, 2, 2, 64, 2, 64);
                Tensor v = scope.randn(DType.BFLOAT16, Device.CPU, 3, 2, 64, 2, 64);
                Tensor dout = scope.randn(DType.BFLOAT16, Device.CPU, 4, 2, 64, 4, 64);
                AttentionOutput o = scope.track(Attention.forward(q, k, v, options));
                AttentionGradients g = scope.track(Attention.backward(dout, q, k, v, o.out(), o.lse(), options));
                // A scratch buffer per step, as a training loop's activations would be.
                scope.zeros(DType.FLOAT32, Device.CPU, 1024, 1024);
                assertTrue(Float.isFinite(g.dq().toFloatArray()[0]));
            }
        };
        for (int i = 0; i < 1000; i++) step.run();  // warm up: JIT, heap sizing, allocator pools, thread pool
        long before = residentBytes();
        Assumptions.assumeTrue(before > 0, "no /proc/self/status on this OS");
        int steps = 3000;  // 3000 × ~4.3 MiB if a step leaked its tensors
        for (int i = 0; i < steps; i++) step.run();
        long growth = residentBytes() - before;
        System.out.printf("host leak loop (training steps): RSS grew by %.1f MiB over %d steps%n", growth / 1048576.0, steps);
        assertTrue(growth < ALLOWED_GROWTH_BYTES, "resident memory grew by " + growth + " bytes over " + steps + " steps");
    }
}
