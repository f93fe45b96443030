package io.github.flashattn4j.tests;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionGradients;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.AttentionOutput;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.KernelFamily;
import io.github.flashattn4j.PackedSequences;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

import static io.github.flashattn4j.DType.BFLOAT16;
import static io.github.flashattn4j.DType.FLOAT16;
import static io.github.flashattn4j.DType.FLOAT32;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;

/**
 * The cases and the check of variable-length batches, shared by {@link VarlenAttentionCpuTest} and
 * {@link VarlenAttentionGpuTest}: against the float64 reference computed sequence by sequence, ragged lengths
 * (empty sequences of queries or keys included), causal masks aligned per sequence (seqlen_q ≠ seqlen_k within
 * a sequence), used key lengths (seqused_k: the unused keys' gradients must be zero), GQA, padding rows after
 * the last sequence, derived and given maximum lengths (CUDA calls always give them), softcap, windows and
 * ALiBi per sequence, head dims up to 256, NaN-poisoned caller-provided outputs and allocated ones, every
 * kernel family of the backend ({@link BackendRuns}); on CUDA also against the CPU backend.
 */
final class VarlenAttention {

    private VarlenAttention() {}

    private static final int UNBOUNDED = AttentionOptions.UNBOUNDED;

    /**
     * One case. {@code usedK} null: every key used; {@code padQ}, {@code padK}: rows after the last
     * sequence; {@code giveMax}: pass the longest lengths (else 0, derived; CUDA calls always pass them).
     */
    record Case(DType dtype, int[] lengthsQ, int[] lengthsK, int[] usedK, int headsQ, int headsKv, int headDim,
                boolean causal, Problem.Features features, int padQ, int padK, boolean giveMax, boolean allocating) {
        @Override
        public String toString() {
            return dtype + " q" + Arrays.toString(lengthsQ) + " k" + Arrays.toString(lengthsK)
                    + (usedK != null ? " used" + Arrays.toString(usedK) : "") + " H" + headsQ + "/" + headsKv + " d" + headDim
                    + (causal ? " causal" : "") + features + (padQ + padK > 0 ? " padded" : "") + (giveMax ? " max given" : "")
                    + (allocating ? " allocated" : "");
        }

        /** This case as CUDA runs it: float32 becomes float16 or bfloat16, the maximum lengths are given. */
        Case onCuda(int n) {
            DType d = dtype == FLOAT32 ? (n % 2 == 0 ? FLOAT16 : BFLOAT16) : dtype;
            return new Case(d, lengthsQ, lengthsK, usedK, headsQ, headsKv, headDim, causal, features, padQ, padK, true, allocating);
        }
    }

