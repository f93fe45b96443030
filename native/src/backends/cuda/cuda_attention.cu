// Attention on CUDA devices. The FlashAttention-2 kernels are the next milestone; until they land this
// backend validates the device and reports the call as unsupported rather than computing anything.
#include "backends/cuda/cuda_backend.hpp"
#include "core/error.hpp"

namespace fa4j::cuda {

void attention_forward(int, const ForwardProblem&, fa4j_stream) {
    fail(FA4J_ERROR_UNSUPPORTED, "attention on CUDA tensors is not implemented in this build yet; use CPU tensors");
}

void attention_backward(int, const BackwardProblem&, fa4j_stream) {
    fail(FA4J_ERROR_UNSUPPORTED, "attention on CUDA tensors is not implemented in this build yet; use CPU tensors");
}

}  // namespace fa4j::cuda
