package io.github.flashattn4j;

import io.github.flashattn4j.internal.bindings.flashattn4j_h;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * CUDA device memory from {@code fa4j_cuda_malloc}.
 *
 * <p>Freeing first waits for all work queued on the device, on every stream ({@code cudaDeviceSynchronize}),
 * then calls {@code cudaFree}: memory is never released, and so never reused by a later allocation, while
 * a queued kernel or copy may still touch it. ({@code cudaFree} synchronizes with the device by itself in
 * practice; the explicit wait makes the guarantee independent of that.) A tensor's storage knows nothing of
 * the streams that used it, so the wait is for the whole device.
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

    /** Waits for the device, then frees the memory; holds no reference to the storage so the Cleaner can run it. */
    private record Release(int device, long address) implements Runnable {
        @Override
        public void run() {
            // Failures here (an error of earlier queued work, a context torn down at exit) have nowhere useful
            // to go: the memory is freed regardless, and a stream's synchronize() or close() reports them.
            flashattn4j_h.fa4j_cuda_device_synchronize(device);
            flashattn4j_h.fa4j_cuda_free(device, MemorySegment.ofAddress(address));
        }
    }
}
