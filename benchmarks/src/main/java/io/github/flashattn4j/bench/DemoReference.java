package io.github.flashattn4j.bench;

/**
 * Naive attention and its gradients for the demo's check, independent of the library: {@code exact}
 * computes in double (the reference); otherwise every intermediate is rounded to float and P and the
 * results to the dtype, which is the "plain implementation" whose error sets the tolerance.
 * Layout [B, N, H, D] row-major; query head h reads kv head h / (Hq / Hkv); causal is bottom-right aligned.
 */
final class DemoReference {

    record Problem(int batch, int seqQ, int seqK, int headsQ, int headsKv, int headDim, boolean causal, double scale) {}

    record Result(double[] out, double[] dq, double[] dk, double[] dv) {}

    private final Problem p;
    private final java.util.function.DoubleUnaryOperator toDtype;
    private final boolean exact;

    DemoReference(Problem p, boolean exact, java.util.function.DoubleUnaryOperator toDtype) {
        this.p = p;
        this.exact = exact;
        this.toDtype = toDtype;
    }

    private double r(double x) {
        return exact ? x : (float) x;
    }

    private double storeAs(double x) {
        return exact ? x : toDtype.applyAsDouble(x);
    }

    Result run(float[] q, float[] k, float[] v, float[] dout) {
        int d = p.headDim(), group = p.headsQ() / p.headsKv();
        double[] out = new double[q.length], dq = new double[q.length], dk = new double[k.length], dv = new double[v.length];
        double[] prob = new double[p.seqK()], dp = new double[p.seqK()];
        for (int b = 0; b < p.batch(); b++) {
            for (int h = 0; h < p.headsQ(); h++) {
                int hk = h / group;
                for (int i = 0; i < p.seqQ(); i++) {
                    int qi = index(b, i, h, p.seqQ(), p.headsQ());
                    int visible = p.causal() ? Math.min(p.seqK(), Math.max(0, i + p.seqK() - p.seqQ() + 1)) : p.seqK();
                    if (visible == 0) continue;  // out and gradients stay 0
                    double max = Double.NEGATIVE_INFINITY;
                    for (int j = 0; j < visible; j++) {
                        double s = 0;
                        int kj = index(b, j, hk, p.seqK(), p.headsKv());
                        for (int c = 0; c < d; c++) s = r(s + (double) q[qi + c] * k[kj + c]);
                        prob[j] = r(s * p.scale());
                        max = Math.max(max, prob[j]);
                    }
                    double sum = 0;
                    for (int j = 0; j < visible; j++) sum = r(sum + (prob[j] = r(Math.exp(prob[j] - max))));
                    for (int j = 0; j < visible; j++) prob[j] = storeAs(r(prob[j] / sum));
                    for (int c = 0; c < d; c++) {
                        double o = 0;
                        for (int j = 0; j < visible; j++) o = r(o + prob[j] * v[index(b, j, hk, p.seqK(), p.headsKv()) + c]);
                        out[qi + c] = storeAs(o);
                    }
                    double rowDot = 0;  // D = rowsum(dO ∘ O)
                    for (int c = 0; c < d; c++) rowDot = r(rowDot + dout[qi + c] * out[qi + c]);
                    for (int j = 0; j < visible; j++) {
                        int kj = index(b, j, hk, p.seqK(), p.headsKv());
                        double s = 0;
                        for (int c = 0; c < d; c++) s = r(s + (double) dout[qi + c] * v[kj + c]);
                        dp[j] = r(prob[j] * (s - rowDot));  // dS
                        for (int c = 0; c < d; c++) {
                            dv[kj + c] = r(dv[kj + c] + prob[j] * dout[qi + c]);
                            dk[kj + c] = r(dk[kj + c] + p.scale() * dp[j] * q[qi + c]);
                            dq[qi + c] = r(dq[qi + c] + p.scale() * dp[j] * k[kj + c]);
                        }
                    }
                }
            }
        }
        for (double[] a : new double[][] {dq, dk, dv}) for (int i = 0; i < a.length; i++) a[i] = storeAs(a[i]);
        return new Result(out, dq, dk, dv);
    }

    private int index(int b, int n, int h, int seq, int heads) {
        return ((b * seq + n) * heads + h) * p.headDim();
    }

    /** Largest |a - b|; NaN if either holds a NaN, so a NaN never passes a bound. */
    static double maxError(float[] a, double[] b) {
        double max = 0;
        for (int i = 0; i < a.length; i++) {
            double e = Math.abs(a[i] - b[i]);
            if (Double.isNaN(e)) return Double.NaN;
            max = Math.max(max, e);
        }
        return max;
    }

    static double maxError(double[] a, double[] b) {
        double max = 0;
        for (int i = 0; i < a.length; i++) {
            double e = Math.abs(a[i] - b[i]);
            if (Double.isNaN(e)) return Double.NaN;
            max = Math.max(max, e);
        }
        return max;
    }
}
