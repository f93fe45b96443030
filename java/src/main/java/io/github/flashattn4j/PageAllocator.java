package io.github.flashattn4j;

import io.github.flashattn4j.internal.FreeListPageAllocator;

/**
 * Hands out the pages of a paged KV cache ({@link PagedKvCache}): page indices in {@code [0, capacity())}.
 * {@link #freeList(int)} is a simple one; a server with its own policy (prefix sharing, preemption, several
 * caches drawing on one pool) implements this interface and passes it to
 * {@link PagedKvCache.Builder#allocator}. Implementations need not be thread-safe: a {@link PagedKvCache}
 * calls its allocator under its own lock.
 */
public interface PageAllocator {

    /** The pages this allocator manages: indices {@code 0 .. capacity() - 1}. */
    int capacity();

    /** Pages that {@link #allocate()} can still hand out. */
    int available();

    /**
     * A free page, now in use.
     *
     * @throws OutOfPagesException if none is left
     */
    int allocate();

    /**
     * Returns a page that {@link #allocate()} handed out.
     *
     * @throws IllegalArgumentException if {@code page} is out of range or not in use
     */
    void free(int page);

    /**
     * An allocator of {@code pages} pages from a free list: the most recently freed page is handed out first
     * (its memory is the most likely to be cached). O(1) per page.
     *
     * @throws IllegalArgumentException if {@code pages} is negative
     */
    static PageAllocator freeList(int pages) {
        return new FreeListPageAllocator(pages);
    }
}
