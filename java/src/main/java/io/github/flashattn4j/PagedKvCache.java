package io.github.flashattn4j;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import java.util.Objects;

/**
 * A paged KV cache for a decode loop: key and value pages {@code [num_pages, page_size, heads_kv, head_dim]},
 * the sequences that live in them (each a list of pages and a length), a {@link PageAllocator} that hands out
 * the pages, and the block table and lengths a {@linkplain Attention#decode(Tensor, KvCache, DecodeOptions)
 * decode call} reads. It owns its tensors: {@link #close()} frees them.
 *
 * <pre>{@code
 * try (PagedKvCache cache = PagedKvCache.builder().dtype(DType.BFLOAT16).device(device)
 *         .kvHeads(8).headDim(128).pageSize(16).numPages(65536).maxSequences(32).maxSequenceLength(8192).build()) {
 *     int[] batch = new int[32];
 *     for (int b = 0; b < batch.length; b++) batch[b] = cache.newSequence();
 *     cache.append(batch, promptK, promptV);                      // [32, prompt, 8, 128] each
 *     for (int step = 0; step < 256; step++) {
 *         // q [32, 1, 32, 128]; kNew, vNew [32, 1, 8, 128]: appended, then attended, causal
 *         cache.decodeInto(batch, q, kNew, vNew, out, null, options);
 *     }
 *     for (int id : batch) cache.freeSequence(id);
 * }
 * }</pre>
 *
 * <p>Sequences are ids in {@code [0, maxSequences)}; a call names the sequences of its batch in order (batch
 * entry b is sequence {@code ids[b]}), so the batch can change from step to step. {@link #prepare} is the
 * building block: it gives the sequences the pages {@code newTokens} more positions need (all or nothing:
 * {@link OutOfPagesException}, nothing allocated) and writes their pages and lengths into the tables,
 * returning the {@link KvCache} of that batch; after the call succeeded, {@link #advance} adds the appended
 * tokens to the lengths. {@link #decodeInto} and {@link #append} do all three. Table rows are copied to the
 * tables' memory only when they changed (a new sequence in that batch entry, or a new page); the lengths of the
 * batch every call.
 *
 * <p>Thread-safe (every method locks the cache), but a call through the returned {@link KvCache} is not
 * ordered with a later {@code prepare} by the cache: run them on one thread, as a decode loop does. On CUDA
 * the tables are written by synchronous copies on the default stream (decode itself is not implemented on
 * CUDA yet).
 */
public final class PagedKvCache implements AutoCloseable {

    private final DType dtype;
    private final Device device;
    private final int kvHeads, headDim, pageSize, maxSequences, maxPagesPerSequence;
    private final PageAllocator allocator;
    private final Tensor kPages, vPages, blockTable, lengths;
    private final Arena arena = Arena.ofShared();
    private final MemorySegment tableRows;   // host mirror of the block table: [maxSequences, maxPagesPerSequence]
    private final MemorySegment lengthRows;  // host staging of the lengths: [maxSequences]

    // Per sequence id.
    private final int[][] pages;
    private final int[] pageCount, length;
    private final boolean[] live;
    // Which sequence, with how many pages, each batch row of the block table holds (-1: unknown).
    private final int[] rowSequence, rowPages;
    private boolean closed;

    private PagedKvCache(Builder b, PageAllocator allocator) {
        this.dtype = b.dtype;
        this.device = b.device;
        this.kvHeads = b.kvHeads;
        this.headDim = b.headDim;
        this.pageSize = b.pageSize;
        this.maxSequences = b.maxSequences;
        this.maxPagesPerSequence = (int) ((b.maxSequenceLength + (long) b.pageSize - 1) / b.pageSize);
        this.allocator = allocator;
        int numPages = allocator.capacity();
        Tensor k = null, v = null, table = null, lens = null;
        try {
            k = Tensor.zeros(dtype, device, numPages, pageSize, kvHeads, headDim);
            v = Tensor.zeros(dtype, device, numPages, pageSize, kvHeads, headDim);
            table = Tensor.zeros(DType.INT32, device, maxSequences, maxPagesPerSequence);
            lens = Tensor.zeros(DType.INT32, device, maxSequences);
        } catch (RuntimeException e) {
            for (Tensor t : new Tensor[] {k, v, table, lens}) if (t != null) t.close();
            arena.close();
            throw e;
        }
        this.kPages = k;
        this.vPages = v;
        this.blockTable = table;
        this.lengths = lens;
        this.tableRows = arena.allocate(ValueLayout.JAVA_INT, (long) maxSequences * maxPagesPerSequence);
        this.lengthRows = arena.allocate(ValueLayout.JAVA_INT, maxSequences);
        this.pages = new int[maxSequences][];
        this.pageCount = new int[maxSequences];
        this.length = new int[maxSequences];
        this.live = new boolean[maxSequences];
        this.rowSequence = new int[maxSequences];
        this.rowPages = new int[maxSequences];
        Arrays.fill(rowSequence, -1);
    }

