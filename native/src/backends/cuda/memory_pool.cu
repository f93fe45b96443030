// The library's device memory: one CUDA stream-ordered memory pool per device (cudaMemPoolCreate), and
// the bookkeeping that lets memory be freed in stream order while several holders and streams use it.
//
// Why a pool of our own rather than the device's default pool: other libraries in the process
// (PyTorch's allocator, cuDNN, a user's cudaMallocAsync) may use or tune the default pool; raising its
// release threshold for us would change their memory behaviour. Ours keeps everything it frees
// (release threshold: unlimited) so that a training step that allocates and frees the same sizes every
// step costs no driver allocation after the first; fa4j_cuda_pool_trim hands memory back on request.
//
// Reuse across streams is the pool's job: memory freed on stream A is handed to an allocation on stream
// B only once the free is known complete (the pool's default reuse policies follow event dependencies),
// so freeing in A's order is enough for correctness.
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <mutex>

#include "backends/cuda/cuda_backend.hpp"
#include "backends/cuda/cuda_check.cuh"
#include "backends/cuda/current_device.hpp"

namespace fa4j::cuda {
namespace {

cudaStream_t native(fa4j_stream stream) { return reinterpret_cast<cudaStream_t>(stream); }

std::mutex pools_mutex;
// Never destroyed: pools live as long as the process (destroying one from a static destructor could run
// after the driver has shut down).
auto* const pools = new std::map<int, cudaMemPool_t>();

// The device's pool, created on first use; the caller has made `device` current.
cudaMemPool_t pool_of(int device) {
    std::lock_guard<std::mutex> lock(pools_mutex);
    auto it = pools->find(device);
    if (it != pools->end()) return it->second;
    cudaMemPoolProps props{};
    props.allocType = cudaMemAllocationTypePinned;
    props.handleTypes = cudaMemHandleTypeNone;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = device;
    cudaMemPool_t pool = nullptr;
    FA4J_CUDA_CHECK(cudaMemPoolCreate(&pool, &props));
    uint64_t keep_everything = UINT64_MAX;
    const cudaError_t set = cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep_everything);
    if (set != cudaSuccess) {
        static_cast<void>(cudaMemPoolDestroy(pool));
        throw_cuda_error(set, "cudaMemPoolSetAttribute(cudaMemPoolAttrReleaseThreshold)");
    }
    pools->emplace(device, pool);
    return pool;
}

// The pool if it exists, without creating it (queries must not allocate anything).
cudaMemPool_t existing_pool(int device) {
    std::lock_guard<std::mutex> lock(pools_mutex);
    auto it = pools->find(device);
    return it == pools->end() ? nullptr : it->second;
}

}  // namespace

void* pool_allocate(int device, size_t bytes, fa4j_stream stream) {
    const CurrentDevice current(device);
    void* pointer = nullptr;
    // Zero bytes still yields a distinct, freeable pointer, so every buffer has one owner and one free.
    FA4J_CUDA_CHECK(cudaMallocFromPoolAsync(&pointer, bytes == 0 ? 1 : bytes, pool_of(device), native(stream)));
    return pointer;
}

void pool_get_info(int device, uint64_t* used_bytes, uint64_t* reserved_bytes) {
    const CurrentDevice current(device);
    *used_bytes = 0;
    *reserved_bytes = 0;
    cudaMemPool_t pool = existing_pool(device);
    if (pool == nullptr) return;
    FA4J_CUDA_CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, used_bytes));
    FA4J_CUDA_CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, reserved_bytes));
}

void pool_trim(int device, uint64_t keep_bytes) {
    const CurrentDevice current(device);
    cudaMemPool_t pool = existing_pool(device);
    if (pool == nullptr) return;
    FA4J_CUDA_CHECK(cudaMemPoolTrimTo(pool, static_cast<size_t>(keep_bytes)));
}

PendingUses::~PendingUses() {
    for (void* event : events_) static_cast<void>(cudaEventDestroy(static_cast<cudaEvent_t>(event)));
}

void PendingUses::record(int device, const fa4j_stream* streams, int count) {
    if (count == 0) return;
    const CurrentDevice current(device);
    device_ = device;
    for (int i = 0; i < count; i++) {
        cudaEvent_t event = nullptr;
        FA4J_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
        events_.push_back(event);  // owned from here on, even if recording fails
        FA4J_CUDA_CHECK(cudaEventRecord(event, native(streams[i])));
    }
}

void PendingUses::free_after(int device, void* pointer, const fa4j_stream* streams, int count) {
    const CurrentDevice current(device);
    const cudaStream_t order = count > 0 ? native(streams[0]) : nullptr;
    for (void* event : events_) FA4J_CUDA_CHECK(cudaStreamWaitEvent(order, static_cast<cudaEvent_t>(event), 0));
    for (int i = 1; i < count; i++) stream_wait(device, streams[0], streams[i]);
    FA4J_CUDA_CHECK(cudaFreeAsync(pointer, order));
}

void PendingUses::wait_host(int device, const fa4j_stream* streams, int count) {
    const CurrentDevice current(device);
    for (void* event : events_) FA4J_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event)));
    for (int i = 0; i < count; i++) FA4J_CUDA_CHECK(cudaStreamSynchronize(native(streams[i])));
}

}  // namespace fa4j::cuda
