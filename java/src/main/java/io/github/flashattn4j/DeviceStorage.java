package io.github.flashattn4j;

import io.github.flashattn4j.internal.bindings.flashattn4j_h;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * CUDA device memory: a buffer from the library's stream-ordered pool (or one it adopted through DLPack),
 * or memory of the caller's that it wraps.
 *
 * <p>Releasing never synchronizes the device. Pool memory is released in the order of the streams that
 * used it ({@link StreamUses}): the pool hands it to a later allocation only after the work queued on them
 * so far has finished. Adopted and wrapped memory goes back to its owner after that work has finished
 * (the releasing thread waits for those streams only).
 */
final class DeviceStorage extends Storage {

    private final long address;
    private final long buffer;  // fa4j_buffer; 0 for wrapped memory
    private final StreamUses uses;

    private DeviceStorage(Device device, long byteSize, long address, long buffer, StreamUses uses, Runnable release) {
        super(device, byteSize);
        this.address = address;
        this.buffer = buffer;
        this.uses = uses;
        registerRelease(release);
    }

    /** New pool memory, allocated in the order of {@code home}. */
    static DeviceStorage allocate(Device device, long byteSize, CudaStream home) {
        if (byteSize < 0) throw new IllegalArgumentException("negative byte size " + byteSize);
        try (CudaStream.Lease stream = home.lease()) {
            long buffer = NativeBuffers.allocate(device, byteSize, stream.handle());
            return adopted(device, byteSize, buffer, new StreamUses(home));
        }
    }

    /** Memory behind a buffer the library already holds (a DLPack import); it takes over the reference. */
    static DeviceStorage adopt(Device device, long byteSize, long buffer) {
        return adopted(device, byteSize, buffer, new StreamUses(null));
    }

    private static DeviceStorage adopted(Device device, long byteSize, long buffer, StreamUses uses) {
        try {
            long address = NativeBuffers.address(buffer);
            return new DeviceStorage(device, byteSize, address, buffer, uses, new ReleaseBuffer(buffer, uses));
        } catch (RuntimeException | Error e) {
            NativeBuffers.release(buffer, MemorySegment.NULL, 0);
            throw e;
        }
    }

    /** The caller's memory; {@code release} (may be null) runs once the work that used it has finished. */
    static DeviceStorage wrap(Device device, long address, long byteSize, Runnable release) {
        StreamUses uses = new StreamUses(null);
        return new DeviceStorage(device, byteSize, address, 0, uses, new ReturnToOwner(device.index(), uses, release));
    }

    @Override
    long address() {
        return address;
    }

    @Override
    long buffer() {
        return buffer;
    }

    @Override
    void usedOn(CudaStream stream) {
        uses.add(stream);
    }

    /** Drops the storage's reference on its buffer, naming the streams that used it. */
    private record ReleaseBuffer(long buffer, StreamUses uses) implements Runnable {
        @Override
        public void run() {
            try (CallScratch scratch = CallScratch.open(); StreamUses.Leased streams = uses.lease(scratch)) {
                // A failure (an earlier kernel's sticky error, a context torn down at exit) has nowhere useful to
                // go from here; a stream's synchronize() or close() reports such errors.
                NativeBuffers.release(buffer, streams.array(), streams.count());
            }
        }
    }

    /** Waits for the streams that used wrapped memory, then runs the owner's release action. */
    private record ReturnToOwner(int device, StreamUses uses, Runnable release) implements Runnable {
        @Override
        public void run() {
            try (CallScratch scratch = CallScratch.open(); StreamUses.Leased streams = uses.lease(scratch)) {
                for (int i = 0; i < streams.count(); i++) {
                    flashattn4j_h.fa4j_cuda_stream_synchronize(device, streams.array().getAtIndex(ValueLayout.ADDRESS, i));
                }
            }
            if (release != null) release.run();
        }
    }
}
