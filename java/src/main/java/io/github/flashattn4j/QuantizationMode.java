package io.github.flashattn4j;

/**
 * Quantized attention (forward only): q·kᵀ and P·v in low precision with float32 accumulation, chosen with
 * {@link AttentionOptions.Builder#quantization}. The library quantizes float32, float16 or bfloat16 inputs
 * itself, or takes them pre-quantized as {@link QuantizedTensor}s (from
 * {@link QuantizedTensor#quantize}, or a caller's own quantizer following the same rules), in any mix: a
 * bfloat16 q with an int8/float8 key-value cache, for instance. out and lse are as for plain attention.
 *
 * <h2>Modes, dtypes and scales</h2>
 * <table>
 *   <caption>B batch, Hq / Hkv query / key-value heads, Nq / Nk sequence lengths, D head dim; scales are
 *   contiguous float32 tensors</caption>
 *   <tr><th>mode</th><th>q, k</th><th>v</th><th>q scale</th><th>k scale</th><th>v scale</th></tr>
 *   <tr><td>{@link #SAGE_INT8_FP8}</td><td>INT8</td><td>FLOAT8_E4M3FN</td><td>[B, Hq, Nq]</td><td>[B, Hkv, ⌈Nk/128⌉]</td><td>[B, Hkv, D]</td></tr>
 *   <tr><td>{@link #SAGE_INT8_FP16}</td><td>INT8</td><td>float16 (no scale)</td><td>[B, Hq, Nq]</td><td>[B, Hkv, ⌈Nk/128⌉]</td><td>-</td></tr>
 *   <tr><td>{@link #SAGE_INT4_FP8}</td><td>INT4</td><td>FLOAT8_E4M3FN</td><td>[B, Hq, Nq]</td><td>[B, Hkv, ⌈Nk/128⌉]</td><td>[B, Hkv, D]</td></tr>
 *   <tr><td>{@link #SAGE_INT4_FP16}</td><td>INT4</td><td>float16 (no scale)</td><td>[B, Hq, Nq]</td><td>[B, Hkv, ⌈Nk/128⌉]</td><td>-</td></tr>
 *   <tr><td>{@link #FP8}</td><td>FLOAT8_E4M3FN</td><td>FLOAT8_E4M3FN</td><td>[B, Hq]</td><td>[B, Hkv]</td><td>[B, Hkv]</td></tr>
 * </table>
 * Granularity: SageAttention modes scale q per token (free for any kernel: the factor joins the per-row
 * softmax scale), k per block of 128 keys (one scalar per 128-key tile), and v per channel; FP8 descales
 * q per (batch, query head) and k, v per (batch, kv head), as FlashAttention-3. The groups are part of the
 * format, not of a kernel's tiles.
 *
 * <h2>Arithmetic</h2>
 * The quantizers are exact and the same on every backend: scale = amax / 127 (int8), / 7 (int4) or / 448
 * (e4m3); values {@code clamp(rint(x · (max / amax)))} or {@code e4m3(x · (448 / amax))}, to nearest even
 * and saturated; an all-zero group (amax below 2^-100) gets scale 0, a group holding NaN or infinity scale
 * NaN (its rows' outputs become NaN). K smoothing subtracts the per-channel mean of k over the keys
 * before quantizing (exact: the softmax is invariant to the per-row shift it causes; lse gets the shift
 * added back); in the INT4 modes, Q smoothing subtracts the mean of each block of 64 query rows and adds
 * its exact contribution back to the scores. P is quantized after a running maximum updated per block of
 * 128 keys: to e4m3 as {@code e4m3(448 · p)} (FP8 P·v) or to float16 (FP16 P·v). Everything accumulates
 * in float32. The native header flashattn4j.h ("Quantized attention") states every rule exactly.
 *
 * <h2>Accuracy</h2>
 * Against float64 (docs/ACCURACY.md: the CPU reference implementation, N = 1024, d 64 and 128, bfloat16
 * inputs; plain bfloat16 attention has cosine similarity 0.99999 and relative L1 error 0.003 on Gaussian
 * inputs, 0.9998 and 0.02 on LLM-like ones, from rounding its inputs):
 * <ul>
 *   <li>{@link #SAGE_INT8_FP16}: cosine ≥ 0.9999 and relative L1 about 0.011 on Gaussian inputs; 0.9994 and
 *       0.03 on LLM-like ones (keys with offsets up to 20x their noise and outlier channels).</li>
 *   <li>{@link #SAGE_INT8_FP8}: cosine about 0.9993, relative L1 about 0.037 on Gaussian inputs; 0.999 and
 *       0.045 on LLM-like ones. The e4m3 roundings of P and v cost about 2.5 % each.</li>
 *   <li>{@link #FP8}: cosine about 0.9987, relative L1 about 0.05 on Gaussian inputs; 0.994 and 0.1 on
 *       LLM-like ones with K smoothing (0.95 without).</li>
 *   <li>{@link #SAGE_INT4_FP8}, {@link #SAGE_INT4_FP16}: cosine about 0.98 on Gaussian inputs, 0.9 to 0.94
 *       on LLM-like ones with smoothing, 0.6 to 0.7 without.</li>
 * </ul>
 * Keep smoothing on (the default) unless the inputs are known to be centred.
 *
 * <h2>Where they run</h2>
 * The CPU backend runs every mode: the reference implementation of the arithmetic above, which users
 * without a GPU can run and which CUDA kernels are tested against. CUDA kernels are not there yet: CUDA
 * tensors are refused as {@link FlashAttnException.Unsupported}. Planned: SAGE_INT8_FP8 and FP8 on Hopper
 * (sm_90) and Ada (sm_89), SAGE_INT8_FP16 on every GPU from sm_80, SAGE_INT4_FP8 on Ada (sm_89),
 * SAGE_INT4_FP16 on Ampere (sm_80/86; on Hopper 4-bit mma is emulated and slow).
 *
 * <h2>Restrictions</h2>
 * Forward only, dense batches (no {@link PackedSequences}), no softcap; ALiBi, windows and causal masks
 * work as in plain attention.
 */
