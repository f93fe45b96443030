package io.github.flashattn4j;

import io.github.flashattn4j.internal.bindings.fa4j_device_properties;
import io.github.flashattn4j.internal.bindings.flashattn4j_h;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/** Queries about CUDA devices. */
public final class Cuda {

    private Cuda() {}

    /**
     * Properties of one CUDA device.
     *
     * @param name                     the device's marketing name
     * @param computeCapabilityMajor   e.g. 9 for Hopper
     * @param computeCapabilityMinor   e.g. 0 for sm_90
     * @param multiprocessorCount      streaming multiprocessors
     * @param totalMemoryBytes         global memory
     * @param sharedMemoryPerBlockOptin the most shared memory one block can opt into
     */
    public record DeviceProperties(String name, int computeCapabilityMajor, int computeCapabilityMinor,
                                   int multiprocessorCount, long totalMemoryBytes, long sharedMemoryPerBlockOptin) {}

    /** Whether the loaded native library was built with its CUDA backend. */
    public static boolean isCompiled() {
        NativeCalls.ensureLoaded();
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment compiled = arena.allocate(ValueLayout.JAVA_INT);
            NativeCalls.check(flashattn4j_h.fa4j_cuda_compiled(compiled));
            return compiled.get(ValueLayout.JAVA_INT, 0) != 0;
        }
    }

    /** Usable CUDA devices; 0 without a driver, a device or CUDA support in the library. */
    public static int deviceCount() {
        NativeCalls.ensureLoaded();
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment count = arena.allocate(ValueLayout.JAVA_INT);
            NativeCalls.check(flashattn4j_h.fa4j_cuda_device_count(count));
            return count.get(ValueLayout.JAVA_INT, 0);
        }
    }

    /** Whether at least one CUDA device is usable. */
    public static boolean isAvailable() {
        return deviceCount() > 0;
    }

    /** Properties of CUDA device {@code index}. */
    public static DeviceProperties properties(int index) {
        NativeCalls.ensureLoaded();
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment p = fa4j_device_properties.allocate(arena);
            fa4j_device_properties.struct_size(p, fa4j_device_properties.layout().byteSize());
            NativeCalls.check(flashattn4j_h.fa4j_cuda_get_device_properties(index, p));
            return new DeviceProperties(fa4j_device_properties.name(p).getString(0),
                    fa4j_device_properties.compute_capability_major(p), fa4j_device_properties.compute_capability_minor(p),
                    fa4j_device_properties.multiprocessor_count(p), fa4j_device_properties.total_global_memory_bytes(p),
                    fa4j_device_properties.shared_memory_per_block_optin_bytes(p));
        }
    }

    /**
     * Free and total memory of a CUDA device, as the driver reports it ({@code cudaMemGetInfo}).
     *
     * @param freeBytes  memory not allocated by any process or context
     * @param totalBytes the device's memory
     */
    public record MemoryInfo(long freeBytes, long totalBytes) {
        /** {@code totalBytes - freeBytes}: memory in use on the device, by any process. */
        public long usedBytes() {
            return totalBytes - freeBytes;
        }
    }

    /**
     * Free and total memory of CUDA device {@code index}. Free memory counts every process on the device
     * and the caching of CUDA's stream-ordered allocator, so compare readings taken under the same
     * conditions (for example after {@link #synchronize}).
     */
    public static MemoryInfo memoryInfo(int index) {
        NativeCalls.ensureLoaded();
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment free = arena.allocate(ValueLayout.JAVA_LONG);
            MemorySegment total = arena.allocate(ValueLayout.JAVA_LONG);
            NativeCalls.check(flashattn4j_h.fa4j_cuda_mem_get_info(index, free, total));
            return new MemoryInfo(free.get(ValueLayout.JAVA_LONG, 0), total.get(ValueLayout.JAVA_LONG, 0));
        }
    }

    /**
     * The library's device memory pool on one device (see {@link CudaStream} on stream-ordered memory).
     *
     * @param usedBytes     bytes held by live tensors and running calls' workspaces
     * @param reservedBytes bytes the pool holds from the device: in use plus cached for reuse
     */
    public record PoolInfo(long usedBytes, long reservedBytes) {}

    /** The library's memory pool on CUDA device {@code index}; zeros before its first allocation there. */
    public static PoolInfo poolInfo(int index) {
        NativeCalls.ensureLoaded();
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment used = arena.allocate(ValueLayout.JAVA_LONG);
            MemorySegment reserved = arena.allocate(ValueLayout.JAVA_LONG);
            NativeCalls.check(flashattn4j_h.fa4j_cuda_pool_get_info(index, used, reserved));
            return new PoolInfo(used.get(ValueLayout.JAVA_LONG, 0), reserved.get(ValueLayout.JAVA_LONG, 0));
        }
    }

    /**
     * Returns memory the pool on CUDA device {@code index} caches but nobody uses to the device, keeping at
     * most {@code keepBytes} of it. The pool otherwise keeps what tensors release, so that a loop that
     * allocates the same sizes every step never goes back to the driver; trim it before handing the memory
     * to another library. Memory whose release is still queued behind running work is returned later.
     */
    public static void trimPool(int index, long keepBytes) {
        if (keepBytes < 0) throw new IllegalArgumentException("negative keepBytes " + keepBytes);
        NativeCalls.ensureLoaded();
        NativeCalls.check(flashattn4j_h.fa4j_cuda_pool_trim(index, keepBytes));
    }

    /** Waits until all work queued on CUDA device {@code index} has finished, on every stream. */
    public static void synchronize(int index) {
        NativeCalls.ensureLoaded();
        NativeCalls.check(flashattn4j_h.fa4j_cuda_device_synchronize(index));
    }
}
