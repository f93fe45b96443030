package io.github.flashattn4j.tests;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.FlashAttnException;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;

import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

import static io.github.flashattn4j.DType.FLOAT32;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Finite but extreme inputs (issue 6), shared by {@link ExtremeInputsTest} (CPU) and
 * {@link ExtremeInputsGpuTest} (cuda:0): the fuzzer's reproductions and the edges of the range flashattn4j.h
 * documents. Every output must be finite, and within FlashAttention's tolerance of the float64 reference,
 * where results beyond the dtype's range are expected saturated at its largest finite value (the plain
 * implementation saturates too). A softmax scale past the range must be refused with
 * {@link FlashAttnException.InvalidArgument}.
 */
final class ExtremeInputs {

    private ExtremeInputs() {}

    /** The largest |softmax_scale| accepted: |scale| · head_dim · 65504² ≤ 2^126. */
    static float largestScale(int headDim) {
        return Math.nextDown((float) (Math.scalb(1.0, 126) / (headDim * 65504.0 * 65504.0)));
    }

    enum Values {
        /** Standard normal q, k, v, dout. */
        NORMAL,
        /** Standard normal times 1e4: one-hot rows, scores and lse near 1e8 (gradient errors of 1e10 once). */
        TIMES_1E4,
        /** ±[0.5, 1] · 65504 with random signs: the edge of the guaranteed range (NaN gradients once). */
        NEAR_FP16_MAX
    }

    record Case(DType dtype, Problem problem, Values values) {
        @Override
        public String toString() {
            return dtype + " " + problem + " scale " + (float) problem.scale() + " " + values;
        }
    }

    /** The fuzzer's reproductions and the largest accepted scale, in each of {@code dtypes}. */
    static List<Case> cases(DType... dtypes) {
        List<Case> cases = new ArrayList<>();
        for (DType dtype : dtypes) {
            // Scale 1e10 on [1, 40, 1, 64]: a correct forward but non-finite dq, dk, dv.
            cases.add(new Case(dtype, new Problem(1, 40, 40, 1, 1, 64, false, 1e10f), Values.NORMAL));
            // Scale 1e38 on [1, 4, 1, 8] gave out = NaN; it is refused now (scaleBeyondTheRangeIsRefused),
            // and the largest scale that is not, either sign, must work.
            cases.add(new Case(dtype, new Problem(1, 4, 4, 1, 1, 8, false, largestScale(8)), Values.NORMAL));
            cases.add(new Case(dtype, new Problem(1, 4, 4, 1, 1, 8, true, -largestScale(8)), Values.NORMAL));
            // Inputs times 1e4: errors of 1e10 where the float64 gradient is 0 (float16: Inf in dq).
            cases.add(new Case(dtype, Problem.of(2, 70, 130, 4, 2, 64, true), Values.TIMES_1E4));
            cases.add(new Case(dtype, Problem.of(1, 40, 40, 1, 1, 128, false), Values.TIMES_1E4));
            // Values near the float16 maximum: NaN gradients in every dtype.
            cases.add(new Case(dtype, Problem.of(1, 65, 65, 2, 1, 64, false), Values.NEAR_FP16_MAX));
            cases.add(new Case(dtype, Problem.of(1, 70, 130, 2, 2, 128, true), Values.NEAR_FP16_MAX));
        }
        return cases;
    }

    /** x rounded to the dtype; a finite x beyond its range becomes its largest finite value. */
    static double saturatingRound(double x, DType dtype) {
        return Precision.round(saturate(x, dtype), dtype);
    }

    static double maxFinite(DType dtype) {
        return switch (dtype) {
            case FLOAT32 -> Float.MAX_VALUE;
            case FLOAT16 -> 65504.0;
            case BFLOAT16 -> Float.intBitsToFloat(0x7f7f0000);
            case FLOAT8_E4M3FN -> 448.0;
            case FLOAT8_E5M2 -> 57344.0;
            case INT32, INT8, INT4 -> throw new IllegalArgumentException("attention does not compute in " + dtype);
        };
    }

    /** x clamped to the dtype's finite range; infinities and NaN unchanged. */
    static double saturate(double x, DType dtype) {
        if (Double.isInfinite(x) || Double.isNaN(x)) return x;
        return Math.max(-maxFinite(dtype), Math.min(maxFinite(dtype), x));
    }

