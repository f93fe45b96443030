package io.github.flashattn4j.bench;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.CudaStream;
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
 * --stream                   queue on a stream made for the run (CudaStream.create, non-blocking, as the native
 *                            driver does) instead of the legacy default stream, and wait for that stream only
 * --inputs gaussian|uniform4 input distribution: Gaussian (Tensor.randn, the default) or the native driver's
 *                            (sum of four uniforms from the same generator, variance 1, |x| &lt; 3.47)
 * --skip-backward
 * </pre>
 */
public final class BenchCli {

    private BenchCli() {}

    public static void main(String[] args) {
        Options o = Options.parse(args);
        System.out.printf(Locale.ROOT, "flashattn4j bench: device %s, dtype %s, warmup %d, iters %d, batch %d, %s stream, %s inputs%n",
                o.device, o.dtype, o.warmup, o.iters, o.batch, o.ownStream ? "own" : "default", o.inputs);
        System.out.printf(Locale.ROOT, "%-16s %-6s %10s %10s %10s %10s%n", "B x N x H x D", "causal", "fwd ms", "fwd TF/s", "bwd ms", "bwd TF/s");
        for (BenchShape shape : o.shapes) {
            for (boolean causal : o.causal) run(o, shape, causal);
        }
    }

    private static void run(Options o, BenchShape s, boolean causal) {
        AttentionOptions options = AttentionOptions.builder().causal(causal).numThreads(o.threads).build();
        long[] seq = {s.batch(), s.seqlen(), s.heads(), s.headDim()};
        try (TensorScope scope = TensorScope.open()) {
            CudaStream stream = o.ownStream && o.device.isCuda() ? scope.track(CudaStream.create(o.device)) : null;
            Tensor q = input(scope, o, 1, seq), k = input(scope, o, 2, seq);
            Tensor v = input(scope, o, 3, seq), dout = input(scope, o, 4, seq);
            Tensor out = scope.empty(o.dtype, o.device, seq);
            Tensor lse = scope.empty(DType.FLOAT32, o.device, s.batch(), s.heads(), s.seqlen());
            Tensor dq = scope.empty(o.dtype, o.device, seq), dk = scope.empty(o.dtype, o.device, seq);
            Tensor dv = scope.empty(o.dtype, o.device, seq);
            double fwd = medianMillis(o, () -> {
                for (int i = 0; i < o.batch; i++) {
                    if (stream != null) Attention.forwardInto(q, k, v, out, lse, options, stream);
                    else Attention.forwardInto(q, k, v, out, lse, options);
                }
                if (stream != null) stream.synchronize();
                else Sync.device(out);
            });
            double bwd = o.skipBackward ? Double.NaN : medianMillis(o, () -> {
                for (int i = 0; i < o.batch; i++) {
                    if (stream != null) Attention.backwardInto(dout, q, k, v, out, lse, dq, dk, dv, options, stream);
                    else Attention.backwardInto(dout, q, k, v, out, lse, dq, dk, dv, options);
                }
                if (stream != null) stream.synchronize();
                else Sync.device(dq);
            });
            double fwdFlops = Attention.forwardFlops(s.batch(), s.heads(), s.seqlen(), s.seqlen(), s.headDim(), causal);
            double bwdFlops = Attention.backwardFlops(s.batch(), s.heads(), s.seqlen(), s.seqlen(), s.headDim(), causal);
            System.out.printf(Locale.ROOT, "%-16s %-6s %10.3f %10.4f %10.3f %10.4f%n", s, causal, fwd, fwdFlops / fwd / 1e9,
                    bwd, bwdFlops / bwd / 1e9);
        }
    }

    private static Tensor input(TensorScope scope, Options o, long seed, long[] shape) {
        if (o.inputs.equals("gaussian")) return scope.randn(o.dtype, o.device, seed, shape);
        long n = 1;
        for (long s : shape) n *= s;
        float[] values = new float[Math.toIntExact(n)];
        // fa4j_bench's generator (native/bench/fa4j_bench.cpp, random_values): same LCG, same transform.
        long state = seed * 0x9E3779B97F4A7C15L + 1;
        for (int i = 0; i < values.length; i++) {
            float sum = 0;
            for (int j = 0; j < 4; j++) {
                state = state * 6364136223846793005L + 1442695040888963407L;
                sum += (float) (state >>> 40) * (1.0f / 16777216.0f) - 0.5f;
            }
            values[i] = sum * 1.7320508f;
        }
        return scope.fromArray(values, o.dtype, o.device, shape);
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
                           int batch, int threads, boolean skipBackward, boolean ownStream, String inputs) {
        static Options parse(String[] args) {
            Device device = Device.best();
            DType dtype = DType.BFLOAT16;
            List<BenchShape> shapes = new ArrayList<>(List.of(BenchShape.parse("1x1024x8x64"), BenchShape.parse("1x1024x8x128")));
            boolean[] causal = {false, true};
            int warmup = 2, iters = 5, batch = 1, threads = 0;
            boolean skipBackward = false, ownStream = false;
            String inputs = "gaussian";
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
                    case "--stream" -> ownStream = true;
                    case "--inputs" -> {
                        inputs = args[++i];
                        if (!inputs.equals("gaussian") && !inputs.equals("uniform4")) {
                            throw new IllegalArgumentException("--inputs must be gaussian or uniform4, got " + inputs);
                        }
                    }
                    default -> throw new IllegalArgumentException("unknown option " + a + " (see BenchCli's documentation)");
                }
            }
            if (iters < 1) throw new IllegalArgumentException("--iters must be >= 1");
            if (batch < 1) throw new IllegalArgumentException("--batch must be >= 1");
            return new Options(device, dtype, shapes, causal, warmup, iters, batch, threads, skipBackward, ownStream, inputs);
        }

        private static Device parseDevice(String text) {
            if (text.equals("best")) return Device.best();
            if (text.equals("cpu")) return Device.CPU;
            if (text.startsWith("cuda:")) return Device.cuda(Integer.parseInt(text.substring(5)));
            throw new IllegalArgumentException("device must be best, cpu or cuda:N, got " + text);
        }
    }
}
