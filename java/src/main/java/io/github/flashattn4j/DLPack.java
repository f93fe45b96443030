package io.github.flashattn4j;

import io.github.flashattn4j.internal.bindings.fa4j_device;
import io.github.flashattn4j.internal.bindings.fa4j_dtype;
import io.github.flashattn4j.internal.bindings.fa4j_tensor;
import io.github.flashattn4j.internal.bindings.flashattn4j_h;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.util.Objects;

/**
 * Zero-copy exchange of tensors with other libraries through DLPack: {@code DLManagedTensorVersioned}
 * (DLPack 1.x) and the legacy {@code DLManagedTensor}, passed as the address of the C struct.
 *
 * <h2>Ownership</h2>
 * <ul>
 *   <li><b>Import</b> ({@link #fromDLPack}, {@link #fromLegacyDLPack}) takes ownership of the managed
 *       tensor: the returned {@link Tensor} owns it, and closing the tensor (or the last of the tensor and
 *       any re-export of it) calls its deleter exactly once, after the work this library queued on the
 *       memory has finished. If the import throws, nothing was taken: the caller still owns the managed
 *       tensor. Tensors the producer marked read-only are imported read-only ({@link Tensor#isReadOnly()}).
 *       Pinned host memory ({@code kDLCUDAHost}) is imported as CPU memory.</li>
 *   <li><b>Export</b> ({@link #toDLPack}, {@link #toLegacyDLPack}) returns a new managed tensor that keeps
 *       the memory alive by a reference of its own: the Java tensor may be closed before or after the
 *       consumer is done. The consumer owns the struct and must call its deleter exactly once (from any
 *       thread, even after this JVM has no use for the library; {@link #delete} and {@link #deleteLegacy}
 *       do it from Java). Tensors over memory the library does not own ({@link Tensor#wrap}) cannot be
 *       exported: export the owner's tensor instead.</li>
 *   <li><b>CUDA</b>: DLPack's C structs carry no stream. Before a consumer uses an exported CUDA tensor,
 *       order it after the work that produced it ({@link CudaStream#synchronize()} on that stream, or hand
 *       the consumer's stream to {@link CudaStream#wrap} and run our work there); before importing, make
 *       sure the producer's writes are complete or ordered likewise.</li>
 * </ul>
 */
public final class DLPack {

    /** {@code DLPACK_FLAG_BITMASK_READ_ONLY}. */
    private static final long FLAG_READ_ONLY = 1;
    // Byte offsets of the deleter in the two structs (DLPack's layouts).
    private static final long VERSIONED_DELETER_OFFSET = 16;
    private static final long LEGACY_DELETER_OFFSET = fa4j_tensor.layout().byteSize() + 8;
    private static final FunctionDescriptor DELETER = FunctionDescriptor.ofVoid(ValueLayout.ADDRESS);

    private DLPack() {}

    /** Imports a {@code DLManagedTensorVersioned*} (DLPack 1.x), taking ownership of it. */
    public static Tensor fromDLPack(MemorySegment managed) {
        return importTensor(managed, true);
    }

    /** Imports a legacy {@code DLManagedTensor*}, taking ownership of it. */
    public static Tensor fromLegacyDLPack(MemorySegment managed) {
        return importTensor(managed, false);
    }

    /** Exports {@code tensor} as a new {@code DLManagedTensorVersioned*} (DLPack 1.1) owned by the caller. */
    public static MemorySegment toDLPack(Tensor tensor) {
        return exportTensor(tensor, true);
    }

    /** Exports {@code tensor} as a new legacy {@code DLManagedTensor*} owned by the caller. */
    public static MemorySegment toLegacyDLPack(Tensor tensor) {
        return exportTensor(tensor, false);
    }

    /** Calls the deleter of a {@code DLManagedTensorVersioned*} (if it has one), giving it back to its producer. */
    public static void delete(MemorySegment managed) {
        callDeleter(managed, VERSIONED_DELETER_OFFSET);
    }

    /** Calls the deleter of a legacy {@code DLManagedTensor*} (if it has one), giving it back to its producer. */
    public static void deleteLegacy(MemorySegment managed) {
        callDeleter(managed, LEGACY_DELETER_OFFSET);
    }

