// The CUDA backend as the rest of the library sees it. Implemented in cuda_*.cu when the library is
// built with CUDA, and by cuda_unavailable.cpp otherwise, so callers never need #ifdefs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/attention_problem.hpp"
#include "flashattn4j.h"

namespace fa4j::cuda {

bool compiled();
int device_count();  // 0 when no driver or device is usable
void get_device_properties(int device, fa4j_device_properties* properties);

void* malloc_device(int device, size_t bytes);
void free_device(int device, void* pointer);
void memcpy_sync(int device, void* destination, const void* source, size_t bytes, fa4j_memcpy_kind kind,
                 fa4j_stream stream);
void memset_async(int device, void* pointer, int value, size_t bytes, fa4j_stream stream);
fa4j_stream stream_create(int device);
void stream_destroy(int device, fa4j_stream stream);
void stream_synchronize(int device, fa4j_stream stream);
void device_synchronize(int device);

// The attention kernels this backend has. Which one a call runs on is the dispatch's decision
// (dispatch/cuda_kernel_table.cpp); the backend answers only for the tensors and launches.
enum class CudaKernel {
    kSm90Forward,   // Hopper: TMA + wgmma, warp-specialized (kernels/sm90/)
    kSm80Forward,   // FlashAttention-2: cp.async + mma.sync, any sm_80+ GPU (kernels/sm80/)
    kSm80Backward,  // FlashAttention-2 backward (kernels/sm80/)
    // The GPU-verified v1 kernels (kernels/v1/, v1_attention.hpp), the release path until the v2 kernels
    // above have passed on a GPU.
    kSm90ForwardV1,
    kSm80ForwardV1,
    kSm80BackwardV1,
    // KV-cache attention (FA4J_ATTENTION_DECODE; kernels/decode/decode_kernel.cuh).
    kDecode,
    // The log-sum-exp merge of partial results (FA4J_ATTENTION_MERGE; kernels/decode/merge_kernel.cuh).
    kMerge,
};

// A kernel and its head-dim instantiation (the smallest it has that is >= the call's head dim).
struct CudaKernelChoice {
    CudaKernel kernel;
    int head_dim;
};

struct CudaArch {
    int major = 0, minor = 0;
};

// The compute capability of `device` (asked once per device, then cached); throws NO_DEVICE /
// INVALID_ARGUMENT for a device that does not exist.
CudaArch device_arch(int device);

// Why `kernel` cannot take these tensors (alignment, strides its copies cannot describe), or "" when it
// can; launches nothing.
std::string forward_tensors_refusal(int device, const ForwardProblem& problem, CudaKernel kernel);
std::string backward_tensors_refusal(int device, const BackwardProblem& problem, CudaKernel kernel);

// Queues the chosen kernel on `stream` (the dispatch has checked that it can run the call).
void attention_forward(int device, const ForwardProblem& problem, CudaKernelChoice choice, fa4j_stream stream);
void attention_backward(int device, const BackwardProblem& problem, CudaKernelChoice choice, fa4j_stream stream);
// Decode: why its kernels cannot take the call (grid limits, forced splits), or ""; the launches.
std::string decode_tensors_refusal(const DecodeProblem& problem);
void attention_decode(int device, const DecodeProblem& problem, fa4j_stream stream);
// The merge: why its kernel cannot take the call (too many partial results), or ""; its launch.
std::string merge_tensors_refusal(const MergeProblem& problem);
void attention_merge(int device, const MergeProblem& problem, fa4j_stream stream);
void mem_get_info(int device, size_t* free_bytes, size_t* total_bytes);
void stream_wait(int device, fa4j_stream waiting, fa4j_stream waited);

// The library's stream-ordered memory pool (memory_pool.cu): one per device, created on first use.
void* pool_allocate(int device, size_t bytes, fa4j_stream stream);
void pool_get_info(int device, uint64_t* used_bytes, uint64_t* reserved_bytes);
void pool_trim(int device, uint64_t keep_bytes);

// Points in streams' work, for memory released by one holder while others still hold it: an event per
// stream, recorded when a holder lets go, waited for when the memory is finally freed.
class PendingUses {
public:
    PendingUses() = default;
    PendingUses(const PendingUses&) = delete;
    PendingUses& operator=(const PendingUses&) = delete;
    ~PendingUses();  // destroys the events (waiting for nothing)

    // Records, for each stream, the work queued on it so far.
    void record(int device, const fa4j_stream* streams, int count);
    // Frees pool memory once the recorded work and the work queued so far on `streams` have finished,
    // ordered on streams[0] (on the legacy default stream when count == 0). Never blocks the host.
    void free_after(int device, void* pointer, const fa4j_stream* streams, int count);
    // Blocks the calling thread until the recorded work and the work queued so far on `streams` have
    // finished (before handing memory back to a foreign owner, who knows nothing of our streams).
    void wait_host(int device, const fa4j_stream* streams, int count);

private:
    int device_ = -1;
    std::vector<void*> events_;  // cudaEvent_t, kept opaque so this header needs no CUDA headers
};

}  // namespace fa4j::cuda
