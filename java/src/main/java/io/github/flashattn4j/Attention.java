package io.github.flashattn4j;

import io.github.flashattn4j.internal.bindings.fa4j_attention_params;
import io.github.flashattn4j.internal.bindings.flashattn4j_h;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
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
 *
 * <h2>Errors</h2>
 * {@link FlashAttnException.InvalidArgument} for tensors that do not fit together (rank, dtype, shape,
 * heads, strides, device, overlapping outputs), {@link FlashAttnException.Unsupported} for a head dim the
 * library does not implement, {@link FlashAttnException.OutOfMemory} when outputs or workspace cannot be
 * allocated, {@link IllegalStateException} for a closed tensor or stream, {@link NullPointerException} for
 * a null argument. The methods that allocate their outputs check the inputs first, so a call that would be
 * refused allocates nothing.
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

    private Attention() {}

    /** Attention forward into new tensors owned by the caller, on the default stream. */
    public static AttentionOutput forward(Tensor q, Tensor k, Tensor v, AttentionOptions options) {
        return allocateForward(q, k, v, options, null);
    }

    /**
     * Attention forward into new tensors owned by the caller, queued on {@code stream} (the tensors must be
     * on its device).
     */
    public static AttentionOutput forward(Tensor q, Tensor k, Tensor v, AttentionOptions options, CudaStream stream) {
        Objects.requireNonNull(stream, "stream");
        return allocateForward(q, k, v, options, stream);
    }

    /** Attention forward into caller-provided {@code out} and {@code lse} (no allocation), on the default stream. */
    public static void forwardInto(Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, AttentionOptions options) {
        runForward(q, k, v, out, lse, options, null);
    }

    /**
     * Attention forward into caller-provided {@code out} and {@code lse} (no allocation), queued on
     * {@code stream} (the tensors must be on its device).
     */
    public static void forwardInto(Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, AttentionOptions options,
                                   CudaStream stream) {
        Objects.requireNonNull(stream, "stream");
        runForward(q, k, v, out, lse, options, stream);
    }

    /** Gradients of {@link #forward} with respect to q, k and v, in new tensors owned by the caller, on the default stream. */
    public static AttentionGradients backward(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse,
                                              AttentionOptions options) {
        return allocateBackward(dout, q, k, v, out, lse, options, null);
    }

    /**
     * Gradients of {@link #forward} with respect to q, k and v, in new tensors owned by the caller, queued on
     * {@code stream} (the tensors must be on its device).
     */
    public static AttentionGradients backward(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse,
                                              AttentionOptions options, CudaStream stream) {
        Objects.requireNonNull(stream, "stream");
        return allocateBackward(dout, q, k, v, out, lse, options, stream);
    }

    /** Gradients of {@link #forward} into caller-provided dq, dk, dv (overwritten; no allocation), on the default stream. */
    public static void backwardInto(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor dq,
                                    Tensor dk, Tensor dv, AttentionOptions options) {
        runBackward(dout, q, k, v, out, lse, dq, dk, dv, options, null);
    }

    /**
     * Gradients of {@link #forward} into caller-provided dq, dk, dv (overwritten; no allocation), queued on
     * {@code stream} (the tensors must be on its device).
     */
    public static void backwardInto(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor dq,
                                    Tensor dk, Tensor dv, AttentionOptions options, CudaStream stream) {
        Objects.requireNonNull(stream, "stream");
        runBackward(dout, q, k, v, out, lse, dq, dk, dv, options, stream);
    }

    // stream == null below means "the default stream" (and is how calls on CPU tensors run).

    private static AttentionOutput allocateForward(Tensor q, Tensor k, Tensor v, AttentionOptions options,
                                                   CudaStream stream) {
        AttentionChecks.forward(q, k, v, options, stream);  // before allocating anything
        long[] s = q.shape();
        // The scope frees the new tensors only if something fails before they are handed over.
        try (TensorScope onFailure = TensorScope.open()) {
            Tensor out = newOutput(onFailure, q.dtype(), q.device(), stream, s);
            Tensor lse = newOutput(onFailure, DType.FLOAT32, q.device(), stream, s[0], s[2], s[1]);
            callForward(q, k, v, out, lse, options, stream);
            onFailure.releaseAll();
            return new AttentionOutput(out, lse);
        }
    }

    private static void runForward(Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, AttentionOptions options,
                                   CudaStream stream) {
        AttentionChecks.forward(q, k, v, options, stream, out, lse);
        requireWritable(new Tensor[] {out, lse}, "out", "lse");
        callForward(q, k, v, out, lse, options, stream);
    }

    /** The native call, for arguments that passed {@link AttentionChecks}. */
    private static void callForward(Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, AttentionOptions options,
                                    CudaStream stream) {
        try (Arena arena = Arena.ofConfined(); Leases leases = Leases.of(stream, q, k, v, out, lse)) {
            MemorySegment params = params(arena, options, q.size(3));
            NativeCalls.check(flashattn4j_h.fa4j_attention_forward(params, describe(q, arena), describe(k, arena),
                    describe(v, arena), describe(out, arena), describe(lse, arena), leases.stream()));
        }
    }

    private static AttentionGradients allocateBackward(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse,
                                                       AttentionOptions options, CudaStream stream) {
        AttentionChecks.backward(dout, q, k, v, out, lse, options, stream);  // before allocating anything
        try (TensorScope onFailure = TensorScope.open()) {
            Tensor dq = newOutput(onFailure, q.dtype(), q.device(), stream, q.shape());
            Tensor dk = newOutput(onFailure, k.dtype(), k.device(), stream, k.shape());
            Tensor dv = newOutput(onFailure, k.dtype(), k.device(), stream, k.shape());
            callBackward(dout, q, k, v, out, lse, dq, dk, dv, options, stream);
            onFailure.releaseAll();
            return new AttentionGradients(dq, dk, dv);
        }
    }

    private static void runBackward(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor dq,
                                    Tensor dk, Tensor dv, AttentionOptions options, CudaStream stream) {
        AttentionChecks.backward(dout, q, k, v, out, lse, options, stream, dq, dk, dv);
        requireWritable(new Tensor[] {dq, dk, dv}, "dq", "dk", "dv");
        callBackward(dout, q, k, v, out, lse, dq, dk, dv, options, stream);
    }

    /** The native call, for arguments that passed {@link AttentionChecks}. */
    private static void callBackward(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor dq,
                                     Tensor dk, Tensor dv, AttentionOptions options, CudaStream stream) {
        try (Arena arena = Arena.ofConfined(); Leases leases = Leases.of(stream, dout, q, k, v, out, lse, dq, dk, dv)) {
            MemorySegment params = params(arena, options, q.size(3));
            NativeCalls.check(flashattn4j_h.fa4j_attention_backward(params, describe(dout, arena), describe(q, arena),
                    describe(k, arena), describe(v, arena), describe(out, arena), describe(lse, arena),
                    describe(dq, arena), describe(dk, arena), describe(dv, arena), leases.stream()));
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

    /**
     * A new output on {@code device}; CUDA memory is allocated in the order of the call's stream (the
     * default stream when {@code stream} is null), so the call can use it at once and its release later
     * is ordered after the call.
     */
    private static Tensor newOutput(TensorScope scope, DType dtype, Device device, CudaStream stream, long... shape) {
        CudaStream home = !device.isCuda() ? null : stream != null ? stream : CudaStream.defaultStream(device);
        return scope.track(Tensor.allocate(dtype, device, home, shape));
    }

    /** Outputs must accept writes. */
    private static void requireWritable(Tensor[] outputs, String... names) {
        for (int i = 0; i < outputs.length; i++) {
            if (outputs[i].isReadOnly()) {
                throw new FlashAttnException.InvalidArgument(names[i] + " is read-only (imported as such through DLPack)");
            }
        }
    }

    /** Leases on the stream and every tensor of a call; releases them all even if taking one fails. */
    private static final class Leases implements AutoCloseable {
        private final List<Storage.Lease> held = new ArrayList<>();
        private CudaStream.Lease stream = CudaStream.Lease.NONE;

        static Leases of(CudaStream stream, Tensor... tensors) {
            Leases leases = new Leases();
            try {
                if (stream != null) leases.stream = stream.lease();
                for (Tensor t : tensors) leases.held.add(t.lease());
                Device device = tensors[0].device();
                if (device.isCuda()) {
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
            for (Storage.Lease lease : held) lease.close();
            stream.close();
        }
    }
}
