package io.github.flashattn4j;

import io.github.flashattn4j.internal.bindings.flashattn4j_h;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.List;
import java.util.Objects;

/**
 * Scaled dot-product attention, FlashAttention-style, forward and backward, on the device the tensors live
 * on.
 *
 * <p>Layouts follow flash-attn: q, out, dout, dq are {@code [batch, seqlen_q, heads_q, head_dim]}; k, v,
 * dk, dv are {@code [batch, seqlen_k, heads_kv, head_dim]} with {@code heads_q} a multiple of
 * {@code heads_kv} (GQA/MQA); lse is float32 {@code [batch, heads_q, seqlen_q]}. Strides are free except
 * that head_dim must be contiguous. Supported dtypes: float32, float16, bfloat16 (all tensors alike except
 * lse); head dims: multiples of 8 up to 256. Causal masking is bottom-right aligned. Sliding windows,
 * softcapping, ALiBi and a forced kernel family are {@link AttentionOptions}; the order in which they
 * shape the scores is documented there. A call the library cannot run throws a {@link FlashAttnException}
 * naming the argument at fault; the JVM is never at risk.
 *
 * <h2>Variable-length batches</h2>
 * {@link #forward(PackedSequences, PackedSequences, Tensor, AttentionOptions)} and
 * {@link #backward(Tensor, PackedSequences, PackedSequences, Tensor, Tensor, Tensor, AttentionOptions)}
 * take sequences of different lengths packed without padding (flash-attn's {@code flash_attn_varlen_func}):
 * q, out, dout, dq are {@code [total_q, heads_q, head_dim]}, k, v, dk, dv {@code [total_k, heads_kv,
 * head_dim]} (v and the gradients share the keys' offsets), and lse is float32 {@code [heads_q, total_q]}.
 * Masks, windows and ALiBi positions are aligned per sequence; a {@code [batch, heads_q]} ALiBi tensor gives
 * each sequence its own slopes. Rows past the last offset belong to no sequence: what the call writes there
 * is unspecified. Every dense method has a varlen twin taking {@link PackedSequences} for q and k. On CUDA,
 * varlen batches (like sliding windows, softcap, ALiBi and head dims above 128) run on the v2 kernels, which
 * release builds do not offer until they have passed the GPU suite on hardware: there they are refused as
 * unsupported, and the support queries below say so. On a device the offsets are not read by the host: the
 * kernels clamp them, and offsets outside the packed tensors or above the maximum lengths are reported as
 * {@link FlashAttnException.InvalidArgument} by the next call that synchronizes with the device.
 *
 * <h2>KV-cache attention and merges</h2>
 * {@link #decode(Tensor, KvCache, DecodeOptions)} attends new tokens' queries to a KV cache ({@link KvCache}: dense
 * or paged, with an in-place append and an optional shared prefix; {@link PagedKvCache} manages one), with split-KV
 * and GQA packing; {@link #merge(List)} joins partial results over disjoint keys by log-sum-exp. CPU only for now
 * (CUDA tensors are refused as unsupported).
 *
 * <h2>Support queries</h2>
 * {@link #checkForward(AttentionInput, AttentionInput, AttentionInput, AttentionOptions)} and its siblings answer, without running
 * or allocating anything, whether the call with the same arguments would be accepted, and if not, why: the
 * {@link Support#reason()} is the message of the exception the call would throw. Use them to pick a
 * fallback (CPU tensors, no softcap, another kernel family) before committing to a configuration. They
 * answer for the calls that allocate their outputs; a call into the caller's own outputs may further
 * refuse those (shape, dtype, overlap, and on CUDA alignment).
 *
 * <h2>Errors</h2>
 * {@link FlashAttnException.InvalidArgument} for tensors or options that do not fit together (rank, dtype,
 * shape, heads, strides, device, overlapping outputs, sequence offsets, ALiBi slopes, a scale beyond the
 * representable range), {@link FlashAttnException.Unsupported} for what the library or the device's
 * kernels do not implement (a head dim, a dtype or feature on CUDA, a kernel family that cannot run the
 * call), {@link FlashAttnException.OutOfMemory} when outputs or workspace cannot be allocated,
 * {@link IllegalStateException} for a closed tensor (ALiBi slopes and varlen offsets included) or stream,
 * {@link NullPointerException} for a null argument. The methods that allocate their outputs check the
 * inputs first, so a call refused for its inputs' ranks, dtypes or shapes allocates nothing.
 *
 * <h2>Where and when the work runs</h2>
 * All tensors of a call must be on one device (checked: {@link FlashAttnException.InvalidArgument}), which
 * picks the backend. On the CPU a call finishes before it returns. On CUDA it queues kernels and returns:
 * the methods without a stream parameter queue them on the device's legacy default stream, where every
 * other call without a stream (copies included) runs in order after them; the overloads taking a
 * {@link CudaStream} queue them on that stream, which must belong to the tensors' device (checked:
 * {@link FlashAttnException.InvalidArgument}) and be open ({@link IllegalStateException} otherwise).
 * Read a result on the stream that computed it (for example {@link Tensor#toFloatArray(CudaStream)}) or
 * after {@link CudaStream#synchronize()}. The stream is a parameter of the call, not an
 * {@link AttentionOptions} field: options are immutable values that may be shared freely, while a stream
 * is a closeable resource of one device and one stretch of a program.
 */
