package io.github.flashattn4j;

import java.util.Objects;
import java.util.Optional;

/**
 * The keys and values a {@linkplain Attention#decode(Tensor, KvCache, DecodeOptions) decode call} attends:
 * a KV cache per sequence, optionally the new tokens' keys and values to append to it first, and optionally a
 * prefix all sequences share. flash-attn's {@code flash_attn_with_kvcache} semantics.
 *
 * <ul>
 *   <li>{@linkplain #dense dense}: {@code k}, {@code v} {@code [batch, capacity, heads_kv, head_dim]}, sequence b's
 *       position p at {@code [b, p]};</li>
 *   <li>{@linkplain #paged paged}: {@code kPages}, {@code vPages} {@code [num_pages, page_size, heads_kv, head_dim]}
 *       (page size a multiple of 8) and an int32 block table {@code [batch, max_pages]}: position p of sequence b
 *       is slot {@code p % page_size} of page {@code blockTable[b, p / page_size]}; entries past a sequence's
 *       used pages are never read (-1 is fine). {@link PagedKvCache} manages such a cache and its pages;</li>
 *   <li>{@code cacheSeqlens}: int32 {@code [batch]}, the positions each sequence's cache holds before the call
 *       (L_b);</li>
 *   <li>{@linkplain #withAppend appended} {@code kNew}, {@code vNew} {@code [batch, seqlen_new, heads_kv, head_dim]}:
 *       written into the caches at positions {@code L_b .. L_b + seqlen_new - 1} by the call, in place, before it
 *       attends; the call does not change {@code cacheSeqlens} (advance them yourself, or let
 *       {@link PagedKvCache} do it);</li>
 *   <li>a {@linkplain #withSharedPrefix shared prefix} {@code [prefix_len, heads_kv, head_dim]}: keys and values
 *       before every sequence's own, stored once and read once for the whole batch (cascade attention,
 *       Hydragen). Every query attends all of it; causal masking applies to the sequence's own keys. Windows
 *       and ALiBi are refused with a prefix ({@link FlashAttnException.Unsupported}).</li>
 * </ul>
 * Sequence b attends {@code L_b + seqlen_new} positions of its cache (after the prefix, if any). Everything
 * is checked by the call: for CPU tensors the lengths and block table are read and refused if a length
 * exceeds the capacity, an append goes past it, an entry of a used page is no page of the cache, or a page
 * an append writes is used anywhere else in the call; nothing is written then. (CUDA: not implemented yet;
 * device metadata will be clamped by the kernels and bad values reported at the next synchronising call.)
 *
 * <p>Immutable; it holds references to tensors the caller owns and must keep open while calls use them.
 */
public final class KvCache {

    private final Tensor k;
    private final Tensor v;
    private final Tensor blockTable;
    private final Tensor cacheSeqlens;
    private final Tensor kNew;
    private final Tensor vNew;
    private final Tensor prefixK;
    private final Tensor prefixV;

    private KvCache(Tensor k, Tensor v, Tensor blockTable, Tensor cacheSeqlens, Tensor kNew, Tensor vNew, Tensor prefixK,
                    Tensor prefixV) {
        this.k = k;
        this.v = v;
        this.blockTable = blockTable;
        this.cacheSeqlens = cacheSeqlens;
        this.kNew = kNew;
        this.vNew = vNew;
        this.prefixK = prefixK;
        this.prefixV = prefixV;
    }

    /** Dense caches {@code [batch, capacity, heads_kv, head_dim]} with int32 lengths {@code [batch]}. */
    public static KvCache dense(Tensor k, Tensor v, Tensor cacheSeqlens) {
        return new KvCache(Objects.requireNonNull(k, "k"), Objects.requireNonNull(v, "v"), null,
                Objects.requireNonNull(cacheSeqlens, "cacheSeqlens"), null, null, null, null);
    }

    /**
     * Paged caches {@code [num_pages, page_size, heads_kv, head_dim]} with an int32 block table
     * {@code [batch, max_pages]} and int32 lengths {@code [batch]}.
     */
    public static KvCache paged(Tensor kPages, Tensor vPages, Tensor blockTable, Tensor cacheSeqlens) {
        return new KvCache(Objects.requireNonNull(kPages, "kPages"), Objects.requireNonNull(vPages, "vPages"),
                Objects.requireNonNull(blockTable, "blockTable"), Objects.requireNonNull(cacheSeqlens, "cacheSeqlens"),
                null, null, null, null);
    }

    /**
     * These caches with {@code kNew}, {@code vNew} ({@code [batch, seqlen_new, heads_kv, head_dim]}) appended by
     * the call, in place, before it attends.
     */
    public KvCache withAppend(Tensor kNew, Tensor vNew) {
        return new KvCache(k, v, blockTable, cacheSeqlens, Objects.requireNonNull(kNew, "kNew"),
                Objects.requireNonNull(vNew, "vNew"), prefixK, prefixV);
    }

    /** These caches without an append. */
    public KvCache withoutAppend() {
        return new KvCache(k, v, blockTable, cacheSeqlens, null, null, prefixK, prefixV);
    }

    /** These caches after a prefix {@code [prefix_len, heads_kv, head_dim]} that every sequence shares. */
    public KvCache withSharedPrefix(Tensor prefixK, Tensor prefixV) {
        return new KvCache(k, v, blockTable, cacheSeqlens, kNew, vNew, Objects.requireNonNull(prefixK, "prefixK"),
                Objects.requireNonNull(prefixV, "prefixV"));
    }

    /** The key cache: dense {@code [batch, capacity, heads_kv, head_dim]} or pages. */
    public Tensor k() {
        return k;
    }

    /** The value cache, shaped as {@link #k()}. */
    public Tensor v() {
        return v;
    }

    /** The block table of paged caches; empty for dense ones. */
    public Optional<Tensor> blockTable() {
        return Optional.ofNullable(blockTable);
    }

    public boolean isPaged() {
        return blockTable != null;
    }

    /** The int32 cache lengths {@code [batch]} before the call. */
    public Tensor cacheSeqlens() {
        return cacheSeqlens;
    }

    /** The appended keys, if any. */
    public Optional<Tensor> kNew() {
        return Optional.ofNullable(kNew);
    }

    /** The appended values, if any. */
    public Optional<Tensor> vNew() {
        return Optional.ofNullable(vNew);
    }

    /** The shared prefix's keys, if any. */
    public Optional<Tensor> prefixK() {
        return Optional.ofNullable(prefixK);
    }

    /** The shared prefix's values, if any. */
    public Optional<Tensor> prefixV() {
        return Optional.ofNullable(prefixV);
    }

    /** Whether {@code o} holds the same tensor objects. */
    @Override
    public boolean equals(Object o) {
        return o instanceof KvCache c && k == c.k && v == c.v && blockTable == c.blockTable && cacheSeqlens == c.cacheSeqlens
                && kNew == c.kNew && vNew == c.vNew && prefixK == c.prefixK && prefixV == c.prefixV;
    }

    @Override
    public int hashCode() {
        int h = 1;
        for (Tensor t : new Tensor[] {k, v, blockTable, cacheSeqlens, kNew, vNew, prefixK, prefixV}) h = 31 * h + System.identityHashCode(t);
        return h;
    }

    @Override
    public String toString() {
        return "KvCache[" + (isPaged() ? "paged k=" + k + ", blockTable=" + blockTable : "dense k=" + k) + ", cacheSeqlens="
                + cacheSeqlens + (kNew != null ? ", kNew=" + kNew : "") + (prefixK != null ? ", prefixK=" + prefixK : "") + "]";
    }
}
