package io.github.flashattn4j;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SegmentAllocator;

/**
 * Native memory for the arguments of one native call: its argument struct, tensor descriptors with their shapes
 * and strides, and out-parameters. Open one around the call and close it after; segments it hands out are
 * zeroed, and valid until the close.
 *
 * <p>A platform thread reuses one block of {@link #BLOCK_BYTES} for all its calls (a bump allocator reset by
 * {@link #close()}), so a call allocates and frees no native memory: a confined arena per call cost a
 * {@code malloc} and {@code free} per descriptor and array, a good part of the Java side of a small call.
 * The block is per thread because calls on one thread run one after another; while it is in use, a call made
 * on the same thread (one the native call cannot make, but a release action run when the call's leases end,
 * or a Cleaner action run inline, can) gets memory of its own instead, as does any call on a virtual
 * thread (so that a server's many virtual threads do not each keep a block). What does not fit in the block
 * comes from a confined arena of this scratch. The block belongs to an automatic arena: it is freed once its
 * thread has ended and the scratch is unreachable.
 */
final class CallScratch implements SegmentAllocator, AutoCloseable {

    /** Size of a thread's reused block: a call or support query with every optional tensor uses under 3 KiB. */
    static final long BLOCK_BYTES = 8 << 10;

    // The one piece of per-thread state of the library (the loaded native library is the only global one).
    private static final ThreadLocal<CallScratch> REUSED =
            ThreadLocal.withInitial(() -> new CallScratch(Arena.ofAuto().allocate(BLOCK_BYTES, 64)));

    private final MemorySegment block;  // empty for a scratch of one call
    private long used;
    private boolean inUse;
    private Arena overflow;  // created when something does not fit the block; closed by close()

    private CallScratch(MemorySegment block) {
        this.block = block;
    }

    /** Scratch for one call on this thread: its reused block if free, else memory of its own. */
    static CallScratch open() {
        if (!Thread.currentThread().isVirtual()) {
            CallScratch reused = REUSED.get();
            if (!reused.inUse) {
                reused.inUse = true;
                return reused;
            }
        }
        CallScratch own = new CallScratch(MemorySegment.NULL);
        own.inUse = true;
        return own;
    }

    /** Zeroed memory, valid until {@link #close()}. */
    @Override
    public MemorySegment allocate(long byteSize, long byteAlignment) {
        if (!inUse) throw new IllegalStateException("call scratch used after close");
        long start = alignUp(block.address() + used, byteAlignment) - block.address();
        if (isReused() && byteSize >= 0 && start <= block.byteSize() - byteSize) {
            used = start + byteSize;
            return block.asSlice(start, byteSize).fill((byte) 0);
        }
        if (overflow == null) overflow = Arena.ofConfined();
        return overflow.allocate(byteSize, byteAlignment);
    }

    /** Hands the memory back: the block to the next call on this thread; memory of its own is freed. */
    @Override
    public void close() {
        if (!inUse) return;
        inUse = false;
        used = 0;
        if (overflow != null) {
            Arena arena = overflow;
            overflow = null;
            arena.close();
        }
    }

    /** Whether the block is this thread's reused one; for tests. */
    boolean isReused() {
        return block.byteSize() > 0;
    }

    private static long alignUp(long address, long alignment) {
        if (alignment <= 0 || (alignment & (alignment - 1)) != 0) {
            throw new IllegalArgumentException("alignment must be a power of two: " + alignment);
        }
        return (address + alignment - 1) & -alignment;
    }
}
