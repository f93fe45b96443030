package io.github.flashattn4j.tests;

import java.util.Arrays;
import java.util.function.DoubleUnaryOperator;

/**
 * Naive attention and its analytic gradients, written independently of the library.
 *
 * <p>{@link #exact()} computes in double: the float64 reference. {@link #plain(DoubleUnaryOperator)}
 * computes every product and sum in float and rounds what a low-precision implementation must store
 * (P before P·V, dS before the gradient products, every output) to the dtype: its error against the
 * reference sets the tolerance for the kernel (FlashAttention's convention).
 *
 * <p>Scores follow flashattn4j.h's definition, features included ({@link Problem.Features}): softcap, ALiBi
 * and windows. Variable-length batches ({@link Varlen}) are computed sequence by sequence as dense problems
 * of batch 1: that is the definition of varlen attention, not a shortcut of it.
 */
final class ReferenceAttention {

    record Forward(double[] out, double[] lse) {}

    record Gradients(double[] dq, double[] dk, double[] dv) {}

    /**
     * A variable-length batch: packed {@code [total, heads, headDim]} rows; sequence b's queries are rows
     * {@code cuQ[b] .. cuQ[b+1] - 1}, its keys rows {@code cuK[b] ..} of which the first {@code usedK[b]}
     * are used (null: all of {@code cuK[b] .. cuK[b+1] - 1}). ALiBi slopes in {@code features} are per
     * sequence and query head ({@code [batch * headsQ]}). lse arrays are {@code [headsQ, totalQ]}.
     */
    record Varlen(int[] cuQ, int[] cuK, int[] usedK, int totalQ, int totalK, int headsQ, int headsKv, int headDim,
                  boolean causal, double scale, Problem.Features features) {
        int batch() {
            return cuQ.length - 1;
        }

        int usedKeys(int b) {
            return usedK == null ? cuK[b + 1] - cuK[b] : usedK[b];
        }

        /** Sequence b as a dense problem of batch 1. */
        Problem sequence(int b) {
            Problem.Features f = features;
            if (f.alibi() != null) f = new Problem.Features(f.softcap(), f.windowLeft(), f.windowRight(),
                    Arrays.copyOfRange(f.alibi(), b * headsQ, (b + 1) * headsQ));
            return new Problem(1, cuQ[b + 1] - cuQ[b], usedKeys(b), headsQ, headsKv, headDim, causal, scale, f);
        }

        /** The elements of rows [0, cuQ[batch]) of a q-shaped array: those that belong to a sequence. */
        int coveredQ() {
            return cuQ[batch()] * headsQ * headDim;
        }

        int coveredK() {
            return cuK[batch()] * headsKv * headDim;
        }

        /** The lse entries [h, r] with r < cuQ[batch], head by head. */
        double[] coveredLse(double[] lse) {
            int rows = cuQ[batch()];
            double[] covered = new double[headsQ * rows];
            for (int h = 0; h < headsQ; h++) System.arraycopy(lse, h * totalQ, covered, h * rows, rows);
            return covered;
        }
    }

    private final boolean exact;
    private final DoubleUnaryOperator store;

    private ReferenceAttention(boolean exact, DoubleUnaryOperator store) {
        this.exact = exact;
        this.store = store;
    }

    static ReferenceAttention exact() {
        return new ReferenceAttention(true, x -> x);
    }

    static ReferenceAttention plain(DoubleUnaryOperator roundToDtype) {
        return new ReferenceAttention(false, roundToDtype);
    }

    /** Rounds an intermediate result the way the arithmetic of this implementation does. */
    private double r(double x) {
        return exact ? x : (float) x;
    }

    /**
     * The softmax probabilities of one query row over the keys {@code first .. first + p.length - 1} it
     * attends, and the derivative of the softcap at each score (null without softcap).
     */
    private record Row(int first, double[] p, double[] capSlope) {}

