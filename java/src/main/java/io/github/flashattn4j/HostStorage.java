package io.github.flashattn4j;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.concurrent.atomic.AtomicReference;

/**
 * Host memory: a zero-filled, 64-byte aligned native buffer of the library's (or one it adopted through
 * DLPack), or a segment of the caller's that it wraps.
 *
 * <p>Internal code reads and writes through {@link #segment()} while it holds a lease, which keeps the
 * memory alive. Segments handed to callers ({@link #publicSegment()}) belong to an arena that closing
 * the storage closes, so a caller's access after close fails with {@link IllegalStateException} instead of
 * touching freed memory.
 */
final class HostStorage extends Storage {

    private final MemorySegment segment;
    private final long buffer;  // fa4j_buffer; 0 for a wrapped segment
    // The arena of segments handed out to callers; created on first use (closing a shared arena costs a
    // handshake with every thread, which most tensors never need).
    private final AtomicReference<Arena> publicScope;
    private final boolean wrapped;

    private HostStorage(long byteSize, MemorySegment segment, long buffer, AtomicReference<Arena> publicScope,
                        Runnable release) {
        super(Device.CPU, byteSize);
        this.segment = segment;
        this.buffer = buffer;
        this.publicScope = publicScope;
        this.wrapped = buffer == 0;
        registerRelease(release);
    }

    static HostStorage allocate(long byteSize) {
        if (byteSize < 0) throw new IllegalArgumentException("negative byte size " + byteSize);
        return adopt(byteSize, NativeBuffers.allocate(Device.CPU, byteSize, MemorySegment.NULL));
    }

    /** Memory behind a buffer the library already holds (a DLPack import); it takes over the reference. */
    static HostStorage adopt(long byteSize, long buffer) {
        try {
            MemorySegment segment = MemorySegment.ofAddress(NativeBuffers.address(buffer)).reinterpret(byteSize);
            AtomicReference<Arena> scope = new AtomicReference<>();
            return new HostStorage(byteSize, segment, buffer, scope, new ReleaseBuffer(buffer, scope));
        } catch (RuntimeException | Error e) {
            NativeBuffers.release(buffer, MemorySegment.NULL, 0);
            throw e;
        }
    }

    /** The caller's segment; {@code release} (may be null) runs when the storage is closed. */
    static HostStorage wrap(MemorySegment segment, Runnable release) {
        return new HostStorage(segment.byteSize(), segment, 0, null, release == null ? () -> {} : release);
    }

    /** The memory, for internal use under a lease. */
    MemorySegment segment() {
        return segment;
    }

    /**
     * The memory as a segment that dies with this storage: its own segment for wrapped memory (whose scope
     * the caller controls), else one in this storage's public arena.
     */
    MemorySegment publicSegment() {
        if (wrapped) return segment;
        Arena arena = publicScope.get();
        if (arena == null) {
            Arena created = Arena.ofShared();
            if (publicScope.compareAndSet(null, created)) arena = created;
            else {
                created.close();
                arena = publicScope.get();
            }
        }
        // Callers hold a lease, so the release (which swaps in Arena.global() as a tombstone) has not run.
        if (arena == Arena.global()) throw new IllegalStateException("tensor memory has been closed");
        return segment.reinterpret(arena, null);
    }

    @Override
    long address() {
        return segment.address();
    }

    @Override
    long buffer() {
        return buffer;
    }

    @Override
    void requireAlive() {
        if (wrapped && !segment.scope().isAlive()) {
            throw new IllegalStateException("the memory segment this tensor wraps has been freed (its arena is closed)");
        }
    }

    /** Closes the public arena, then drops the storage's reference on its buffer. */
    private record ReleaseBuffer(long buffer, AtomicReference<Arena> publicScope) implements Runnable {
        @Override
        public void run() {
            // A placeholder stops a racing publicSegment() from creating an arena after this point.
            Arena arena = publicScope.getAndSet(Arena.global());
            if (arena != null && arena != Arena.global()) arena.close();
            NativeBuffers.release(buffer, MemorySegment.NULL, 0);
        }
    }
}
