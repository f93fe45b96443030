package io.github.flashattn4j;

import io.github.flashattn4j.internal.bindings.flashattn4j_h;

import java.lang.foreign.MemorySegment;

/** Byte copies and fills that involve CUDA memory; callers hold leases on the tensors and the stream. */
final class DeviceCopies {

    private DeviceCopies() {}

    /**
     * Copies {@code bytes} from {@code source}'s first element to {@code destination}'s, queued on
     * {@code stream} ({@code NULL}: the default stream) after the work already there; returns when the copy
     * has finished.
     */
    static void copyBytes(Tensor source, Tensor destination, long bytes, MemorySegment stream) {
        NativeCalls.ensureLoaded();
        boolean fromDevice = source.device().isCuda(), toDevice = destination.device().isCuda();
        if (!fromDevice && !toDevice) throw new IllegalArgumentException("host-to-host copies do not go through CUDA");
        int kind = fromDevice && toDevice ? flashattn4j_h.FA4J_MEMCPY_DEVICE_TO_DEVICE()
                : toDevice ? flashattn4j_h.FA4J_MEMCPY_HOST_TO_DEVICE() : flashattn4j_h.FA4J_MEMCPY_DEVICE_TO_HOST();
        int device = (toDevice ? destination : source).device().index();
        NativeCalls.check(flashattn4j_h.fa4j_cuda_memcpy(device, firstElement(destination), firstElement(source), bytes,
                kind, stream));
    }

    /** Copies {@code bytes} from a device tensor's first element into native host memory; synchronous. */
    static void copyBytesToHost(Tensor source, MemorySegment destination, long bytes, MemorySegment stream) {
        NativeCalls.ensureLoaded();
        NativeCalls.check(flashattn4j_h.fa4j_cuda_memcpy(source.device().index(), destination, firstElement(source), bytes,
                flashattn4j_h.FA4J_MEMCPY_DEVICE_TO_HOST(), stream));
    }

    /** Copies {@code bytes} of native host memory to a device tensor's first element; synchronous. */
    static void copyBytesFromHost(MemorySegment source, Tensor destination, long bytes, MemorySegment stream) {
        NativeCalls.ensureLoaded();
        NativeCalls.check(flashattn4j_h.fa4j_cuda_memcpy(destination.device().index(), firstElement(destination), source, bytes,
                flashattn4j_h.FA4J_MEMCPY_HOST_TO_DEVICE(), stream));
    }

    /** Sets {@code bytes} bytes from the first element of a device tensor to {@code value}, synchronously. */
    static void fillBytes(Tensor tensor, int value, long bytes) {
        NativeCalls.ensureLoaded();
        int device = tensor.device().index();
        NativeCalls.check(flashattn4j_h.fa4j_cuda_memset(device, firstElement(tensor), value, bytes, MemorySegment.NULL));
        NativeCalls.check(flashattn4j_h.fa4j_cuda_stream_synchronize(device, MemorySegment.NULL));
    }

    private static MemorySegment firstElement(Tensor t) {
        return MemorySegment.ofAddress(t.baseAddress() + t.byteOffset());
    }
}
