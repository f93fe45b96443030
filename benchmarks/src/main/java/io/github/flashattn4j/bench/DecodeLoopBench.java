package io.github.flashattn4j.bench;

import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.DecodeOptions;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.PagedKvCache;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;

import java.util.Arrays;
import java.util.Locale;

/**
 * A decode loop through the Java API, as an inference server runs it: a {@link PagedKvCache} holding {@code batch}
 * sequences whose prompts of {@code prompt} tokens were appended, then {@code steps} steps that each append one
 * new token per sequence and attend the whole cache ({@link PagedKvCache#decodeInto}, causal, GQA), into
 * preallocated outputs. Reports the per-step latency (median, p10, p90, first and last steps) and the rate of
 * K and V bytes read (plus q and out), the figure decode is bound by. The defaults are the shape
 * (batch 32, 4k prompts, 256 steps, GQA 32/8, d128, bf16, pages of 16); on the CPU use small sizes.
 * {@code native/bench/fa4j_decode_bench.cpp} runs the same loop through the C ABI, for the Java overhead.
 *
 * <pre>
 * --device best|cpu|cuda:N  (default best)        --dtype bfloat16|float16|float32 (default bfloat16)
 * --batch 32 --prompt 4096 --steps 256 --heads 32 --kv-heads 8 --dim 128
 * --page 16                 page size (a multiple of 8)
 * --splits 0                forced split count (0: the library's heuristic)
 * --threads 0               CPU threads (0: all)
 * --warmup 3                untimed steps first (they also append)
 * --jit-warmup 100000       untimed steps before anything else, on a small cache of their own (one sequence of
 *                           one head, restarted every 64 tokens), so that the timed steps run JIT-compiled code
 *                           (0: none)
 * </pre>
 * Without the JIT warm-up the timed steps of a short run execute the call path interpreted or C1-compiled, and on
 * a machine with few cores compete with the C2 compiler thread: on the 2-core development machine 5-15 us per step
 * that a long-running server does not pay (docs/PERF.md, "Java call overhead").
 */
public final class DecodeLoopBench {

    private DecodeLoopBench() {}

    record Options(Device device, DType dtype, int batch, int prompt, int steps, int heads, int kvHeads, int dim, int page,
                   int splits, int threads, int warmup, int jitWarmup) {
        static Options parse(String[] args) {
            Device device = Device.best();
            DType dtype = DType.BFLOAT16;
            int batch = 32, prompt = 4096, steps = 256, heads = 32, kvHeads = 8, dim = 128, page = 16, splits = 0, threads = 0, warmup = 3;
            int jitWarmup = 100_000;
            for (int i = 0; i < args.length; i++) {
                String a = args[i];
                if (i + 1 >= args.length) throw new IllegalArgumentException("missing value after " + a);
                String v = args[++i];
                switch (a) {
                    case "--device" -> device = v.equals("best") ? Device.best() : v.equals("cpu") ? Device.CPU
                            : Device.cuda(Integer.parseInt(v.substring(v.indexOf(':') + 1)));
                    case "--dtype" -> dtype = DType.valueOf(v.toUpperCase(Locale.ROOT));
                    case "--batch" -> batch = Integer.parseInt(v);
                    case "--prompt" -> prompt = Integer.parseInt(v);
                    case "--steps" -> steps = Integer.parseInt(v);
                    case "--heads" -> heads = Integer.parseInt(v);
                    case "--kv-heads" -> kvHeads = Integer.parseInt(v);
                    case "--dim" -> dim = Integer.parseInt(v);
                    case "--page" -> page = Integer.parseInt(v);
                    case "--splits" -> splits = Integer.parseInt(v);
                    case "--threads" -> threads = Integer.parseInt(v);
                    case "--warmup" -> warmup = Integer.parseInt(v);
                    case "--jit-warmup" -> jitWarmup = Integer.parseInt(v);
                    default -> throw new IllegalArgumentException("unknown option " + a);
                }
            }
            return new Options(device, dtype, batch, prompt, steps, heads, kvHeads, dim, page, splits, threads, warmup, jitWarmup);
        }
    }

