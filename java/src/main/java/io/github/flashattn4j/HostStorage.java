package io.github.flashattn4j;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

/** Host memory from a shared {@link Arena}, zero-filled on allocation. */
final class HostStorage extends Storage {

    // Aligned for vector loads in the CPU kernels.
    private static final long ALIGNMENT = 64;

    private final MemorySegment segment;

    private HostStorage(Arena arena, long byteSize) {
        super(Device.CPU, byteSize);
        this.segment = arena.allocate(Math.max(byteSize, 1), ALIGNMENT);
        registerRelease(arena::close);
    }

    static HostStorage allocate(long byteSize) {
        Arena arena = Arena.ofShared();
        try {
            return new HostStorage(arena, byteSize);
        } catch (RuntimeException | OutOfMemoryError e) {
            arena.close();
            throw e;
        }
    }

    MemorySegment segment() {
        return segment;
    }

    @Override
    long address() {
        return segment.address();
    }
}
