// FlashAttention-2 backward for head dims up to 64 (padded to 64): fp16 and bf16, causal or not.
#include "backends/cuda/kernels/fa2_backward_kernel.cuh"

namespace fa4j::cuda::fa2bwd {

FA4J_FA2BWD_INSTANTIATIONS(, 64)

}  // namespace fa4j::cuda::fa2bwd