    public static void main(String[] args) {
        Options o = Options.parse(args);
        System.out.printf(Locale.ROOT, "flashattn4j decode loop: %s %s, batch %d, prompt %d, %d steps (+%d warm-up, %d JIT warm-up on a small cache), heads %d/%d, d%d, page %d, splits %s%n",
                o.device(), o.dtype(), o.batch(), o.prompt(), o.steps(), o.warmup(), o.jitWarmup(), o.heads(), o.kvHeads(), o.dim(), o.page(),
                o.splits() == 0 ? "auto" : o.splits());
        double[] millis = run(o);
        double[] sorted = millis.clone();
        Arrays.sort(sorted);
        double median = sorted[sorted.length / 2];
        // K and V of the cache at the median step, plus q and out: what one step must move.
        long positions = (long) o.prompt() + o.warmup() + o.steps() / 2 + 1;
        double bytes = (2.0 * o.batch() * positions * o.kvHeads() * o.dim() + 2.0 * o.batch() * o.heads() * o.dim()) * o.dtype().byteSize();
        System.out.printf(Locale.ROOT, "per step: median %.3f ms, p10 %.3f, p90 %.3f, first %.3f, last %.3f; %.1f GB/s of K+V (+q, out)%n",
                median, sorted[sorted.length / 10], sorted[sorted.length * 9 / 10], millis[0], millis[millis.length - 1],
                bytes / (median * 1e-3) / 1e9);
        System.out.printf(Locale.ROOT, "decode_loop,java,%s,%s,%d,%d,%d,%d,%d,%d,%d,%.6f%n", o.device(), o.dtype(), o.batch(), o.prompt(),
                o.steps(), o.heads(), o.kvHeads(), o.dim(), o.page(), median);
    }

    private static DecodeOptions decodeOptions(Options o) {
        return DecodeOptions.of(AttentionOptions.builder().causal(true).numThreads(o.threads()).build()).withNumSplits(o.splits());
    }

    /**
     * {@code jitWarmup} decode steps through the same path ({@link PagedKvCache#decodeInto}) on a small cache of their
     * own: one sequence of one head, started afresh every 64 tokens so that the steps stay cheap.
     */
    static void warmUpJit(Options o) {
        int window = 64;
        DecodeOptions options = decodeOptions(o);
        try (TensorScope scope = TensorScope.open();
             PagedKvCache cache = PagedKvCache.builder().dtype(o.dtype()).device(o.device()).kvHeads(1).headDim(o.dim())
                     .pageSize(o.page()).numPages((window + o.page() - 1) / o.page()).maxSequences(1).maxSequenceLength(window)
                     .build()) {
            int[] ids = {cache.newSequence()};
            Tensor q = scope.randn(o.dtype(), o.device(), 6, 1, 1, 1, o.dim());
            Tensor kNew = scope.randn(o.dtype(), o.device(), 7, 1, 1, 1, o.dim());
            Tensor vNew = scope.randn(o.dtype(), o.device(), 8, 1, 1, 1, o.dim());
            Tensor out = scope.empty(o.dtype(), o.device(), 1, 1, 1, o.dim());
            for (int i = 0; i < o.jitWarmup(); i++) {
                if (cache.length(ids[0]) == window) {
                    cache.freeSequence(ids[0]);
                    ids[0] = cache.newSequence();
                }
                cache.decodeInto(ids, q, kNew, vNew, out, null, options);
                Sync.device(out);
            }
        }
    }

    /** The loop; returns each timed step's milliseconds. */
    static double[] run(Options o) {
        warmUpJit(o);
        int b = o.batch();
        int capacity = o.prompt() + o.warmup() + o.steps();
        int pages = b * ((capacity + o.page() - 1) / o.page());
        DecodeOptions options = decodeOptions(o);
        try (TensorScope scope = TensorScope.open();
             PagedKvCache cache = PagedKvCache.builder().dtype(o.dtype()).device(o.device()).kvHeads(o.kvHeads()).headDim(o.dim())
                     .pageSize(o.page()).numPages(pages).maxSequences(b).maxSequenceLength(capacity).build()) {
            int[] ids = new int[b];
            for (int i = 0; i < b; i++) ids[i] = cache.newSequence();
            // The prompts, one sequence at a time (so the staging tensors stay one prompt large).
            Tensor promptK = scope.randn(o.dtype(), o.device(), 1, 1, o.prompt(), o.kvHeads(), o.dim());
            Tensor promptV = scope.randn(o.dtype(), o.device(), 2, 1, o.prompt(), o.kvHeads(), o.dim());
            for (int id : ids) cache.append(new int[] {id}, promptK, promptV);
            // Preallocated step tensors: new values each step do not change the work, so they are made once.
            Tensor q = scope.randn(o.dtype(), o.device(), 3, b, 1, o.heads(), o.dim());
            Tensor kNew = scope.randn(o.dtype(), o.device(), 4, b, 1, o.kvHeads(), o.dim());
            Tensor vNew = scope.randn(o.dtype(), o.device(), 5, b, 1, o.kvHeads(), o.dim());
            Tensor out = scope.empty(o.dtype(), o.device(), b, 1, o.heads(), o.dim());
            for (int i = 0; i < o.warmup(); i++) {
                cache.decodeInto(ids, q, kNew, vNew, out, null, options);
                Sync.device(out);
            }
            double[] millis = new double[o.steps()];
            for (int step = 0; step < o.steps(); step++) {
                long start = System.nanoTime();
                cache.decodeInto(ids, q, kNew, vNew, out, null, options);
                Sync.device(out);
                millis[step] = (System.nanoTime() - start) / 1e6;
            }
            return millis;
        }
    }
}
