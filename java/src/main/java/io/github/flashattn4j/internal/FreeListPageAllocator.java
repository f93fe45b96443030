package io.github.flashattn4j.internal;

import io.github.flashattn4j.OutOfPagesException;
import io.github.flashattn4j.PageAllocator;

/** {@link PageAllocator#freeList(int)}: a stack of free pages and a flag per page (double frees refused). */
public final class FreeListPageAllocator implements PageAllocator {

    private final int[] free;
    private final boolean[] inUse;
    private int top;

    public FreeListPageAllocator(int pages) {
        if (pages < 0) throw new IllegalArgumentException("pages must be >= 0: " + pages);
        free = new int[pages];
        inUse = new boolean[pages];
        // Page 0 on top: a fresh cache fills its pages in order.
        for (int i = 0; i < pages; i++) free[i] = pages - 1 - i;
        top = pages;
    }

    @Override
    public int capacity() {
        return free.length;
    }

    @Override
    public int available() {
        return top;
    }

    @Override
    public int allocate() {
        if (top == 0) throw new OutOfPagesException(1, 0);
        int page = free[--top];
        inUse[page] = true;
        return page;
    }

    @Override
    public void free(int page) {
        if (page < 0 || page >= inUse.length) throw new IllegalArgumentException("page " + page + " is not in 0.." + (inUse.length - 1));
        if (!inUse[page]) throw new IllegalArgumentException("page " + page + " is not in use (freed twice?)");
        inUse[page] = false;
        free[top++] = page;
    }

    @Override
    public String toString() {
        return "FreeListPageAllocator[" + top + " of " + free.length + " free]";
    }
}
