package io.github.flashattn4j;

import java.util.Arrays;
import java.util.Locale;
import java.util.Objects;

/**
 * The checks of an attention call that need no output tensor, made in Java before anything is allocated
 * or leased: a call the library would refuse then costs no allocation of outputs sized by nonsense
 * inputs, and is refused for its first real fault (a head dim of 0, not the infinite default scale
 * {@code 1/sqrt(0)} that follows from it).
 *
 * <p>The native library remains the authority: it validates every call in full (outputs, strides,
 * overlaps, descriptors) whatever passed here. These checks repeat only the few rules on ranks, dtypes,
 * shapes, heads, head dim and scale that the allocating entry points need before allocating, with the
 * native library's exception types and messages (native/src/core/attention_validation.cpp and
 * tensor_checks.cpp); a rule that drifted would at worst be caught twice, never let a call through.
 */
final class AttentionChecks {

    // Native kHeadDimMultiple and kMaxHeadDim.
    private static final long HEAD_DIM_MULTIPLE = 8;
    private static final long MAX_HEAD_DIM = 256;

    private AttentionChecks() {}

    /**
     * Checks a forward call's inputs and the tensors' devices; {@code outputs} (out, lse) are only checked
     * for null, closing and device, their shapes being the native library's business.
     */
    static void forward(Tensor q, Tensor k, Tensor v, AttentionOptions options, CudaStream stream, Tensor... outputs) {
        Objects.requireNonNull(options, "options");
        Tensor[] all = concat(new Tensor[] {q, k, v}, outputs);
        String[] names = {"q", "k", "v", "out", "lse"};
        requireNonNull(all, names);
        requireOpen(all, names);
        requireOneDevice(all, names, stream);
        AttentionShape s = qkv(q, k, v);
        requireScale(options, s.headDim);
    }

    /**
     * Checks a backward call's inputs (dout, q, k, v, out, lse) and the tensors' devices; {@code outputs}
     * (dq, dk, dv) are only checked for null, closing and device.
     */
    static void backward(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, AttentionOptions options,
                         CudaStream stream, Tensor... outputs) {
        Objects.requireNonNull(options, "options");
        Tensor[] all = concat(new Tensor[] {dout, q, k, v, out, lse}, outputs);
        String[] names = {"dout", "q", "k", "v", "out", "lse", "dq", "dk", "dv"};
        requireNonNull(all, names);
        requireOpen(all, names);
        requireOneDevice(all, names, stream);
        AttentionShape s = qkv(q, k, v);
        seqLike(dout, "dout", q, s);
        seqLike(out, "out", q, s);
        requireRank(lse, "lse", 3);
        if (lse.dtype() != DType.FLOAT32) throw invalid("lse must be float32");
        requireShape(lse, "lse", s.batch, s.headsQ, s.seqQ);
        requireScale(options, s.headDim);
    }

    /** All tensors on one device (the first one's), and the stream, if given, on that device too. */
    static void requireOneDevice(Tensor[] tensors, String[] names, CudaStream stream) {
        Device device = tensors[0].device();
        for (int i = 1; i < tensors.length; i++) {
            Device other = tensors[i].device();
            if (!other.equals(device)) {
                throw invalid(names[i] + " is on " + other + " but " + names[0] + " is on " + device
                        + " (all tensors of one call must share a device)");
            }
        }
        if (stream != null) stream.requireUsableOn(device, "the tensors");
    }

    private record AttentionShape(long batch, long seqQ, long seqK, long headsQ, long headsKv, long headDim) {}

    /** Native {@code check_qkv}. */
    private static AttentionShape qkv(Tensor q, Tensor k, Tensor v) {
        requireRank(q, "q", 4);
        requireRank(k, "k", 4);
        requireRank(v, "v", 4);
        requireDtypeOfQ(k, "k", q);
        requireDtypeOfQ(v, "v", q);
        AttentionShape s = new AttentionShape(q.size(0), q.size(1), k.size(1), q.size(2), k.size(2), q.size(3));
        requireShape(k, "k", s.batch, k.size(1), k.size(2), s.headDim);
        requireShape(v, "v", s.batch, s.seqK, s.headsKv, s.headDim);
        if (s.headsQ < 1 || s.headsKv < 1) throw invalid("the number of heads of q, k and v must be at least 1");
        if (s.headsQ % s.headsKv != 0) {
            throw invalid("heads of q (" + s.headsQ + ") must be a multiple of heads of k and v (" + s.headsKv + ")");
        }
        if (s.headDim < HEAD_DIM_MULTIPLE || s.headDim > MAX_HEAD_DIM || s.headDim % HEAD_DIM_MULTIPLE != 0) {
            throw new FlashAttnException.Unsupported("head_dim " + s.headDim + " is not supported: it must be a multiple of "
                    + HEAD_DIM_MULTIPLE + " between " + HEAD_DIM_MULTIPLE + " and " + MAX_HEAD_DIM);
        }
        return s;
    }

    /** Native {@code check_seq_like} for a tensor shaped like q. */
    private static void seqLike(Tensor t, String name, Tensor q, AttentionShape s) {
        requireRank(t, name, 4);
        requireDtypeOfQ(t, name, q);
        requireShape(t, name, s.batch, s.seqQ, s.headsQ, s.headDim);
    }

    private static void requireScale(AttentionOptions options, long headDim) {
        // Finite for every head dim accepted above; checked anyway, as the native library does.
        if (!Float.isFinite(options.softmaxScale(headDim))) throw invalid("softmax_scale must be finite");
    }

    private static void requireRank(Tensor t, String name, int rank) {
        if (t.dim() != rank) {
            throw invalid(name + " must have " + rank + " dimensions, has " + t.dim() + " (shape " + Arrays.toString(t.shape())
                    + "; expected " + (rank == 4 ? "[batch, seqlen, heads, head_dim]" : "[batch, heads_q, seqlen_q]") + ")");
        }
    }

    private static void requireDtypeOfQ(Tensor t, String name, Tensor q) {
        if (t.dtype() != q.dtype()) throw invalid(name + " must have the dtype of q (" + dtypeName(q.dtype()) + ")");
    }

    private static void requireShape(Tensor t, String name, long... expected) {
        if (!Arrays.equals(t.shape(), expected)) {
            throw invalid(name + " shape " + Arrays.toString(t.shape()) + " strides " + Arrays.toString(t.strides())
                    + " does not match the expected shape " + Arrays.toString(expected));
        }
    }

    private static void requireNonNull(Tensor[] tensors, String[] names) {
        for (int i = 0; i < tensors.length; i++) Objects.requireNonNull(tensors[i], names[i]);
    }

    private static void requireOpen(Tensor[] tensors, String[] names) {
        // Early and racy (a tensor may be closed right after): the leases of the call are the real guard.
        for (int i = 0; i < tensors.length; i++) {
            if (tensors[i].isClosed()) throw new IllegalStateException(names[i] + " is closed: " + tensors[i]);
        }
    }

    private static String dtypeName(DType dtype) {
        return dtype.name().toLowerCase(Locale.ROOT);
    }

    private static FlashAttnException.InvalidArgument invalid(String message) {
        return new FlashAttnException.InvalidArgument(message);
    }

    private static Tensor[] concat(Tensor[] a, Tensor[] b) {
        Tensor[] all = Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, all, a.length, b.length);
        return all;
    }
}