    /** The cases; {@code cuda}: as CUDA runs them ({@link Case#onCuda}). */
    static Stream<Case> cases(boolean cuda) {
        Problem.Features none = Problem.Features.NONE;
        List<Case> cases = new ArrayList<>();
        cases.add(new Case(FLOAT32, new int[] {5, 17, 1, 33}, new int[] {5, 17, 1, 33}, null, 4, 2, 64, false, none, 0, 0, false, false));
        cases.add(new Case(BFLOAT16, new int[] {5, 17, 1, 33}, new int[] {5, 17, 1, 33}, null, 4, 4, 32, true, none, 0, 0, true, true));
        // Within a sequence Nq > Nk (rows with no key under the causal mask) and Nq < Nk; an empty query
        // sequence; an empty key sequence (its queries attend nothing).
        cases.add(new Case(FLOAT16, new int[] {3, 40, 0, 12, 9}, new int[] {10, 20, 7, 12, 0}, null, 8, 2, 64, true, none, 0, 0, false, false));
        cases.add(new Case(FLOAT32, new int[] {3, 40, 0, 12, 9}, new int[] {10, 20, 7, 12, 0}, null, 2, 1, 128, false, none, 0, 0, true, true));
        // Used key lengths, including 0 and all.
        cases.add(new Case(BFLOAT16, new int[] {6, 20, 4}, new int[] {10, 20, 7}, new int[] {4, 20, 0}, 4, 2, 64, true, none, 0, 0, false, false));
        cases.add(new Case(FLOAT32, new int[] {6, 20, 4}, new int[] {10, 20, 7}, new int[] {10, 1, 3}, 2, 2, 32, false, none, 0, 0, false, true));
        // Rows after the last sequence, in both packed tensors.
        cases.add(new Case(FLOAT16, new int[] {7, 30}, new int[] {12, 25}, null, 4, 2, 64, true, none, 3, 5, true, false));
        // One sequence: the dense problem.
        cases.add(new Case(BFLOAT16, new int[] {65}, new int[] {130}, null, 2, 1, 64, true, none, 0, 0, false, false));
        // Features, per sequence: softcap, windows, ALiBi per head or per sequence and head.
        cases.add(new Case(FLOAT32, new int[] {9, 33, 2, 20}, new int[] {14, 33, 5, 11}, null, 4, 2, 64, false,
                new Problem.Features(1.5, UNBOUNDED, UNBOUNDED, null), 0, 0, false, false));
        cases.add(new Case(BFLOAT16, new int[] {9, 33, 2, 20}, new int[] {14, 33, 5, 11}, null, 4, 2, 64, true,
                new Problem.Features(0, 6, UNBOUNDED, null), 0, 0, false, false));
        cases.add(new Case(FLOAT16, new int[] {9, 33, 2, 20}, new int[] {14, 33, 5, 11}, null, 4, 1, 32, false,
                new Problem.Features(0, 4, 2, null), 0, 0, true, true));
        cases.add(new Case(FLOAT32, new int[] {9, 33, 2}, new int[] {14, 33, 5}, null, 4, 2, 64, true,
                new Problem.Features(0, UNBOUNDED, UNBOUNDED, alibi(3, 4, true)), 0, 0, false, false));
        cases.add(new Case(BFLOAT16, new int[] {9, 33, 2}, new int[] {14, 33, 5}, new int[] {7, 30, 5}, 4, 2, 64, false,
                new Problem.Features(3, 10, 5, alibi(3, 4, false)), 2, 1, false, false));
        // Head dims of other kernel instantiations and padded ones, sequences longer than one tile (> 128
        // rows), the diagonal window, GQA 8, used lengths with features.
        cases.add(new Case(FLOAT16, new int[] {0, 150, 7, 61}, new int[] {5, 140, 7, 200}, null, 8, 1, 96, true, none, 0, 4, true, false));
        cases.add(new Case(BFLOAT16, new int[] {31, 1, 129}, new int[] {31, 64, 129}, new int[] {31, 0, 100}, 2, 2, 8, false,
                new Problem.Features(0, 0, 0, null), 0, 0, false, true));
        cases.add(new Case(FLOAT16, new int[] {70, 0, 33}, new int[] {50, 9, 140}, null, 4, 2, 160, true,
                new Problem.Features(20, 32, UNBOUNDED, alibi(3, 4, true)), 5, 0, true, false));
        cases.add(new Case(BFLOAT16, new int[] {19, 130, 3}, new int[] {19, 130, 40}, new int[] {19, 77, 40}, 4, 1, 256, false,
                new Problem.Features(0, 20, 20, null), 0, 0, false, true));
        cases.add(new Case(FLOAT32, new int[] {45, 2, 80, 16}, new int[] {45, 2, 80, 16}, null, 6, 3, 128, true,
                new Problem.Features(2, 16, UNBOUNDED, alibi(4, 6, false)), 0, 0, false, false));
        if (!cuda) return cases.stream();
        List<Case> onCuda = new ArrayList<>();
        for (int i = 0; i < cases.size(); i++) onCuda.add(cases.get(i).onCuda(i));
        return onCuda.stream();
    }

    /** Slopes per sequence and head, [batch * heads]; the same for every sequence unless {@code perSequence}. */
    static double[] alibi(int batch, int heads, boolean perSequence) {
        double[] s = new double[batch * heads];
        for (int b = 0; b < batch; b++) {
            for (int h = 0; h < heads; h++) s[b * heads + h] = (float) (Math.pow(2, -8.0 * (h + 1) / heads) * (perSequence ? 1 + b : 1));
        }
        return s;
    }

    static int[] offsets(int[] lengths) {
        int[] cu = new int[lengths.length + 1];
        for (int b = 0; b < lengths.length; b++) cu[b + 1] = cu[b] + lengths[b];
        return cu;
    }

