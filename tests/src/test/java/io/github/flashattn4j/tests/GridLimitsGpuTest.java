package io.github.flashattn4j.tests;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.PackedSequences;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.stream.Stream;

import static io.github.flashattn4j.DType.BFLOAT16;
import static io.github.flashattn4j.DType.FLOAT16;
import static io.github.flashattn4j.DType.FLOAT32;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * No grid limit: batch entries, heads and their product beyond 65535 (the largest grid y and z dimensions)
 * must run, forward and backward, and be right everywhere, including the last batch entry and head. Every
 * output starts as NaN and must be written in full; a random sample of (batch entry, kv head) pieces, plus
 * the first and the last, is judged against the float64 reference by FlashAttention's rule. Each test keeps
 * below 2 GB of device memory: the batch 65536 x 4 heads x N 8 x d 64 runs forward with 4 kv heads,
 * and forward and backward with 1 kv head (eight [65536, 8, 4, 64] tensors would not fit the budget).
 */
class GridLimitsGpuTest extends GpuTest {

    /** A dense shape. */
    record Shape(int batch, int seq, int headsQ, int headsKv, int headDim, DType dtype, boolean causal, boolean backward) {
        @Override
        public String toString() {
            return dtype + " B" + batch + " N" + seq + " H" + headsQ + "/" + headsKv + " d" + headDim + (causal ? " causal" : "")
                    + (backward ? " forward+backward" : " forward");
        }

        int group() {
            return headsQ / headsKv;
        }
    }

    /** One sampled piece of a large call: its sub-problem and the views of every tensor that belong to it. */
    private record Piece(Problem p, Tensor q, Tensor k, Tensor v, Tensor dout, Tensor out, Tensor lse, Tensor dq, Tensor dk,
                         Tensor dv) {}

