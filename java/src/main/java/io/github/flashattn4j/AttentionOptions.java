package io.github.flashattn4j;

import java.util.Objects;
import java.util.Optional;
import java.util.OptionalDouble;

/**
 * Immutable options of an attention call. Defaults: softmax scale {@code 1/sqrt(head_dim)}, not causal, no
 * window, no softcap, no ALiBi, {@link KernelFamily#AUTO}, the CPU backend's default thread count, no
 * quantization ({@link QuantizationMode#NONE}; with a mode, K and Q smoothing are on).
 *
 * <pre>{@code AttentionOptions.builder().causal(true).window(256, 0).softcap(30).build()}</pre>
 *
 * <h2>Scores</h2>
 * The score of query i and key j is computed in this order (flash-attn's semantics), where
 * {@code i' = i + Nk - Nq} is the query's position aligned to the end of the keys ({@code Nq}, {@code Nk}:
 * the lengths of its sequence; bottom-right alignment, as for the causal mask):
 * <ol>
 *   <li>{@code s = scale · q_i·k_j};</li>
 *   <li>{@code s = softcap · tanh(s / softcap)} if a {@linkplain Builder#softcap softcap} is set;</li>
 *   <li>{@code s = s - slope(head) · |i' - j|} if {@linkplain Builder#alibiSlopes ALiBi slopes} are set;</li>
 *   <li>key j is masked out unless {@code i' - left <= j <= i' + right} ({@linkplain Builder#window window};
 *       causal is {@code right = 0}).</li>
 * </ol>
 * A query row that may attend no key gets out = 0, lse = -∞ and zero gradients.
 *
 * <h2>Values and resources</h2>
 * Options are values: they may be shared between threads and kept in constants. The one exception to
 * "plain data" is {@link Builder#alibiSlopes}: the options then hold a reference to that tensor, which the
 * caller owns and must keep open while calls use these options (a call with closed slopes throws
 * {@link IllegalStateException}, as for any closed tensor). The CUDA stream a call runs on is not an
 * option: it is passed to the {@link Attention} overloads that take a {@link CudaStream}.
 */
public final class AttentionOptions {

    /** A window bound meaning "no bound on this side". */
    public static final int UNBOUNDED = -1;

    private static final AttentionOptions DEFAULTS = builder().build();

    private final boolean hasSoftmaxScale;
    private final float softmaxScale;
    private final boolean causal;
    private final int windowLeft;
    private final int windowRight;
    private final float softcap;
    private final Tensor alibiSlopes;
    private final KernelFamily kernelFamily;
    private final int numThreads;
    private final boolean deterministic;
    private final QuantizationMode quantization;
    private final boolean smoothK;
    private final boolean smoothQ;