    /** Varlen calls on fixed packed tensors of one device. */
    private record VarlenCalls(Device device, ReferenceAttention.Varlen vl, DType dtype, PackedSequences q, PackedSequences k,
                               Tensor v, Tensor dout) implements BackendRuns.Calls {
        @Override
        public long headDim() {
            return vl.headDim();
        }

        @Override
        public Tensor[] poisonedForwardOutputs(TensorScope scope) {
            return new Tensor[] {scope.track(Tensor.full(Float.NaN, dtype, device, vl.totalQ(), vl.headsQ(), vl.headDim())),
                                 scope.track(Tensor.full(Float.NaN, FLOAT32, device, vl.headsQ(), vl.totalQ()))};
        }

        @Override
        public Tensor[] poisonedGradients(TensorScope scope) {
            return new Tensor[] {scope.track(Tensor.full(Float.NaN, dtype, device, vl.totalQ(), vl.headsQ(), vl.headDim())),
                                 scope.track(Tensor.full(Float.NaN, dtype, device, vl.totalK(), vl.headsKv(), vl.headDim())),
                                 scope.track(Tensor.full(Float.NaN, dtype, device, vl.totalK(), vl.headsKv(), vl.headDim()))};
        }

        @Override
        public Attention.Support checkForward(AttentionOptions o) {
            return Attention.checkForward(q, k, v, o);
        }

        @Override
        public AttentionOutput forward(AttentionOptions o) {
            AttentionOutput out = Attention.forward(q, k, v, o);
            assertArrayEquals(new long[] {vl.totalQ(), vl.headsQ(), vl.headDim()}, out.out().shape());
            assertArrayEquals(new long[] {vl.headsQ(), vl.totalQ()}, out.lse().shape());
            return out;
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
            AttentionGradients g = Attention.backward(dout, q, k, v, out, lse, o);
            assertArrayEquals(new long[] {vl.totalK(), vl.headsKv(), vl.headDim()}, g.dk().shape());
            return g;
        }

        @Override
        public void backwardInto(AttentionOptions o, Tensor out, Tensor lse, Tensor dq, Tensor dk, Tensor dv) {
            Attention.backwardInto(dout, q, k, v, out, lse, dq, dk, dv, o);
        }

        // Only rows that belong to a sequence are defined.
        @Override
        public float[] definedQ(float[] qShaped) {
            return BackendRuns.prefix(qShaped, vl.coveredQ());
        }

        @Override
        public float[] definedLse(float[] lse) {
            return BackendRuns.viaDouble(lse, vl::coveredLse);
        }

        @Override
        public float[] definedK(float[] kShaped) {
            return BackendRuns.prefix(kShaped, vl.coveredK());
        }
    }

