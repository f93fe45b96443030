package io.github.flashattn4j;

import java.util.OptionalDouble;

/**
 * Immutable options of an attention call. Defaults: softmax scale {@code 1/sqrt(head_dim)}, not causal,
 * the CPU backend's default thread count.
 *
 * <pre>{@code AttentionOptions.builder().causal(true).build()}</pre>
 *
 * The CUDA stream a call runs on is not an option: it is a resource with a lifetime, passed to the
 * {@link Attention} overloads that take a {@link CudaStream}, so that options stay plain values that can be
 * shared and kept in constants.
 */
public final class AttentionOptions {

    private static final AttentionOptions DEFAULTS = builder().build();

    private final boolean hasSoftmaxScale;
    private final float softmaxScale;
    private final boolean causal;
    private final int numThreads;

    private AttentionOptions(Builder b) {
        this.hasSoftmaxScale = b.hasSoftmaxScale;
        this.softmaxScale = b.softmaxScale;
        this.causal = b.causal;
        this.numThreads = b.numThreads;
    }

    /** Default options. */
    public static AttentionOptions defaults() {
        return DEFAULTS;
    }

    public static Builder builder() {
        return new Builder();
    }

    /** A builder starting from these options. */
    public Builder toBuilder() {
        Builder b = new Builder();
        b.hasSoftmaxScale = hasSoftmaxScale;
        b.softmaxScale = softmaxScale;
        b.causal = causal;
        b.numThreads = numThreads;
        return b;
    }

    /** The explicit softmax scale, if one was set. */
    public OptionalDouble softmaxScale() {
        return hasSoftmaxScale ? OptionalDouble.of(softmaxScale) : OptionalDouble.empty();
    }

    /** The scale used for a given head dim: the explicit one, else {@code 1/sqrt(headDim)}. */
    public float softmaxScale(long headDim) {
        return hasSoftmaxScale ? softmaxScale : (float) (1.0 / Math.sqrt(headDim));
    }

    /** Whether query i attends only keys j with {@code j <= i + seqlen_k - seqlen_q}. */
    public boolean causal() {
        return causal;
    }

    /** CPU worker threads; 0 means the library's default. */
    public int numThreads() {
        return numThreads;
    }

    @Override
    public String toString() {
        return "AttentionOptions[softmaxScale=" + (hasSoftmaxScale ? softmaxScale : "1/sqrt(d)") + ", causal=" + causal
                + ", numThreads=" + numThreads + "]";
    }

    /** Builds {@link AttentionOptions}. */
    public static final class Builder {
        private boolean hasSoftmaxScale;
        private float softmaxScale;
        private boolean causal;
        private int numThreads;

        private Builder() {}

        /** Multiplies q·kᵀ before the softmax; must be finite. */
        public Builder softmaxScale(float scale) {
            if (!Float.isFinite(scale)) throw new IllegalArgumentException("softmax scale must be finite: " + scale);
            this.hasSoftmaxScale = true;
            this.softmaxScale = scale;
            return this;
        }

        /** Causal masking, aligned to the bottom-right corner (flash-attn >= 2.1). */
        public Builder causal(boolean causal) {
            this.causal = causal;
            return this;
        }

        /** Worker threads of the CPU backend; 0 means all hardware threads (or FA4J_NUM_THREADS). */
        public Builder numThreads(int numThreads) {
            if (numThreads < 0) throw new IllegalArgumentException("numThreads must be >= 0: " + numThreads);
            this.numThreads = numThreads;
            return this;
        }

        public AttentionOptions build() {
            return new AttentionOptions(this);
        }
    }
}
