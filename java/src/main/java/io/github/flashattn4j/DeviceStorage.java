package io.github.flashattn4j;

import io.github.flashattn4j.internal.bindings.flashattn4j_h;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * CUDA device memory from {@code fa4j_cuda_malloc}. Freeing uses {@code cudaFree}, which waits for work
 * queued on the device, so memory is never freed under a running kernel.
 */
final class DeviceStorage extends Storage {

    private final long address;

    private DeviceStorage(Device device, long byteSize, long address) {
        super(device, byteSize);
        this.address = address;
        registerRelease(new Release(device.index(), address));
    }

    static DeviceStorage allocate(Device device, long byteSize) {
        NativeCalls.ensureLoaded();
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment pointer = arena.allocate(ValueLayout.ADDRESS);
            NativeCalls.check(flashattn4j_h.fa4j_cuda_malloc(device.index(), byteSize, pointer));
            long address = pointer.get(ValueLayout.ADDRESS, 0).address();
            try {
                return new DeviceStorage(device, byteSize, address);
            } catch (RuntimeException e) {
                flashattn4j_h.fa4j_cuda_free(device.index(), MemorySegment.ofAddress(address));
                throw e;
            }
        }
    }

    @Override
    long address() {
        return address;
    }

    /** Frees the memory; holds no reference to the storage so the Cleaner can run it. */
    private record Release(int device, long address) implements Runnable {
        @Override
        public void run() {
            // A failure here (e.g. the context is already torn down at exit) has nowhere useful to go.
            flashattn4j_h.fa4j_cuda_free(device, MemorySegment.ofAddress(address));
        }
    }
}
