package io.github.flashattn4j.tests;

/**
 * One attention problem: sizes, causal flag, scale and score features. Host arrays are
 * [batch, seq, heads, headDim] row-major; lse arrays are [batch, headsQ, seqQ].
 */
record Problem(int batch, int seqQ, int seqK, int headsQ, int headsKv, int headDim, boolean causal, double scale,
               Features features) {

    /**
     * What fa4j_attention_args applies to a scaled score, as flashattn4j.h defines it: softcap (0: none),
     * the window bounds (-1: unbounded; causal makes the right bound 0) and ALiBi slopes per batch entry and
     * query head ({@code [batch * headsQ]}, null: none).
     */
    record Features(double softcap, int windowLeft, int windowRight, double[] alibi) {
        static final Features NONE = new Features(0, -1, -1, null);

        boolean any() {
            return softcap != 0 || windowLeft >= 0 || windowRight >= 0 || alibi != null;
        }

        @Override
        public String toString() {
            if (!any()) return "";
            return (softcap != 0 ? " softcap " + softcap : "") + (windowLeft >= 0 || windowRight >= 0 ? " window (" + windowLeft + ", " + windowRight + ")" : "")
                    + (alibi != null ? " alibi" : "");
        }
    }

    Problem(int batch, int seqQ, int seqK, int headsQ, int headsKv, int headDim, boolean causal, double scale) {
        this(batch, seqQ, seqK, headsQ, headsKv, headDim, causal, scale, Features.NONE);
    }

    static Problem of(int batch, int seqQ, int seqK, int headsQ, int headsKv, int headDim, boolean causal) {
        return new Problem(batch, seqQ, seqK, headsQ, headsKv, headDim, causal, 1 / Math.sqrt(headDim));
    }

    Problem with(Features f) {
        return new Problem(batch, seqQ, seqK, headsQ, headsKv, headDim, causal, scale, f);
    }

    int group() {
        return headsQ / headsKv;
    }

    long[] qShape() {
        return new long[] {batch, seqQ, headsQ, headDim};
    }

    long[] kShape() {
        return new long[] {batch, seqK, headsKv, headDim};
    }

    long[] lseShape() {
        return new long[] {batch, headsQ, seqQ};
    }

    int qIndex(int b, int i, int h) {
        return ((b * seqQ + i) * headsQ + h) * headDim;
    }

    int kIndex(int b, int j, int h) {
        return ((b * seqK + j) * headsKv + h) * headDim;
    }

    int lseIndex(int b, int h, int i) {
        return (b * headsQ + h) * seqQ + i;
    }

    /** Query i's position aligned to the end of the keys (bottom-right). */
    int aligned(int i) {
        return i + seqK - seqQ;
    }

    /** The first key query i may attend (see {@link #endKey}). */
    int firstKey(int i) {
        return features.windowLeft() < 0 ? 0 : Math.max(0, aligned(i) - features.windowLeft());
    }

    /** One past the last key query i may attend: keys j with i' - left <= j <= i' + right, right = 0 when causal. */
    int endKey(int i) {
        int right = causal ? 0 : features.windowRight();
        return right < 0 ? seqK : Math.max(0, Math.min(seqK, aligned(i) + right + 1));
    }

    /** How many keys query i attends. */
    int visibleKeys(int i) {
        return Math.max(0, endKey(i) - firstKey(i));
    }

    double alibiSlope(int b, int h) {
        return features.alibi() == null ? 0 : features.alibi()[b * headsQ + h];
    }

    @Override
    public String toString() {
        return "B" + batch + " Nq" + seqQ + " Nk" + seqK + " H" + headsQ + "/" + headsKv + " d" + headDim + (causal ? " causal" : "")
                + features;
    }
}
