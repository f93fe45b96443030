package io.github.flashattn4j;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
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
     * Checks a call's tensors for null, closing and device, and q's rank; {@code outputs} (out, lse or dq,
     * dk, dv; absent for the allocating calls) likewise, their shapes being the native library's business.
     */
    static void check(AttentionCall call, CudaStream stream, Tensor... outputs) {
        Objects.requireNonNull(call.options(), "options");
        List<String> names = new ArrayList<>(call.argumentNames());
        List<Tensor> all = new ArrayList<>(call.arguments());
        names.addAll(call.outputNames().subList(0, outputs.length));
        all.addAll(Arrays.asList(outputs));
        for (int i = 0; i < all.size(); i++) Objects.requireNonNull(all.get(i), names.get(i));
        requireOpen(all, names);
        requireOneDevice(all, names, stream);
        if (call.usedLengthsQ() != null) {
            throw invalid("used lengths (seqused) apply to keys only; the queries' PackedSequences has them");
        }
        Tensor q = call.q();
        if (q.dtype() == DType.INT32) {
            throw new FlashAttnException.Unsupported("q: dtype " + q.dtype().name().toLowerCase(Locale.ROOT)
                    + " is not float32, float16 or bfloat16");
        }
        int rank = call.varlen() ? 3 : 4;
        if (q.dim() != rank) {
            String expected = rank == 4 ? "[batch, seqlen, heads, head_dim]" : "[total, heads, head_dim] (varlen)";
            throw invalid("q must have " + rank + " dimensions, has " + q.dim() + " (shape " + Arrays.toString(q.shape())
                    + "; expected " + expected + ")");
        }
    }

    /** All tensors on one device (the first one's), and the stream, if given, on that device too. */
    static void requireOneDevice(List<Tensor> tensors, List<String> names, CudaStream stream) {
        Device device = tensors.get(0).device();
        for (int i = 1; i < tensors.size(); i++) {
            Device other = tensors.get(i).device();
            if (!other.equals(device)) {
                throw invalid(names.get(i) + " is on " + other + " but " + names.get(0) + " is on " + device
                        + " (all tensors of one call must share a device)");
            }
        }
        if (stream != null) stream.requireUsableOn(device, "the tensors");
    }

    private static void requireOpen(List<Tensor> tensors, List<String> names) {
        // Early and racy (a tensor may be closed right after): the leases of the call are the real guard.
        for (int i = 0; i < tensors.size(); i++) {
            if (tensors.get(i).isClosed()) throw new IllegalStateException(names.get(i) + " is closed: " + tensors.get(i));
        }
    }

    private static FlashAttnException.InvalidArgument invalid(String message) {
        return new FlashAttnException.InvalidArgument(message);
    }
}
