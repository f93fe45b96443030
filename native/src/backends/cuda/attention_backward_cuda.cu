// Attention backward on CUDA devices. The FlashAttention-2 kernels are being written; until they land this
// entry point reports the call as unsupported rather than computing anything.
#include "backends/cuda/cuda_backend.hpp"
#include "core/error.hpp"

namespace fa4j::cuda {

void attention_backward(int, const BackwardProblem&, fa4j_stream) {
    fail(FA4J_ERROR_UNSUPPORTED, "attention backward on CUDA tensors is not implemented in this build yet; use CPU tensors");
}

}  // namespace fa4j::cuda