public final class Attention {

    // Longest message the native library writes (as NativeCalls reads its last error).
    private static final long REASON_CAPACITY = 1 << 16;
    // Room for a support query's reason in the call scratch: every message but an unusually long one (which is
    // then asked for again with REASON_CAPACITY).
    private static final long SHORT_REASON_CAPACITY = 1 << 10;

    private Attention() {}

    /**
     * The answer of a support query: whether the call would be accepted, and if not, the message of the
     * {@link FlashAttnException} it would throw.
     *
     * @param supported whether the call would be accepted
     * @param reason    empty when supported; else why not, exactly as the call's exception message
     */
    public record Support(boolean supported, String reason) {
        /** The answer for a supported call. */
        public static final Support SUPPORTED = new Support(true, "");

        /**
         * @throws IllegalArgumentException if a supported call has a reason, or an unsupported one none
         */
        public Support {
            Objects.requireNonNull(reason, "reason");
            if (supported != reason.isEmpty()) {
                throw new IllegalArgumentException(supported ? "a supported call has no reason" : "an unsupported call needs a reason");
            }
        }
    }

    /**
     * Attention forward into new tensors owned by the caller, on the default stream. q, k and v are plain
     * tensors, or for {@link QuantizationMode quantized attention} also {@link QuantizedTensor}s; out has
     * q's dtype (quantized attention: the first plain input's, bfloat16 if none).
     */
    public static AttentionOutput forward(AttentionInput q, AttentionInput k, AttentionInput v, AttentionOptions options) {
        return forwardResult(allocate(AttentionCall.forward(q, k, v, options), null));
    }

    /**
     * Attention forward into new tensors owned by the caller, queued on {@code stream} (the tensors must be
     * on its device).
     */
    public static AttentionOutput forward(AttentionInput q, AttentionInput k, AttentionInput v, AttentionOptions options,
                                          CudaStream stream) {
        Objects.requireNonNull(stream, "stream");
        return forwardResult(allocate(AttentionCall.forward(q, k, v, options), stream));
    }

    /** Attention forward into caller-provided {@code out} and {@code lse} (no allocation), on the default stream. */
    public static void forwardInto(AttentionInput q, AttentionInput k, AttentionInput v, Tensor out, Tensor lse,
                                   AttentionOptions options) {
        into(AttentionCall.forward(q, k, v, options), null, out, lse);
    }

