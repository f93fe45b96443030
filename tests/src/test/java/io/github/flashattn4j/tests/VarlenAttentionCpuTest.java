package io.github.flashattn4j.tests;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionGradients;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.AttentionOutput;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.PackedSequences;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.stream.Stream;

import static io.github.flashattn4j.DType.BFLOAT16;
import static io.github.flashattn4j.DType.FLOAT16;
import static io.github.flashattn4j.DType.FLOAT32;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;

/**
 * Variable-length batches on the CPU backend against the float64 reference computed sequence by sequence:
 * ragged lengths (empty sequences of queries or keys included), causal masks aligned per sequence
 * (seqlen_q ≠ seqlen_k within a sequence), used key lengths (seqused_k: the unused keys' gradients must be
 * zero), GQA, padding rows after the last sequence, derived and given maximum lengths, softcap, windows and
 * ALiBi per sequence, NaN-poisoned outputs, caller-provided and allocated outputs.
 */
class VarlenAttentionCpuTest {

    private static final int UNBOUNDED = AttentionOptions.UNBOUNDED;

    /**
     * One case. {@code usedK} null: every key used; {@code padQ}, {@code padK}: rows after the last
     * sequence; {@code giveMax}: pass the longest lengths (else 0, derived).
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
    }

    static Stream<Case> cases() {
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
        return cases.stream();
    }

    /** Slopes per sequence and head, [batch * heads]; the same for every sequence unless {@code perSequence}. */
    private static double[] alibi(int batch, int heads, boolean perSequence) {
        double[] s = new double[batch * heads];
        for (int b = 0; b < batch; b++) {
            for (int h = 0; h < heads; h++) s[b * heads + h] = (float) (Math.pow(2, -8.0 * (h + 1) / heads) * (perSequence ? 1 + b : 1));
        }
        return s;
    }

