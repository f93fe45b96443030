package io.github.flashattn4j.tests;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.AttentionOutput;
import io.github.flashattn4j.Cuda;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A soak: many cycles of "allocate out and lse through {@link Attention#forward}, run the kernel, close
 * both" on a tiny problem ([1, 256, 4, 64] bfloat16, causal), the pattern of an inference loop, with
 * device memory flat: after 10 % of the cycles (the pool's cache, lazily loaded kernels and the like have
 * settled by then) and at the end, the device's free memory ({@link Cuda#memoryInfo}) and the memory the
 * library's pool holds ({@link Cuda#poolInfo}) may differ by at most 32 MiB, whatever the cycle count. A
 * leak of even one lse (4 KiB) per cycle is far above that at the default count, and a leak of any device
 * allocation per cycle is at 10^6 cycles. Results are checked against the first cycle's (the forward is
 * deterministic) every 997 cycles and at the end.
 *
 * <p>{@code -Dflashattn4j.soak.cycles=N} sets the count (default 20000, a few seconds, for the normal
 * suite); scripts/gpu-loop.sh runs it once with 1000000. The rate printed is information, not a test.
 */
class DeviceSoakGpuTest extends GpuTest {

    static final String CYCLES_PROPERTY = "flashattn4j.soak.cycles";
    private static final int DEFAULT_CYCLES = 20_000;
    private static final long ALLOWED_GROWTH_BYTES = 32L << 20;
    private static final int CHECK_EVERY = 997;

    /** Free device memory and the pool's reserved bytes, after the queued work (and releases) finished. */
    private record Reading(long freeBytes, long poolBytes) {
        static Reading now() {
            Cuda.synchronize(0);
            return new Reading(Cuda.memoryInfo(0).freeBytes(), Cuda.poolInfo(0).reservedBytes());
        }

        @Override
        public String toString() {
            return String.format("%.1f/%.1f", freeBytes / 1048576.0, poolBytes / 1048576.0);
        }
    }

    @Test
    void allocateAttendFreeCyclesKeepDeviceMemoryFlat() {
        int cycles = Integer.getInteger(CYCLES_PROPERTY, DEFAULT_CYCLES);
        assertTrue(cycles >= 100, () -> CYCLES_PROPERTY + " must be at least 100, not " + cycles);
        AttentionOptions options = AttentionOptions.builder().causal(true).build();
        long[] shape = {1, 256, 4, 64};
        try (TensorScope scope = TensorScope.open()) {
            Tensor q = scope.randn(DType.BFLOAT16, CUDA0, 1, shape);
            Tensor k = scope.randn(DType.BFLOAT16, CUDA0, 2, shape);
            Tensor v = scope.randn(DType.BFLOAT16, CUDA0, 3, shape);
            float[] expectedOut, expectedLse;
            try (AttentionOutput first = Attention.forward(q, k, v, options)) {
                expectedOut = first.out().toFloatArray();
                expectedLse = first.lse().toFloatArray();
            }
            int tenth = cycles / 10;
            List<String> trace = new ArrayList<>();
            Reading settled = null;
            long start = 0;
            for (int i = 0; i < cycles; i++) {
                if (i % tenth == 0 && i > 0) {
                    Reading reading = Reading.now();
                    trace.add(i + ": " + reading);
                    if (i == tenth) {
                        settled = reading;
                        start = System.nanoTime();
                    }
                }
                try (AttentionOutput o = Attention.forward(q, k, v, options)) {
                    if (i % CHECK_EVERY == 0 || i == cycles - 1) {
                        int cycle = i;
                        assertArrayEquals(expectedOut, o.out().toFloatArray(), () -> "out of cycle " + cycle);
                        assertArrayEquals(expectedLse, o.lse().toFloatArray(), () -> "lse of cycle " + cycle);
                    }
                }
            }
            double seconds = (System.nanoTime() - start) / 1e9;
            Reading end = Reading.now();
            trace.add(cycles + ": " + end);
            long deviceGrowth = settled.freeBytes() - end.freeBytes();
            long poolGrowth = end.poolBytes() - settled.poolBytes();
            System.out.printf("device soak: %d cycles (allocate out and lse, [1, 256, 4, 64] bf16 causal forward, free), "
                    + "%.0f cycles/s; after the first tenth, device memory in use grew by %.1f MiB, the pool by %.1f MiB%n",
                    cycles, (cycles - tenth) / seconds, deviceGrowth / 1048576.0, poolGrowth / 1048576.0);
            System.out.println("device soak: free device memory / pool reserved (MiB) after cycle " + String.join(", ", trace));
            String between = " between cycle " + tenth + " and cycle " + cycles + " (allowed: " + ALLOWED_GROWTH_BYTES + ")";
            assertTrue(deviceGrowth < ALLOWED_GROWTH_BYTES, () -> "device memory in use grew by " + deviceGrowth + " bytes" + between);
            assertTrue(poolGrowth < ALLOWED_GROWTH_BYTES, () -> "the pool grew by " + poolGrowth + " bytes" + between);
        }
    }
}
