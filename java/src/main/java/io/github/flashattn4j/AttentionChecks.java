package io.github.flashattn4j;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Objects;

/**
 * The checks of an attention call that need no output tensor, made in Java before anything is allocated
 * or leased: a call the library would refuse then costs no allocation of outputs sized by nonsense
 * inputs, and is refused for its first real fault (a head dim of 0, not the infinite default scale
 * {@code 1/sqrt(0)} that follows from it).
 *
 * <p>The native library remains the authority: it validates every call in full (outputs, strides,
 * overlaps, descriptors, sequence offsets, features, what the kernels support) whatever passed here. These
 * checks repeat only the rules on ranks, dtypes, shapes, heads, head dim, scale and the shapes of the
 * varlen and ALiBi vectors that the allocating entry points need before allocating, with the native
 * library's exception types and messages (native/src/core/attention_validation.cpp and tensor_checks.cpp);
 * a rule that drifted would at worst be caught twice, never let a call through. The support query
 * ({@link Attention#checkForward}) runs them too, so that it reports the message the call would throw.
 *
 * <p>Why not leave everything to {@code fa4j_attention_support} before allocating? Now that it also returns
 * the status the call would fail with, it could: describing the unallocated outputs needs well-formed
 * input ranks, which these checks establish first. Moving the remaining rules to the native query is the
 * next step (one definition of each rule).
 */
final class AttentionChecks {

    // Native kHeadDimMultiple and kMaxHeadDim.
    private static final long HEAD_DIM_MULTIPLE = 8;
    private static final long MAX_HEAD_DIM = 256;

    private AttentionChecks() {}

    /**
     * Checks a call's inputs and the tensors' devices; {@code outputs} (out, lse or dq, dk, dv; absent for
     * the allocating calls) are only checked for null, closing and device, their shapes being the native
     * library's business.
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
        int rank = call.varlen() ? 3 : 4;
        AttentionShape s = qkv(call, rank);
        if (call.backward()) {
            seqLike(call.dout(), "dout", call.q(), s, rank);
            seqLike(call.out(), "out", call.q(), s, rank);
            requireRank(call.lse(), "lse", rank - 1);
            if (call.lse().dtype() != DType.FLOAT32) throw invalid("lse must be float32");
            if (call.varlen()) requireShape(call.lse(), "lse", s.headsQ, s.seqQ);
            else requireShape(call.lse(), "lse", s.batch, s.headsQ, s.seqQ);
        }
        requireScale(call.options(), s.headDim);
        long batch = call.varlen() ? varlenVectors(call) : s.batch;
        call.options().alibiSlopes().ifPresent(slopes -> alibi(slopes, batch, s.headsQ));
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

    /**
     * Sizes of the problem; for varlen calls, batch is unknown here (-1) and the sequence lengths are the
     * packed totals.
     */
    private record AttentionShape(long batch, long seqQ, long seqK, long headsQ, long headsKv, long headDim) {}

