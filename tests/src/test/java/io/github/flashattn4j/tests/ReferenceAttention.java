package io.github.flashattn4j.tests;

import java.util.function.DoubleUnaryOperator;

/**
 * Naive attention and its analytic gradients, written independently of the library.
 *
 * <p>{@link #exact()} computes in double: the float64 reference. {@link #plain(DoubleUnaryOperator)}
 * computes every product and sum in float and rounds what a low-precision implementation must store
 * (P before P·V, dS before the gradient products, every output) to the dtype: its error against the
 * reference sets the tolerance for the kernel (FlashAttention's convention).
 */
final class ReferenceAttention {

    record Forward(double[] out, double[] lse) {}

    record Gradients(double[] dq, double[] dk, double[] dv) {}

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

    /** Softmax probabilities of query row (b, i, h), or null when the row attends no key. */
    private double[] probabilities(Problem p, float[] q, float[] k, int b, int i, int h, double[] lseOut) {
        int visible = p.visibleKeys(i);
        if (visible == 0) {
            if (lseOut != null) lseOut[0] = Double.NEGATIVE_INFINITY;
            return null;
        }
        int qi = p.qIndex(b, i, h), hk = h / p.group();
        double[] s = new double[visible];
        double max = Double.NEGATIVE_INFINITY;
        for (int j = 0; j < visible; j++) {
            int kj = p.kIndex(b, j, hk);
            double dot = 0;
            for (int c = 0; c < p.headDim(); c++) dot = r(dot + r((double) q[qi + c] * k[kj + c]));
            s[j] = r(dot * p.scale());
            max = Math.max(max, s[j]);
        }
        double sum = 0;
        for (int j = 0; j < visible; j++) {
            s[j] = r(Math.exp(s[j] - max));
            sum = r(sum + s[j]);
        }
        for (int j = 0; j < visible; j++) s[j] = r(s[j] / sum);
        if (lseOut != null) lseOut[0] = r(max + Math.log(sum));
        return s;
    }

    Forward forward(Problem p, float[] q, float[] k, float[] v) {
        double[] out = new double[q.length], lse = new double[p.batch() * p.headsQ() * p.seqQ()];
        double[] rowLse = new double[1];
        for (int b = 0; b < p.batch(); b++) {
            for (int h = 0; h < p.headsQ(); h++) {
                int hk = h / p.group();
                for (int i = 0; i < p.seqQ(); i++) {
                    double[] prob = probabilities(p, q, k, b, i, h, rowLse);
                    lse[p.lseIndex(b, h, i)] = rowLse[0];
                    if (prob == null) continue;
                    int qi = p.qIndex(b, i, h);
                    for (int c = 0; c < p.headDim(); c++) {
                        double o = 0;
                        for (int j = 0; j < prob.length; j++) o = r(o + r(store.applyAsDouble(prob[j]) * v[p.kIndex(b, j, hk) + c]));
                        out[qi + c] = store.applyAsDouble(o);
                    }
                }
            }
        }
        return new Forward(out, lse);
    }

    /**
     * Gradients for upstream gradient {@code dout}; {@code out} is this implementation's own forward
     * output, as a kernel's backward uses its own.
     */
    Gradients backward(Problem p, float[] q, float[] k, float[] v, double[] out, float[] dout) {
        double[] dq = new double[q.length], dk = new double[k.length], dv = new double[v.length];
        for (int b = 0; b < p.batch(); b++) {
            for (int h = 0; h < p.headsQ(); h++) {
                int hk = h / p.group();
                for (int i = 0; i < p.seqQ(); i++) {
                    double[] prob = probabilities(p, q, k, b, i, h, null);
                    if (prob == null) continue;
                    int qi = p.qIndex(b, i, h);
                    double rowDot = 0;  // D_i = rowsum(dO ∘ O)
                    for (int c = 0; c < p.headDim(); c++) rowDot = r(rowDot + r(dout[qi + c] * out[qi + c]));
                    for (int j = 0; j < prob.length; j++) {
                        int kj = p.kIndex(b, j, hk);
                        double dp = 0;
                        for (int c = 0; c < p.headDim(); c++) dp = r(dp + r((double) dout[qi + c] * v[kj + c]));
                        double pj = store.applyAsDouble(prob[j]);
                        double ds = store.applyAsDouble(r(prob[j] * r(dp - rowDot)));
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
}