    /**
     * Attention forward into caller-provided {@code out} and {@code lse} (no allocation), queued on
     * {@code stream} (the tensors must be on its device).
     */
    public static void forwardInto(AttentionInput q, AttentionInput k, AttentionInput v, Tensor out, Tensor lse,
                                   AttentionOptions options, CudaStream stream) {
        Objects.requireNonNull(stream, "stream");
        into(AttentionCall.forward(q, k, v, options), stream, out, lse);
    }

    /** Gradients of {@link #forward} with respect to q, k and v, in new tensors owned by the caller, on the default stream. */
    public static AttentionGradients backward(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse,
                                              AttentionOptions options) {
        return gradients(allocate(AttentionCall.backward(dout, q, k, v, out, lse, options), null));
    }

    /**
     * Gradients of {@link #forward} with respect to q, k and v, in new tensors owned by the caller, queued on
     * {@code stream} (the tensors must be on its device).
     */
    public static AttentionGradients backward(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse,
                                              AttentionOptions options, CudaStream stream) {
        Objects.requireNonNull(stream, "stream");
        return gradients(allocate(AttentionCall.backward(dout, q, k, v, out, lse, options), stream));
    }

    /** Gradients of {@link #forward} into caller-provided dq, dk, dv (overwritten; no allocation), on the default stream. */
    public static void backwardInto(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor dq,
                                    Tensor dk, Tensor dv, AttentionOptions options) {
        into(AttentionCall.backward(dout, q, k, v, out, lse, options), null, dq, dk, dv);
    }

    /**
     * Gradients of {@link #forward} into caller-provided dq, dk, dv (overwritten; no allocation), queued on
     * {@code stream} (the tensors must be on its device).
     */
    public static void backwardInto(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor dq,
                                    Tensor dk, Tensor dv, AttentionOptions options, CudaStream stream) {
        Objects.requireNonNull(stream, "stream");
        into(AttentionCall.backward(dout, q, k, v, out, lse, options), stream, dq, dk, dv);
    }

    // ---------------------------------------------------------------------------------------------
    // Variable-length batches
    // ---------------------------------------------------------------------------------------------

    /**
     * Attention forward over packed sequences of different lengths, into new tensors owned by the caller
     * (out {@code [total_q, heads_q, head_dim]}, lse float32 {@code [heads_q, total_q]}), on the default
     * stream. {@code k}'s offsets (and used lengths, if any) also describe {@code v}
     * ({@code [total_k, heads_kv, head_dim]}); {@code q} and {@code k} must hold the same number of
     * sequences.
     */
    public static AttentionOutput forward(PackedSequences q, PackedSequences k, Tensor v, AttentionOptions options) {
        return forwardResult(allocate(AttentionCall.forward(q, k, v, options), null));
    }

    /** {@link #forward(PackedSequences, PackedSequences, Tensor, AttentionOptions)} queued on {@code stream}. */
    public static AttentionOutput forward(PackedSequences q, PackedSequences k, Tensor v, AttentionOptions options,
                                          CudaStream stream) {
        Objects.requireNonNull(stream, "stream");
        return forwardResult(allocate(AttentionCall.forward(q, k, v, options), stream));
    }

    /**
     * {@link #forward(PackedSequences, PackedSequences, Tensor, AttentionOptions)} into caller-provided
     * {@code out} ({@code [total_q, heads_q, head_dim]}) and {@code lse} (float32 {@code [heads_q, total_q]}),
     * on the default stream.
     */
    public static void forwardInto(PackedSequences q, PackedSequences k, Tensor v, Tensor out, Tensor lse,
                                   AttentionOptions options) {
        into(AttentionCall.forward(q, k, v, options), null, out, lse);
    }