    /** Fresh values of the case's kind, already representable in the dtype. */
    static float[] values(Values kind, DType dtype, long seed, int n) {
        SplittableRandom random = new SplittableRandom(seed);
        float[] x = new float[n];
        for (int i = 0; i < n; i++) {
            double v = switch (kind) {
                case NORMAL -> random.nextGaussian();
                case TIMES_1E4 -> 1e4 * random.nextGaussian();
                case NEAR_FP16_MAX -> (random.nextBoolean() ? 65504.0 : -65504.0) * (0.5 + 0.5 * random.nextDouble());
            };
            x[i] = (float) saturatingRound(v, dtype);
        }
        return x;
    }

    /**
     * Forward and backward on {@code device} into NaN-poisoned outputs, checked against the float64 reference.
     * {@code allowance}: widen each bound by the accumulation allowance (see {@link #allowance}), for kernels
     * that sum in orders of their own.
     */
    static void check(Case c, Device device, boolean allowance) {
        Problem p = c.problem();
        DType dtype = c.dtype();
        AttentionOptions options = AttentionOptions.builder().causal(p.causal()).softmaxScale((float) p.scale()).build();
        long seed = 31L * p.seqQ() + p.headDim() + 1000L * c.values().ordinal() + c.dtype().ordinal();
        int qn = p.batch() * p.seqQ() * p.headsQ() * p.headDim(), kn = p.batch() * p.seqK() * p.headsKv() * p.headDim();
        float[] qa = values(c.values(), dtype, seed, qn), ka = values(c.values(), dtype, seed + 1, kn);
        float[] va = values(c.values(), dtype, seed + 2, kn), da = values(c.values(), dtype, seed + 3, qn);
        float[][] kernel;
        try (TensorScope scope = TensorScope.open()) {
            Tensor q = scope.fromArray(qa, dtype, device, p.qShape()), k = scope.fromArray(ka, dtype, device, p.kShape());
            Tensor v = scope.fromArray(va, dtype, device, p.kShape()), dout = scope.fromArray(da, dtype, device, p.qShape());
            Tensor out = scope.track(Tensor.full(Float.NaN, dtype, device, p.qShape()));
            Tensor lse = scope.track(Tensor.full(Float.NaN, FLOAT32, device, p.lseShape()));
            Tensor dq = scope.track(Tensor.full(Float.NaN, dtype, device, p.qShape()));
            Tensor dk = scope.track(Tensor.full(Float.NaN, dtype, device, p.kShape()));
            Tensor dv = scope.track(Tensor.full(Float.NaN, dtype, device, p.kShape()));
            Attention.forwardInto(q, k, v, out, lse, options);
            Attention.backwardInto(dout, q, k, v, out, lse, dq, dk, dv, options);
            kernel = new float[][] {out.toFloatArray(), lse.toFloatArray(), dq.toFloatArray(), dk.toFloatArray(),
                                    dv.toFloatArray()};
        }
        ReferenceAttention exact = ReferenceAttention.exact();
        ReferenceAttention plain = ReferenceAttention.plain(x -> saturatingRound(x, dtype));
        ReferenceAttention.Forward fe = exact.forward(p, qa, ka, va), fp = plain.forward(p, qa, ka, va);
        // lse is float32 whatever the dtype: its plain baseline is the float32 computation.
        ReferenceAttention.Forward f32 = ReferenceAttention.plain(x -> saturatingRound(x, FLOAT32)).forward(p, qa, ka, va);
        ReferenceAttention.Gradients ge = exact.backward(p, qa, ka, va, fe.out(), da);
        ReferenceAttention.Gradients gp = plain.backward(p, qa, ka, va, fp.out(), da);
        double[][] allow = allowance ? allowance(p, qa, ka, va, da) : new double[5][];
        List<String> report = new ArrayList<>();
        report.add(check("out", kernel[0], fe.out(), fp.out(), dtype, allow[0]));
        report.add(check("lse", kernel[1], fe.lse(), f32.lse(), FLOAT32, allow[1]));
        report.add(check("dq", kernel[2], ge.dq(), gp.dq(), dtype, allow[2]));
        report.add(check("dk", kernel[3], ge.dk(), gp.dk(), dtype, allow[3]));
        report.add(check("dv", kernel[4], ge.dv(), gp.dv(), dtype, allow[4]));
        System.out.println("extreme inputs on " + device + ", " + c + ": " + String.join(", ", report));
    }

