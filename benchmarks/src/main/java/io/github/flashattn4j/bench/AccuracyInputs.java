package io.github.flashattn4j.bench;

import java.util.SplittableRandom;

/**
 * The inputs of the quantized-attention accuracy harness ({@link QuantAccuracy}), in float64, layout
 * {@code [batch, seq, heads, headDim]} row-major. Two distributions, each fully determined by its seed:
 *
 * <h2>Gaussian</h2>
 * Every element of q, k and v is an independent standard normal sample, drawn in the order q, k, v (each
 * row-major) from {@code new SplittableRandom(seed).nextGaussian()}.
 *
 * <h2>LLM-like</h2>
 * The Gaussian draws as above (the same stream, the same order), then, from a second generator
 * {@code new SplittableRandom(seed ^ 0x5DEECE66DL)} in this order:
 * <ol>
 *   <li>Key offsets: for each kv head h and channel c (h outer), {@code muK[h][c] = U(-20, 20)} (a uniform
 *       {@code nextDouble(-20, 20)}), added to every key of that head: per-channel offsets up to 20 times
 *       the noise, as real models' keys have (the reason for K smoothing).</li>
 *   <li>Query offsets: for each query head and channel, {@code muQ[h][c] = U(-1, 1)}, added likewise.</li>
 *   <li>Outlier channels: for each kv head, {@value #OUTLIER_CHANNELS} distinct channels drawn uniformly
 *       ({@code nextInt(headDim)}, redrawn on repeats); in those channels the noise of k, and of q in every
 *       query head of that kv head's group (the same channels, as rotary embeddings align them), is
 *       multiplied by {@value #OUTLIER_SCALE} (the offsets are not). The scores of a query then spread
 *       with a standard deviation of about 2 (d 128) to 2.5 (d 64) instead of 1: more peaked attention, as
 *       in language models.</li>
 * </ol>
 * v stays Gaussian in both.
 *
 * @param q, k, v the values; the tensors a kernel sees are these rounded to its input dtype
 */
public record AccuracyInputs(int batch, int seq, int heads, int kvHeads, int headDim, double[] q, double[] k, double[] v) {

    /** Outlier channels per kv head in the LLM-like distribution. */
    public static final int OUTLIER_CHANNELS = 4;
    /** Factor on the noise of the outlier channels. */
    public static final double OUTLIER_SCALE = 3.0;
    /** Bound of the uniform per-channel key offsets. */
    public static final double KEY_OFFSET = 20.0;
    /** Bound of the uniform per-channel query offsets. */
    public static final double QUERY_OFFSET = 1.0;

    public enum Distribution { GAUSSIAN, LLM_LIKE }

    public static AccuracyInputs of(Distribution distribution, long seed, int batch, int seq, int heads, int kvHeads, int headDim) {
        if (heads % kvHeads != 0) throw new IllegalArgumentException("heads must be a multiple of kvHeads");
        SplittableRandom noise = new SplittableRandom(seed);
        double[] q = gaussian(noise, (long) batch * seq * heads * headDim);
        double[] k = gaussian(noise, (long) batch * seq * kvHeads * headDim);
        double[] v = gaussian(noise, (long) batch * seq * kvHeads * headDim);
        if (distribution == Distribution.LLM_LIKE) {
            SplittableRandom shape = new SplittableRandom(seed ^ 0x5DEECE66DL);
            double[][] muK = new double[kvHeads][headDim], muQ = new double[heads][headDim];
            for (double[] row : muK) for (int c = 0; c < headDim; c++) row[c] = shape.nextDouble(-KEY_OFFSET, KEY_OFFSET);
            for (double[] row : muQ) for (int c = 0; c < headDim; c++) row[c] = shape.nextDouble(-QUERY_OFFSET, QUERY_OFFSET);
            boolean[][] outlier = new boolean[kvHeads][headDim];
            for (boolean[] row : outlier) {
                for (int n = 0; n < Math.min(OUTLIER_CHANNELS, headDim); ) {
                    int c = shape.nextInt(headDim);
                    if (!row[c]) {
                        row[c] = true;
                        n++;
                    }
                }
            }
            int group = heads / kvHeads;
            for (int b = 0; b < batch; b++) {
                for (int i = 0; i < seq; i++) {
                    for (int h = 0; h < kvHeads; h++) {
                        int at = ((b * seq + i) * kvHeads + h) * headDim;
                        for (int c = 0; c < headDim; c++) k[at + c] = k[at + c] * (outlier[h][c] ? OUTLIER_SCALE : 1) + muK[h][c];
                    }
                    for (int h = 0; h < heads; h++) {
                        int at = ((b * seq + i) * heads + h) * headDim;
                        for (int c = 0; c < headDim; c++) {
                            q[at + c] = q[at + c] * (outlier[h / group][c] ? OUTLIER_SCALE : 1) + muQ[h][c];
                        }
                    }
                }
            }
        }
        return new AccuracyInputs(batch, seq, heads, kvHeads, headDim, q, k, v);
    }

