package io.github.flashattn4j.tests;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionGradients;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.AttentionOutput;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;

import static io.github.flashattn4j.DType.BFLOAT16;
import static io.github.flashattn4j.DType.FLOAT16;
import static io.github.flashattn4j.DType.FLOAT32;
import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * Softcap, ALiBi and sliding windows on the CPU backend, forward and backward, against the float64
 * reference with the features exactly as flashattn4j.h defines them (scale, softcap, ALiBi bias
 * {@code -slope·|i' - j|}, window mask, in that order, with {@code i' = i + Nk - Nq}): fresh random
 * inputs, NaN-poisoned outputs, GQA, seqlen_q ≠ seqlen_k both ways (windows that leave rows with no key),
 * every dtype, caller-provided and allocated outputs.
 */
class AttentionFeaturesCpuTest {

    /**
     * One case: the problem, its features, and ALiBi slopes given per head ([heads_q], replicated over the
     * batch in the reference) or per batch entry and head ([batch, heads_q]).
     */
    record Case(DType dtype, Problem problem, boolean perBatchSlopes, boolean allocating) {
        @Override
        public String toString() {
            return dtype + " " + problem + (problem.features().alibi() != null ? (perBatchSlopes ? " [B,H]" : " [H]") : "")
                    + (allocating ? " allocated" : "");
        }
    }

    private static final int UNBOUNDED = AttentionOptions.UNBOUNDED;

    static Stream<Case> cases() {
        List<Case> cases = new ArrayList<>();
        DType[] dtypes = {FLOAT32, FLOAT16, BFLOAT16};
        // Each feature alone, then together; sizes ragged, GQA, Nq != Nk both ways.
        Problem[] shapes = {
            Problem.of(2, 37, 37, 4, 2, 64, false),
            Problem.of(1, 70, 130, 8, 2, 32, false),
            Problem.of(2, 130, 70, 4, 4, 128, false),
            Problem.of(1, 1, 97, 2, 1, 64, false),
        };
        int n = 0;
        for (Problem shape : shapes) {
            for (Problem.Features f : featureSets(shape, n)) {
                for (boolean causal : new boolean[] {false, true}) {
                    Problem p = new Problem(shape.batch(), shape.seqQ(), shape.seqK(), shape.headsQ(), shape.headsKv(),
                            shape.headDim(), causal, (float) shape.scale(), f);
                    cases.add(new Case(dtypes[n % 3], p, n % 2 == 0, n % 4 == 3));
                    n++;
                }
            }
        }
        return cases.stream();
    }

    private static List<Problem.Features> featureSets(Problem p, int seed) {
        double[] slopes = alibiSlopes(p.batch(), p.headsQ(), false);
        double[] perBatch = alibiSlopes(p.batch(), p.headsQ(), true);
        return List.of(
                new Problem.Features(1.5, UNBOUNDED, UNBOUNDED, null),           // softcap that bites: |s| ~ 1..3
                new Problem.Features(30, UNBOUNDED, UNBOUNDED, null),            // softcap barely bites
                new Problem.Features(0, UNBOUNDED, UNBOUNDED, seed % 2 == 0 ? slopes : perBatch),
                new Problem.Features(0, 16, 0, null),                            // causal sliding window
                new Problem.Features(0, 5, 9, null),                             // two-sided window
                new Problem.Features(0, 0, 0, null),                             // the diagonal alone
                new Problem.Features(0, UNBOUNDED, 3, null),                     // right bound only
                new Problem.Features(0, 7, UNBOUNDED, null),                     // left bound only
                new Problem.Features(2.5, 11, 4, seed % 2 == 0 ? perBatch : slopes)); // everything
    }