    /** {@link #forwardInto(PackedSequences, PackedSequences, Tensor, Tensor, Tensor, AttentionOptions)} queued on {@code stream}. */
    public static void forwardInto(PackedSequences q, PackedSequences k, Tensor v, Tensor out, Tensor lse,
                                   AttentionOptions options, CudaStream stream) {
        Objects.requireNonNull(stream, "stream");
        into(AttentionCall.forward(q, k, v, options), stream, out, lse);
    }

    /**
     * Gradients of {@link #forward(PackedSequences, PackedSequences, Tensor, AttentionOptions)} with respect to
     * the packed q, k and v, in new tensors owned by the caller, on the default stream. {@code dout} and
     * {@code out} are {@code [total_q, heads_q, head_dim]}, {@code lse} the forward's {@code [heads_q, total_q]}.
     * Keys beyond a sequence's used length get zero gradients.
     */
    public static AttentionGradients backward(Tensor dout, PackedSequences q, PackedSequences k, Tensor v, Tensor out,
                                              Tensor lse, AttentionOptions options) {
        return gradients(allocate(AttentionCall.backward(dout, q, k, v, out, lse, options), null));
    }

    /**
     * {@link #backward(Tensor, PackedSequences, PackedSequences, Tensor, Tensor, Tensor, AttentionOptions)}
     * queued on {@code stream}.
     */
    public static AttentionGradients backward(Tensor dout, PackedSequences q, PackedSequences k, Tensor v, Tensor out,
                                              Tensor lse, AttentionOptions options, CudaStream stream) {
        Objects.requireNonNull(stream, "stream");
        return gradients(allocate(AttentionCall.backward(dout, q, k, v, out, lse, options), stream));
    }

    /**
     * {@link #backward(Tensor, PackedSequences, PackedSequences, Tensor, Tensor, Tensor, AttentionOptions)}
     * into caller-provided dq ({@code [total_q, heads_q, head_dim]}), dk and dv ({@code [total_k, heads_kv,
     * head_dim]}), overwritten, on the default stream.
     */
    public static void backwardInto(Tensor dout, PackedSequences q, PackedSequences k, Tensor v, Tensor out, Tensor lse,
                                    Tensor dq, Tensor dk, Tensor dv, AttentionOptions options) {
        into(AttentionCall.backward(dout, q, k, v, out, lse, options), null, dq, dk, dv);
    }

    /**
     * {@link #backwardInto(Tensor, PackedSequences, PackedSequences, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
     * AttentionOptions)} queued on {@code stream}.
     */
    public static void backwardInto(Tensor dout, PackedSequences q, PackedSequences k, Tensor v, Tensor out, Tensor lse,
                                    Tensor dq, Tensor dk, Tensor dv, AttentionOptions options, CudaStream stream) {
        Objects.requireNonNull(stream, "stream");
        into(AttentionCall.backward(dout, q, k, v, out, lse, options), stream, dq, dk, dv);
    }

    // ---------------------------------------------------------------------------------------------
    // KV-cache attention (decode) and merging partial results
    // ---------------------------------------------------------------------------------------------

    /**
     * Attention of new tokens' queries {@code q} ({@code [batch, seqlen_q, heads_q, head_dim]}) against a KV
     * cache, after appending the new tokens' keys and values to it if {@code cache} {@linkplain KvCache#withAppend
     * has them}: flash-attn's {@code flash_attn_with_kvcache}. Into new tensors owned by the caller: out (q's
     * shape and dtype) and lse (float32 {@code [batch, heads_q, seqlen_q]}), on the default stream.
     *
     * <p>Sequence b attends the {@code L_b + seqlen_new} positions of its cache ({@link KvCache} says where they
     * are), after a shared prefix if there is one. Masks and ALiBi are aligned to the end of those keys
     * (bottom-right), so with {@code causal} and as many new keys as queries, new token t attends positions
     * {@code 0 .. L_b + t}: speculative decoding and chunked prefill. GQA/MQA, windows, softcap and ALiBi as
     * in {@link #forward(Tensor, Tensor, Tensor, AttentionOptions)}. Everything is checked before anything is
     * written, the caches included (see {@link KvCache}). On the CPU the call is finished when it returns;
     * CUDA tensors are refused ({@link FlashAttnException.Unsupported}) until the kernels exist.
     */
    public static AttentionOutput decode(Tensor q, KvCache cache, DecodeOptions options) {
        return forwardResult(allocate(DecodeCall.of(q, cache, options), null));
    }