    static Stream<Shape> shapes() {
        return Stream.of(
                // The shape; forward with every kv head, then forward and backward with MQA (memory).
                new Shape(65536, 8, 4, 4, 64, BFLOAT16, false, false),
                new Shape(65536, 8, 4, 1, 64, BFLOAT16, true, true),
                // Batch beyond 65535 at another head dim and a ragged length.
                new Shape(70000, 5, 2, 1, 128, BFLOAT16, false, true),
                // Heads beyond 65535: query and kv heads alike, and with GQA.
                new Shape(1, 8, 70000, 70000, 64, FLOAT16, true, true),
                new Shape(2, 8, 66000, 6000, 64, BFLOAT16, false, true),
                // batch * heads beyond 65535 with each below it.
                new Shape(257, 8, 256, 128, 64, FLOAT16, true, true));
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("shapes")
    void largeGridsMatchTheReference(Shape s) {
        long seed = Seeds.fresh();
        String what = s + " seed " + seed;
        DType dtype = s.dtype();
        long[] qShape = {s.batch(), s.seq(), s.headsQ(), s.headDim()}, kShape = {s.batch(), s.seq(), s.headsKv(), s.headDim()};
        long[] lseShape = {s.batch(), s.headsQ(), s.seq()};
        AttentionOptions options = AttentionOptions.builder().causal(s.causal()).build();
        try (TensorScope scope = TensorScope.open()) {
            Tensor q = scope.randn(dtype, CUDA0, seed, qShape);
            Tensor k = scope.randn(dtype, CUDA0, seed + 1, kShape);
            Tensor v = scope.randn(dtype, CUDA0, seed + 2, kShape);
            Tensor out = scope.track(Tensor.full(Float.NaN, dtype, CUDA0, qShape));
            Tensor lse = scope.track(Tensor.full(Float.NaN, FLOAT32, CUDA0, lseShape));
            Attention.forwardInto(q, k, v, out, lse, options);
            Tensor dout = null, dq = null, dk = null, dv = null;
            if (s.backward()) {
                dout = scope.randn(dtype, CUDA0, seed + 3, qShape);
                dq = scope.track(Tensor.full(Float.NaN, dtype, CUDA0, qShape));
                dk = scope.track(Tensor.full(Float.NaN, dtype, CUDA0, kShape));
                dv = scope.track(Tensor.full(Float.NaN, dtype, CUDA0, kShape));
                Attention.backwardInto(dout, q, k, v, out, lse, dq, dk, dv, options);
            }
            requireWritten(what, "out", out);
            requireWritten(what, "lse", lse);
            if (s.backward()) {
                requireWritten(what, "dq", dq);
                requireWritten(what, "dk", dk);
                requireWritten(what, "dv", dv);
            }
            // Pieces: (batch entry, kv head) with that kv head's group of query heads.
            List<Piece> pieces = new ArrayList<>();
            SplittableRandom random = new SplittableRandom(seed);
            int g = s.group();
            for (int n = 0; n < 18; n++) {
                int b = n == 0 ? 0 : n == 1 ? s.batch() - 1 : random.nextInt(s.batch());
                int hk = n == 0 ? 0 : n == 1 ? s.headsKv() - 1 : random.nextInt(s.headsKv());
                Problem p = new Problem(1, s.seq(), s.seq(), g, 1, s.headDim(), s.causal(), (float) (1 / Math.sqrt(s.headDim())));
                pieces.add(new Piece(p, part(scope, q, b, 2, hk * g, g), part(scope, k, b, 2, hk, 1), part(scope, v, b, 2, hk, 1),
                        dout == null ? null : part(scope, dout, b, 2, hk * g, g), part(scope, out, b, 2, hk * g, g),
                        part(scope, lse, b, 1, hk * g, g), dq == null ? null : part(scope, dq, b, 2, hk * g, g),
                        dk == null ? null : part(scope, dk, b, 2, hk, 1), dv == null ? null : part(scope, dv, b, 2, hk, 1)));
            }
            System.out.println("grid " + what + ": " + checkPieces(what, dtype, pieces));
        }
    }

    /**
     * Varlen with more sequences than 65535: 70000 sequences of 1 to 8 queries and 1 to 12 keys, causal
     * (aligned per sequence), GQA, forward and backward; a sample of sequences, the first and the last
     * included, against the reference.
     */
    @Test
    void varlenWithMoreSequencesThanTheGridLimit() {
        long seed = Seeds.fresh();
        int batch = 70000, hq = 4, hkv = 2, d = 64;
        DType dtype = BFLOAT16;
        SplittableRandom random = new SplittableRandom(seed);
        int[] lensQ = new int[batch], lensK = new int[batch];
        for (int b = 0; b < batch; b++) {
            lensQ[b] = 1 + random.nextInt(8);
            lensK[b] = 1 + random.nextInt(12);
        }
        int[] cuQ = VarlenAttention.offsets(lensQ), cuK = VarlenAttention.offsets(lensK);
        int totalQ = cuQ[batch], totalK = cuK[batch];
        String what = "varlen bf16 " + batch + " sequences (" + totalQ + " query rows, " + totalK + " key rows) H" + hq + "/" + hkv
                + " d" + d + " causal seed " + seed;
        AttentionOptions options = AttentionOptions.builder().causal(true).build();
        try (TensorScope scope = TensorScope.open()) {
            Tensor q = scope.randn(dtype, CUDA0, seed, totalQ, hq, d);
            Tensor k = scope.randn(dtype, CUDA0, seed + 1, totalK, hkv, d);
            Tensor v = scope.randn(dtype, CUDA0, seed + 2, totalK, hkv, d);
            Tensor dout = scope.randn(dtype, CUDA0, seed + 3, totalQ, hq, d);
            PackedSequences pq = PackedSequences.of(q, scope.fromInts(cuQ, CUDA0, batch + 1), 8);
            PackedSequences pk = PackedSequences.of(k, scope.fromInts(cuK, CUDA0, batch + 1), 12);
            Tensor out = scope.track(Tensor.full(Float.NaN, dtype, CUDA0, totalQ, hq, d));
            Tensor lse = scope.track(Tensor.full(Float.NaN, FLOAT32, CUDA0, hq, totalQ));
            Tensor dq = scope.track(Tensor.full(Float.NaN, dtype, CUDA0, totalQ, hq, d));
            Tensor dk = scope.track(Tensor.full(Float.NaN, dtype, CUDA0, totalK, hkv, d));
            Tensor dv = scope.track(Tensor.full(Float.NaN, dtype, CUDA0, totalK, hkv, d));
            Attention.forwardInto(pq, pk, v, out, lse, options);
            Attention.backwardInto(dout, pq, pk, v, out, lse, dq, dk, dv, options);
            for (Tensor t : new Tensor[] {out, lse, dq, dk, dv}) requireWritten(what, "an output", t);
            List<Piece> pieces = new ArrayList<>();
            for (int n = 0; n < 40; n++) {
                int b = n == 0 ? 0 : n == 1 ? batch - 1 : random.nextInt(batch);
                Problem p = new Problem(1, lensQ[b], lensK[b], hq, hkv, d, true, (float) (1 / Math.sqrt(d)));
                pieces.add(new Piece(p, rows(scope, q, 0, cuQ, b), rows(scope, k, 0, cuK, b), rows(scope, v, 0, cuK, b),
                        rows(scope, dout, 0, cuQ, b), rows(scope, out, 0, cuQ, b), rows(scope, lse, 1, cuQ, b), rows(scope, dq, 0, cuQ, b),
                        rows(scope, dk, 0, cuK, b), rows(scope, dv, 0, cuK, b)));
            }
            System.out.println("grid " + what + ": " + checkPieces(what, dtype, pieces));
        }
    }

    /** Batch entry b and heads [h0, h0 + count) (head dimension {@code headDim}) of a dense tensor. */
    private static Tensor part(TensorScope scope, Tensor t, int b, int headDim, int h0, int count) {
        return scope.track(scope.track(t.slice(0, b, b + 1)).slice(headDim, h0, h0 + count));
    }

    /** Sequence b's rows (along dimension {@code dim}) of a packed tensor. */
    private static Tensor rows(TensorScope scope, Tensor t, int dim, int[] cu, int b) {
        return scope.track(t.slice(dim, cu[b], cu[b + 1]));
    }

    /** Every element written (no NaN left of the poison) and finite, except lse's -inf of rows with no key. */
    private static void requireWritten(String what, String name, Tensor t) {
        float[] a = t.toFloatArray();
        for (int i = 0; i < a.length; i++) {
            float x = a[i];
            if (Float.isNaN(x) || x == Float.POSITIVE_INFINITY || (x == Float.NEGATIVE_INFINITY && t.dtype() != FLOAT32)) {
                fail(what + ": " + name + " holds " + x + " at element " + i + " of " + a.length);
            }
        }
    }

    /** The pieces' outputs against the float64 reference of their sub-problems, by FlashAttention's rule. */
    private static String checkPieces(String what, DType dtype, List<Piece> pieces) {
        boolean backward = pieces.get(0).dq() != null;
        String[] names = backward ? new String[] {"out", "lse", "dq", "dk", "dv"} : new String[] {"out", "lse"};
        List<List<Float>> kernel = new ArrayList<>();
        List<List<Double>> exact = new ArrayList<>(), plain = new ArrayList<>();
        for (int i = 0; i < names.length; i++) {
            kernel.add(new ArrayList<>());
            exact.add(new ArrayList<>());
            plain.add(new ArrayList<>());
        }
        ReferenceAttention exactRef = ReferenceAttention.exact();
        ReferenceAttention plainRef = ReferenceAttention.plain(x -> Precision.round(x, dtype));
        ReferenceAttention f32Ref = ReferenceAttention.plain(x -> (float) x);
        for (Piece piece : pieces) {
            Problem p = piece.p();
            float[] qa = piece.q().toFloatArray(), ka = piece.k().toFloatArray(), va = piece.v().toFloatArray();
            ReferenceAttention.Forward fe = exactRef.forward(p, qa, ka, va), fp = plainRef.forward(p, qa, ka, va);
            add(kernel.get(0), exact.get(0), plain.get(0), piece.out().toFloatArray(), fe.out(), fp.out());
            add(kernel.get(1), exact.get(1), plain.get(1), piece.lse().toFloatArray(), fe.lse(), f32Ref.forward(p, qa, ka, va).lse());
            if (backward) {
                float[] da = piece.dout().toFloatArray();
                ReferenceAttention.Gradients ge = exactRef.backward(p, qa, ka, va, fe.out(), da);
                ReferenceAttention.Gradients gp = plainRef.backward(p, qa, ka, va, fp.out(), da);
                add(kernel.get(2), exact.get(2), plain.get(2), piece.dq().toFloatArray(), ge.dq(), gp.dq());
                add(kernel.get(3), exact.get(3), plain.get(3), piece.dk().toFloatArray(), ge.dk(), gp.dk());
                add(kernel.get(4), exact.get(4), plain.get(4), piece.dv().toFloatArray(), ge.dv(), gp.dv());
            }
        }
        List<String> report = new ArrayList<>();
        try {
            for (int i = 0; i < names.length; i++) {
                report.add(Precision.check(names[i], floats(kernel.get(i)), doubles(exact.get(i)), doubles(plain.get(i)),
                        i == 1 ? FLOAT32 : dtype));
            }
        } catch (AssertionError e) {
            throw new AssertionError(what + ": " + e.getMessage(), e);
        }
        return pieces.size() + " pieces: " + String.join(", ", report);
    }

    private static void add(List<Float> kernel, List<Double> exact, List<Double> plain, float[] k, double[] e, double[] p) {
        for (float x : k) kernel.add(x);
        for (double x : e) exact.add(x);
        for (double x : p) plain.add(x);
    }

    private static float[] floats(List<Float> list) {
        float[] a = new float[list.size()];
        for (int i = 0; i < a.length; i++) a[i] = list.get(i);
        return a;
    }

    private static double[] doubles(List<Double> list) {
        return list.stream().mapToDouble(Double::doubleValue).toArray();
    }
}
