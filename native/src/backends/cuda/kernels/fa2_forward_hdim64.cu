// Forward kernels for head dims up to 64 (fp16 and bf16, causal and not). Head dims below 64 run here
// with the columns past their end zero-filled.
#include "backends/cuda/kernels/fa2_forward_kernel.cuh"

#ifdef FA4J_FWD_TUNING
#include <cstdlib>
#endif

namespace fa4j::cuda::fa2 {

// 128 query rows over 4 warps (32 rows, two m16 fragments each): every K and V fragment a warp loads
// from shared memory feeds two MMAs, half the shared-memory traffic per FLOP of 16-row warps. 64 keys
// per step: O (64) and S (64) accumulators leave ptxas room to keep the next fragments in flight
// without spilling (a 128-key step needs 128 for S and spills).
using Hdim64Tile = ForwardTile</*kHeadDim=*/64, /*kBlockM=*/128, /*kBlockN=*/64, /*kWarps=*/4, /*kStages=*/2,
                               /*kMinBlocksPerSm=*/2>;

template <>
void run_forward<64>(const ForwardParams& params, Elem elem, bool causal, cudaStream_t stream) {
#ifdef FA4J_FWD_TUNING  // measurement builds only: FA4J_FWD_VARIANT picks another tile shape
    const char* variant = std::getenv("FA4J_FWD_VARIANT");
    const int v = variant ? std::atoi(variant) : 0;
    if (v == 1) return dispatch_forward<ForwardTile<64, 128, 128, 4, 2, 1>>(params, elem, causal, stream);
    if (v == 2) return dispatch_forward<ForwardTile<64, 128, 64, 4, 2, 3>>(params, elem, causal, stream);
    if (v == 3) return dispatch_forward<ForwardTile<64, 128, 64, 4, 3, 2>>(params, elem, causal, stream);
    if (v == 4) return dispatch_forward<ForwardTile<64, 128, 64, 8, 2, 2>>(params, elem, causal, stream);
#endif
    dispatch_forward<Hdim64Tile>(params, elem, causal, stream);
}

}  // namespace fa4j::cuda::fa2