    /** Native {@code check_qkv}. */
    private static AttentionShape qkv(AttentionCall call, int rank) {
        Tensor q = call.q(), k = call.k(), v = call.v();
        if (!q.dtype().isFloatingPoint()) {
            throw new FlashAttnException.Unsupported("q: dtype " + dtypeName(q.dtype()) + " is not float32, float16 or bfloat16");
        }
        requireRank(q, "q", rank);
        requireRank(k, "k", rank);
        requireRank(v, "v", rank);
        requireDtypeOfQ(k, "k", q);
        requireDtypeOfQ(v, "v", q);
        AttentionShape s;
        if (rank == 3) {
            s = new AttentionShape(-1, q.size(0), k.size(0), q.size(1), k.size(1), q.size(2));
            requireShape(k, "k", s.seqK, s.headsKv, s.headDim);
            requireShape(v, "v", s.seqK, s.headsKv, s.headDim);
        } else {
            s = new AttentionShape(q.size(0), q.size(1), k.size(1), q.size(2), k.size(2), q.size(3));
            requireShape(k, "k", s.batch, k.size(1), k.size(2), s.headDim);
            requireShape(v, "v", s.batch, s.seqK, s.headsKv, s.headDim);
        }
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

    /** Native {@code check_varlen}'s descriptor checks (not the values, read natively); returns the batch. */
    private static long varlenVectors(AttentionCall call) {
        Tensor cuQ = call.cuSeqlensQ();
        if (cuQ.dim() != 1 || cuQ.size(0) < 1) throw invalid("cu_seqlens_q must be a 1-d int32 tensor of batch + 1 >= 1 elements");
        long batch = cuQ.size(0) - 1;
        int32Vector(cuQ, "cu_seqlens_q", batch + 1);
        int32Vector(call.cuSeqlensK(), "cu_seqlens_k", batch + 1);
        if (call.usedLengthsK() != null) int32Vector(call.usedLengthsK(), "seqused_k", batch);
        return batch;
    }

    private static void int32Vector(Tensor t, String name, long length) {
        if (t.dim() != 1) throw invalid(name + " must be a 1-d int32 tensor with shape and strides");
        if (t.dtype() != DType.INT32) throw invalid(name + " must be int32");
        if (t.size(0) != length) throw invalid(name + " " + describe(t) + " must have " + length + " elements");
    }

    /** Native {@code check_features}' ALiBi checks. */
    private static void alibi(Tensor slopes, long batch, long headsQ) {
        if (slopes.dim() != 1 && slopes.dim() != 2) throw invalid("alibi_slopes must be float32 [heads_q] or [batch, heads_q]");
        if (slopes.dtype() != DType.FLOAT32) throw invalid("alibi_slopes must be float32");
        if (slopes.dim() == 1) requireShape(slopes, "alibi_slopes", headsQ);
        else requireShape(slopes, "alibi_slopes", batch, headsQ);
    }

    /** Native {@code check_seq_like} for a tensor shaped like q. */
    private static void seqLike(Tensor t, String name, Tensor q, AttentionShape s, int rank) {
        requireRank(t, name, rank);
        requireDtypeOfQ(t, name, q);
        if (rank == 3) requireShape(t, name, s.seqQ, s.headsQ, s.headDim);
        else requireShape(t, name, s.batch, s.seqQ, s.headsQ, s.headDim);
    }

    private static void requireScale(AttentionOptions options, long headDim) {
        // Finite for every head dim accepted above; checked anyway, as the native library does.
        if (!Float.isFinite(options.softmaxScale(headDim))) throw invalid("softmax_scale must be finite");
    }

    private static void requireRank(Tensor t, String name, int rank) {
        if (t.dim() != rank) {
            String expected = switch (rank) {
                case 4 -> "[batch, seqlen, heads, head_dim]";
                case 3 -> name.equals("lse") ? "[batch, heads_q, seqlen_q]" : "[total, heads, head_dim] (varlen)";
                default -> "[heads_q, total_q] (varlen)";
            };
            throw invalid(name + " must have " + rank + " dimensions, has " + t.dim() + " (shape " + Arrays.toString(t.shape())
                    + "; expected " + expected + ")");
        }
    }

    private static void requireDtypeOfQ(Tensor t, String name, Tensor q) {
        if (t.dtype() != q.dtype()) throw invalid(name + " must have the dtype of q (" + dtypeName(q.dtype()) + ")");
    }

    private static void requireShape(Tensor t, String name, long... expected) {
        if (!Arrays.equals(t.shape(), expected)) {
            throw invalid(name + " " + describe(t) + " does not match the expected shape " + Arrays.toString(expected));
        }
    }

    private static String describe(Tensor t) {
        return "shape " + Arrays.toString(t.shape()) + " strides " + Arrays.toString(t.strides());
    }

    private static void requireOpen(List<Tensor> tensors, List<String> names) {
        // Early and racy (a tensor may be closed right after): the leases of the call are the real guard.
        for (int i = 0; i < tensors.size(); i++) {
            if (tensors.get(i).isClosed()) throw new IllegalStateException(names.get(i) + " is closed: " + tensors.get(i));
        }
    }

    private static String dtypeName(DType dtype) {
        return dtype.name().toLowerCase(Locale.ROOT);
    }

    private static FlashAttnException.InvalidArgument invalid(String message) {
        return new FlashAttnException.InvalidArgument(message);
    }
}
