// Hopper forward kernels for head dims 8 to 64 (fp16 and bf16, causal and not); head dims below 64 run
// with the columns past their end zero-filled by TMA.
#include "backends/cuda/kernels/fa3_forward_kernel.cuh"

namespace fa4j::cuda::fa3 {

// 192 query rows (three consumer warpgroups of 64, 160 registers each: S 64, P 32, O 32), 128 keys per
// step; K and V tiles are 16 KB each, so four stages (128 KB) plus Q (24 KB) fit.
using Hdim64Tile = Fa3Tile</*kHeadDim=*/64, /*kBlockN=*/128, /*kConsumers=*/3, /*kStages=*/4, /*kPingpong=*/true>;

template <>
bool run_forward<64>(const ForwardParams& params, Elem elem, bool causal, cudaStream_t stream) {
#ifdef FA4J_FWD_TUNING  // measurement builds only: FA4J_FA3_VARIANT picks another tile shape
    const char* variant = std::getenv("FA4J_FA3_VARIANT");
    const int v = variant ? std::atoi(variant) : 0;
    if (v == 1) return dispatch_forward<Fa3Tile<64, 128, 2, 4, false>>(params, elem, causal, stream);
    if (v == 2) return dispatch_forward<Fa3Tile<64, 96, 3, 4, true>>(params, elem, causal, stream);
    if (v == 3) return dispatch_forward<Fa3Tile<64, 96, 3, 4, false>>(params, elem, causal, stream);
#endif
    return dispatch_forward<Hdim64Tile>(params, elem, causal, stream);
}

}  // namespace fa4j::cuda::fa3
