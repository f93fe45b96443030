package io.github.flashattn4j;

import io.github.flashattn4j.internal.bindings.fa4j_device;
import io.github.flashattn4j.internal.bindings.flashattn4j_h;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/** The native library's reference-counted buffers ({@code fa4j_buffer}), as raw handles. */
final class NativeBuffers {

    private NativeBuffers() {}

    /** A new buffer on {@code device} ({@code stream}: its {@code fa4j_stream}, NULL for CPU). */
    static long allocate(Device device, long byteSize, MemorySegment stream) {
        NativeCalls.ensureLoaded();
        try (CallScratch scratch = CallScratch.open()) {
            MemorySegment dev = fa4j_device.allocate(scratch);
            TensorDescriptors.writeDevice(dev, device);
            MemorySegment holder = scratch.allocate(ValueLayout.ADDRESS);
            NativeCalls.check(flashattn4j_h.fa4j_buffer_allocate(dev, byteSize, stream, holder));
            return holder.get(ValueLayout.ADDRESS, 0).address();
        }
    }

    /** Address of the buffer's first byte. */
    static long address(long buffer) {
        try (CallScratch scratch = CallScratch.open()) {
            MemorySegment data = scratch.allocate(ValueLayout.ADDRESS);
            NativeCalls.check(flashattn4j_h.fa4j_buffer_info(MemorySegment.ofAddress(buffer), data, MemorySegment.NULL,
                    MemorySegment.NULL));
            return data.get(ValueLayout.ADDRESS, 0).address();
        }
    }

    static void retain(long buffer) {
        NativeCalls.check(flashattn4j_h.fa4j_buffer_retain(MemorySegment.ofAddress(buffer)));
    }

    /** Drops one reference, naming {@code count} streams of {@code streams}; returns the failure, if any. */
    static FlashAttnException release(long buffer, MemorySegment streams, int count) {
        return NativeCalls.failure(flashattn4j_h.fa4j_buffer_release(MemorySegment.ofAddress(buffer), streams, count));
    }
}
