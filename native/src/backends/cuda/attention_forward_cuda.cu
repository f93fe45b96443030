// Attention forward on CUDA devices. The FlashAttention-2 kernel is being written; until it lands this
// entry point reports the call as unsupported rather than computing anything.
#include "backends/cuda/cuda_backend.hpp"
#include "core/error.hpp"

namespace fa4j::cuda {

void attention_forward(int, const ForwardProblem&, fa4j_stream) {
    fail(FA4J_ERROR_UNSUPPORTED, "attention forward on CUDA tensors is not implemented in this build yet; use CPU tensors");
}

}  // namespace fa4j::cuda
