package io.github.flashattn4j.bench;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionGradients;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.AttentionOutput;
import io.github.flashattn4j.Cuda;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;

import java.util.Arrays;
import java.util.Locale;

/**
 * What allocating per call costs on CUDA, with the library's stream-ordered pool:
 * <ol>
 *   <li>a training step (forward + backward) that allocates out, lse, dq, dk, dv every step and closes them,
 *       against the same step into preallocated tensors, at the training-step shape of the Hopper-backward
 *       issue (bf16, d128, causal, 8 x 2k tokens, 32 heads); ratio = preallocated time / allocating time;</li>
 *   <li>a tiny cycle: [1, 256, 4, 64] bf16, a TensorScope per cycle whose forward allocates out and lse, closed
 *       at once; wall time per cycle over all cycles, the final synchronization included.</li>
 * </ol>
 * Medians of interleaved samples. {@code --steps N --samples N --cycles N --device cuda:N}.
 */
public final class AllocationBench {

    private AllocationBench() {}

    public static void main(String[] args) {
        int steps = 20, samples = 7, cycles = 5000, device = 0;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--steps" -> steps = Integer.parseInt(args[++i]);
                case "--samples" -> samples = Integer.parseInt(args[++i]);
                case "--cycles" -> cycles = Integer.parseInt(args[++i]);
                case "--device" -> device = Integer.parseInt(args[++i].replace("cuda:", ""));
                default -> throw new IllegalArgumentException("unknown option " + args[i]);
            }
        }
        Device cuda = Device.cuda(device);
        trainingStep(cuda, steps, samples);
        tinyCycle(cuda, cycles, samples);
    }

    private static void trainingStep(Device cuda, int steps, int samples) {
        long[] shape = {8, 2048, 32, 128};
        AttentionOptions causal = AttentionOptions.builder().causal(true).build();
        try (TensorScope scope = TensorScope.open()) {
            Tensor q = scope.randn(DType.BFLOAT16, cuda, 1, shape), k = scope.randn(DType.BFLOAT16, cuda, 2, shape);
            Tensor v = scope.randn(DType.BFLOAT16, cuda, 3, shape), dout = scope.randn(DType.BFLOAT16, cuda, 4, shape);
            Tensor out = scope.empty(DType.BFLOAT16, cuda, shape), lse = scope.empty(DType.FLOAT32, cuda, 8, 32, 2048);
            Tensor dq = scope.empty(DType.BFLOAT16, cuda, shape), dk = scope.empty(DType.BFLOAT16, cuda, shape);
            Tensor dv = scope.empty(DType.BFLOAT16, cuda, shape);
            Runnable preallocated = () -> {
                Attention.forwardInto(q, k, v, out, lse, causal);
                Attention.backwardInto(dout, q, k, v, out, lse, dq, dk, dv, causal);
            };
            Runnable allocating = () -> {
                try (AttentionOutput o = Attention.forward(q, k, v, causal);
                     AttentionGradients g = Attention.backward(dout, q, k, v, o.out(), o.lse(), causal)) {
                    // closed here, while the kernels are still queued
                }
            };
            for (int i = 0; i < 3; i++) {
                preallocated.run();
                allocating.run();
            }
            Cuda.synchronize(cuda.index());
            double[] pre = new double[samples], alloc = new double[samples];
            for (int s = 0; s < samples; s++) {
                pre[s] = millisPerStep(cuda, preallocated, steps);
                alloc[s] = millisPerStep(cuda, allocating, steps);
            }
            double flops = Attention.forwardFlops(8, 32, 2048, 2048, 128, true)
                    + Attention.backwardFlops(8, 32, 2048, 2048, 128, true);
            double p = median(pre), a = median(alloc);
            System.out.printf(Locale.ROOT, "training step bf16 8x2048x32x128 causal: preallocated %.3f ms (%.1f TFLOP/s), "
                    + "allocating %.3f ms (%.1f TFLOP/s), allocating/preallocated speed %.4f  (spread pre %.3f-%.3f, alloc %.3f-%.3f ms)%n",
                    p, flops / p / 1e9, a, flops / a / 1e9, p / a, min(pre), max(pre), min(alloc), max(alloc));
        }
    }

    private static void tinyCycle(Device cuda, int cycles, int samples) {
        long[] shape = {1, 256, 4, 64};
        AttentionOptions options = AttentionOptions.defaults();
        try (TensorScope inputs = TensorScope.open()) {
            Tensor q = inputs.randn(DType.BFLOAT16, cuda, 1, shape), k = inputs.randn(DType.BFLOAT16, cuda, 2, shape);
            Tensor v = inputs.randn(DType.BFLOAT16, cuda, 3, shape);
            Runnable cycle = () -> {
                try (TensorScope scope = TensorScope.open()) {
                    scope.track(Attention.forward(q, k, v, options));
                }
            };
            for (int i = 0; i < 1000; i++) cycle.run();
            Cuda.synchronize(cuda.index());
            double[] micros = new double[samples];
            for (int s = 0; s < samples; s++) {
                long start = System.nanoTime();
                for (int i = 0; i < cycles; i++) cycle.run();
                Cuda.synchronize(cuda.index());
                micros[s] = (System.nanoTime() - start) / 1e3 / cycles;
            }
            Cuda.PoolInfo pool = Cuda.poolInfo(cuda.index());
            System.out.printf(Locale.ROOT, "tiny cycle bf16 1x256x4x64 (scope, forward allocating out+lse, close), %d cycles: "
                    + "median %.2f us/cycle (min %.2f, max %.2f); pool used %d B, reserved %d B%n", cycles, median(micros),
                    min(micros), max(micros), pool.usedBytes(), pool.reservedBytes());
        }
    }

    private static double millisPerStep(Device cuda, Runnable step, int steps) {
        long start = System.nanoTime();
        for (int i = 0; i < steps; i++) step.run();
        Cuda.synchronize(cuda.index());
        return (System.nanoTime() - start) / 1e6 / steps;
    }

    private static double median(double[] values) {
        double[] sorted = values.clone();
        Arrays.sort(sorted);
        return sorted[sorted.length / 2];
    }

    private static double min(double[] values) {
        return Arrays.stream(values).min().orElse(Double.NaN);
    }

    private static double max(double[] values) {
        return Arrays.stream(values).max().orElse(Double.NaN);
    }
}
