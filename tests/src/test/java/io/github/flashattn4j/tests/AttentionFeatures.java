package io.github.flashattn4j.tests;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionGradients;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.AttentionOutput;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.KernelFamily;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

import static io.github.flashattn4j.DType.BFLOAT16;
import static io.github.flashattn4j.DType.FLOAT16;
import static io.github.flashattn4j.DType.FLOAT32;

/**
 * The cases and the check of softcap, ALiBi, sliding windows and head dims from 8 to 256 on dense batches,
 * forward and backward, shared by {@link AttentionFeaturesCpuTest} and {@link AttentionFeaturesGpuTest}:
 * against the float64 reference with the features exactly as flashattn4j.h defines them (scale, softcap,
 * ALiBi bias {@code -slope·|i' - j|}, window mask, in that order, with {@code i' = i + Nk - Nq}), fresh
 * random inputs ({@link Seeds}), NaN-poisoned caller-provided outputs and allocated ones, GQA, seqlen_q ≠
 * seqlen_k both ways (windows and causal masks that leave rows with no key), every dtype of the backend
 * (float32 on the CPU only), every kernel family of the backend ({@link BackendRuns}). On CUDA the results
 * must also agree with the CPU backend's within the sum of both bounds.
 */
final class AttentionFeatures {

    private AttentionFeatures() {}

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

    /** Head dims of the sweep: every CUDA instantiation (64, 96, 128, 192, 256) and dims that run padded on one. */
    static final int[] HEAD_DIMS = {8, 16, 40, 64, 72, 96, 104, 128, 136, 160, 192, 200, 224, 256};