    private AttentionOptions(Builder b) {
        this.hasSoftmaxScale = b.hasSoftmaxScale;
        this.softmaxScale = b.softmaxScale;
        this.causal = b.causal;
        this.windowLeft = b.windowLeft;
        this.windowRight = b.windowRight;
        this.softcap = b.softcap;
        this.alibiSlopes = b.alibiSlopes;
        this.kernelFamily = b.kernelFamily;
        this.numThreads = b.numThreads;
        this.deterministic = b.deterministic;
        this.quantization = b.quantization;
        this.smoothK = b.smoothK;
        this.smoothQ = b.smoothQ;
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
        b.windowLeft = windowLeft;
        b.windowRight = windowRight;
        b.softcap = softcap;
        b.alibiSlopes = alibiSlopes;
        b.kernelFamily = kernelFamily;
        b.numThreads = numThreads;
        b.deterministic = deterministic;
        b.quantization = quantization;
        b.smoothK = smoothK;
        b.smoothQ = smoothQ;
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

    /** Whether query i attends only keys j with {@code j <= i + seqlen_k - seqlen_q} (window right bound 0). */
    public boolean causal() {
        return causal;
    }

    /** Keys before the aligned query position that a query may attend; {@link #UNBOUNDED} for all. */
    public int windowLeft() {
        return windowLeft;
    }

    /**
     * Keys after the aligned query position that a query may attend, as set by {@link Builder#window};
     * {@link #UNBOUNDED} for all. Causal masking applies on top of it (right bound 0).
     */
    public int windowRight() {
        return windowRight;
    }

    /** The softcap; 0 means none. */
    public float softcap() {
        return softcap;
    }

    /** The ALiBi slopes, if set: float32 {@code [heads_q]} or {@code [batch, heads_q]}, owned by the caller. */
    public Optional<Tensor> alibiSlopes() {
        return Optional.ofNullable(alibiSlopes);
    }

    /** The kernels asked for. */
    public KernelFamily kernelFamily() {
        return kernelFamily;
    }

    /** CPU worker threads; 0 means the library's default. */
    public int numThreads() {
        return numThreads;
    }

    /** Whether the call must give bitwise-identical results run to run ({@link Builder#deterministic}). */
    public boolean deterministic() {
        return deterministic;
    }

    /** The quantization mode; {@link QuantizationMode#NONE} for plain attention. */
    public QuantizationMode quantization() {
        return quantization;
    }

    /** Whether quantized attention subtracts the keys' mean before quantizing k (when it quantizes k itself). */
    public boolean smoothK() {
        return smoothK;
    }

    /** Whether the INT4 modes subtract each 64-row block's mean before quantizing q (when they quantize q). */
    public boolean smoothQ() {
        return smoothQ;
    }

    /** Whether {@code o} holds the same settings (ALiBi slopes: the same tensor object). */
    @Override
    public boolean equals(Object o) {
        return o instanceof AttentionOptions other
                && hasSoftmaxScale == other.hasSoftmaxScale
                && Float.floatToIntBits(softmaxScale) == Float.floatToIntBits(other.softmaxScale)
                && causal == other.causal
                && windowLeft == other.windowLeft
                && windowRight == other.windowRight
                && Float.floatToIntBits(softcap) == Float.floatToIntBits(other.softcap)
                && alibiSlopes == other.alibiSlopes
                && kernelFamily == other.kernelFamily
                && numThreads == other.numThreads
                && deterministic == other.deterministic
                && quantization == other.quantization
                && smoothK == other.smoothK
                && smoothQ == other.smoothQ;
    }

    @Override
    public int hashCode() {
        return Objects.hash(hasSoftmaxScale, softmaxScale, causal, windowLeft, windowRight, softcap,
                System.identityHashCode(alibiSlopes), kernelFamily, numThreads, deterministic, quantization, smoothK, smoothQ);
    }

    @Override
    public String toString() {
        return "AttentionOptions[softmaxScale=" + (hasSoftmaxScale ? softmaxScale : "1/sqrt(d)") + ", causal=" + causal
                + ", window=(" + windowLeft + ", " + windowRight + "), softcap=" + softcap
                + ", alibiSlopes=" + (alibiSlopes == null ? "none" : alibiSlopes) + ", kernelFamily=" + kernelFamily
                + ", numThreads=" + numThreads + (deterministic ? ", deterministic" : "") + ", quantization=" + quantization
                + (quantization == QuantizationMode.NONE ? "" : ", smoothK=" + smoothK + ", smoothQ=" + smoothQ) + "]";
    }

    /**
     * Builds {@link AttentionOptions}. Setters check their argument at once and throw
     * {@link IllegalArgumentException} for a value no call could accept, {@link NullPointerException} for
     * null.
     */
    public static final class Builder {
        private boolean hasSoftmaxScale;
        private float softmaxScale;
        private boolean causal;
        private int windowLeft = UNBOUNDED;
        private int windowRight = UNBOUNDED;
        private float softcap;
        private Tensor alibiSlopes;
        private KernelFamily kernelFamily = KernelFamily.AUTO;
        private int numThreads;
        private boolean deterministic;
        private QuantizationMode quantization = QuantizationMode.NONE;
        private boolean smoothK = true;
        private boolean smoothQ = true;

        private Builder() {}

        /**
         * Multiplies q·kᵀ before the softmax; must be finite (and within the representable range the
         * native library documents, checked by the call).
         */
        public Builder softmaxScale(float scale) {
            if (!Float.isFinite(scale)) throw new IllegalArgumentException("softmax scale must be finite: " + scale);
            this.hasSoftmaxScale = true;
            this.softmaxScale = scale;
            return this;
        }

        /**
         * Causal masking, aligned to the bottom-right corner (flash-attn >= 2.1): the window's right bound
         * becomes 0, whatever {@link #window} says (so {@code causal(true).window(w, UNBOUNDED)} is causal
         * sliding-window attention over the last {@code w + 1} keys).
         */
        public Builder causal(boolean causal) {
            this.causal = causal;
            return this;
        }

        /**
         * Local (sliding-window) attention: query i, at aligned position {@code i' = i + Nk - Nq}, attends
         * key j only if {@code i' - left <= j <= i' + right}. {@link #UNBOUNDED} (-1) on a side means no
         * bound there; {@code window(UNBOUNDED, UNBOUNDED)}, the default, is full attention, and
         * {@code window(UNBOUNDED, 0)} is causal.
         *
         * @throws IllegalArgumentException if a bound is below -1
         */
        public Builder window(int left, int right) {
            if (left < UNBOUNDED || right < UNBOUNDED) {
                throw new IllegalArgumentException("window bounds must be >= 0, or -1 for unbounded: (" + left + ", " + right + ")");
            }
            this.windowLeft = left;
            this.windowRight = right;
            return this;
        }

        /**
         * Caps scores smoothly: {@code s = softcap · tanh(s / softcap)} after scaling, before ALiBi and
         * masking (Gemma 2, Grok). 0, the default, means none.
         *
         * @throws IllegalArgumentException if {@code softcap} is negative, infinite or NaN
         */
        public Builder softcap(float softcap) {
            if (!(softcap >= 0) || softcap == Float.POSITIVE_INFINITY) {
                throw new IllegalArgumentException("softcap must be finite and >= 0 (0: none): " + softcap);
            }
            this.softcap = softcap;
            return this;
        }

        /**
         * ALiBi: adds {@code -slope(head) · |i' - j|} to each score, with the slopes of a float32 tensor of
         * shape {@code [heads_q]} (one per query head) or {@code [batch, heads_q]} (per sequence and head),
         * on the device of the call's tensors (checked by the call). The options keep a reference to
         * {@code slopes}, which the caller still owns: keep it open while calls use these options; each call
         * holds it open for its duration, as it does its other tensors.
         */
        public Builder alibiSlopes(Tensor slopes) {
            this.alibiSlopes = Objects.requireNonNull(slopes, "slopes");
            return this;
        }

        /** Removes ALiBi slopes set before (on a builder from {@link AttentionOptions#toBuilder()}). */
        public Builder noAlibiSlopes() {
            this.alibiSlopes = null;
            return this;
        }

        /** Forces a family of kernels, for tests and comparisons; {@link KernelFamily#AUTO} by default. */
        public Builder kernelFamily(KernelFamily family) {
            this.kernelFamily = Objects.requireNonNull(family, "family");
            return this;
        }

        /** Worker threads of the CPU backend; 0 means all hardware threads (or FA4J_NUM_THREADS; both read once per process). */
        public Builder numThreads(int numThreads) {
            if (numThreads < 0) throw new IllegalArgumentException("numThreads must be >= 0: " + numThreads);
            this.numThreads = numThreads;
            return this;
        }

        /**
         * Requires results that are bitwise identical run to run for the same inputs, device and library
         * (for example reproducible gradients in training). The CPU backend is deterministic in every call,
         * whatever its thread count. On CUDA every forward kernel is (each output element is written by one
         * block); the CUDA backward kernels are not (dQ is accumulated in the order blocks arrive, which can
         * change the last bits), so a deterministic backward on CUDA tensors is refused as
         * {@link FlashAttnException.Unsupported} until a kernel offers it; the support queries say so.
         * Off by default.
         */
        public Builder deterministic(boolean deterministic) {
            this.deterministic = deterministic;
            return this;
        }

        /**
         * Quantized attention in {@code mode} ({@link QuantizationMode} documents the modes, their accuracy
         * and where they run); {@link QuantizationMode#NONE}, the default, is plain attention. Forward only:
         * a backward call with a mode is refused as {@link FlashAttnException.Unsupported}.
         */
        public Builder quantization(QuantizationMode mode) {
            this.quantization = Objects.requireNonNull(mode, "mode");
            return this;
        }

        /**
         * K smoothing (default on): quantized attention quantizes {@code k - mean(k)} (the mean over the keys,
         * per channel) instead of k. Exact for out (the softmax is invariant to the per-row shift it causes;
         * lse gets it added back) and much more accurate where keys have per-channel offsets, as real models'
         * keys do. Applies to a k the call quantizes itself; a {@link QuantizedTensor} was smoothed (or not)
         * by its producer.
         */
        public Builder smoothK(boolean smoothK) {
            this.smoothK = smoothK;
            return this;
        }

        /**
         * Q smoothing of the INT4 modes (default on): each block of 64 query rows has its mean subtracted
         * before quantization, and its exact contribution added back to the scores. Applies to a q the call
         * quantizes itself.
         */
        public Builder smoothQ(boolean smoothQ) {
            this.smoothQ = smoothQ;
            return this;
        }

        public AttentionOptions build() {
            return new AttentionOptions(this);
        }
    }
}