    private static int[] offsets(int[] lengths) {
        int[] cu = new int[lengths.length + 1];
        for (int b = 0; b < lengths.length; b++) cu[b + 1] = cu[b] + lengths[b];
        return cu;
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("cases")
    void matchesFloat64ReferencePerSequence(Case c) {
        DType dtype = c.dtype();
        int[] cuQ = offsets(c.lengthsQ()), cuK = offsets(c.lengthsK());
        int batch = c.lengthsQ().length;
        int totalQ = cuQ[batch] + c.padQ(), totalK = cuK[batch] + c.padK();
        double scale = (float) (1 / Math.sqrt(c.headDim()));
        Problem.Features f = c.features();
        ReferenceAttention.Varlen vl = new ReferenceAttention.Varlen(cuQ, cuK, c.usedK(), totalQ, totalK, c.headsQ(), c.headsKv(),
                c.headDim(), c.causal(), scale, f);
        long seed = Seeds.fresh();
        try (TensorScope scope = TensorScope.open()) {
            AttentionOptions.Builder builder = AttentionOptions.builder().causal(c.causal()).softmaxScale((float) scale)
                    .window(f.windowLeft(), f.windowRight()).softcap((float) f.softcap());
            if (f.alibi() != null) {
                float[] slopes = new float[f.alibi().length];
                for (int i = 0; i < slopes.length; i++) slopes[i] = (float) f.alibi()[i];
                // Slopes the same for every sequence go in as [heads_q], others as [batch, heads_q].
                boolean perHead = Arrays.equals(Arrays.copyOf(slopes, c.headsQ()), Arrays.copyOfRange(slopes, slopes.length - c.headsQ(), slopes.length));
                builder.alibiSlopes(perHead ? scope.fromArray(Arrays.copyOf(slopes, c.headsQ()), FLOAT32, Device.CPU, c.headsQ())
                        : scope.fromArray(slopes, FLOAT32, Device.CPU, batch, c.headsQ()));
            }
            AttentionOptions options = builder.build();
            Tensor q = scope.randn(dtype, Device.CPU, seed, totalQ, c.headsQ(), c.headDim());
            Tensor k = scope.randn(dtype, Device.CPU, seed + 1, totalK, c.headsKv(), c.headDim());
            Tensor v = scope.randn(dtype, Device.CPU, seed + 2, totalK, c.headsKv(), c.headDim());
            Tensor dout = scope.randn(dtype, Device.CPU, seed + 3, totalQ, c.headsQ(), c.headDim());
            int maxQ = Arrays.stream(c.lengthsQ()).max().orElse(0), maxK = Arrays.stream(c.lengthsK()).max().orElse(0);
            PackedSequences pq = PackedSequences.of(q, scope.fromInts(cuQ, Device.CPU, batch + 1), c.giveMax() ? maxQ : 0);
            PackedSequences pk = PackedSequences.of(k, scope.fromInts(cuK, Device.CPU, batch + 1), c.giveMax() ? maxK : 0);
            if (c.usedK() != null) pk = pk.withUsedLengths(scope.fromInts(c.usedK(), Device.CPU, batch));
            Tensor out, lse, dq, dk, dv;
            if (c.allocating()) {
                AttentionOutput o = scope.track(Attention.forward(pq, pk, v, options));
                out = o.out();
                lse = o.lse();
                AttentionGradients g = scope.track(Attention.backward(dout, pq, pk, v, out, lse, options));
                dq = g.dq();
                dk = g.dk();
                dv = g.dv();
            } else {
                out = scope.track(Tensor.full(Float.NaN, dtype, Device.CPU, totalQ, c.headsQ(), c.headDim()));
                lse = scope.track(Tensor.full(Float.NaN, FLOAT32, Device.CPU, c.headsQ(), totalQ));
                dq = scope.track(Tensor.full(Float.NaN, dtype, Device.CPU, totalQ, c.headsQ(), c.headDim()));
                dk = scope.track(Tensor.full(Float.NaN, dtype, Device.CPU, totalK, c.headsKv(), c.headDim()));
                dv = scope.track(Tensor.full(Float.NaN, dtype, Device.CPU, totalK, c.headsKv(), c.headDim()));
                Attention.forwardInto(pq, pk, v, out, lse, options);
                Attention.backwardInto(dout, pq, pk, v, out, lse, dq, dk, dv, options);
            }
            assertArrayEquals(new long[] {totalQ, c.headsQ(), c.headDim()}, out.shape());
            assertArrayEquals(new long[] {c.headsQ(), totalQ}, lse.shape());
            assertArrayEquals(new long[] {totalK, c.headsKv(), c.headDim()}, dk.shape());

            float[] qa = q.toFloatArray(), ka = k.toFloatArray(), va = v.toFloatArray(), da = dout.toFloatArray();
            ReferenceAttention exact = ReferenceAttention.exact();
            ReferenceAttention plain = ReferenceAttention.plain(x -> Precision.round(x, dtype));
            ReferenceAttention.Forward fe = exact.forward(vl, qa, ka, va), fp = plain.forward(vl, qa, ka, va);
            ReferenceAttention.Gradients ge = exact.backward(vl, qa, ka, va, fe.out(), da);
            ReferenceAttention.Gradients gp = plain.backward(vl, qa, ka, va, fp.out(), da);
            ReferenceAttention.Forward f32 = ReferenceAttention.plain(x -> (float) x).forward(vl, qa, ka, va);
            // Only rows that belong to a sequence are defined.
            int cq = vl.coveredQ(), ck = vl.coveredK();
            List<String> report = new ArrayList<>();
            String what = c + " seed " + seed;
            try {
                report.add(Precision.check("out", prefix(out.toFloatArray(), cq), prefix(fe.out(), cq), prefix(fp.out(), cq), dtype));
                report.add(Precision.check("lse", toFloat(vl.coveredLse(toDouble(lse.toFloatArray()))), vl.coveredLse(fe.lse()),
                        vl.coveredLse(f32.lse()), FLOAT32));
                report.add(Precision.check("dq", prefix(dq.toFloatArray(), cq), prefix(ge.dq(), cq), prefix(gp.dq(), cq), dtype));
                report.add(Precision.check("dk", prefix(dk.toFloatArray(), ck), prefix(ge.dk(), ck), prefix(gp.dk(), ck), dtype));
                report.add(Precision.check("dv", prefix(dv.toFloatArray(), ck), prefix(ge.dv(), ck), prefix(gp.dv(), ck), dtype));
            } catch (AssertionError e) {
                throw new AssertionError(what + ": " + e.getMessage(), e);
            }
            System.out.println("cpu varlen " + what + ": " + String.join(", ", report));
        }
    }

    private static float[] prefix(float[] a, int n) {
        return Arrays.copyOf(a, n);
    }

    private static double[] prefix(double[] a, int n) {
        return Arrays.copyOf(a, n);
    }

    private static double[] toDouble(float[] a) {
        double[] d = new double[a.length];
        for (int i = 0; i < a.length; i++) d[i] = a[i];
        return d;
    }

    private static float[] toFloat(double[] a) {
        float[] f = new float[a.length];
        for (int i = 0; i < a.length; i++) f[i] = (float) a[i];
        return f;
    }
}