    public static Builder builder() {
        return new Builder();
    }

    // ---------------------------------------------------------------------------------------------
    // Sequences
    // ---------------------------------------------------------------------------------------------

    /**
     * A new, empty sequence: the lowest free id.
     *
     * @throws IllegalStateException if all {@code maxSequences} ids are in use, or the cache is closed
     */
    public synchronized int newSequence() {
        requireOpen();
        for (int id = 0; id < maxSequences; id++) {
            if (!live[id]) {
                live[id] = true;
                pages[id] = new int[Math.min(maxPagesPerSequence, 4)];
                pageCount[id] = 0;
                length[id] = 0;
                return id;
            }
        }
        throw new IllegalStateException("all " + maxSequences + " sequences of the cache are in use");
    }

    /** Frees a sequence: its pages go back to the allocator and its id may be handed out again. */
    public synchronized void freeSequence(int id) {
        requireOpen();
        requireLive(id);
        for (int i = 0; i < pageCount[id]; i++) allocator.free(pages[id][i]);
        live[id] = false;
        pages[id] = null;
        pageCount[id] = 0;
        length[id] = 0;
        for (int r = 0; r < maxSequences; r++) if (rowSequence[r] == id) rowSequence[r] = -1;
    }

    /** The positions sequence {@code id} holds. */
    public synchronized int length(int id) {
        requireLive(id);
        return length[id];
    }

    /** The pages sequence {@code id} holds. */
    public synchronized int pageCount(int id) {
        requireLive(id);
        return pageCount[id];
    }

    /** Pages the allocator can still hand out. */
    public synchronized int freePages() {
        return allocator.available();
    }

    /** The most positions one sequence can hold: the block table's width times the page size. */
    public int maxSequenceLength() {
        return maxPagesPerSequence * pageSize;
    }

    public int pageSize() {
        return pageSize;
    }

    public int maxSequences() {
        return maxSequences;
    }

    /** The key pages {@code [num_pages, page_size, heads_kv, head_dim]} (owned by the cache). */
    public Tensor kPages() {
        return kPages;
    }

    /** The value pages (owned by the cache). */
    public Tensor vPages() {
        return vPages;
    }

    // ---------------------------------------------------------------------------------------------
    // Calls
    // ---------------------------------------------------------------------------------------------

    /**
     * Gives sequences {@code ids} (the batch, in order) the pages {@code newTokens} more positions need and
     * writes their pages and current lengths into the tables: the {@link KvCache} of that batch (no append
     * yet: add it with {@link KvCache#withAppend}). Lengths do not change until {@link #advance}.
     *
     * @throws OutOfPagesException                 if the allocator has fewer free pages than needed (nothing is
     *                                             allocated)
     * @throws FlashAttnException.InvalidArgument  if a sequence would grow past {@link #maxSequenceLength()}
     * @throws IllegalArgumentException            for an unknown or repeated id, more ids than sequences, or a
     *                                             negative {@code newTokens}
     */
    public synchronized KvCache prepare(int[] ids, int newTokens) {
        requireOpen();
        requireBatch(ids, newTokens);
        int needed = 0;
        for (int id : ids) needed += Math.max(0, pagesFor(length[id] + newTokens) - pageCount[id]);
        if (needed > allocator.available()) throw new OutOfPagesException(needed, allocator.available());
        allocatePages(ids, newTokens);
        int firstDirty = Integer.MAX_VALUE, lastDirty = -1;
        for (int r = 0; r < ids.length; r++) {
            int id = ids[r];
            lengthRows.setAtIndex(ValueLayout.JAVA_INT, r, length[id]);
            if (rowSequence[r] == id && rowPages[r] == pageCount[id]) continue;
            long row = (long) r * maxPagesPerSequence;
            for (int p = 0; p < maxPagesPerSequence; p++) {
                tableRows.setAtIndex(ValueLayout.JAVA_INT, row + p, p < pageCount[id] ? pages[id][p] : -1);
            }
            rowSequence[r] = id;
            rowPages[r] = pageCount[id];
            firstDirty = Math.min(firstDirty, r);
            lastDirty = r;
        }
        Tensor table = blockTable.slice(0, 0, ids.length), lens = lengths.slice(0, 0, ids.length);
        if (lastDirty >= 0) {
            long rowBytes = (long) maxPagesPerSequence * Integer.BYTES;
            blockTable.slice(0, firstDirty, lastDirty + 1)
                    .copyFrom(tableRows.asSlice(firstDirty * rowBytes, (lastDirty + 1 - firstDirty) * rowBytes));
        }
        lens.copyFrom(lengthRows.asSlice(0, (long) ids.length * Integer.BYTES));
        return KvCache.paged(kPages, vPages, table, lens);
    }