    /** The cases; {@code cuda}: in the dtypes the CUDA kernels take (float16, bfloat16), else in all three. */
    static Stream<Case> cases(boolean cuda) {
        DType[] dtypes = cuda ? new DType[] {FLOAT16, BFLOAT16} : new DType[] {FLOAT32, FLOAT16, BFLOAT16};
        List<Case> cases = new ArrayList<>();
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
                    cases.add(new Case(dtypes[n % dtypes.length], p, n % 2 == 0, n % 4 == 3));
                    n++;
                }
            }
        }
        // Every head dim, causal and not, with one feature set each in turn (none, softcap, a causal sliding
        // window, ALiBi, everything), on a shape with Nq < Nk and one with Nq > Nk (rows with no key).
        int m = 0;
        for (int d : HEAD_DIMS) {
            for (boolean causal : new boolean[] {false, true}) {
                Problem shape = m % 2 == 0 ? Problem.of(2, 70, 130, 4, 2, d, causal) : Problem.of(1, 130, 70, 2, 1, d, causal);
                List<Problem.Features> sets = featureSets(shape, m);
                Problem.Features f = switch (m % 5) {
                    case 0 -> Problem.Features.NONE;
                    case 1 -> sets.get(0);
                    case 2 -> sets.get(3);
                    case 3 -> sets.get(2);
                    default -> sets.get(8);
                };
                cases.add(new Case(dtypes[m % dtypes.length], shape.with(f), m % 3 == 0, m % 4 == 1));
                m++;
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
    static double[] alibiSlopes(int batch, int heads, boolean perBatch) {
        double[] s = new double[batch * heads];
        for (int b = 0; b < batch; b++) {
            for (int h = 0; h < heads; h++) {
                double slope = Math.pow(2, -8.0 * (h + 1) / heads) * (perBatch ? 1 + 0.5 * b : 1);
                s[b * heads + h] = (float) slope;  // the library reads float32 slopes
            }
        }
        return s;
    }

    static double[] replicate(float[] perHead, int batch) {
        double[] all = new double[perHead.length * batch];
        for (int i = 0; i < all.length; i++) all[i] = perHead[i % perHead.length];
        return all;
    }

    /** Dense calls on fixed tensors of one device. */
    private record DenseCalls(Device device, Problem p, DType dtype, Tensor q, Tensor k, Tensor v, Tensor dout)
            implements BackendRuns.Calls {
        @Override
        public long headDim() {
            return p.headDim();
        }

        @Override
        public Tensor[] poisonedForwardOutputs(TensorScope scope) {
            return new Tensor[] {scope.track(Tensor.full(Float.NaN, dtype, device, p.qShape())),
                                 scope.track(Tensor.full(Float.NaN, FLOAT32, device, p.lseShape()))};
        }

        @Override
        public Tensor[] poisonedGradients(TensorScope scope) {
            return new Tensor[] {scope.track(Tensor.full(Float.NaN, dtype, device, p.qShape())),
                                 scope.track(Tensor.full(Float.NaN, dtype, device, p.kShape())),
                                 scope.track(Tensor.full(Float.NaN, dtype, device, p.kShape()))};
        }

        @Override
        public Attention.Support checkForward(AttentionOptions o) {
            return Attention.checkForward(q, k, v, o);
        }

        @Override
        public AttentionOutput forward(AttentionOptions o) {
            return Attention.forward(q, k, v, o);
        }

        @Override
        public void forwardInto(AttentionOptions o, Tensor out, Tensor lse) {
            Attention.forwardInto(q, k, v, out, lse, o);
        }

        @Override
        public Attention.Support checkBackward(AttentionOptions o, Tensor out, Tensor lse) {
            return Attention.checkBackward(dout, q, k, v, out, lse, o);
        }

        @Override
        public AttentionGradients backward(AttentionOptions o, Tensor out, Tensor lse) {
            return Attention.backward(dout, q, k, v, out, lse, o);
        }

        @Override
        public void backwardInto(AttentionOptions o, Tensor out, Tensor lse, Tensor dq, Tensor dk, Tensor dv) {
            Attention.backwardInto(dout, q, k, v, out, lse, dq, dk, dv, o);
        }
    }

    /**
     * Runs case {@code c} on {@code device} (every kernel family of it) and judges it; on CUDA also against
     * the CPU backend on the same inputs.
     */
    static void check(Case c, Device device) {
        Problem p = c.problem();
        DType dtype = c.dtype();
        Problem.Features f = p.features();
        long seed = Seeds.fresh();  // printed on failure; -Dfa4j.seed replays it
        String what = c + " seed " + seed;
        try (TensorScope scope = TensorScope.open()) {
            float[] slopes = null;
            if (f.alibi() != null) {
                slopes = new float[c.perBatchSlopes() ? p.batch() * p.headsQ() : p.headsQ()];
                for (int i = 0; i < slopes.length; i++) slopes[i] = (float) f.alibi()[i];
                if (!c.perBatchSlopes()) p = p.with(new Problem.Features(f.softcap(), f.windowLeft(), f.windowRight(),
                        replicate(slopes, p.batch())));
            }
            Tensor q = scope.randn(dtype, device, seed, p.qShape());
            Tensor k = scope.randn(dtype, device, seed + 1, p.kShape());
            Tensor v = scope.randn(dtype, device, seed + 2, p.kShape());
            Tensor dout = scope.randn(dtype, device, seed + 3, p.qShape());
            float[] qa = q.toFloatArray(), ka = k.toFloatArray(), va = v.toFloatArray(), da = dout.toFloatArray();

            ReferenceAttention exact = ReferenceAttention.exact();
            ReferenceAttention plain = ReferenceAttention.plain(x -> Precision.round(x, dtype));
            ReferenceAttention.Forward fe = exact.forward(p, qa, ka, va), fp = plain.forward(p, qa, ka, va);
            ReferenceAttention.Gradients ge = exact.backward(p, qa, ka, va, fe.out(), da);
            ReferenceAttention.Gradients gp = plain.backward(p, qa, ka, va, fp.out(), da);
            ReferenceAttention.Forward f32 = ReferenceAttention.plain(x -> (float) x).forward(p, qa, ka, va);
            BackendRuns.Reference reference = new BackendRuns.Reference(fe.out(), fe.lse(), ge.dq(), ge.dk(), ge.dv(),
                    fp.out(), f32.lse(), gp.dq(), gp.dk(), gp.dv());

            DenseCalls calls = new DenseCalls(device, p, dtype, q, k, v, dout);
            var results = BackendRuns.run(what, scope, calls, options(scope, c, p, slopes, device), c.allocating());
            List<String> report = new ArrayList<>(BackendRuns.judge(what, dtype, reference, results));
            if (device.isCuda()) {
                DenseCalls cpu = new DenseCalls(Device.CPU, p, dtype, scope.fromArray(qa, dtype, Device.CPU, p.qShape()),
                        scope.fromArray(ka, dtype, Device.CPU, p.kShape()), scope.fromArray(va, dtype, Device.CPU, p.kShape()),
                        scope.fromArray(da, dtype, Device.CPU, p.qShape()));
                Map<KernelFamily, BackendRuns.Results> onCpu = BackendRuns.run(what, scope, cpu,
                        options(scope, c, p, slopes, Device.CPU), c.allocating());
                report.add(BackendRuns.agree(what, dtype, reference, results, onCpu.get(KernelFamily.AUTO)));
            }
            System.out.println(device + " features " + what + ": " + String.join("; ", report));
        }
    }

    /** The case's options with its ALiBi slopes (if any) on {@code device}. */
    private static AttentionOptions options(TensorScope scope, Case c, Problem p, float[] slopes, Device device) {
        Problem.Features f = p.features();
        AttentionOptions.Builder builder = AttentionOptions.builder().causal(p.causal()).softmaxScale((float) p.scale())
                .window(f.windowLeft(), f.windowRight()).softcap((float) f.softcap());
        if (slopes != null) {
            builder.alibiSlopes(c.perBatchSlopes() ? scope.fromArray(slopes, FLOAT32, device, p.batch(), p.headsQ())
                    : scope.fromArray(slopes, FLOAT32, device, p.headsQ()));
        }
        return builder.build();
    }
}
