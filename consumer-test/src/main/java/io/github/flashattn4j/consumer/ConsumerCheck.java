package io.github.flashattn4j.consumer;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionGradients;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.AttentionOutput;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.SplittableRandom;

/**
 * What a user's first program does: causal GQA attention forward and backward on the CPU in float32,
 * checked against a float64 computation written here (out, lse) and against central differences of it
 * (dq, dk, dv, each along a random direction). It also checks how it was started: on the module path
 * both it and flashattn4j are named modules, on the class path neither is; and that the native library
 * came out of the flashattn4j JAR (extracted into a private temporary folder), not from anywhere else.
 * Any failure ends the JVM with an exception, which fails the Maven build that ran it.
 *
 * <p>Argument: "class path" or "module path", how the launcher started it.
 */
public final class ConsumerCheck {

    private static final int BATCH = 1, SEQ_Q = 6, SEQ_K = 9, HEADS_Q = 4, HEADS_KV = 2, DIM = 8;
    private static final float SCALE = (float) (1 / Math.sqrt(DIM));

    private ConsumerCheck() {}

    public static void main(String[] args) throws IOException {
        if (args.length != 1 || !List.of("class path", "module path").contains(args[0])) {
            throw new IllegalArgumentException("usage: ConsumerCheck \"class path\" | \"module path\"");
        }
        boolean modulePath = args[0].equals("module path");
        check(ConsumerCheck.class.getModule().isNamed() == modulePath, "this class is "
                + (modulePath ? "not in a named module on the module path" : "in a named module on the class path"));
        String libraryModule = Attention.class.getModule().getName();
        check(modulePath ? "io.github.flashattn4j".equals(libraryModule) : libraryModule == null,
                "flashattn4j is in module " + libraryModule + " on the " + args[0]);
        check(System.getProperty("flashattn4j.library.path") == null,
                "-Dflashattn4j.library.path is set: the library in the JAR must be the one that runs");

        long[] qShape = {BATCH, SEQ_Q, HEADS_Q, DIM}, kShape = {BATCH, SEQ_K, HEADS_KV, DIM};
        double[] q = gaussian(1, qShape), k = gaussian(2, kShape), v = gaussian(3, kShape), dout = gaussian(4, qShape);
        AttentionOptions options = AttentionOptions.builder().causal(true).softmaxScale(SCALE).build();
        float[] out, lse, dq, dk, dv;
        try (TensorScope scope = TensorScope.open()) {
            Tensor tq = scope.fromArray(toFloat(q), DType.FLOAT32, Device.CPU, qShape);
            Tensor tk = scope.fromArray(toFloat(k), DType.FLOAT32, Device.CPU, kShape);
            Tensor tv = scope.fromArray(toFloat(v), DType.FLOAT32, Device.CPU, kShape);
            Tensor tdout = scope.fromArray(toFloat(dout), DType.FLOAT32, Device.CPU, qShape);
            AttentionOutput o = scope.track(Attention.forward(tq, tk, tv, options));
            AttentionGradients g = scope.track(Attention.backward(tdout, tq, tk, tv, o.out(), o.lse(), options));
            out = o.out().toFloatArray();
            lse = o.lse().toFloatArray();
            dq = g.dq().toFloatArray();
            dk = g.dk().toFloatArray();
            dv = g.dv().toFloatArray();
        }

        double[][] reference = forward(q, k, v);
        double outError = maxError(out, reference[0]), lseError = maxError(lse, reference[1]);
        check(outError < 1e-5, "out differs from the float64 reference by " + outError);
        check(lseError < 1e-5, "lse differs from the float64 reference by " + lseError);
        // The loss is sum(out · dout); its derivative along a direction d of one input is <gradient, d>.
        double dqError = directionalError(dq, q, 5, x -> loss(x, k, v, dout));
        double dkError = directionalError(dk, k, 6, x -> loss(q, x, v, dout));
        double dvError = directionalError(dv, v, 7, x -> loss(q, k, x, dout));
        check(dqError < 1e-4 && dkError < 1e-4 && dvError < 1e-4,
                "gradients disagree with central differences: dq " + dqError + ", dk " + dkError + ", dv " + dvError);

        Path library = loadedLibrary();
        Path temporary = Path.of(System.getProperty("java.io.tmpdir")).toRealPath();
        check(library.getParent().getFileName().toString().startsWith("flashattn4j-")
                        && library.getParent().getParent().toRealPath().equals(temporary),
                "the native library was loaded from " + library + ", not extracted from the JAR into " + temporary);
        System.out.printf("consumer check (%s): ok; out/lse within %.1e/%.1e of float64, dq/dk/dv within %.1e/%.1e/%.1e "
                + "(relative, along a random direction); library %s from the JAR%n", args[0], outError, lseError,
                dqError, dkError, dvError, library);
    }

