package io.github.flashattn4j;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.SegmentAllocator;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;

/**
 * The CUDA streams that have used a storage's device memory: the stream it was allocated on (its home,
 * if the library allocated it) and every stream an attention call used it on since. Releasing the memory
 * is ordered after the work queued so far on each of them. Shared by a storage and its release action,
 * so it must not reference the storage.
 */
final class StreamUses {

    private final CudaStream home;  // null: memory the library did not allocate
    private final List<CudaStream> others = new ArrayList<>(2);  // guarded by this

    StreamUses(CudaStream home) {
        this.home = home;
    }

    /** Remembers that work on {@code stream} may use the memory. Cheap for the home stream. */
    void add(CudaStream stream) {
        if (stream == home) return;
        synchronized (this) {
            if (!others.contains(stream)) others.add(stream);
        }
    }

    /**
     * The open streams, home first, as an {@code fa4j_stream[]} in {@code memory}, each leased until
     * {@code leases} are closed. Closed streams are left out once their release has finished: nothing
     * queued on them can still run. A closed stream whose release is deferred (calls still hold it) is
     * leased all the same: waiting for it here could wait for a lease this very thread holds.
     */
    Leased lease(SegmentAllocator memory) {
        List<CudaStream> all = new ArrayList<>(3);
        if (home != null) all.add(home);
        synchronized (this) {
            all.addAll(others);
        }
        Leased leased = new Leased(memory.allocate(ValueLayout.ADDRESS, Math.max(1, all.size())));
        for (CudaStream stream : all) {
            CudaStream.Lease lease = stream.leaseUnlessReleased();
            if (lease == null) {
                stream.awaitReleased();
                continue;
            }
            leased.streams.setAtIndex(ValueLayout.ADDRESS, leased.leases.size(), lease.handle());
            leased.leases.add(lease);
        }
        return leased;
    }

    /** Leased streams for one native call; {@link #count()} entries of {@link #array()} are set. */
    static final class Leased implements AutoCloseable {
        private final MemorySegment streams;
        private final List<CudaStream.Lease> leases = new ArrayList<>(3);

        private Leased(MemorySegment streams) {
            this.streams = streams;
        }

        MemorySegment array() {
            return streams;
        }

        int count() {
            return leases.size();
        }

        @Override
        public void close() {
            for (CudaStream.Lease lease : leases) lease.close();
        }
    }
}