    /** {@link #decode(Tensor, KvCache, DecodeOptions)} queued on {@code stream}. */
    public static AttentionOutput decode(Tensor q, KvCache cache, DecodeOptions options, CudaStream stream) {
        Objects.requireNonNull(stream, "stream");
        return forwardResult(allocate(DecodeCall.of(q, cache, options), stream));
    }

    /**
     * {@link #decode(Tensor, KvCache, DecodeOptions)} into caller-provided {@code out} ({@code [batch, seqlen_q,
     * heads_q, head_dim]}, q's dtype or float32) and {@code lse} (float32 {@code [batch, heads_q, seqlen_q]}, or
     * null when not wanted): no allocation in Java, for decode loops. On the default stream.
     */
    public static void decodeInto(Tensor q, KvCache cache, Tensor out, Tensor lse, DecodeOptions options) {
        DecodeCall call = DecodeCall.of(q, cache, options);
        if (lse == null) into(call, null, out);
        else into(call, null, out, lse);
    }

    /** {@link #decodeInto(Tensor, KvCache, Tensor, Tensor, DecodeOptions)} queued on {@code stream}. */
    public static void decodeInto(Tensor q, KvCache cache, Tensor out, Tensor lse, DecodeOptions options, CudaStream stream) {
        Objects.requireNonNull(stream, "stream");
        DecodeCall call = DecodeCall.of(q, cache, options);
        if (lse == null) into(call, stream, out);
        else into(call, stream, out, lse);
    }

    /**
     * Merges partial results of attention of the same queries over disjoint sets of keys into the attention
     * over their union, by log-sum-exp: each part is an out {@code [batch, seqlen, heads, head_dim]} (any float
     * dtype) with its float32 lse {@code [batch, heads, seqlen]}; per row, in float32 and in list order,
     * {@code m = max lse_s, w_s = exp(lse_s - m), out = Σ w_s·out_s / Σ w_s, lse = m + log Σ w_s}. A part whose
     * lse is -∞ (its queries attended no key) weighs nothing; if all do, out = 0 and lse = -∞. This is how a
     * shared prefix's result joins each sequence's own (cascade attention), or how results over key ranges
     * computed apart (split-KV, several devices) become one. Into new tensors owned by the caller: out in the
     * first part's dtype, lse float32; on the default stream. Varlen results ({@code [total, heads, head_dim]},
     * lse {@code [heads, total]}) merge as views of batch 1.
     *
     * @throws IllegalArgumentException if {@code parts} is empty
     */
    public static AttentionOutput merge(List<AttentionOutput> parts) {
        return forwardResult(allocate(MergeCall.of(parts), null));
    }

    /** {@link #merge(List)} queued on {@code stream}. */
    public static AttentionOutput merge(List<AttentionOutput> parts, CudaStream stream) {
        Objects.requireNonNull(stream, "stream");
        return forwardResult(allocate(MergeCall.of(parts), stream));
    }

    /**
     * {@link #merge(List)} into caller-provided {@code out} (any float dtype; rounded, saturating) and {@code lse}
     * (float32, or null when not wanted), which must not overlap the parts. On the default stream.
     */
    public static void mergeInto(List<AttentionOutput> parts, Tensor out, Tensor lse) {
        MergeCall call = MergeCall.of(parts);
        if (lse == null) into(call, null, out);
        else into(call, null, out, lse);
    }

