package io.github.flashattn4j;

import io.github.flashattn4j.internal.bindings.fa4j_attention_args;
import io.github.flashattn4j.internal.bindings.flashattn4j_h;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.SegmentAllocator;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Objects;

/**
 * One attention call as {@code fa4j_attention} takes it, minus its outputs: the direction, the inputs,
 * the varlen metadata and the options. Every entry point of {@link Attention} builds one, so that the call,
 * its Java checks ({@link AttentionChecks}) and its support query ({@link Attention#checkForward}) see the
 * same arguments. {@code dout}, {@code out} and {@code lse} are null for a forward; the varlen fields are
 * null and 0 for a dense call; {@code usedLengthsQ} is what a caller attached to the queries'
 * {@link PackedSequences}, which the checks refuse (used lengths are for keys). The scales and the key mean
 * are those of pre-quantized inputs ({@link QuantizedTensor}); null for plain ones.
 */
record AttentionCall(boolean backward, Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse,
                     Tensor cuSeqlensQ, Tensor cuSeqlensK, Tensor usedLengthsK, Tensor usedLengthsQ,
                     long maxSeqlenQ, long maxSeqlenK, AttentionOptions options,
                     Tensor qScale, Tensor kScale, Tensor vScale, Tensor kMean) implements NativeAttentionCall {

    static AttentionCall forward(AttentionInput q, AttentionInput k, AttentionInput v, AttentionOptions options) {
        return new AttentionCall(false, null, data(q), data(k), data(v), null, null, null, null, null, null, 0, 0, options,
                scale(q), scale(k), scale(v), k instanceof QuantizedTensor qk ? qk.mean() : null);
    }

    static AttentionCall backward(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, AttentionOptions options) {
        return new AttentionCall(true, dout, q, k, v, out, lse, null, null, null, null, 0, 0, options, null, null, null, null);
    }

    private static Tensor data(AttentionInput input) {
        return switch (input) {
            case null -> null;
            case Tensor t -> t;
            case QuantizedTensor qt -> qt.data();
        };
    }

    private static Tensor scale(AttentionInput input) {
        return input instanceof QuantizedTensor qt ? qt.scale() : null;
    }

    static AttentionCall forward(PackedSequences q, PackedSequences k, Tensor v, AttentionOptions options) {
        Objects.requireNonNull(q, "q");
        Objects.requireNonNull(k, "k");
        return new AttentionCall(false, null, q.tokens(), k.tokens(), v, null, null, q.cuSeqlens(), k.cuSeqlens(),
                k.usedLengths().orElse(null), q.usedLengths().orElse(null), q.maxSeqlen(), k.maxSeqlen(), options,
                null, null, null, null);
    }

    static AttentionCall backward(Tensor dout, PackedSequences q, PackedSequences k, Tensor v, Tensor out, Tensor lse,
                                  AttentionOptions options) {
        Objects.requireNonNull(q, "q");
        Objects.requireNonNull(k, "k");
        return new AttentionCall(true, dout, q.tokens(), k.tokens(), v, out, lse, q.cuSeqlens(), k.cuSeqlens(),
                k.usedLengths().orElse(null), q.usedLengths().orElse(null), q.maxSeqlen(), k.maxSeqlen(), options,
                null, null, null, null);
    }

    boolean varlen() {
        return cuSeqlensQ != null;
    }

    /** Names of the tensor arguments the caller passes (dense: the parameter names), in parameter order. */
    @Override
    public List<String> argumentNames() {
        List<String> names = new ArrayList<>(backward ? List.of("dout", "q", "k", "v", "out", "lse") : List.of("q", "k", "v"));
        if (varlen()) {
            names.addAll(List.of("cu_seqlens_q", "cu_seqlens_k"));
            if (usedLengthsK != null) names.add("seqused_k");
        }
        if (options != null && options.alibiSlopes().isPresent()) names.add("alibi_slopes");
        if (qScale != null) names.add("q_scale");
        if (kScale != null) names.add("k_scale");
        if (vScale != null) names.add("v_scale");
        if (kMean != null) names.add("k_mean");
        return names;
    }

    /** The tensor arguments, matching {@link #argumentNames()}; elements may be null (checked by the caller). */
    @Override
    public List<Tensor> arguments() {
        List<Tensor> tensors = new ArrayList<>(backward ? Arrays.asList(dout, q, k, v, out, lse) : Arrays.asList(q, k, v));
        if (varlen()) {
            tensors.add(cuSeqlensQ);
            tensors.add(cuSeqlensK);
            if (usedLengthsK != null) tensors.add(usedLengthsK);
        }
        if (options != null) options.alibiSlopes().ifPresent(tensors::add);
        for (Tensor t : new Tensor[] {qScale, kScale, vScale, kMean}) {
            if (t != null) tensors.add(t);
        }
        return tensors;
    }

    /** Names of the outputs: out, lse or dq, dk, dv. */
    @Override
    public List<String> outputNames() {
        return backward ? List.of("dq", "dk", "dv") : List.of("out", "lse");
    }

    /** Shapes of the outputs the call would allocate; the inputs must have passed {@link AttentionChecks}. */
    @Override
    public long[][] outputShapes() {
        if (backward) return new long[][] {q.shape(), k.shape(), k.shape()};
        long[] s = q.shape();
        long[] lse = varlen() ? new long[] {s[1], s[0]} : new long[] {s[0], s[2], s[1]};
        return new long[][] {s, lse};
    }

    @Override
    public DType[] outputDtypes() {
        return backward ? new DType[] {q.dtype(), q.dtype(), q.dtype()} : new DType[] {outDtype(), DType.FLOAT32};
    }

    /**
     * out's dtype: q's for plain attention; for quantized attention that of the first high-precision input
     * (q, k, v), and bfloat16 when all three are pre-quantized.
     */
    private DType outDtype() {
        for (Tensor t : new Tensor[] {q, k, v}) {
            if (t.dtype().isCompute()) return t.dtype();
        }
        return options.quantization() == QuantizationMode.NONE ? q.dtype() : DType.BFLOAT16;
    }

    @Override
    public Device device() {
        return q.device();
    }

    @Override
    public void check(CudaStream stream, Tensor[] tensors) {
        AttentionChecks.check(this, stream, tensors);
    }

    @Override
    public MemorySegment args(SegmentAllocator memory, MemorySegment[] outputs) {
        NativeCalls.ensureLoaded();
        MemorySegment a = fa4j_attention_args.allocate(memory);  // zeroed: absent tensors are NULL
        fa4j_attention_args.struct_size(a, fa4j_attention_args.layout().byteSize());
        fa4j_attention_args.direction(a, backward ? flashattn4j_h.FA4J_ATTENTION_BACKWARD() : flashattn4j_h.FA4J_ATTENTION_FORWARD());
        fa4j_attention_args.kernel_family(a, options.kernelFamily().nativeCode());
        fa4j_attention_args.q(a, TensorDescriptors.describe(q, memory));
        fa4j_attention_args.k(a, TensorDescriptors.describe(k, memory));
        fa4j_attention_args.v(a, TensorDescriptors.describe(v, memory));
        if (backward) {
            fa4j_attention_args.dout(a, TensorDescriptors.describe(dout, memory));
            fa4j_attention_args.out(a, TensorDescriptors.describe(out, memory));
            fa4j_attention_args.lse(a, TensorDescriptors.describe(lse, memory));
            fa4j_attention_args.dq(a, outputs[0]);
            fa4j_attention_args.dk(a, outputs[1]);
            fa4j_attention_args.dv(a, outputs[2]);
        } else {
            fa4j_attention_args.out(a, outputs[0]);
            fa4j_attention_args.lse(a, outputs[1]);
        }
        if (varlen()) {
            fa4j_attention_args.cu_seqlens_q(a, TensorDescriptors.describe(cuSeqlensQ, memory));
            fa4j_attention_args.cu_seqlens_k(a, TensorDescriptors.describe(cuSeqlensK, memory));
            if (usedLengthsK != null) fa4j_attention_args.seqused_k(a, TensorDescriptors.describe(usedLengthsK, memory));
            fa4j_attention_args.max_seqlen_q(a, maxSeqlenQ);
            fa4j_attention_args.max_seqlen_k(a, maxSeqlenK);
        }
        options.alibiSlopes().ifPresent(slopes -> fa4j_attention_args.alibi_slopes(a, TensorDescriptors.describe(slopes, memory)));
        fa4j_attention_args.softmax_scale(a, options.softmaxScale(q.size(-1)));
        fa4j_attention_args.softcap(a, options.softcap());
        fa4j_attention_args.causal(a, options.causal() ? 1 : 0);
        fa4j_attention_args.window_left(a, options.windowLeft());
        fa4j_attention_args.window_right(a, options.windowRight());
        fa4j_attention_args.num_threads(a, options.numThreads());
        fa4j_attention_args.deterministic(a, options.deterministic() ? 1 : 0);
        fa4j_attention_args.quant_mode(a, options.quantization().nativeCode());
        if (options.quantization() != QuantizationMode.NONE) {
            int flags = (options.smoothK() ? 0 : flashattn4j_h.FA4J_QUANT_NO_SMOOTH_K())
                    | (options.smoothQ() ? 0 : flashattn4j_h.FA4J_QUANT_NO_SMOOTH_Q());
            fa4j_attention_args.quant_flags(a, flags);
        }
        if (qScale != null) fa4j_attention_args.q_scale(a, TensorDescriptors.describe(qScale, memory));
        if (kScale != null) fa4j_attention_args.k_scale(a, TensorDescriptors.describe(kScale, memory));
        if (vScale != null) fa4j_attention_args.v_scale(a, TensorDescriptors.describe(vScale, memory));
        if (kMean != null) fa4j_attention_args.k_mean(a, TensorDescriptors.describe(kMean, memory));
        return a;
    }
}