    /**
     * ALiBi slopes as models use them (a geometric sequence over heads, 2^(-8(h+1)/H)), and distinct per
     * batch entry when {@code perBatch}: [batch * heads].
     */
    private static double[] alibiSlopes(int batch, int heads, boolean perBatch) {
        double[] s = new double[batch * heads];
        for (int b = 0; b < batch; b++) {
            for (int h = 0; h < heads; h++) {
                double slope = Math.pow(2, -8.0 * (h + 1) / heads) * (perBatch ? 1 + 0.5 * b : 1);
                s[b * heads + h] = (float) slope;  // the library reads float32 slopes
            }
        }
        return s;
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("cases")
    void matchesFloat64Reference(Case c) {
        Problem p = c.problem();
        DType dtype = c.dtype();
        Problem.Features f = p.features();
        long seed = Seeds.fresh();  // printed on failure; -Dfa4j.seed replays it
        try (TensorScope scope = TensorScope.open()) {
            AttentionOptions.Builder builder = AttentionOptions.builder().causal(p.causal()).softmaxScale((float) p.scale())
                    .window(f.windowLeft(), f.windowRight()).softcap((float) f.softcap());
            if (f.alibi() != null) {
                float[] slopes = new float[c.perBatchSlopes() ? p.batch() * p.headsQ() : p.headsQ()];
                for (int i = 0; i < slopes.length; i++) slopes[i] = (float) f.alibi()[i];
                Tensor t = c.perBatchSlopes() ? scope.fromArray(slopes, FLOAT32, Device.CPU, p.batch(), p.headsQ())
                        : scope.fromArray(slopes, FLOAT32, Device.CPU, p.headsQ());
                builder.alibiSlopes(t);
                if (!c.perBatchSlopes()) p = p.with(new Problem.Features(f.softcap(), f.windowLeft(), f.windowRight(),
                        replicate(slopes, p.batch())));
            }
            AttentionOptions options = builder.build();
            Tensor q = scope.randn(dtype, Device.CPU, seed, p.qShape());
            Tensor k = scope.randn(dtype, Device.CPU, seed + 1, p.kShape());
            Tensor v = scope.randn(dtype, Device.CPU, seed + 2, p.kShape());
            Tensor dout = scope.randn(dtype, Device.CPU, seed + 3, p.qShape());
            Tensor out, lse, dq, dk, dv;
            if (c.allocating()) {
                AttentionOutput o = scope.track(Attention.forward(q, k, v, options));
                out = o.out();
                lse = o.lse();
                AttentionGradients g = scope.track(Attention.backward(dout, q, k, v, out, lse, options));
                dq = g.dq();
                dk = g.dk();
                dv = g.dv();
            } else {
                out = scope.track(Tensor.full(Float.NaN, dtype, Device.CPU, p.qShape()));
                lse = scope.track(Tensor.full(Float.NaN, FLOAT32, Device.CPU, p.lseShape()));
                dq = scope.track(Tensor.full(Float.NaN, dtype, Device.CPU, p.qShape()));
                dk = scope.track(Tensor.full(Float.NaN, dtype, Device.CPU, p.kShape()));
                dv = scope.track(Tensor.full(Float.NaN, dtype, Device.CPU, p.kShape()));
                Attention.forwardInto(q, k, v, out, lse, options);
                Attention.backwardInto(dout, q, k, v, out, lse, dq, dk, dv, options);
            }
            check(c + " seed " + seed, p, dtype, q, k, v, dout, out, lse, dq, dk, dv);
        }
    }

    static double[] replicate(float[] perHead, int batch) {
        double[] all = new double[perHead.length * batch];
        for (int i = 0; i < all.length; i++) all[i] = perHead[i % perHead.length];
        return all;
    }

    /** Out, lse and the gradients against the reference of {@code p}, by FlashAttention's rule. */
    static void check(String what, Problem p, DType dtype, Tensor q, Tensor k, Tensor v, Tensor dout, Tensor out, Tensor lse,
                      Tensor dq, Tensor dk, Tensor dv) {
        float[] qa = q.toFloatArray(), ka = k.toFloatArray(), va = v.toFloatArray(), da = dout.toFloatArray();
        ReferenceAttention exact = ReferenceAttention.exact();
        ReferenceAttention plain = ReferenceAttention.plain(x -> Precision.round(x, dtype));
        ReferenceAttention.Forward fe = exact.forward(p, qa, ka, va), fp = plain.forward(p, qa, ka, va);
        ReferenceAttention.Gradients ge = exact.backward(p, qa, ka, va, fe.out(), da);
        ReferenceAttention.Gradients gp = plain.backward(p, qa, ka, va, fp.out(), da);
        ReferenceAttention.Forward f32 = ReferenceAttention.plain(x -> (float) x).forward(p, qa, ka, va);
        List<String> report = new ArrayList<>();
        try {
            report.add(Precision.check("out", out.toFloatArray(), fe.out(), fp.out(), dtype));
            // lse is float32 whatever the dtype: its plain baseline is the float32 computation.
            report.add(Precision.check("lse", lse.toFloatArray(), fe.lse(), f32.lse(), FLOAT32));
            report.add(Precision.check("dq", dq.toFloatArray(), ge.dq(), gp.dq(), dtype));
            report.add(Precision.check("dk", dk.toFloatArray(), ge.dk(), gp.dk(), dtype));
            report.add(Precision.check("dv", dv.toFloatArray(), ge.dv(), gp.dv(), dtype));
        } catch (AssertionError e) {
            throw new AssertionError(what + ": " + e.getMessage(), e);
        }
        // A window that leaves some row no key must give it lse -inf (and out 0: checked above).
        int empty = 0;
        for (int i = 0; i < p.seqQ(); i++) if (p.visibleKeys(i) == 0) empty++;
        if (empty > 0) {
            float[] l = lse.toFloatArray();
            int infinite = 0;
            for (float x : l) if (x == Float.NEGATIVE_INFINITY) infinite++;
            assertEquals(empty * p.batch() * p.headsQ(), infinite, what + ": rows that attend no key");
        }
        System.out.println("cpu features " + what + ": " + String.join(", ", report));
    }
}
