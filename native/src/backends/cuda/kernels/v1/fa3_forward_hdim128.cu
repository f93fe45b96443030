// Hopper forward kernels for head dims 72 to 128 (fp16 and bf16, causal and not); head dims below 128
// run with the columns past their end zero-filled by TMA.
#include "backends/cuda/kernels/v1/fa3_forward_kernel.cuh"

namespace fa4j::cuda::v1::fa3 {

// 128 query rows (two consumer warpgroups of 64, taking turns), 128 keys per step: per consumer thread
// S takes 64 registers, P 32 and O 64, which fits the 168 that ptxas allocates under the launch bound
// (it does not compile the consumer branch to setmaxnreg's 240: 192 keys spilled). Two stages of K
// and V (2 × 64 KB) plus Q (32 KB) fill 160 KB of the 227 KB a CTA may have.
using Hdim128Tile = Fa3Tile</*kHeadDim=*/128, /*kBlockN=*/128, /*kConsumers=*/2, /*kStages=*/2, /*kPingpong=*/true>;

template <>
bool run_forward<128>(const ForwardParams& params, Elem elem, bool causal, cudaStream_t stream) {
    return dispatch_forward<Hdim128Tile>(params, elem, causal, stream);
}

}  // namespace fa4j::cuda::v1::fa3
