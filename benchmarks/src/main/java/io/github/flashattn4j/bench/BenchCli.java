package io.github.flashattn4j.bench;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;

/**
 * Prints a TFLOP/s table of attention forward and backward through the Java API (FlashAttention's FLOP
 * convention: forward 4·B·H·N²·d, halved when causal; backward 2.5× forward). Timings are medians.
 *
 * <pre>
 * --device best|cpu|cuda:N   (default best)
 * --dtype  float32|float16|bfloat16   (default bfloat16)
 * --shapes 1x1024x8x64,1x1024x8x128   (BxNxHxD)
 * --causal both|true|false   (default both)
 * --warmup N --iters N       (default 2 and 5)
 * --batch N                  calls queued per timed sample before waiting for the device (default 1); the
 *                            sample's time is divided by N, as the native driver fa4j_bench does
 * --threads N                CPU threads, 0 = all (default 0)
 * --skip-backward
 * </pre>
 */
public final class BenchCli {

    private BenchCli() {}

    public static void main(String[] args) {
        Options o = Options.parse(args);
        System.out.printf(Locale.ROOT, "flashattn4j bench: device %s, dtype %s, warmup %d, iters %d, batch %d%n", o.device, o.dtype,
                o.warmup, o.iters, o.batch);
        System.out.printf(Locale.ROOT, "%-16s %-6s %10s %10s %10s %10s%n", "B x N x H x D", "causal", "fwd ms", "fwd TF/s", "bwd ms", "bwd TF/s");
        for (BenchShape shape : o.shapes) {
            for (boolean causal : o.causal) run(o, shape, causal);
        }
    }

    private static void run(Options o, BenchShape s, boolean causal) {
        AttentionOptions options = AttentionOptions.builder().causal(causal).numThreads(o.threads).build();
        long[] seq = {s.batch(), s.seqlen(), s.heads(), s.headDim()};
        try (TensorScope scope = TensorScope.open()) {
            Tensor q = scope.randn(o.dtype, o.device, 1, seq), k = scope.randn(o.dtype, o.device, 2, seq);
            Tensor v = scope.randn(o.dtype, o.device, 3, seq), dout = scope.randn(o.dtype, o.device, 4, seq);
            Tensor out = scope.empty(o.dtype, o.device, seq);
            Tensor lse = scope.empty(DType.FLOAT32, o.device, s.batch(), s.heads(), s.seqlen());
            Tensor dq = scope.empty(o.dtype, o.device, seq), dk = scope.empty(o.dtype, o.device, seq);
            Tensor dv = scope.empty(o.dtype, o.device, seq);
            double fwd = medianMillis(o, () -> {
                for (int i = 0; i < o.batch; i++) Attention.forwardInto(q, k, v, out, lse, options);
                Sync.device(out);
            });
            double bwd = o.skipBackward ? Double.NaN : medianMillis(o, () -> {
                for (int i = 0; i < o.batch; i++) Attention.backwardInto(dout, q, k, v, out, lse, dq, dk, dv, options);
                Sync.device(dq);
            });
            double fwdFlops = Attention.forwardFlops(s.batch(), s.heads(), s.seqlen(), s.seqlen(), s.headDim(), causal);
            double bwdFlops = Attention.backwardFlops(s.batch(), s.heads(), s.seqlen(), s.seqlen(), s.headDim(), causal);
            System.out.printf(Locale.ROOT, "%-16s %-6s %10.3f %10.4f %10.3f %10.4f%n", s, causal, fwd, fwdFlops / fwd / 1e9,
                    bwd, bwdFlops / bwd / 1e9);
        }
    }

    private static double medianMillis(Options o, Runnable call) {
        for (int i = 0; i < o.warmup; i++) call.run();
        double[] times = new double[o.iters];
        for (int i = 0; i < o.iters; i++) {
            long start = System.nanoTime();
            call.run();
            times[i] = (System.nanoTime() - start) / 1e6 / o.batch;
        }
        Arrays.sort(times);
        return times[times.length / 2];
    }

    private record Options(Device device, DType dtype, List<BenchShape> shapes, boolean[] causal, int warmup, int iters,
                           int batch, int threads, boolean skipBackward) {
        static Options parse(String[] args) {
            Device device = Device.best();
            DType dtype = DType.BFLOAT16;
            List<BenchShape> shapes = new ArrayList<>(List.of(BenchShape.parse("1x1024x8x64"), BenchShape.parse("1x1024x8x128")));
            boolean[] causal = {false, true};
            int warmup = 2, iters = 5, batch = 1, threads = 0;
            boolean skipBackward = false;
            for (int i = 0; i < args.length; i++) {
                String a = args[i];
                switch (a) {
                    case "--device" -> device = parseDevice(args[++i]);
                    case "--dtype" -> dtype = DType.valueOf(args[++i].toUpperCase(Locale.ROOT));
                    case "--shapes" -> shapes = Arrays.stream(args[++i].split(",")).map(BenchShape::parse).toList();
                    case "--causal" -> causal = switch (args[++i]) {
                        case "true" -> new boolean[] {true};
                        case "false" -> new boolean[] {false};
                        default -> new boolean[] {false, true};
                    };
                    case "--warmup" -> warmup = Integer.parseInt(args[++i]);
                    case "--iters" -> iters = Integer.parseInt(args[++i]);
                    case "--batch" -> batch = Integer.parseInt(args[++i]);
                    case "--threads" -> threads = Integer.parseInt(args[++i]);
                    case "--skip-backward" -> skipBackward = true;
                    default -> throw new IllegalArgumentException("unknown option " + a + " (see BenchCli's documentation)");
                }
            }
            if (iters < 1) throw new IllegalArgumentException("--iters must be >= 1");
            if (batch < 1) throw new IllegalArgumentException("--batch must be >= 1");
            return new Options(device, dtype, shapes, causal, warmup, iters, batch, threads, skipBackward);
        }

        private static Device parseDevice(String text) {
            if (text.equals("best")) return Device.best();
            if (text.equals("cpu")) return Device.CPU;
            if (text.startsWith("cuda:")) return Device.cuda(Integer.parseInt(text.substring(5)));
            throw new IllegalArgumentException("device must be best, cpu or cuda:N, got " + text);
        }
    }
}