    /**
     * Adds {@code tokens} appended positions to each sequence of {@code ids}, after a call through
     * {@link #prepare}'s cache appended them.
     *
     * @throws IllegalArgumentException if a sequence has not the pages for them (no {@link #prepare} before)
     */
    public synchronized void advance(int[] ids, int tokens) {
        requireOpen();
        requireBatch(ids, tokens);
        for (int id : ids) {
            if (pagesFor(length[id] + tokens) > pageCount[id]) {
                throw new IllegalArgumentException("sequence " + id + " has no pages for " + tokens + " more positions (prepare first)");
            }
        }
        for (int id : ids) length[id] += tokens;
    }

    /**
     * One decode step of the batch {@code ids}: appends {@code kNew}, {@code vNew} ({@code [batch, seqlen_new,
     * heads_kv, head_dim]}) to the sequences and computes attention of {@code q} ({@code [batch, seqlen_q,
     * heads_q, head_dim]}) against their caches into {@code out} and {@code lse} (null: not written), as
     * {@link Attention#decodeInto(Tensor, KvCache, Tensor, Tensor, DecodeOptions)}; then advances the lengths.
     * If the call fails, the lengths stay (pages it reserved stay with their sequences).
     */
    public synchronized void decodeInto(int[] ids, Tensor q, Tensor kNew, Tensor vNew, Tensor out, Tensor lse,
                                        DecodeOptions options) {
        Objects.requireNonNull(kNew, "kNew");
        Objects.requireNonNull(vNew, "vNew");
        int tokens = newTokens(kNew);
        KvCache view = prepare(ids, tokens).withAppend(kNew, vNew);
        Attention.decodeInto(q, view, out, lse, options);
        advance(ids, tokens);
    }

    /**
     * Appends {@code kNew}, {@code vNew} ({@code [batch, seqlen_new, heads_kv, head_dim]}) to the sequences
     * {@code ids} without attending (a prompt whose attention was computed otherwise), and advances them.
     */
    public synchronized void append(int[] ids, Tensor kNew, Tensor vNew) {
        Objects.requireNonNull(kNew, "kNew");
        Objects.requireNonNull(vNew, "vNew");
        int tokens = newTokens(kNew);
        KvCache view = prepare(ids, tokens).withAppend(kNew, vNew);
        // A decode call without queries: it appends, and attends nothing.
        try (Tensor q = Tensor.empty(kNew.dtype(), kNew.device(), ids.length, 0, kvHeads, headDim);
             Tensor out = Tensor.empty(kNew.dtype(), kNew.device(), ids.length, 0, kvHeads, headDim)) {
            Attention.decodeInto(q, view, out, null, DecodeOptions.defaults());
        }
        advance(ids, tokens);
    }

    /** Frees the pages and tables; idempotent. Views and {@link KvCache}s of this cache are closed with it. */
    @Override
    public synchronized void close() {
        if (closed) return;
        closed = true;
        try (arena; lengths; blockTable; vPages) {
            kPages.close();
        }
    }

    @Override
    public synchronized String toString() {
        int sequences = 0;
        for (boolean l : live) if (l) sequences++;
        return "PagedKvCache[" + dtype + " " + device + ", page " + pageSize + " x " + kvHeads + " x " + headDim + ", "
                + allocator.available() + " of " + allocator.capacity() + " pages free, " + sequences + " sequences"
                + (closed ? ", closed" : "") + "]";
    }

    // ---------------------------------------------------------------------------------------------

    private int pagesFor(long positions) {
        return (int) ((positions + pageSize - 1) / pageSize);
    }

    private static int newTokens(Tensor kNew) {
        if (kNew.dim() != 4) {
            throw new FlashAttnException.InvalidArgument("kNew must be [batch, seqlen_new, heads_kv, head_dim], has shape "
                    + Arrays.toString(kNew.shape()));
        }
        return Math.toIntExact(kNew.size(1));
    }

    /** Allocates what each sequence needs; on a failure of the allocator gives back what this call took. */
    private void allocatePages(int[] ids, int newTokens) {
        int[] before = new int[ids.length];
        try {
            for (int r = 0; r < ids.length; r++) {
                int id = ids[r];
                before[r] = pageCount[id];
                int target = pagesFor(length[id] + newTokens);
                if (target > pages[id].length) pages[id] = Arrays.copyOf(pages[id], Math.min(maxPagesPerSequence, Math.max(target, 2 * pages[id].length)));
                while (pageCount[id] < target) pages[id][pageCount[id]++] = allocator.allocate();
            }
        } catch (RuntimeException e) {
            for (int r = 0; r < ids.length; r++) {
                int id = ids[r];
                while (pageCount[id] > before[r]) allocator.free(pages[id][--pageCount[id]]);
            }
            throw e;
        }
    }

