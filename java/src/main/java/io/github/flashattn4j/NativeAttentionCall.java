package io.github.flashattn4j;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.SegmentAllocator;
import java.util.Arrays;
import java.util.List;

/**
 * One call of {@code fa4j_attention} minus its outputs, whatever its direction: dense and varlen attention
 * ({@link AttentionCall}), KV-cache attention ({@link DecodeCall}) and merges ({@link MergeCall}). {@link Attention}
 * runs, checks and queries every kind the same way: Java checks first ({@link #check}), then the native
 * support query with the outputs described but not allocated, then the call into allocated or given outputs.
 */
interface NativeAttentionCall {

    // Fake addresses of outputs that a support query describes but does not allocate: above 2^62, which no
    // host or device (unified) address on a 64-bit platform reaches, so they overlap no real input, and
    // aligned as the library's allocations are. fa4j_attention_support never dereferences them.
    long UNALLOCATED_BASE = 1L << 62;
    long ALLOCATION_ALIGNMENT = 256;

    /**
     * Names of the tensor arguments (inputs, and tensors written in place), matching {@link #arguments()}: for
     * error messages only (see {@link #tensorName}).
     */
    List<String> argumentNames();

    /** The tensor arguments; elements may be null (refused by {@link #check}). */
    List<Tensor> arguments();

    /** Names of the outputs the call can write, in order; an into-call may give a prefix of them. */
    List<String> outputNames();

    /** Shapes of the outputs the allocating call makes; the inputs must have passed {@link #check}. */
    long[][] outputShapes();

    DType[] outputDtypes();

    /** The device of the call (its first tensor's); the inputs must have passed {@link #check}. */
    Device device();

    /**
     * Every tensor of the call in one array: the {@link #arguments()}, then {@code outputs} (a prefix of the
     * {@link #outputNames()}; none for allocating calls and support queries). Built once per call: the checks,
     * the leases and {@link #tensorName} index it.
     */
    default Tensor[] tensors(Tensor... outputs) {
        List<Tensor> arguments = arguments();
        Tensor[] all = arguments.toArray(new Tensor[arguments.size() + outputs.length]);
        System.arraycopy(outputs, 0, all, arguments.size(), outputs.length);
        return all;
    }

    /** The name of element {@code i} of {@link #tensors}, for messages (so names are built only on failure). */
    default String tensorName(int i) {
        List<String> arguments = argumentNames();
        return i < arguments.size() ? arguments.get(i) : outputNames().get(i - arguments.size());
    }

    /**
     * The checks only Java can make (null, closed, devices and stream, read-only outputs), and the shape facts
     * needed to describe the outputs the call would allocate; everything else is the native library's.
     * {@code tensors} is {@link #tensors} of the call's outputs.
     */
    void check(CudaStream stream, Tensor[] tensors);

    /** The {@code fa4j_attention_args} with these described outputs (missing trailing ones: NULL). */
    MemorySegment args(SegmentAllocator memory, MemorySegment[] outputs);

    /** The {@code fa4j_attention_args} of this call writing into {@code outputs}, valid as long as {@code memory}. */
    default MemorySegment describe(SegmentAllocator memory, Tensor... outputs) {
        MemorySegment[] described = new MemorySegment[outputs.length];
        for (int i = 0; i < outputs.length; i++) described[i] = TensorDescriptors.describe(outputs[i], memory);
        return args(memory, described);
    }

    /**
     * The {@code fa4j_attention_args} of this call with the outputs it would allocate described (shape,
     * dtype, device, contiguous strides) at addresses where no memory is: for the support query only.
     *
     * @throws IllegalArgumentException if an output's size in bytes overflows a long, as allocating it would
     */
    default MemorySegment describeUnallocated(SegmentAllocator memory) {
        long[][] shapes = outputShapes();
        DType[] dtypes = outputDtypes();
        MemorySegment[] described = new MemorySegment[shapes.length];
        long address = UNALLOCATED_BASE;
        for (int i = 0; i < shapes.length; i++) {
            long bytes;
            try {
                bytes = dtypes[i].bytesFor(Layout.contiguous(shapes[i]).elementCount());  // INT4 included
            } catch (ArithmeticException e) {
                throw new IllegalArgumentException("output " + outputNames().get(i) + " of shape " + Arrays.toString(shapes[i])
                        + " is too large: its size in bytes overflows a long", e);
            }
            described[i] = TensorDescriptors.describeUnallocated(dtypes[i], device(), shapes[i], address, memory);
            // Wraps only for outputs of 2^62 bytes, which no call could allocate either.
            address += (bytes + ALLOCATION_ALIGNMENT - 1) & -ALLOCATION_ALIGNMENT;
        }
        return args(memory, described);
    }
}