    private static double[] gaussian(SplittableRandom random, long n) {
        double[] x = new double[Math.toIntExact(n)];
        for (int i = 0; i < x.length; i++) x[i] = random.nextGaussian();
        return x;
    }

    /** The values as floats (the tensors round them further to their dtype). */
    static float[] floats(double[] x) {
        float[] f = new float[x.length];
        for (int i = 0; i < x.length; i++) f[i] = (float) x[i];
        return f;
    }

    /** lse (natural log) of float64 attention of these values, {@code [batch, heads, seq]}. */
    public double[] referenceLse(boolean causal) {
        int d = headDim, group = heads / kvHeads;
        double scale = 1.0 / Math.sqrt(d);
        double[] lse = new double[batch * heads * seq];
        double[] s = new double[seq];
        for (int b = 0; b < batch; b++) {
            for (int h = 0; h < heads; h++) {
                for (int i = 0; i < seq; i++) {
                    int qi = ((b * seq + i) * heads + h) * d, visible = causal ? i + 1 : seq;
                    double max = Double.NEGATIVE_INFINITY;
                    for (int j = 0; j < visible; j++) {
                        int kj = ((b * seq + j) * kvHeads + h / group) * d;
                        double dot = 0;
                        for (int c = 0; c < d; c++) dot += q[qi + c] * k[kj + c];
                        max = Math.max(max, s[j] = dot * scale);
                    }
                    double sum = 0;
                    for (int j = 0; j < visible; j++) sum += Math.exp(s[j] - max);
                    lse[(b * heads + h) * seq + i] = max + Math.log(sum);
                }
            }
        }
        return lse;
    }

    /**
     * out of float64 attention of these values (softmax scale 1/sqrt(headDim), bottom-right causal mask),
     * {@code [batch, seq, heads, headDim]}.
     */
    public double[] reference(boolean causal) {
        int d = headDim, group = heads / kvHeads;
        double scale = 1.0 / Math.sqrt(d);
        double[] out = new double[q.length];
        double[] s = new double[seq];
        for (int b = 0; b < batch; b++) {
            for (int h = 0; h < heads; h++) {
                int hk = h / group;
                for (int i = 0; i < seq; i++) {
                    int qi = ((b * seq + i) * heads + h) * d;
                    int visible = causal ? i + 1 : seq;
                    double max = Double.NEGATIVE_INFINITY;
                    for (int j = 0; j < visible; j++) {
                        int kj = ((b * seq + j) * kvHeads + hk) * d;
                        double dot = 0;
                        for (int c = 0; c < d; c++) dot += q[qi + c] * k[kj + c];
                        s[j] = dot * scale;
                        max = Math.max(max, s[j]);
                    }
                    double sum = 0;
                    for (int j = 0; j < visible; j++) sum += (s[j] = Math.exp(s[j] - max));
                    for (int j = 0; j < visible; j++) {
                        int vj = ((b * seq + j) * kvHeads + hk) * d;
                        double p = s[j] / sum;
                        for (int c = 0; c < d; c++) out[qi + c] += p * v[vj + c];
                    }
                }
            }
        }
        return out;
    }
}
