package io.github.flashattn4j;

import java.util.Arrays;
import java.util.Locale;
import java.util.Objects;

/**
 * What Java checks of an attention call before asking the native library: the things only Java can know
 * (null references, closed tensors and streams, a stream of another device, an int32 q)
 * and the one shape fact needed to describe the outputs a call would allocate (q's rank).
 *
 * <p>Every other rule (shapes, dtypes, heads, head dim, scale, features, sequence offsets, what the kernels
 * support) has one definition, in the native library (native/src/core/attention_validation.cpp and the
 * dispatch unit): allocating calls and support queries ask {@code fa4j_attention_support} with the outputs
 * described but not allocated, which answers with the status and message the call itself would fail
 * with, so a call the library would refuse costs no allocation and is refused for its first real fault
 * (a head dim of 0, not the infinite default scale {@code 1/sqrt(0)} that follows from it).
 */
final class AttentionChecks {

    private AttentionChecks() {}

    /**
     * Checks a call's tensors ({@link AttentionCall#tensors}: its arguments, then the outputs of an into-call,
     * whose shapes are the native library's business) for null, closing and device, and q's rank.
     */
    static void check(AttentionCall call, CudaStream stream, Tensor[] tensors) {
        Objects.requireNonNull(call.options(), "options");
        checkTensors(call, tensors, stream);
        if (call.usedLengthsQ() != null) {
            throw invalid("used lengths (seqused) apply to keys only; the queries' PackedSequences has them");
        }
        int rank = call.varlen() ? 3 : 4;
        requireFloating(call.q(), "q", rank, rank == 4 ? "[batch, seqlen, heads, head_dim]" : "[total, heads, head_dim] (varlen)");
    }

    /**
     * Every tensor non-null (named in the exception), open, and on one device; the stream, if given, on it too.
     * {@code tensors} is {@code call}'s {@link NativeAttentionCall#tensors}, which names them.
     */
    static void checkTensors(NativeAttentionCall call, Tensor[] tensors, CudaStream stream) {
        for (int i = 0; i < tensors.length; i++) {
            if (tensors[i] == null) throw new NullPointerException(call.tensorName(i));
        }
        requireOpen(call, tensors);
        requireOneDevice(call, tensors, stream);
    }

    /**
     * A tensor of attention data (any dtype but int32, the dtype of sequence lengths; which data dtypes a call
     * takes is the native library's rule) of the given rank: what the shapes of the outputs a call allocates
     * are derived from.
     */
    static void requireFloating(Tensor t, String name, int rank, String expected) {
        if (t.dtype() == DType.INT32) {
            throw new FlashAttnException.Unsupported(name + ": dtype " + t.dtype().name().toLowerCase(Locale.ROOT)
                    + " is not float32, float16 or bfloat16 (nor a quantized dtype with a quantization mode)");
        }
        if (t.dim() != rank) {
            throw invalid(name + " must have " + rank + " dimensions, has " + t.dim() + " (shape " + Arrays.toString(t.shape())
                    + "; expected " + expected + ")");
        }
    }

    /** Outputs, and tensors a call writes in place, must be writable. */
    static void requireWritable(Tensor t, String name) {
        if (t.isReadOnly()) throw invalid(name + " is read-only (imported as such through DLPack)");
    }

    /** All tensors on one device (the first one's), and the stream, if given, on that device too. */
    private static void requireOneDevice(NativeAttentionCall call, Tensor[] tensors, CudaStream stream) {
        Device device = tensors[0].device();
        for (int i = 1; i < tensors.length; i++) {
            Device other = tensors[i].device();
            if (!other.equals(device)) {
                throw invalid(call.tensorName(i) + " is on " + other + " but " + call.tensorName(0) + " is on " + device
                        + " (all tensors of one call must share a device)");
            }
        }
        if (stream != null) stream.requireUsableOn(device, "the tensors");
    }

    private static void requireOpen(NativeAttentionCall call, Tensor[] tensors) {
        // Early and racy (a tensor may be closed right after): the leases of the call are the real guard.
        for (int i = 0; i < tensors.length; i++) {
            if (tensors[i].isClosed()) throw new IllegalStateException(call.tensorName(i) + " is closed: " + tensors[i]);
        }
    }

    static FlashAttnException.InvalidArgument invalid(String message) {
        return new FlashAttnException.InvalidArgument(message);
    }
}
