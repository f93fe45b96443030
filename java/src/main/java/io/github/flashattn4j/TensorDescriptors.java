package io.github.flashattn4j;

import io.github.flashattn4j.internal.bindings.fa4j_device;
import io.github.flashattn4j.internal.bindings.fa4j_dtype;
import io.github.flashattn4j.internal.bindings.fa4j_tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.SegmentAllocator;
import java.lang.foreign.ValueLayout;

/** Writes a tensor as an {@code fa4j_tensor} (DLTensor layout) into memory for one native call. */
final class TensorDescriptors {

    private TensorDescriptors() {}

    static MemorySegment describe(Tensor t, SegmentAllocator memory) {
        return describe(t.baseAddress(), t.device(), t.dtype(), t.layout(), t.byteOffset(), memory);
    }

    /**
     * A contiguous tensor of {@code shape} at {@code address}, where nothing need be allocated: for calls
     * that read no tensor data (the attention support query).
     */
    static MemorySegment describeUnallocated(DType dtype, Device device, long[] shape, long address, SegmentAllocator memory) {
        return describe(address, device, dtype, Layout.contiguous(shape), 0, memory);
    }

    /** Writes {@code device} into an {@code fa4j_device} (DLDevice). */
    static void writeDevice(MemorySegment target, Device device) {
        fa4j_device.device_type(target, device.kind().dlpackCode());
        fa4j_device.device_id(target, device.index());
    }

    private static MemorySegment describe(long address, Device dev, DType type, Layout layout, long byteOffset,
                                          SegmentAllocator memory) {
        // One block: the descriptor, then its shape and strides arrays.
        int rank = layout.rank();
        long header = fa4j_tensor.layout().byteSize();
        long arrayBytes = (long) rank * Long.BYTES;
        MemorySegment d = memory.allocate(header + 2 * arrayBytes, fa4j_tensor.layout().byteAlignment());
        fa4j_tensor.data(d, MemorySegment.ofAddress(address));
        writeDevice(fa4j_tensor.device(d), dev);
        fa4j_tensor.ndim(d, rank);
        MemorySegment dtype = fa4j_tensor.dtype(d);
        fa4j_dtype.code(dtype, (byte) type.dlpackCode());
        fa4j_dtype.bits(dtype, (byte) type.bits());
        fa4j_dtype.lanes(dtype, (short) 1);
        // The layout's own arrays: only read, to be copied.
        MemorySegment.copy(layout.shape(), 0, d, ValueLayout.JAVA_LONG, header, rank);
        MemorySegment.copy(layout.strides(), 0, d, ValueLayout.JAVA_LONG, header + arrayBytes, rank);
        fa4j_tensor.shape(d, d.asSlice(header, arrayBytes));
        fa4j_tensor.strides(d, d.asSlice(header + arrayBytes, arrayBytes));
        fa4j_tensor.byte_offset(d, byteOffset);
        return d;
    }
}
