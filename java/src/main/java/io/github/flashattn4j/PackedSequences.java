package io.github.flashattn4j;

import java.util.Objects;
import java.util.Optional;

/**
 * A batch of sequences of different lengths packed into one tensor, without padding, as
 * flash-attn's {@code flash_attn_varlen_func} takes them: the queries, or the keys, of a variable-length
 * ("varlen") attention call ({@link Attention#forward(PackedSequences, PackedSequences, Tensor, AttentionOptions)}).
 *
 * <ul>
 *   <li>{@code tokens}: {@code [total, heads, head_dim]}, the rows of every sequence one after another;</li>
 *   <li>{@code cuSeqlens}: int32 {@code [batch + 1]}, non-decreasing, from 0: sequence b is rows
 *       {@code cuSeqlens[b] .. cuSeqlens[b+1] - 1} (rows from {@code cuSeqlens[batch]} on belong to no
 *       sequence: their outputs are unspecified); on the device of the tokens;</li>
 *   <li>{@code maxSeqlen}: at least the longest sequence, or 0 to have the library derive it, which
 *       needs the offsets in host memory (CPU tensors); CUDA calls must give it;</li>
 *   <li>{@code usedLengths} (keys only, optional): int32 {@code [batch]}: sequence b attends only its
 *       first {@code usedLengths[b]} keys (flash-attn's {@code seqused_k}, for key caches with room to
 *       grow); the other keys get zero gradients.</li>
 * </ul>
 *
 * <p>Immutable; it holds references to tensors the caller owns and must keep open while calls use them.
 * The offsets and lengths are checked by the call (on the CPU, every value; on CUDA, the shapes, since
 * the values are not read on the host).
 */
public final class PackedSequences {

    private final Tensor tokens;
    private final Tensor cuSeqlens;
    private final long maxSeqlen;
    private final Tensor usedLengths;

    private PackedSequences(Tensor tokens, Tensor cuSeqlens, long maxSeqlen, Tensor usedLengths) {
        this.tokens = tokens;
        this.cuSeqlens = cuSeqlens;
        this.maxSeqlen = maxSeqlen;
        this.usedLengths = usedLengths;
    }

    /**
     * Sequences packed in {@code tokens} at the offsets {@code cuSeqlens}, the longest of which has at most
     * {@code maxSeqlen} rows (0: derived from the offsets, CPU tensors only).
     *
     * @throws IllegalArgumentException if {@code maxSeqlen} is negative
     */
    public static PackedSequences of(Tensor tokens, Tensor cuSeqlens, long maxSeqlen) {
        Objects.requireNonNull(tokens, "tokens");
        Objects.requireNonNull(cuSeqlens, "cuSeqlens");
        if (maxSeqlen < 0) throw new IllegalArgumentException("maxSeqlen must be >= 0 (0: derived): " + maxSeqlen);
        return new PackedSequences(tokens, cuSeqlens, maxSeqlen, null);
    }

    /**
     * These sequences with only the first {@code usedLengths[b]} rows of sequence b in use (int32
     * {@code [batch]}). Meaningful for keys only: a call refuses used lengths on the queries.
     */
    public PackedSequences withUsedLengths(Tensor usedLengths) {
        return new PackedSequences(tokens, cuSeqlens, maxSeqlen, Objects.requireNonNull(usedLengths, "usedLengths"));
    }

    /** The packed rows, {@code [total, heads, head_dim]}. */
    public Tensor tokens() {
        return tokens;
    }

    /** The int32 offsets {@code [batch + 1]}. */
    public Tensor cuSeqlens() {
        return cuSeqlens;
    }

    /** The bound on the sequence lengths given; 0 if the library derives it. */
    public long maxSeqlen() {
        return maxSeqlen;
    }

    /** The int32 used lengths {@code [batch]}, if set. */
    public Optional<Tensor> usedLengths() {
        return Optional.ofNullable(usedLengths);
    }

    /** Whether {@code o} packs the same tensor objects with the same bound. */
    @Override
    public boolean equals(Object o) {
        return o instanceof PackedSequences p && tokens == p.tokens && cuSeqlens == p.cuSeqlens && maxSeqlen == p.maxSeqlen
                && usedLengths == p.usedLengths;
    }

    @Override
    public int hashCode() {
        return Objects.hash(System.identityHashCode(tokens), System.identityHashCode(cuSeqlens), maxSeqlen,
                System.identityHashCode(usedLengths));
    }

    @Override
    public String toString() {
        return "PackedSequences[tokens=" + tokens + ", cuSeqlens=" + cuSeqlens + ", maxSeqlen=" + maxSeqlen
                + (usedLengths == null ? "" : ", usedLengths=" + usedLengths) + "]";
    }
}
