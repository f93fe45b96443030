package io.github.flashattn4j.tests;

/**
 * One attention problem: sizes, causal flag and scale. Host arrays are [batch, seq, heads, headDim]
 * row-major; lse arrays are [batch, headsQ, seqQ].
 */
record Problem(int batch, int seqQ, int seqK, int headsQ, int headsKv, int headDim, boolean causal, double scale) {

    static Problem of(int batch, int seqQ, int seqK, int headsQ, int headsKv, int headDim, boolean causal) {
        return new Problem(batch, seqQ, seqK, headsQ, headsKv, headDim, causal, 1 / Math.sqrt(headDim));
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

    /** Keys query i may attend: all, or the first i + seqK - seqQ + 1 when causal (bottom-right). */
    int visibleKeys(int i) {
        return causal ? Math.max(0, Math.min(seqK, i + seqK - seqQ + 1)) : seqK;
    }

    @Override
    public String toString() {
        return "B" + batch + " Nq" + seqQ + " Nk" + seqK + " H" + headsQ + "/" + headsKv + " d" + headDim + (causal ? " causal" : "");
    }
}
