package io.github.flashattn4j;

import io.github.flashattn4j.internal.bindings.fa4j_device;
import io.github.flashattn4j.internal.bindings.fa4j_dtype;
import io.github.flashattn4j.internal.bindings.fa4j_tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/** Writes a tensor as an {@code fa4j_tensor} (DLTensor layout) into an arena for one native call. */
final class TensorDescriptors {

    private TensorDescriptors() {}

    static MemorySegment describe(Tensor t, Arena arena) {
        MemorySegment d = fa4j_tensor.allocate(arena);
        Layout layout = t.layout();
        fa4j_tensor.data(d, MemorySegment.ofAddress(t.baseAddress()));
        MemorySegment device = fa4j_tensor.device(d);
        fa4j_device.device_type(device, t.device().kind().dlpackCode());
        fa4j_device.device_id(device, t.device().index());
        fa4j_tensor.ndim(d, layout.rank());
        MemorySegment dtype = fa4j_tensor.dtype(d);
        fa4j_dtype.code(dtype, (byte) t.dtype().dlpackCode());
        fa4j_dtype.bits(dtype, (byte) t.dtype().bits());
        fa4j_dtype.lanes(dtype, (short) 1);
        fa4j_tensor.shape(d, arena.allocateFrom(ValueLayout.JAVA_LONG, layout.shapeCopy()));
        fa4j_tensor.strides(d, arena.allocateFrom(ValueLayout.JAVA_LONG, layout.stridesCopy()));
        fa4j_tensor.byte_offset(d, t.byteOffset());
        return d;
    }
}