public enum QuantizationMode {
    /** Plain attention (the default). */
    NONE(0),
    /** INT8 q·kᵀ, FP8 (e4m3) P·v: SageAttention2's 8-bit path. */
    SAGE_INT8_FP8(1),
    /** INT8 q·kᵀ, FP16 P·v: SageAttention2's path for GPUs without FP8 tensor cores. */
    SAGE_INT8_FP16(2),
    /** INT4 q·kᵀ, FP8 (e4m3) P·v: SageAttention2's 4-bit path (Ada). */
    SAGE_INT4_FP8(3),
    /** INT4 q·kᵀ, FP16 P·v: SageAttention2's 4-bit path on Ampere. */
    SAGE_INT4_FP16(4),
    /** FP8 (e4m3) q, k, v with descales, FP8 P·v: FlashAttention-3's FP8 attention. */
    FP8(5);

    private final int code;

    QuantizationMode(int code) {
        this.code = code;
    }

    /** The {@code fa4j_quant_mode} value. */
    int nativeCode() {
        return code;
    }

    /**
     * The dtype a pre-quantized {@code operand} has in this mode; for v in the FP16 P·v modes
     * {@link DType#FLOAT16}, which is not quantized (v is passed as a plain tensor there).
     *
     * @throws IllegalStateException for {@link #NONE}
     */
    public DType dtype(QuantizedTensor.Operand operand) {
        return switch (this) {
            case NONE -> throw new IllegalStateException("NONE quantizes nothing");
            case FP8 -> DType.FLOAT8_E4M3FN;
            case SAGE_INT8_FP8, SAGE_INT8_FP16, SAGE_INT4_FP8, SAGE_INT4_FP16 -> {
                if (operand == QuantizedTensor.Operand.V) yield pvInFloat16() ? DType.FLOAT16 : DType.FLOAT8_E4M3FN;
                yield this == SAGE_INT4_FP8 || this == SAGE_INT4_FP16 ? DType.INT4 : DType.INT8;
            }
        };
    }

    /**
     * The shape of {@code operand}'s scale tensor in this mode for an input of shape {@code [batch, seq,
     * heads, headDim]} (the table above), or null where it has none (v in the FP16 P·v modes).
     *
     * @throws IllegalStateException for {@link #NONE}
     */
    public long[] scaleShape(QuantizedTensor.Operand operand, long batch, long seq, long heads, long headDim) {
        if (this == NONE) throw new IllegalStateException("NONE quantizes nothing");
        if (operand == QuantizedTensor.Operand.V && pvInFloat16()) return null;
        if (this == FP8) return new long[] {batch, heads};
        return switch (operand) {
            case Q -> new long[] {batch, heads, seq};
            case K -> new long[] {batch, heads, (seq + KEY_BLOCK - 1) / KEY_BLOCK};
            case V -> new long[] {batch, heads, headDim};
        };
    }

    /** Keys per k scale in the SageAttention modes (and per block of P's running maximum in every mode). */
    public static final int KEY_BLOCK = 128;

    /** Whether P·v runs in float16 (v unscaled float16) rather than float8. */
    public boolean pvInFloat16() {
        return this == SAGE_INT8_FP16 || this == SAGE_INT4_FP16;
    }
}