    private static void check(boolean condition, String failure) {
        if (!condition) throw new AssertionError("consumer check failed: " + failure);
    }

    /** The mapped file of this process whose name is libflashattn4j.so (Linux: /proc/self/maps). */
    private static Path loadedLibrary() throws IOException {
        return Files.readAllLines(Path.of("/proc/self/maps")).stream()
                .map(line -> line.substring(line.lastIndexOf(' ') + 1))
                .filter(file -> file.endsWith("/libflashattn4j.so"))
                .map(Path::of)
                .findFirst()
                .orElseThrow(() -> new AssertionError("consumer check failed: libflashattn4j.so is not mapped"));
    }

    private static double[] gaussian(long seed, long[] shape) {
        int n = 1;
        for (long s : shape) n *= (int) s;
        SplittableRandom random = new SplittableRandom(seed);
        double[] values = new double[n];
        for (int i = 0; i < n; i++) values[i] = (float) random.nextGaussian();  // exactly representable in float32
        return values;
    }

    private static float[] toFloat(double[] values) {
        float[] f = new float[values.length];
        for (int i = 0; i < f.length; i++) f[i] = (float) values[i];
        return f;
    }

    private static double maxError(float[] actual, double[] expected) {
        double max = 0;
        for (int i = 0; i < actual.length; i++) {
            double e = Math.abs(actual[i] - expected[i]);
            max = Double.isNaN(e) ? Double.POSITIVE_INFINITY : Math.max(max, e);
        }
        return max;
    }

    /** out [B, Nq, Hq, D] and lse [B, Hq, Nq] in float64; query i sees key j iff j <= i + Nk - Nq. */
    private static double[][] forward(double[] q, double[] k, double[] v) {
        double[] out = new double[q.length], lse = new double[BATCH * HEADS_Q * SEQ_Q];
        int group = HEADS_Q / HEADS_KV;
        for (int b = 0; b < BATCH; b++)
            for (int h = 0; h < HEADS_Q; h++)
                for (int i = 0; i < SEQ_Q; i++) {
                    int visible = Math.min(SEQ_K, i + SEQ_K - SEQ_Q + 1);
                    int qi = ((b * SEQ_Q + i) * HEADS_Q + h) * DIM;
                    double[] s = new double[visible];
                    double max = Double.NEGATIVE_INFINITY;
                    for (int j = 0; j < visible; j++) {
                        int kj = ((b * SEQ_K + j) * HEADS_KV + h / group) * DIM;
                        for (int d = 0; d < DIM; d++) s[j] += q[qi + d] * k[kj + d];
                        s[j] *= SCALE;
                        max = Math.max(max, s[j]);
                    }
                    double sum = 0;
                    for (int j = 0; j < visible; j++) sum += Math.exp(s[j] - max);
                    double logSumExp = max + Math.log(sum);
                    lse[(b * HEADS_Q + h) * SEQ_Q + i] = logSumExp;
                    for (int j = 0; j < visible; j++) {
                        double p = Math.exp(s[j] - logSumExp);
                        int vj = ((b * SEQ_K + j) * HEADS_KV + h / group) * DIM;
                        for (int d = 0; d < DIM; d++) out[qi + d] += p * v[vj + d];
                    }
                }
        return new double[][] {out, lse};
    }

    private static double loss(double[] q, double[] k, double[] v, double[] dout) {
        double[] out = forward(q, k, v)[0];
        double sum = 0;
        for (int i = 0; i < out.length; i++) sum += out[i] * dout[i];
        return sum;
    }

    /**
     * |<gradient, d> - (L(x + εd) - L(x - εd)) / 2ε| relative to the larger of 1 and the derivative, for a
     * random unit-variance direction d: float64 central differences are accurate to about ε², 1e-10 here.
     */
    private static double directionalError(float[] gradient, double[] x, long seed,
                                           java.util.function.ToDoubleFunction<double[]> loss) {
        SplittableRandom random = new SplittableRandom(seed);
        double epsilon = 1e-5;
        double[] plus = x.clone(), minus = x.clone();
        double analytic = 0;
        for (int i = 0; i < x.length; i++) {
            double d = random.nextGaussian();
            plus[i] += epsilon * d;
            minus[i] -= epsilon * d;
            analytic += gradient[i] * d;
        }
        double numeric = (loss.applyAsDouble(plus) - loss.applyAsDouble(minus)) / (2 * epsilon);
        double error = Math.abs(analytic - numeric) / Math.max(1, Math.abs(numeric));
        return Double.isNaN(error) ? Double.POSITIVE_INFINITY : error;
    }
}
