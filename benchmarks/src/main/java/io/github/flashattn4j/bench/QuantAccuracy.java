package io.github.flashattn4j.bench;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.AttentionOutput;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.QuantizationMode;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * Accuracy of quantized attention against a float64 reference: cosine similarity, relative L1 error
 * ({@code sum |o - r| / sum |r|}), RMSE and the largest error of out, for every quantization mode with and
 * without smoothing, next to plain bfloat16 attention, on the two input distributions of
 * {@link AccuracyInputs} (Gaussian, LLM-like), causal and not, at head dims 64 and 128. The reference
 * attends the float64 inputs; the kernels get them rounded to bfloat16 (so the bf16 row shows what input
 * rounding alone costs). Runs on the CPU: the CPU reference implementation of the quantization
 * arithmetic, the same numbers the CUDA kernels must reproduce within tolerance.
 *
 * <pre>java --enable-native-access=ALL-UNNAMED -cp benchmarks/target/flashattn4j-benchmarks.jar \
 *     io.github.flashattn4j.bench.QuantAccuracy [--seq 1024] [--heads 4] [--kv-heads 4] [--batch 1] [--seed 2024]
 *     [--dims 64,128]</pre>
 * prints the markdown table of docs/ACCURACY.md.
 */
public final class QuantAccuracy {

    private QuantAccuracy() {}

    /** Errors of one output against the reference. */
    public record Metrics(double cosine, double relativeL1, double rmse, double maxError) {
        public static Metrics of(float[] got, double[] reference) {
            double dot = 0, gg = 0, rr = 0, l1 = 0, r1 = 0, sq = 0, max = 0;
            for (int i = 0; i < got.length; i++) {
                double g = got[i], r = reference[i], e = Math.abs(g - r);
                dot += g * r;
                gg += g * g;
                rr += r * r;
                l1 += e;
                r1 += Math.abs(r);
                sq += e * e;
                max = Double.isNaN(e) ? Double.NaN : Math.max(max, e);
            }
            return new Metrics(dot / Math.sqrt(gg * rr), l1 / r1, Math.sqrt(sq / got.length), max);
        }
    }

    /** Which smoothing a quantized path applies. */
    public enum Smoothing {
        NONE("none"), K("K"), K_AND_Q("K+Q");

        final String label;

        Smoothing(String label) {
            this.label = label;
        }
    }

    /** A way to compute attention: plain bf16 ({@link QuantizationMode#NONE}) or a mode with a smoothing. */
    public record Path(QuantizationMode mode, Smoothing smoothing) {
        public String label() {
            return mode == QuantizationMode.NONE ? "bf16 (plain)" : mode.name();
        }

        AttentionOptions options(boolean causal) {
            return AttentionOptions.builder().causal(causal).quantization(mode)
                    .smoothK(smoothing != Smoothing.NONE).smoothQ(smoothing == Smoothing.K_AND_Q).build();
        }
    }

    /** Every path of the table: plain bf16, then each mode with and without its smoothing. */
    public static List<Path> paths() {
        List<Path> paths = new ArrayList<>(List.of(new Path(QuantizationMode.NONE, Smoothing.NONE)));
        for (QuantizationMode mode : QuantizationMode.values()) {
            if (mode == QuantizationMode.NONE) continue;
            boolean int4 = mode == QuantizationMode.SAGE_INT4_FP8 || mode == QuantizationMode.SAGE_INT4_FP16;
            if (int4) paths.add(new Path(mode, Smoothing.K_AND_Q));
            paths.add(new Path(mode, Smoothing.K));
            paths.add(new Path(mode, Smoothing.NONE));
        }
        return paths;
    }

    /** Runs one path on the CPU with bfloat16 inputs and returns its errors against {@code reference}. */
    public static Metrics measure(AccuracyInputs in, double[] reference, boolean causal, Path path) {
        try (TensorScope scope = TensorScope.open()) {
            Tensor q = scope.fromArray(AccuracyInputs.floats(in.q()), DType.BFLOAT16, Device.CPU, in.batch(), in.seq(), in.heads(), in.headDim());
            Tensor k = scope.fromArray(AccuracyInputs.floats(in.k()), DType.BFLOAT16, Device.CPU, in.batch(), in.seq(), in.kvHeads(), in.headDim());
            Tensor v = scope.fromArray(AccuracyInputs.floats(in.v()), DType.BFLOAT16, Device.CPU, in.batch(), in.seq(), in.kvHeads(), in.headDim());
            AttentionOutput out = scope.track(Attention.forward(q, k, v, path.options(causal)));
            return Metrics.of(out.out().toFloatArray(), reference);
        }
    }

