#include "backends/cuda/metadata_errors.hpp"

#include <cuda_runtime.h>

#include <atomic>
#include <mutex>
#include <string>

#include "backends/cuda/cuda_check.cuh"
#include "backends/cuda/current_device.hpp"
#include "core/error.hpp"

namespace fa4j::cuda {
namespace {

constexpr int kMaxDevices = 64;
std::atomic<int*> host_flags[kMaxDevices];  // null until the device's first varlen call
std::mutex allocation;

void require_known(int device) {
    if (device < 0 || device >= kMaxDevices)
        fail(FA4J_ERROR_UNSUPPORTED, "variable-length attention supports CUDA devices 0.." + std::to_string(kMaxDevices - 1));
}

}  // namespace

int* metadata_error_flag(int device) {
    require_known(device);
    int* host = host_flags[device].load(std::memory_order_acquire);
    if (host == nullptr) {
        const std::lock_guard<std::mutex> lock(allocation);
        host = host_flags[device].load(std::memory_order_relaxed);
        if (host == nullptr) {
            const CurrentDevice current(device);
            void* pointer = nullptr;
            FA4J_CUDA_CHECK(cudaHostAlloc(&pointer, sizeof(int), cudaHostAllocMapped | cudaHostAllocPortable));
            host = static_cast<int*>(pointer);
            *static_cast<volatile int*>(host) = 0;
            host_flags[device].store(host, std::memory_order_release);
        }
    }
    void* on_device = nullptr;
    FA4J_CUDA_CHECK(cudaHostGetDevicePointer(&on_device, host, 0));
    return static_cast<int*>(on_device);
}

void report_metadata_errors(int device) {
    if (device < 0 || device >= kMaxDevices) return;
    int* host = host_flags[device].load(std::memory_order_acquire);
    if (host == nullptr) return;
    auto* flag = static_cast<volatile int*>(host);
    if (*flag == 0) return;
    *flag = 0;
    fail(FA4J_ERROR_INVALID_ARGUMENT,
         "a variable-length attention call on cuda:" + std::to_string(device) +
             " had cu_seqlens_q/cu_seqlens_k/seqused_k values outside the packed tensors or above max_seqlen "
             "(negative, decreasing, past the total rows, or longer than the maximum): the kernels clamped them, so "
             "the outputs of that call are meaningless");
}

}  // namespace fa4j::cuda
