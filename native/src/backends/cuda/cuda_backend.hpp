// The CUDA backend as the rest of the library sees it. Implemented in cuda_*.cu when the library is
// built with CUDA, and by cuda_unavailable.cpp otherwise, so callers never need #ifdefs.
#pragma once

#include <cstddef>
#include <cstdint>
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

// check_*: throws FA4J_ERROR_UNSUPPORTED (with the reason) for a call the kernels cannot run, launching
// nothing; attention_*: the same checks, then the launch. `family` is AUTO, SM80 or SM90.
void check_forward(int device, const ForwardProblem& problem, fa4j_kernel_family family);
void check_backward(int device, const BackwardProblem& problem, fa4j_kernel_family family);
void attention_forward(int device, const ForwardProblem& problem, fa4j_kernel_family family, fa4j_stream stream);
void attention_backward(int device, const BackwardProblem& problem, fa4j_kernel_family family, fa4j_stream stream);
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