    /** {@link #mergeInto(List, Tensor, Tensor)} queued on {@code stream}. */
    public static void mergeInto(List<AttentionOutput> parts, Tensor out, Tensor lse, CudaStream stream) {
        Objects.requireNonNull(stream, "stream");
        MergeCall call = MergeCall.of(parts);
        if (lse == null) into(call, stream, out);
        else into(call, stream, out, lse);
    }

    // ---------------------------------------------------------------------------------------------
    // Support queries
    // ---------------------------------------------------------------------------------------------

    /**
     * Whether {@link #forward(AttentionInput, AttentionInput, AttentionInput, AttentionOptions)} with these arguments would be
     * accepted, and if not, the message it would throw. Runs and allocates nothing; on the CPU reads no
     * tensor data; on a CUDA device may ask the driver about the device.
     *
     * @throws NullPointerException  for a null argument, as the call would
     * @throws IllegalStateException for a closed tensor, as the call would
     */
    public static Support checkForward(AttentionInput q, AttentionInput k, AttentionInput v, AttentionOptions options) {
        return query(AttentionCall.forward(q, k, v, options));
    }

    /**
     * Whether {@link #backward(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, AttentionOptions)} with these
     * arguments would be accepted, and if not, the message it would throw (see
     * {@link #checkForward(AttentionInput, AttentionInput, AttentionInput, AttentionOptions)}).
     */
    public static Support checkBackward(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse,
                                        AttentionOptions options) {
        return query(AttentionCall.backward(dout, q, k, v, out, lse, options));
    }

    /**
     * Whether {@link #forward(PackedSequences, PackedSequences, Tensor, AttentionOptions)} with these
     * arguments would be accepted, and if not, the message it would throw (see
     * {@link #checkForward(AttentionInput, AttentionInput, AttentionInput, AttentionOptions)}). On the CPU this reads the offsets
     * and used lengths, which the call checks.
     */
    public static Support checkForward(PackedSequences q, PackedSequences k, Tensor v, AttentionOptions options) {
        return query(AttentionCall.forward(q, k, v, options));
    }

    /**
     * Whether {@link #backward(Tensor, PackedSequences, PackedSequences, Tensor, Tensor, Tensor, AttentionOptions)}
     * with these arguments would be accepted, and if not, the message it would throw (see
     * {@link #checkForward(PackedSequences, PackedSequences, Tensor, AttentionOptions)}).
     */
    public static Support checkBackward(Tensor dout, PackedSequences q, PackedSequences k, Tensor v, Tensor out,
                                        Tensor lse, AttentionOptions options) {
        return query(AttentionCall.backward(dout, q, k, v, out, lse, options));
    }

    /**
     * Whether {@link #decode(Tensor, KvCache, DecodeOptions)} with these arguments would be accepted, and if
     * not, the message it would throw (see {@link #checkForward(Tensor, Tensor, Tensor, AttentionOptions)}). On
     * the CPU this reads the cache lengths and the block table, which the call checks; it writes nothing.
     */
    public static Support checkDecode(Tensor q, KvCache cache, DecodeOptions options) {
        return query(DecodeCall.of(q, cache, options));
    }

    /** Whether {@link #merge(List)} with these parts would be accepted, and if not, the message it would throw. */
    public static Support checkMerge(List<AttentionOutput> parts) {
        return query(MergeCall.of(parts));
    }

    // ---------------------------------------------------------------------------------------------
    // Flop counts
    // ---------------------------------------------------------------------------------------------

    /** Forward FLOPs by the FlashAttention convention: 4·B·H·Nq·Nk·d, halved when causal. */
    public static double forwardFlops(long batch, long heads, long seqlenQ, long seqlenK, long headDim, boolean causal) {
        double flops = 4.0 * batch * heads * seqlenQ * seqlenK * headDim;
        return causal ? flops / 2 : flops;
    }