    private static Tensor importTensor(MemorySegment managed, boolean versioned) {
        Objects.requireNonNull(managed, "managed");
        if (managed.equals(MemorySegment.NULL)) throw new FlashAttnException.InvalidArgument("managed tensor is NULL");
        NativeCalls.ensureLoaded();
        long owner;
        MemorySegment t;
        long flags;
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment tensorHolder = arena.allocate(ValueLayout.ADDRESS);
            MemorySegment flagsHolder = arena.allocate(ValueLayout.JAVA_LONG);
            MemorySegment ownerHolder = arena.allocate(ValueLayout.ADDRESS);
            NativeCalls.check(flashattn4j_h.fa4j_dlpack_import(managed, versioned ? 1 : 0, tensorHolder, flagsHolder, ownerHolder));
            owner = ownerHolder.get(ValueLayout.ADDRESS, 0).address();
            t = tensorHolder.get(ValueLayout.ADDRESS, 0).reinterpret(fa4j_tensor.layout().byteSize());
            flags = flagsHolder.get(ValueLayout.JAVA_LONG, 0);
        }
        // From here the owner holds the managed tensor: a failure must release it (which calls the deleter).
        try {
            // The native import checked device, dtype, sizes, strides and alignment.
            MemorySegment dtype = fa4j_tensor.dtype(t);
            DType type = dtypeOf(Byte.toUnsignedInt(fa4j_dtype.code(dtype)), Byte.toUnsignedInt(fa4j_dtype.bits(dtype)));
            MemorySegment dev = fa4j_tensor.device(t);
            Device device = fa4j_device.device_type(dev) == flashattn4j_h.FA4J_DEVICE_CUDA()
                    ? Device.cuda(fa4j_device.device_id(dev)) : Device.CPU;
            int ndim = fa4j_tensor.ndim(t);
            long[] shape = ndim == 0 ? new long[0]
                    : fa4j_tensor.shape(t).reinterpret(8L * ndim).toArray(ValueLayout.JAVA_LONG);
            MemorySegment stridesPointer = fa4j_tensor.strides(t);
            long[] strides = stridesPointer.equals(MemorySegment.NULL) ? null
                    : ndim == 0 ? new long[0] : stridesPointer.reinterpret(8L * ndim).toArray(ValueLayout.JAVA_LONG);
            // INT4: a byte offset is two elements (the native import checked the packing rule).
            long byteOffset = fa4j_tensor.byte_offset(t);
            long elementOffset = type.isPacked() ? byteOffset * 2 : byteOffset / type.byteSize();
            Layout packed = strides == null ? Layout.contiguous(shape) : Layout.strided(shape, strides);
            Layout layout = new Layout(packed.shapeCopy(), packed.stridesCopy(), elementOffset);
            long byteSize = type.bytesFor(elementOffset + layout.span());
            Storage storage = device.isCuda() ? DeviceStorage.adopt(device, byteSize, owner) : HostStorage.adopt(byteSize, owner);
            owner = 0;  // the storage has it now
            return Tensor.owning(storage, type, layout, (flags & FLAG_READ_ONLY) != 0);
        } finally {
            if (owner != 0) NativeBuffers.release(owner, MemorySegment.NULL, 0);
        }
    }

    private static MemorySegment exportTensor(Tensor tensor, boolean versioned) {
        Objects.requireNonNull(tensor, "tensor");
        try (Arena arena = Arena.ofConfined(); Storage.Lease lease = tensor.lease()) {
            long buffer = tensor.storage().buffer();
            if (buffer == 0) {
                throw new FlashAttnException.InvalidArgument("cannot export " + tensor + " through DLPack: it wraps memory the"
                        + " library does not own (export the owner's tensor instead)");
            }
            MemorySegment holder = arena.allocate(ValueLayout.ADDRESS);
            long flags = versioned && tensor.isReadOnly() ? FLAG_READ_ONLY : 0;
            NativeCalls.check(flashattn4j_h.fa4j_dlpack_export(MemorySegment.ofAddress(buffer),
                    TensorDescriptors.describe(tensor, arena), versioned ? 1 : 0, flags, holder));
            return holder.get(ValueLayout.ADDRESS, 0);
        }
    }

    private static DType dtypeOf(int code, int bits) {
        for (DType d : DType.values()) {
            if (d.dlpackCode() == code && d.bits() == bits) return d;
        }
        throw new FlashAttnException.InvalidArgument("DLPack dtype code " + code + " bits " + bits + " has no DType");
    }

    private static void callDeleter(MemorySegment managed, long offset) {
        Objects.requireNonNull(managed, "managed");
        if (managed.equals(MemorySegment.NULL)) throw new FlashAttnException.InvalidArgument("managed tensor is NULL");
        MemorySegment deleter = managed.reinterpret(offset + 8).get(ValueLayout.ADDRESS, offset);
        if (deleter.equals(MemorySegment.NULL)) return;
        MethodHandle call = Linker.nativeLinker().downcallHandle(deleter, DELETER);
        try {
            call.invokeExact(managed);
        } catch (RuntimeException | Error e) {
            throw e;
        } catch (Throwable e) {
            throw new IllegalStateException("DLPack deleter failed", e);
        }
    }
}