    private void requireBatch(int[] ids, int newTokens) {
        Objects.requireNonNull(ids, "ids");
        if (newTokens < 0) throw new IllegalArgumentException("newTokens must be >= 0: " + newTokens);
        if (ids.length > maxSequences) throw new IllegalArgumentException(ids.length + " sequences in a batch; the cache holds " + maxSequences);
        boolean[] seen = new boolean[maxSequences];
        for (int id : ids) {
            requireLive(id);
            if (seen[id]) throw new IllegalArgumentException("sequence " + id + " appears twice in the batch");
            seen[id] = true;
            if ((long) length[id] + newTokens > maxSequenceLength()) {
                throw new FlashAttnException.InvalidArgument("appending " + newTokens + " tokens to sequence " + id + " (length "
                        + length[id] + ") goes past the cache's capacity of " + maxSequenceLength() + " positions per sequence");
            }
        }
    }

    private void requireLive(int id) {
        if (id < 0 || id >= maxSequences || !live[id]) throw new IllegalArgumentException("no sequence " + id + " in this cache");
    }

    private void requireOpen() {
        if (closed) throw new IllegalStateException("the KV cache is closed");
    }

    /**
     * Builds a {@link PagedKvCache}. Every size must be set (the allocator's capacity sets the page count when
     * an allocator is given).
     */
    public static final class Builder {
        private DType dtype;
        private Device device = Device.CPU;
        private int kvHeads, headDim, pageSize, numPages = -1, maxSequences, maxSequenceLength;
        private PageAllocator allocator;

        private Builder() {}

        /** The dtype of keys and values (float32, float16 or bfloat16). */
        public Builder dtype(DType dtype) {
            this.dtype = Objects.requireNonNull(dtype, "dtype");
            return this;
        }

        /** Where the pages live; the CPU by default. */
        public Builder device(Device device) {
            this.device = Objects.requireNonNull(device, "device");
            return this;
        }

        public Builder kvHeads(int kvHeads) {
            this.kvHeads = kvHeads;
            return this;
        }

        public Builder headDim(int headDim) {
            this.headDim = headDim;
            return this;
        }

        /** Positions per page: a multiple of 8 (16 and 256 are common). */
        public Builder pageSize(int pageSize) {
            this.pageSize = pageSize;
            return this;
        }

        /** Pages of the pool (with the default allocator). */
        public Builder numPages(int numPages) {
            this.numPages = numPages;
            return this;
        }

        /** Sequences that can live at once, and the largest batch of one call. */
        public Builder maxSequences(int maxSequences) {
            this.maxSequences = maxSequences;
            return this;
        }

        /** The longest sequence (rounded up to whole pages): the block table's width. */
        public Builder maxSequenceLength(int maxSequenceLength) {
            this.maxSequenceLength = maxSequenceLength;
            return this;
        }

        /** Another allocator than {@link PageAllocator#freeList(int)}; its capacity is the page count. */
        public Builder allocator(PageAllocator allocator) {
            this.allocator = Objects.requireNonNull(allocator, "allocator");
            return this;
        }

        /**
         * Allocates the pages (zeroed) and tables.
         *
         * @throws IllegalArgumentException       for a missing or invalid setting
         * @throws FlashAttnException.OutOfMemory if the memory cannot be allocated
         */
        public PagedKvCache build() {
            if (dtype == null || !dtype.isFloatingPoint()) throw new IllegalArgumentException("dtype must be float32, float16 or bfloat16: " + dtype);
            if (kvHeads < 1 || headDim < 1) throw new IllegalArgumentException("kvHeads and headDim must be >= 1: " + kvHeads + ", " + headDim);
            if (pageSize < 8 || pageSize % 8 != 0) throw new IllegalArgumentException("pageSize must be a positive multiple of 8: " + pageSize);
            if (maxSequences < 1 || maxSequenceLength < 1) {
                throw new IllegalArgumentException("maxSequences and maxSequenceLength must be >= 1: " + maxSequences + ", " + maxSequenceLength);
            }
            PageAllocator pool = allocator;
            if (pool == null) {
                if (numPages < 0) throw new IllegalArgumentException("numPages must be set (or an allocator given)");
                pool = PageAllocator.freeList(numPages);
            } else if (numPages >= 0 && numPages != pool.capacity()) {
                throw new IllegalArgumentException("numPages " + numPages + " differs from the allocator's capacity " + pool.capacity());
            }
            return new PagedKvCache(this, pool);
        }
    }
}
