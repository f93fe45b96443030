package io.github.flashattn4j;

import io.github.flashattn4j.internal.bindings.fa4j_attention_params;
import io.github.flashattn4j.internal.bindings.flashattn4j_h;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.Arrays;
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
 * lse); head dims: multiples of 8 up to 256. Causal masking is bottom-right aligned. A call the library
 * cannot run throws a {@link FlashAttnException} naming the argument at fault; the JVM is never at risk.
 */
public final class Attention {

    private static final int RANK = 4;

    private Attention() {}

    /** Attention forward into new tensors owned by the caller. */
    public static AttentionOutput forward(Tensor q, Tensor k, Tensor v, AttentionOptions options) {
        requireRank(q, "q");
        long[] s = q.shape();
        // The scope frees the new tensors only if something fails before they are handed over.
        try (TensorScope onFailure = TensorScope.open()) {
            Tensor out = onFailure.empty(q.dtype(), q.device(), s);
            Tensor lse = onFailure.empty(DType.FLOAT32, q.device(), s[0], s[2], s[1]);
            forwardInto(q, k, v, out, lse, options);
            onFailure.releaseAll();
            return new AttentionOutput(out, lse);
        }
    }

    /** Attention forward into caller-provided {@code out} and {@code lse} (no allocation). */
    public static void forwardInto(Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, AttentionOptions options) {
        Objects.requireNonNull(options, "options");
        Tensor[] all = {q, k, v, out, lse};
        requireNonNull(all, "q", "k", "v", "out", "lse");
        requireRank(q, "q");
        try (Arena arena = Arena.ofConfined(); Leases leases = Leases.of(all)) {
            MemorySegment params = params(arena, options, q.size(3));
            NativeCalls.check(flashattn4j_h.fa4j_attention_forward(params, describe(q, arena), describe(k, arena),
                    describe(v, arena), describe(out, arena), describe(lse, arena), MemorySegment.NULL));
        }
    }

    /** Gradients of {@link #forward} with respect to q, k and v, in new tensors owned by the caller. */
    public static AttentionGradients backward(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse,
                                              AttentionOptions options) {
        requireRank(q, "q");
        requireRank(k, "k");
        try (TensorScope onFailure = TensorScope.open()) {
            Tensor dq = onFailure.empty(q.dtype(), q.device(), q.shape());
            Tensor dk = onFailure.empty(k.dtype(), k.device(), k.shape());
            Tensor dv = onFailure.empty(k.dtype(), k.device(), k.shape());
            backwardInto(dout, q, k, v, out, lse, dq, dk, dv, options);
            onFailure.releaseAll();
            return new AttentionGradients(dq, dk, dv);
        }
    }

    /** Gradients of {@link #forward} into caller-provided dq, dk, dv (overwritten; no allocation). */
    public static void backwardInto(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor dq,
                                    Tensor dk, Tensor dv, AttentionOptions options) {
        Objects.requireNonNull(options, "options");
        Tensor[] all = {dout, q, k, v, out, lse, dq, dk, dv};
        requireNonNull(all, "dout", "q", "k", "v", "out", "lse", "dq", "dk", "dv");
        requireRank(q, "q");
        try (Arena arena = Arena.ofConfined(); Leases leases = Leases.of(all)) {
            MemorySegment params = params(arena, options, q.size(3));
            NativeCalls.check(flashattn4j_h.fa4j_attention_backward(params, describe(dout, arena), describe(q, arena),
                    describe(k, arena), describe(v, arena), describe(out, arena), describe(lse, arena),
                    describe(dq, arena), describe(dk, arena), describe(dv, arena), MemorySegment.NULL));
        }
    }

    /** Forward FLOPs by the FlashAttention convention: 4·B·H·Nq·Nk·d, halved when causal. */
    public static double forwardFlops(long batch, long heads, long seqlenQ, long seqlenK, long headDim, boolean causal) {
        double flops = 4.0 * batch * heads * seqlenQ * seqlenK * headDim;
        return causal ? flops / 2 : flops;
    }

    /** Backward FLOPs by the FlashAttention convention: 2.5 × forward. */
    public static double backwardFlops(long batch, long heads, long seqlenQ, long seqlenK, long headDim, boolean causal) {
        return 2.5 * forwardFlops(batch, heads, seqlenQ, seqlenK, headDim, causal);
    }

    private static MemorySegment params(Arena arena, AttentionOptions options, long headDim) {
        NativeCalls.ensureLoaded();
        MemorySegment p = fa4j_attention_params.allocate(arena);
        fa4j_attention_params.struct_size(p, fa4j_attention_params.layout().byteSize());
        fa4j_attention_params.softmax_scale(p, options.softmaxScale(headDim));
        fa4j_attention_params.causal(p, options.causal() ? 1 : 0);
        fa4j_attention_params.num_threads(p, options.numThreads());
        return p;
    }

    private static MemorySegment describe(Tensor t, Arena arena) {
        return TensorDescriptors.describe(t, arena);
    }

    private static void requireNonNull(Tensor[] tensors, String... names) {
        for (int i = 0; i < tensors.length; i++) Objects.requireNonNull(tensors[i], names[i]);
    }

    private static void requireRank(Tensor t, String name) {
        Objects.requireNonNull(t, name);
        if (t.dim() != RANK) {
            throw new FlashAttnException.InvalidArgument(name + " must have 4 dimensions [batch, seqlen, heads, head_dim], has shape "
                    + Arrays.toString(t.shape()));
        }
    }

    /** Leases on every tensor of a call; releases them all even if taking one fails. */
    private static final class Leases implements AutoCloseable {
        private final List<Storage.Lease> held = new ArrayList<>();

        static Leases of(Tensor... tensors) {
            Leases leases = new Leases();
            try {
                for (Tensor t : tensors) leases.held.add(t.lease());
                return leases;
            } catch (RuntimeException e) {
                leases.close();
                throw e;
            }
        }

        @Override
        public void close() {
            for (Storage.Lease lease : held) lease.close();
        }
    }
}