    /**
     * Every element finite (or the same infinity as the reference: lse of a row that attends nothing), and
     * max (|kernel − sat(exact)| − allowance) ≤ 2 · max |plain − sat(exact)| + ε, where sat clamps to the
     * dtype's finite range.
     */
    static String check(String name, float[] kernel, double[] exact, double[] plain, DType dtype, double[] allowance) {
        double excess = 0, plainError = 0;
        for (int i = 0; i < kernel.length; i++) {
            double r = saturate(exact[i], dtype);
            if (Double.isInfinite(r)) {
                int at = i;
                assertTrue(kernel[i] == r, () -> name + "[" + at + "] = " + kernel[at] + " where the reference is " + r);
                continue;
            }
            int at = i;
            assertTrue(Float.isFinite(kernel[i]), () -> name + "[" + at + "] = " + kernel[at] + " is not finite");
            excess = Math.max(excess, Math.abs(kernel[i] - r) - (allowance == null ? 0 : allowance[i]));
            double e = Math.abs(plain[i] - r);
            if (!Double.isNaN(e)) plainError = Math.max(plainError, e);
        }
        double bound = 2 * plainError + Precision.epsilon(dtype), error = excess;
        assertTrue(error <= bound, () -> name + ": max |kernel - fp64| beyond the allowance = " + error + " exceeds " + bound);
        return String.format("%s err %.3e bound %.3e", name, error, bound);
    }