    /** Backward FLOPs by the FlashAttention convention: 2.5 × forward. */
    public static double backwardFlops(long batch, long heads, long seqlenQ, long seqlenK, long headDim, boolean causal) {
        return 2.5 * forwardFlops(batch, heads, seqlenQ, seqlenK, headDim, causal);
    }

    // ---------------------------------------------------------------------------------------------
    // Implementation. stream == null means "the default stream" (and is how calls on CPU tensors run).
    // ---------------------------------------------------------------------------------------------

    private static AttentionOutput forwardResult(Tensor[] outputs) {
        return new AttentionOutput(outputs[0], outputs[1]);
    }

    private static AttentionGradients gradients(Tensor[] outputs) {
        return new AttentionGradients(outputs[0], outputs[1], outputs[2]);
    }

    /**
     * Checks the call in full before allocating anything (the native query with the outputs described but
     * not allocated: the call's own validation, status and message), then allocates the outputs and runs
     * the call into them.
     */
    private static Tensor[] allocate(NativeAttentionCall call, CudaStream stream) {
        Tensor[] inputs = call.tensors();
        call.check(stream, inputs);
        Refusal refusal = ask(call, inputs);
        if (refusal != null) throw FlashAttnException.of(refusal.status(), refusal.reason());
        long[][] shapes = call.outputShapes();
        DType[] dtypes = call.outputDtypes();
        // The scope frees the new tensors only if something fails before they are handed over.
        try (TensorScope onFailure = TensorScope.open()) {
            Tensor[] outputs = new Tensor[shapes.length];
            for (int i = 0; i < outputs.length; i++) outputs[i] = newOutput(onFailure, dtypes[i], call.device(), stream, shapes[i]);
            run(call, stream, call.tensors(outputs), outputs);
            onFailure.releaseAll();
            return outputs;
        }
    }

    /** Runs the call into the caller's outputs (the native call validates them: no support query first). */
    private static void into(NativeAttentionCall call, CudaStream stream, Tensor... outputs) {
        Tensor[] tensors = call.tensors(outputs);
        call.check(stream, tensors);
        List<String> names = call.outputNames();
        for (int i = 0; i < outputs.length; i++) AttentionChecks.requireWritable(outputs[i], names.get(i));
        run(call, stream, tensors, outputs);
    }

    /**
     * The native call, for arguments that passed {@link AttentionChecks}; {@code tensors} is the call's
     * {@link NativeAttentionCall#tensors} of {@code outputs}.
     */
    private static void run(NativeAttentionCall call, CudaStream stream, Tensor[] tensors, Tensor[] outputs) {
        // The leases end first: memory they free, and release actions that run then, never see the scratch in use.
        try (CallScratch scratch = CallScratch.open(); Leases leases = Leases.forCall(stream, tensors)) {
            NativeCalls.check(flashattn4j_h.fa4j_attention(call.describe(scratch, outputs), leases.stream()));
        }
    }

    /**
     * The support query: the Java checks the call makes first (their exception, if any, is the call's), then
     * {@code fa4j_attention_support} with the outputs the call would allocate described but not allocated
     * ({@link NativeAttentionCall#describeUnallocated}). Its reason is what the call's exception would say: both
     * carry the message of the same native validation under the name {@code fa4j_attention}.
     */
    private static Support query(NativeAttentionCall call) {
        Tensor[] inputs = call.tensors();
        try {
            call.check(null, inputs);
        } catch (FlashAttnException e) {
            return new Support(false, e.getMessage());
        }
        Refusal refusal = ask(call, inputs);
        return refusal == null ? Support.SUPPORTED : new Support(false, refusal.reason());
    }

    /** Why the native library would refuse a call: the status it would return and its message. */
    private record Refusal(FlashAttnException.Status status, String reason) {}

