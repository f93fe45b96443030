// The CUDA backend of a library built without nvcc: reports no devices and refuses device work.
#include "backends/cuda/cuda_backend.hpp"
#include "core/error.hpp"

namespace fa4j::cuda {
namespace {
[[noreturn]] void unavailable() { fail(FA4J_ERROR_NO_DEVICE, "this build of flashattn4j has no CUDA support"); }
}  // namespace

bool compiled() { return false; }
int device_count() { return 0; }
void get_device_properties(int, fa4j_device_properties*) { unavailable(); }
void* malloc_device(int, size_t) { unavailable(); }
void free_device(int, void*) { unavailable(); }
void memcpy_sync(int, void*, const void*, size_t, fa4j_memcpy_kind, fa4j_stream) { unavailable(); }
void memset_async(int, void*, int, size_t, fa4j_stream) { unavailable(); }
fa4j_stream stream_create(int) { unavailable(); }
void stream_destroy(int, fa4j_stream) { unavailable(); }
void stream_synchronize(int, fa4j_stream) { unavailable(); }
void device_synchronize(int) { unavailable(); }
CudaArch device_arch(int) { unavailable(); }
std::string forward_tensors_refusal(int, const ForwardProblem&, CudaKernel) { unavailable(); }
std::string backward_tensors_refusal(int, const BackwardProblem&, CudaKernel) { unavailable(); }
void attention_forward(int, const ForwardProblem&, CudaKernelChoice, fa4j_stream) { unavailable(); }
void attention_backward(int, const BackwardProblem&, CudaKernelChoice, fa4j_stream) { unavailable(); }
std::string decode_tensors_refusal(const DecodeProblem&) { unavailable(); }
void attention_decode(int, const DecodeProblem&, fa4j_stream) { unavailable(); }
std::string merge_tensors_refusal(const MergeProblem&) { unavailable(); }
void attention_merge(int, const MergeProblem&, fa4j_stream) { unavailable(); }
void mem_get_info(int, size_t*, size_t*) { unavailable(); }
void stream_wait(int, fa4j_stream, fa4j_stream) { unavailable(); }
void* pool_allocate(int, size_t, fa4j_stream) { unavailable(); }
void pool_get_info(int, uint64_t*, uint64_t*) { unavailable(); }
void pool_trim(int, uint64_t) { unavailable(); }
PendingUses::~PendingUses() = default;
void PendingUses::record(int, const fa4j_stream*, int) { unavailable(); }
void PendingUses::free_after(int, void*, const fa4j_stream*, int) { unavailable(); }
void PendingUses::wait_host(int, const fa4j_stream*, int) { unavailable(); }

}  // namespace fa4j::cuda