    /**
     * Runs case {@code c} on {@code device} (every kernel family of it) and judges it; on CUDA also against
     * the CPU backend on the same inputs.
     */
    static void check(Case c, Device device) {
        DType dtype = c.dtype();
        int[] cuQ = offsets(c.lengthsQ()), cuK = offsets(c.lengthsK());
        int batch = c.lengthsQ().length;
        int totalQ = cuQ[batch] + c.padQ(), totalK = cuK[batch] + c.padK();
        double scale = (float) (1 / Math.sqrt(c.headDim()));
        ReferenceAttention.Varlen vl = new ReferenceAttention.Varlen(cuQ, cuK, c.usedK(), totalQ, totalK, c.headsQ(), c.headsKv(),
                c.headDim(), c.causal(), scale, c.features());
        long seed = Seeds.fresh();
        String what = c + " seed " + seed;
        try (TensorScope scope = TensorScope.open()) {
            Tensor q = scope.randn(dtype, device, seed, totalQ, c.headsQ(), c.headDim());
            Tensor k = scope.randn(dtype, device, seed + 1, totalK, c.headsKv(), c.headDim());
            Tensor v = scope.randn(dtype, device, seed + 2, totalK, c.headsKv(), c.headDim());
            Tensor dout = scope.randn(dtype, device, seed + 3, totalQ, c.headsQ(), c.headDim());
            float[] qa = q.toFloatArray(), ka = k.toFloatArray(), va = v.toFloatArray(), da = dout.toFloatArray();

            ReferenceAttention exact = ReferenceAttention.exact();
            ReferenceAttention plain = ReferenceAttention.plain(x -> Precision.round(x, dtype));
            ReferenceAttention.Forward fe = exact.forward(vl, qa, ka, va), fp = plain.forward(vl, qa, ka, va);
            ReferenceAttention.Gradients ge = exact.backward(vl, qa, ka, va, fe.out(), da);
            ReferenceAttention.Gradients gp = plain.backward(vl, qa, ka, va, fp.out(), da);
            ReferenceAttention.Forward f32 = ReferenceAttention.plain(x -> (float) x).forward(vl, qa, ka, va);
            int cq = vl.coveredQ(), ck = vl.coveredK();
            BackendRuns.Reference reference = new BackendRuns.Reference(
                    BackendRuns.prefix(fe.out(), cq), vl.coveredLse(fe.lse()), BackendRuns.prefix(ge.dq(), cq),
                    BackendRuns.prefix(ge.dk(), ck), BackendRuns.prefix(ge.dv(), ck),
                    BackendRuns.prefix(fp.out(), cq), vl.coveredLse(f32.lse()), BackendRuns.prefix(gp.dq(), cq),
                    BackendRuns.prefix(gp.dk(), ck), BackendRuns.prefix(gp.dv(), ck));

            VarlenCalls calls = calls(scope, c, vl, device, q, k, v, dout);
            var results = BackendRuns.run(what, scope, calls, options(scope, c, device), c.allocating());
            List<String> report = new ArrayList<>(BackendRuns.judge(what, dtype, reference, results));
            if (device.isCuda()) {
                VarlenCalls cpu = calls(scope, c, vl, Device.CPU, scope.fromArray(qa, dtype, Device.CPU, q.shape()),
                        scope.fromArray(ka, dtype, Device.CPU, k.shape()), scope.fromArray(va, dtype, Device.CPU, v.shape()),
                        scope.fromArray(da, dtype, Device.CPU, dout.shape()));
                Map<KernelFamily, BackendRuns.Results> onCpu = BackendRuns.run(what, scope, cpu, options(scope, c, Device.CPU),
                        c.allocating());
                report.add(BackendRuns.agree(what, dtype, reference, results, onCpu.get(KernelFamily.AUTO)));
            }
            System.out.println(device + " varlen " + what + ": " + String.join("; ", report));
        }
    }

    private static VarlenCalls calls(TensorScope scope, Case c, ReferenceAttention.Varlen vl, Device device, Tensor q, Tensor k,
                                     Tensor v, Tensor dout) {
        int batch = c.lengthsQ().length;
        int maxQ = Arrays.stream(c.lengthsQ()).max().orElse(0), maxK = Arrays.stream(c.lengthsK()).max().orElse(0);
        boolean giveMax = c.giveMax() || device.isCuda();
        PackedSequences pq = PackedSequences.of(q, scope.fromInts(vl.cuQ(), device, batch + 1), giveMax ? maxQ : 0);
        PackedSequences pk = PackedSequences.of(k, scope.fromInts(vl.cuK(), device, batch + 1), giveMax ? maxK : 0);
        if (c.usedK() != null) pk = pk.withUsedLengths(scope.fromInts(c.usedK(), device, batch));
        return new VarlenCalls(device, vl, c.dtype(), pq, pk, v, dout);
    }

    /** The case's options with its ALiBi slopes (if any) on {@code device}. */
    private static AttentionOptions options(TensorScope scope, Case c, Device device) {
        Problem.Features f = c.features();
        AttentionOptions.Builder builder = AttentionOptions.builder().causal(c.causal()).softmaxScale((float) (1 / Math.sqrt(c.headDim())))
                .window(f.windowLeft(), f.windowRight()).softcap((float) f.softcap());
        if (f.alibi() != null) {
            float[] slopes = new float[f.alibi().length];
            for (int i = 0; i < slopes.length; i++) slopes[i] = (float) f.alibi()[i];
            int batch = c.lengthsQ().length;
            // Slopes the same for every sequence go in as [heads_q], others as [batch, heads_q].
            boolean perHead = Arrays.equals(Arrays.copyOf(slopes, c.headsQ()), Arrays.copyOfRange(slopes, slopes.length - c.headsQ(), slopes.length));
            builder.alibiSlopes(perHead ? scope.fromArray(Arrays.copyOf(slopes, c.headsQ()), FLOAT32, device, c.headsQ())
                    : scope.fromArray(slopes, FLOAT32, device, batch, c.headsQ()));
        }
        return builder.build();
    }
}
