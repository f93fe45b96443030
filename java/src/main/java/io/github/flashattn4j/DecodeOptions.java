package io.github.flashattn4j;

import java.util.Objects;

/**
 * Immutable options of a {@linkplain Attention#decode(Tensor, KvCache, DecodeOptions) decode call}: the
 * {@link AttentionOptions} that shape the scores (scale, causal, window, softcap, ALiBi, kernel family,
 * threads), and how the keys are split.
 *
 * <p>Split-KV: each sequence's keys (and a shared prefix) are cut into splits computed independently in
 * float32 and merged by log-sum-exp (as {@link Attention#merge(java.util.List)} does), so that a few long
 * sequences still keep every core busy. {@link #numSplits()} 0, the default, lets the library choose from the
 * batch, heads, key counts and the device's parallelism; a positive count (at most {@link #MAX_SPLITS})
 * forces it, which changes the result only by float32 rounding.
 */
public final class DecodeOptions {

    /** The largest split count a call may force ({@code FA4J_DECODE_MAX_SPLITS}). */
    public static final int MAX_SPLITS = 256;

    private static final DecodeOptions DEFAULTS = new DecodeOptions(AttentionOptions.defaults(), 0);

    private final AttentionOptions attention;
    private final int numSplits;

    private DecodeOptions(AttentionOptions attention, int numSplits) {
        this.attention = attention;
        this.numSplits = numSplits;
    }

    /** Default attention options (not causal), splits chosen by the library. */
    public static DecodeOptions defaults() {
        return DEFAULTS;
    }

    /** These attention options, splits chosen by the library. */
    public static DecodeOptions of(AttentionOptions attention) {
        return new DecodeOptions(Objects.requireNonNull(attention, "attention"), 0);
    }

    /**
     * These options with {@code numSplits} splits of the keys (0: chosen by the library).
     *
     * @throws IllegalArgumentException unless {@code 0 <= numSplits <= MAX_SPLITS}
     */
    public DecodeOptions withNumSplits(int numSplits) {
        if (numSplits < 0 || numSplits > MAX_SPLITS) {
            throw new IllegalArgumentException("numSplits must be 0 (chosen by the library) or 1.." + MAX_SPLITS + ": " + numSplits);
        }
        return new DecodeOptions(attention, numSplits);
    }

    /** These options with other attention options. */
    public DecodeOptions withAttention(AttentionOptions attention) {
        return new DecodeOptions(Objects.requireNonNull(attention, "attention"), numSplits);
    }

    public AttentionOptions attention() {
        return attention;
    }

    /** Splits of the keys; 0: chosen by the library. */
    public int numSplits() {
        return numSplits;
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof DecodeOptions d && attention.equals(d.attention) && numSplits == d.numSplits;
    }

    @Override
    public int hashCode() {
        return 31 * attention.hashCode() + numSplits;
    }

    @Override
    public String toString() {
        return "DecodeOptions[" + attention + ", numSplits=" + (numSplits == 0 ? "auto" : numSplits) + "]";
    }
}
