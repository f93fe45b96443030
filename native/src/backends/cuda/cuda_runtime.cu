// Devices, memory and streams on top of the CUDA runtime (linked statically, so the library needs only
// the driver at run time, and loads without one).
#include <atomic>
#include <cstring>
#include <string>

#include "backends/cuda/cuda_backend.hpp"
#include "backends/cuda/cuda_check.cuh"
#include "backends/cuda/current_device.hpp"
#include "backends/cuda/metadata_errors.hpp"

namespace fa4j::cuda {
namespace {

cudaStream_t native(fa4j_stream stream) { return reinterpret_cast<cudaStream_t>(stream); }

cudaMemcpyKind native(fa4j_memcpy_kind kind) {
    switch (kind) {
        case FA4J_MEMCPY_HOST_TO_DEVICE: return cudaMemcpyHostToDevice;
        case FA4J_MEMCPY_DEVICE_TO_HOST: return cudaMemcpyDeviceToHost;
        case FA4J_MEMCPY_DEVICE_TO_DEVICE: return cudaMemcpyDeviceToDevice;
    }
    fail(FA4J_ERROR_INVALID_ARGUMENT, "unknown memcpy kind " + std::to_string(static_cast<int>(kind)));
}

// Compute capabilities, asked once per device: major · 16 + minor + 1 (0: not asked yet).
constexpr int kCachedDevices = 64;
std::atomic<int> arch_cache[kCachedDevices];

}  // namespace

bool compiled() { return true; }

CudaArch device_arch(int device) {
    const bool cacheable = device >= 0 && device < kCachedDevices;
    if (cacheable) {
        const int known = arch_cache[device].load(std::memory_order_relaxed);
        if (known != 0) return {(known - 1) / 16, (known - 1) % 16};
    }
    const CurrentDevice current(device);
    CudaArch arch;
    FA4J_CUDA_CHECK(cudaDeviceGetAttribute(&arch.major, cudaDevAttrComputeCapabilityMajor, device));
    FA4J_CUDA_CHECK(cudaDeviceGetAttribute(&arch.minor, cudaDevAttrComputeCapabilityMinor, device));
    if (cacheable) arch_cache[device].store(arch.major * 16 + arch.minor + 1, std::memory_order_relaxed);
    return arch;
}

int device_count() {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return count;
}

void get_device_properties(int device, fa4j_device_properties* properties) {
    const CurrentDevice current(device);
    cudaDeviceProp prop{};
    FA4J_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    std::strncpy(properties->name, prop.name, sizeof(properties->name) - 1);
    properties->name[sizeof(properties->name) - 1] = '\0';
    properties->compute_capability_major = prop.major;
    properties->compute_capability_minor = prop.minor;
    properties->multiprocessor_count = prop.multiProcessorCount;
    properties->total_global_memory_bytes = prop.totalGlobalMem;
    properties->shared_memory_per_block_optin_bytes = prop.sharedMemPerBlockOptin;
}

void* malloc_device(int device, size_t bytes) {
    const CurrentDevice current(device);
    if (bytes == 0) return nullptr;
    void* pointer = nullptr;
    FA4J_CUDA_CHECK(cudaMalloc(&pointer, bytes));
    return pointer;
}

void free_device(int device, void* pointer) {
    if (pointer == nullptr) return;
    const CurrentDevice current(device);
    FA4J_CUDA_CHECK(cudaFree(pointer));
}

void memcpy_sync(int device, void* destination, const void* source, size_t bytes, fa4j_memcpy_kind kind,
                 fa4j_stream stream) {
    const cudaMemcpyKind direction = native(kind);
    const CurrentDevice current(device);
    if (bytes == 0) return;
    FA4J_CUDA_CHECK(cudaMemcpyAsync(destination, source, bytes, direction, native(stream)));
    FA4J_CUDA_CHECK(cudaStreamSynchronize(native(stream)));
    report_metadata_errors(device);
}

void memset_async(int device, void* pointer, int value, size_t bytes, fa4j_stream stream) {
    const CurrentDevice current(device);
    if (bytes == 0) return;
    FA4J_CUDA_CHECK(cudaMemsetAsync(pointer, value, bytes, native(stream)));
}

fa4j_stream stream_create(int device) {
    const CurrentDevice current(device);
    cudaStream_t stream = nullptr;
    FA4J_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    return reinterpret_cast<fa4j_stream>(stream);
}

void stream_destroy(int device, fa4j_stream stream) {
    FA4J_REQUIRE(stream != nullptr, "the default stream cannot be destroyed");
    const CurrentDevice current(device);
    FA4J_CUDA_CHECK(cudaStreamDestroy(native(stream)));
}

void stream_wait(int device, fa4j_stream waiting, fa4j_stream waited) {
    const CurrentDevice current(device);
    if (waiting == waited) return;  // a stream is ordered after itself
    cudaEvent_t event = nullptr;
    FA4J_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
    const cudaError_t recorded = cudaEventRecord(event, native(waited));
    const cudaError_t waited_for = recorded == cudaSuccess ? cudaStreamWaitEvent(native(waiting), event, 0) : recorded;
    // Destroying an event that a stream still waits for is allowed: the wait keeps what it needs.
    static_cast<void>(cudaEventDestroy(event));
    FA4J_CUDA_CHECK(waited_for);
}

void mem_get_info(int device, size_t* free_bytes, size_t* total_bytes) {
    const CurrentDevice current(device);
    FA4J_CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes));
}

void stream_synchronize(int device, fa4j_stream stream) {
    const CurrentDevice current(device);
    FA4J_CUDA_CHECK(cudaStreamSynchronize(native(stream)));
    report_metadata_errors(device);
}

void device_synchronize(int device) {
    const CurrentDevice current(device);
    FA4J_CUDA_CHECK(cudaDeviceSynchronize());
    report_metadata_errors(device);
}

}  // namespace fa4j::cuda