    /**
     * {@code fa4j_attention_support} on the call with its outputs described but not allocated
     * ({@link NativeAttentionCall#describeUnallocated}); null if the call would be accepted. {@code inputs} is
     * the call's {@link NativeAttentionCall#tensors}.
     */
    private static Refusal ask(NativeAttentionCall call, Tensor[] inputs) {
        // Held open so that no input is freed while the query reads its descriptor (or, on the CPU, the
        // sequence offsets); no work is queued, so no stream use is recorded.
        try (CallScratch scratch = CallScratch.open(); Leases leases = Leases.forQuery(inputs)) {
            MemorySegment args = call.describeUnallocated(scratch);
            MemorySegment status = scratch.allocate(ValueLayout.JAVA_INT);
            MemorySegment reason = scratch.allocate(SHORT_REASON_CAPACITY);
            NativeCalls.check(flashattn4j_h.fa4j_attention_support(args, status, reason, SHORT_REASON_CAPACITY));
            int code = status.get(ValueLayout.JAVA_INT, 0);
            if (code == flashattn4j_h.FA4J_OK()) return null;
            Refusal refusal = new Refusal(FlashAttnException.Status.ofCode(code), reason.getString(0));
            if (reason.get(ValueLayout.JAVA_BYTE, SHORT_REASON_CAPACITY - 2) != 0) {
                // The message filled the buffer and may have been cut: ask again with room for the longest. (Should
                // the inputs have changed in between, which only a racing writer of CPU offsets could do, the first
                // answer stands.)
                MemorySegment full = scratch.allocate(REASON_CAPACITY);
                NativeCalls.check(flashattn4j_h.fa4j_attention_support(args, status, full, REASON_CAPACITY));
                code = status.get(ValueLayout.JAVA_INT, 0);
                if (code != flashattn4j_h.FA4J_OK()) refusal = new Refusal(FlashAttnException.Status.ofCode(code), full.getString(0));
            }
            return refusal;
        }
    }

    /**
     * A new output on {@code device}; CUDA memory is allocated in the order of the call's stream (the
     * default stream when {@code stream} is null), so the call can use it at once and its release later
     * is ordered after the call.
     */
    private static Tensor newOutput(TensorScope scope, DType dtype, Device device, CudaStream stream, long... shape) {
        CudaStream home = !device.isCuda() ? null : stream != null ? stream : CudaStream.defaultStream(device);
        return scope.track(Tensor.allocate(dtype, device, home, shape));
    }

    /** Leases on the stream and every tensor of a call; releases them all even if taking one fails. */
    private static final class Leases implements AutoCloseable {
        private final Storage.Lease[] held;
        private int count;
        private CudaStream.Lease stream = CudaStream.Lease.NONE;

        private Leases(int tensors) {
            held = new Storage.Lease[tensors];
        }

        /** Leases for a call that queues work on {@code stream} (null: the default stream). */
        static Leases forCall(CudaStream stream, Tensor[] tensors) {
            return of(stream, tensors, true);
        }

        /** Leases for a query that queues nothing. */
        static Leases forQuery(Tensor[] tensors) {
            return of(null, tensors, false);
        }

        private static Leases of(CudaStream stream, Tensor[] tensors, boolean queuesWork) {
            Leases leases = new Leases(tensors.length);
            try {
                if (stream != null) leases.stream = stream.lease();
                for (Tensor t : tensors) {
                    Storage.Lease lease = t.lease();
                    leases.held[leases.count++] = lease;
                }
                Device device = tensors[0].device();
                if (queuesWork && device.isCuda()) {
                    // Closing any of these tensors must now be ordered after the work this call queues.
                    CudaStream used = stream != null ? stream : CudaStream.defaultStream(device);
                    for (Tensor t : tensors) t.usedOn(used);
                }
                return leases;
            } catch (RuntimeException e) {
                leases.close();
                throw e;
            }
        }

        /** The {@code fa4j_stream} to pass: NULL for the default stream. */
        MemorySegment stream() {
            return stream.handle();
        }

        @Override
        public void close() {
            for (int i = 0; i < count; i++) held[i].close();
            stream.close();
        }
    }
}