    /**
     * Softmax probabilities of query row (b, i, h), or null when the row attends no key. The score is, in
     * flashattn4j.h's order: scale·q·k, then softcap·tanh(s/softcap), then minus slope·|i' - j|, over the
     * keys the window (and causal mask) leaves.
     */
    private Row probabilities(Problem p, float[] q, float[] k, int b, int i, int h, double[] lseOut) {
        int first = p.firstKey(i), visible = p.visibleKeys(i);
        if (visible == 0) {
            if (lseOut != null) lseOut[0] = Double.NEGATIVE_INFINITY;
            return null;
        }
        Problem.Features f = p.features();
        int qi = p.qIndex(b, i, h), hk = h / p.group();
        double[] s = new double[visible];
        double[] capSlope = f.softcap() > 0 ? new double[visible] : null;
        double slope = p.alibiSlope(b, h);
        double max = Double.NEGATIVE_INFINITY;
        for (int jj = 0; jj < visible; jj++) {
            int j = first + jj;
            int kj = p.kIndex(b, j, hk);
            double dot = 0;
            for (int c = 0; c < p.headDim(); c++) dot = r(dot + r((double) q[qi + c] * k[kj + c]));
            double score = r(dot * p.scale());
            if (capSlope != null) {
                double t = r(Math.tanh(r(score / f.softcap())));
                capSlope[jj] = r(r(1 - t) * r(1 + t));
                score = r(f.softcap() * t);
            }
            if (f.alibi() != null) score = r(score - r(slope * Math.abs(p.aligned(i) - j)));
            s[jj] = score;
            max = Math.max(max, s[jj]);
        }
        double sum = 0;
        for (int j = 0; j < visible; j++) {
            s[j] = r(Math.exp(s[j] - max));
            sum = r(sum + s[j]);
        }
        for (int j = 0; j < visible; j++) s[j] = r(s[j] / sum);
        if (lseOut != null) lseOut[0] = r(max + Math.log(sum));
        return new Row(first, s, capSlope);
    }

    Forward forward(Problem p, float[] q, float[] k, float[] v) {
        double[] out = new double[q.length], lse = new double[p.batch() * p.headsQ() * p.seqQ()];
        double[] rowLse = new double[1];
        for (int b = 0; b < p.batch(); b++) {
            for (int h = 0; h < p.headsQ(); h++) {
                int hk = h / p.group();
                for (int i = 0; i < p.seqQ(); i++) {
                    Row row = probabilities(p, q, k, b, i, h, rowLse);
                    lse[p.lseIndex(b, h, i)] = rowLse[0];
                    if (row == null) continue;
                    double[] prob = row.p();
                    int qi = p.qIndex(b, i, h);
                    for (int c = 0; c < p.headDim(); c++) {
                        double o = 0;
                        for (int j = 0; j < prob.length; j++) o = r(o + r(store.applyAsDouble(prob[j]) * v[p.kIndex(b, row.first() + j, hk) + c]));
                        out[qi + c] = store.applyAsDouble(o);
                    }
                }
            }
        }
        return new Forward(out, lse);
    }