    /** The acceptance target of a row, from the issue, or null if it has none; {@code bf16L1}: the bf16 row's relative L1. */
    public static Target target(AccuracyInputs.Distribution distribution, Path path, double bf16L1) {
        QuantizationMode mode = path.mode();
        double l1 = Math.max(0.02, 1.5 * bf16L1);
        boolean int8 = mode == QuantizationMode.SAGE_INT8_FP8 || mode == QuantizationMode.SAGE_INT8_FP16;
        if (int8 && path.smoothing() == Smoothing.K) return new Target(0.999, l1);
        if (mode == QuantizationMode.FP8 && path.smoothing() == Smoothing.K && distribution == AccuracyInputs.Distribution.GAUSSIAN) {
            return new Target(0.999, l1);
        }
        boolean int4 = mode == QuantizationMode.SAGE_INT4_FP8 || mode == QuantizationMode.SAGE_INT4_FP16;
        if (int4 && path.smoothing() == Smoothing.K_AND_Q) return new Target(0.99, Double.POSITIVE_INFINITY);
        return null;
    }

    /** A minimum cosine similarity and a maximum relative L1 error (infinite: none). */
    public record Target(double minCosine, double maxRelativeL1) {
        public boolean met(Metrics m) {
            return m.cosine() >= minCosine && m.relativeL1() <= maxRelativeL1;
        }

        String text() {
            return String.format(Locale.ROOT, "cos ≥ %.3f", minCosine)
                    + (Double.isInfinite(maxRelativeL1) ? "" : String.format(Locale.ROOT, ", L1 ≤ %.4f", maxRelativeL1));
        }
    }

    public static void main(String[] args) {
        int seq = 1024, heads = 4, kvHeads = 4, batch = 1;
        long seed = 2024;
        int[] dims = {64, 128};
        for (int i = 0; i < args.length; i++) {
            String value = i + 1 < args.length ? args[i + 1] : "";
            switch (args[i]) {
                case "--seq" -> seq = Integer.parseInt(value);
                case "--heads" -> heads = Integer.parseInt(value);
                case "--kv-heads" -> kvHeads = Integer.parseInt(value);
                case "--batch" -> batch = Integer.parseInt(value);
                case "--seed" -> seed = Long.parseLong(value);
                case "--dims" -> dims = java.util.Arrays.stream(value.split(",")).mapToInt(Integer::parseInt).toArray();
                default -> throw new IllegalArgumentException("unknown argument " + args[i]);
            }
            i++;
        }
        System.out.printf(Locale.ROOT, "CPU reference implementation, B%d Hq%d Hkv%d N%d, bfloat16 inputs, seed %d; errors of out "
                + "against float64 attention of the unrounded inputs%n%n", batch, heads, kvHeads, seq, seed);
        System.out.println("| inputs | d | causal | path | smoothing | cos sim | rel L1 | RMSE | max err | target |");
        System.out.println("|---|---|---|---|---|---|---|---|---|---|");
        for (AccuracyInputs.Distribution distribution : AccuracyInputs.Distribution.values()) {
            for (int d : dims) {
                AccuracyInputs in = AccuracyInputs.of(distribution, seed, batch, seq, heads, kvHeads, d);
                for (boolean causal : new boolean[] {false, true}) {
                    double[] reference = in.reference(causal);
                    double bf16L1 = Double.NaN;
                    for (Path path : paths()) {
                        Metrics m = measure(in, reference, causal, path);
                        if (path.mode() == QuantizationMode.NONE) bf16L1 = m.relativeL1();
                        Target target = target(distribution, path, bf16L1);
                        String verdict = target == null ? "" : target.text() + (target.met(m) ? ": met" : ": **not met**");
                        System.out.printf(Locale.ROOT, "| %s | %d | %s | %s | %s | %.6f | %.4f | %.4f | %.4f | %s |%n",
                                distribution == AccuracyInputs.Distribution.GAUSSIAN ? "Gaussian" : "LLM-like", d, causal ? "yes" : "no",
                                path.label(), path.mode() == QuantizationMode.NONE ? "-" : path.smoothing().label,
                                m.cosine(), m.relativeL1(), m.rmse(), m.maxError(), verdict);
                    }
                }
            }
        }
    }
}
