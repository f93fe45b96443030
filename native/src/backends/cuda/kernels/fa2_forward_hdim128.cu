// Forward kernels for head dims 72 to 128 (fp16 and bf16, causal and not); head dims below 128 run
// with the columns past their end zero-filled.
#include "backends/cuda/kernels/fa2_forward_kernel.cuh"

#ifdef FA4J_FWD_TUNING
#include <cstdlib>
#endif

namespace fa4j::cuda::fa2 {

// 128 query rows over 4 warps (32 rows each), 64 keys per step: O takes 128 registers and S 64, which
// with fragments and addresses just fits the 255-register limit; two stages of K and V (64 KB) plus
// Q (32 KB) leave room for two CTAs per SM on Hopper (228 KB).
using Hdim128Tile = ForwardTile</*kHeadDim=*/128, /*kBlockM=*/128, /*kBlockN=*/64, /*kWarps=*/4, /*kStages=*/2,
                                /*kMinBlocksPerSm=*/2>;

template <>
void run_forward<128>(const ForwardParams& params, Elem elem, bool causal, cudaStream_t stream) {
#ifdef FA4J_FWD_TUNING  // measurement builds only: FA4J_FWD_VARIANT picks another tile shape
    const char* variant = std::getenv("FA4J_FWD_VARIANT");
    const int v = variant ? std::atoi(variant) : 0;
    if (v == 1) return dispatch_forward<ForwardTile<128, 128, 32, 4, 2, 2>>(params, elem, causal, stream);
    if (v == 2) return dispatch_forward<ForwardTile<128, 128, 64, 8, 2, 2>>(params, elem, causal, stream);
    if (v == 3) return dispatch_forward<ForwardTile<128, 64, 64, 4, 2, 2>>(params, elem, causal, stream);
    if (v == 4) return dispatch_forward<ForwardTile<128, 128, 32, 4, 3, 2>>(params, elem, causal, stream);
#endif
    dispatch_forward<Hdim128Tile>(params, elem, causal, stream);
}

}  // namespace fa4j::cuda::fa2
