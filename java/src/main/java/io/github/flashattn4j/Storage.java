package io.github.flashattn4j;

import java.lang.ref.Cleaner;
import java.util.concurrent.atomic.AtomicLong;

/**
 * A block of host or device memory, shared by a tensor and its views. Exactly one tensor owns it and
 * closes it; a {@link Cleaner} frees it if nobody does.
 *
 * <p>Native calls hold a {@link Lease} on every storage they touch. Closing never frees memory under a
 * running call: a close requested while leases are held marks the storage closed at once (no new lease
 * is granted) and the memory is freed when the last lease is released, on the thread releasing it. So
 * {@link #close()} never fails and never waits, and "closed" means "unusable from now on", not
 * "already freed".
 */
abstract sealed class Storage permits HostStorage, DeviceStorage {

    // One cleaner thread for every native resource of this module (storages and streams).
    static final Cleaner CLEANER = Cleaner.create();
    private static final long CLOSED = 1L << 62;

    private final Device device;
    private final long byteSize;
    // CLOSED bit | number of leases held. Once CLOSED is set the count only falls, so exactly one party
    // sees (CLOSED, 0) arrive: close() when no lease was held, else the last lease's release. That party
    // frees the memory.
    private final AtomicLong state = new AtomicLong();
    private Cleaner.Cleanable cleanable;

    Storage(Device device, long byteSize) {
        this.device = device;
        this.byteSize = byteSize;
    }

    /** Registers the action that frees the memory; it must not reference this storage. */
    final void registerRelease(Runnable release) {
        cleanable = CLEANER.register(this, release);
    }

    final Device device() {
        return device;
    }

    final long byteSize() {
        return byteSize;
    }

    /** Native address of byte 0. */
    abstract long address();

    /** The native {@code fa4j_buffer} that owns the memory, or 0 for memory the library does not own. */
    abstract long buffer();

    /** Records that work queued on {@code stream} may use this memory (device memory only). */
    void usedOn(CudaStream stream) {}

    /** Throws {@link IllegalStateException} if memory owned by someone else has been freed by them. */
    void requireAlive() {}

    /** Whether a close was requested; the memory may still be in use by calls that leased it before. */
    final boolean isClosed() {
        return (state.get() & CLOSED) != 0;
    }

    /** Prevents the memory from being freed until the lease is closed; throws if the storage is closed. */
    final Lease lease() {
        long s;
        do {
            s = state.get();
            if ((s & CLOSED) != 0) throw new IllegalStateException("tensor memory on " + device + " has been closed");
        } while (!state.compareAndSet(s, s + 1));
        return new Lease(this);
    }

    /**
     * Frees the memory now, or, while leases are held, when the last one is released. Idempotent; never
     * throws for the memory being in use.
     */
    final void close() {
        long s;
        do {
            s = state.get();
            if ((s & CLOSED) != 0) return;
        } while (!state.compareAndSet(s, s | CLOSED));
        if (s == 0) free();
    }

    private void free() {
        cleanable.clean();
    }

    /** A hold on a storage's memory for the duration of a native call. Closing it twice is harmless. */
    static final class Lease implements AutoCloseable {
        private Storage storage;

        private Lease(Storage storage) {
            this.storage = storage;
        }

        @Override
        public void close() {
            Storage s = storage;
            if (s != null) {
                storage = null;
                // The last lease of a storage whose close was deferred frees it.
                if (s.state.decrementAndGet() == CLOSED) s.free();
            }
        }
    }
}