    /**
     * How far a kernel that sums in orders of its own (tensor cores) and recomputes P from a float32 lse may
     * stray beyond the plain implementation's error (the same bound as
     * native/tests/support/accumulation_allowance.hpp, which explains it): the plain implementation sums
     * D = rowsum(dO ∘ out) and dP = dO·vᵀ in one order, so on one-hot rows its dS = P·(dP − D) is exactly 0,
     * while a blocked kernel keeps the rounding difference of two sums of size Σ|dO·v|, times the scale in
     * dq; and once |lse|·2⁻²⁴ exceeds the gaps between a row's top scores their recomputed probabilities
     * are known only to that factor. With γ = 2·d·2⁻²⁴: δs = |scale|·(γ·Σ|q·k| + 2⁻²³·|q·k|),
     * δl = max δs + 2⁻²³·|lse|, δP = min(1, P·(e^(δs + δl) − 1)), out Σ δP·|v|, dv Σ δP·|dO|,
     * δD = Σ|dO|·δout, δdS = P·(γ·(Σ|dO·v| + Σ|dO·out|) + δD) + δP·|dP − D|, dq |scale|·Σ δdS·|k|,
     * dk |scale|·Σ δdS·|q|. Returns {out, lse, dq, dk, dv}.
     */
    static double[][] allowance(Problem p, float[] q, float[] k, float[] v, float[] dout) {
        double scale = Math.abs(p.scale()), gamma = 2.0 * p.headDim() * Math.scalb(1.0, -24), round = Math.scalb(1.0, -23);
        int d = p.headDim();
        double[] out = new double[q.length], lse = new double[p.batch() * p.headsQ() * p.seqQ()];
        double[] dq = new double[q.length], dk = new double[k.length], dv = new double[v.length];
        for (int b = 0; b < p.batch(); b++) {
            for (int h = 0; h < p.headsQ(); h++) {
                int hk = h / p.group();
                for (int i = 0; i < p.seqQ(); i++) {
                    int visible = p.visibleKeys(i), qi = p.qIndex(b, i, h);
                    if (visible == 0) continue;
                    double[] scaled = new double[visible], prob = new double[visible], dP = new double[visible];
                    double max = Double.NEGATIVE_INFINITY;
                    for (int j = 0; j < visible; j++) {
                        int kj = p.kIndex(b, j, hk);
                        double dot = 0, abs = 0;
                        for (int c = 0; c < d; c++) {
                            dot += (double) q[qi + c] * k[kj + c];
                            abs += Math.abs((double) q[qi + c] * k[kj + c]);
                        }
                        scaled[j] = p.scale() * dot;
                        dP[j] = scale * (gamma * abs + round * Math.abs(dot));  // the score's error, for now
                        max = Math.max(max, scaled[j]);
                    }
                    double sum = 0, maxError = 0;
                    for (int j = 0; j < visible; j++) sum += prob[j] = Math.exp(scaled[j] - max);
                    for (int j = 0; j < visible; j++) {
                        prob[j] /= sum;
                        maxError = Math.max(maxError, dP[j]);
                    }
                    double lseError = maxError + round * Math.abs(max + Math.log(sum));
                    lse[p.lseIndex(b, h, i)] = lseError;
                    for (int j = 0; j < visible; j++)
                        dP[j] = Math.min(1.0, Math.exp(scaled[j] - max - Math.log(sum) + dP[j] + lseError) - prob[j]);
                    double[] o = new double[d];
                    for (int j = 0; j < visible; j++) {
                        int kj = p.kIndex(b, j, hk);
                        for (int c = 0; c < d; c++) {
                            o[c] += prob[j] * v[kj + c];
                            out[qi + c] += dP[j] * Math.abs(v[kj + c]);
                        }
                    }
                    double delta = 0, deltaAbs = 0, deltaError = 0;
                    for (int c = 0; c < d; c++) {
                        delta += dout[qi + c] * o[c];
                        deltaAbs += Math.abs(dout[qi + c] * o[c]);
                        deltaError += Math.abs(dout[qi + c]) * out[qi + c];
                    }
                    for (int j = 0; j < visible; j++) {
                        int kj = p.kIndex(b, j, hk);
                        double dp = 0, dpAbs = 0;
                        for (int c = 0; c < d; c++) {
                            dp += (double) dout[qi + c] * v[kj + c];
                            dpAbs += Math.abs((double) dout[qi + c] * v[kj + c]);
                        }
                        double dS = prob[j] * (gamma * (dpAbs + deltaAbs) + deltaError) + dP[j] * Math.abs(dp - delta);
                        for (int c = 0; c < d; c++) {
                            dq[qi + c] += scale * dS * Math.abs(k[kj + c]);
                            dk[kj + c] += scale * dS * Math.abs(q[qi + c]);
                            dv[kj + c] += dP[j] * Math.abs(dout[qi + c]);
                        }
                    }
                }
            }
        }
        return new double[][] {out, lse, dq, dk, dv};
    }

    /** Refused with InvalidArgument, forward and backward, naming the softmax scale. */
    static void checkRefused(Device device, DType dtype, float scale) {
        Problem p = new Problem(1, 4, 4, 1, 1, 8, false, scale);
        AttentionOptions options = AttentionOptions.builder().softmaxScale(scale).build();
        try (TensorScope scope = TensorScope.open()) {
            Tensor q = scope.randn(dtype, device, 1, p.qShape()), k = scope.randn(dtype, device, 2, p.kShape());
            Tensor v = scope.randn(dtype, device, 3, p.kShape()), dout = scope.randn(dtype, device, 4, p.qShape());
            Tensor out = scope.track(Tensor.full(Float.NaN, dtype, device, p.qShape()));
            Tensor lse = scope.track(Tensor.full(1f, FLOAT32, device, p.lseShape()));
            FlashAttnException.InvalidArgument forward = assertThrows(FlashAttnException.InvalidArgument.class,
                    () -> Attention.forwardInto(q, k, v, out, lse, options));
            assertTrue(forward.getMessage().contains("softmax_scale"), forward::getMessage);
            FlashAttnException.InvalidArgument backward = assertThrows(FlashAttnException.InvalidArgument.class,
                    () -> Attention.backward(dout, q, k, v, out, lse, options));
            assertTrue(backward.getMessage().contains("softmax_scale"), backward::getMessage);
            for (float x : out.toFloatArray()) assertTrue(Float.isNaN(x), "a refused forward wrote into out");
            System.out.println("refused on " + device + ": " + forward.getMessage());
        }
    }
}
