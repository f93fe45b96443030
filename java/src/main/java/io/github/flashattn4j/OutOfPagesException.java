package io.github.flashattn4j;

/**
 * A paged KV cache has fewer free pages than a request needs ({@link PagedKvCache}, {@link PageAllocator}).
 * Nothing was allocated for the request; a server typically frees or preempts a sequence and tries again.
 */
public final class OutOfPagesException extends RuntimeException {

    private static final long serialVersionUID = 1L;

    private final int requested;
    private final int available;

    /**
     * @param requested pages the request needed
     * @param available pages that were free
     */
    public OutOfPagesException(int requested, int available) {
        super("out of KV cache pages: " + requested + " needed, " + available + " free");
        this.requested = requested;
        this.available = available;
    }

    /** Pages the request needed. */
    public int requested() {
        return requested;
    }

    /** Pages that were free. */
    public int available() {
        return available;
    }
}