    /**
     * Gradients for upstream gradient {@code dout}; {@code out} is the forward output this backward is
     * given: usually this implementation's own, as a kernel's backward uses its own, or the kernel's, to
     * judge a kernel's backward on the same inputs (AttentionPropertiesTest).
     */
    Gradients backward(Problem p, float[] q, float[] k, float[] v, double[] out, float[] dout) {
        double[] dq = new double[q.length], dk = new double[k.length], dv = new double[v.length];
        for (int b = 0; b < p.batch(); b++) {
            for (int h = 0; h < p.headsQ(); h++) {
                int hk = h / p.group();
                for (int i = 0; i < p.seqQ(); i++) {
                    Row row = probabilities(p, q, k, b, i, h, null);
                    if (row == null) continue;
                    double[] prob = row.p();
                    int qi = p.qIndex(b, i, h);
                    double rowDot = 0;  // D_i = rowsum(dO ∘ O)
                    for (int c = 0; c < p.headDim(); c++) rowDot = r(rowDot + r(dout[qi + c] * out[qi + c]));
                    for (int j = 0; j < prob.length; j++) {
                        int kj = p.kIndex(b, row.first() + j, hk);
                        double dp = 0;
                        for (int c = 0; c < p.headDim(); c++) dp = r(dp + r((double) dout[qi + c] * v[kj + c]));
                        double pj = store.applyAsDouble(prob[j]);
                        // dS with respect to the scaled score: through the softcap's tanh, if any (ALiBi
                        // adds a constant, masking removes the key).
                        double dsCapped = r(prob[j] * r(dp - rowDot));
                        double ds = store.applyAsDouble(row.capSlope() == null ? dsCapped : r(dsCapped * row.capSlope()[j]));
                        for (int c = 0; c < p.headDim(); c++) {
                            dv[kj + c] = r(dv[kj + c] + r(pj * dout[qi + c]));
                            dk[kj + c] = r(dk[kj + c] + r(p.scale() * r(ds * q[qi + c])));
                            dq[qi + c] = r(dq[qi + c] + r(p.scale() * r(ds * k[kj + c])));
                        }
                    }
                }
            }
        }
        for (double[] g : new double[][] {dq, dk, dv}) for (int i = 0; i < g.length; i++) g[i] = store.applyAsDouble(g[i]);
        return new Gradients(dq, dk, dv);
    }

    /** {@link #forward(Problem, float[], float[], float[])} of each sequence of a varlen batch. */
    Forward forward(Varlen vl, float[] q, float[] k, float[] v) {
        int qRow = vl.headsQ() * vl.headDim(), kRow = vl.headsKv() * vl.headDim();
        double[] out = new double[vl.totalQ() * qRow], lse = new double[vl.headsQ() * vl.totalQ()];
        for (int b = 0; b < vl.batch(); b++) {
            Problem p = vl.sequence(b);
            int q0 = vl.cuQ()[b], k0 = vl.cuK()[b];
            Forward f = forward(p, rows(q, q0, p.seqQ(), qRow), rows(k, k0, p.seqK(), kRow), rows(v, k0, p.seqK(), kRow));
            System.arraycopy(f.out(), 0, out, q0 * qRow, f.out().length);
            for (int h = 0; h < vl.headsQ(); h++) {
                for (int i = 0; i < p.seqQ(); i++) lse[h * vl.totalQ() + q0 + i] = f.lse()[p.lseIndex(0, h, i)];
            }
        }
        return new Forward(out, lse);
    }

    /**
     * {@link #backward(Problem, float[], float[], float[], double[], float[])} of each sequence of a varlen
     * batch; keys a sequence does not use get zero gradients.
     */
    Gradients backward(Varlen vl, float[] q, float[] k, float[] v, double[] out, float[] dout) {
        int qRow = vl.headsQ() * vl.headDim(), kRow = vl.headsKv() * vl.headDim();
        double[] dq = new double[q.length], dk = new double[k.length], dv = new double[v.length];
        for (int b = 0; b < vl.batch(); b++) {
            Problem p = vl.sequence(b);
            int q0 = vl.cuQ()[b], k0 = vl.cuK()[b];
            double[] o = Arrays.copyOfRange(out, q0 * qRow, (q0 + p.seqQ()) * qRow);
            Gradients g = backward(p, rows(q, q0, p.seqQ(), qRow), rows(k, k0, p.seqK(), kRow), rows(v, k0, p.seqK(), kRow), o,
                    rows(dout, q0, p.seqQ(), qRow));
            System.arraycopy(g.dq(), 0, dq, q0 * qRow, g.dq().length);
            System.arraycopy(g.dk(), 0, dk, k0 * kRow, g.dk().length);
            System.arraycopy(g.dv(), 0, dv, k0 * kRow, g.dv().length);
        }
        return new Gradients(dq, dk, dv);
    }

    private static float[] rows(float[] packed, int first, int count, int rowLength) {
        return Arrays.copyOfRange(packed, first * rowLength, (first + count) * rowLength);
    }
}
