// Forward kernels for head dims 72 to 128 (fp16 and bf16, causal and not); head dims below 128 run
// with the columns past their end zero-filled.
#include "backends/cuda/kernels/v1/fa2_forward_kernel.cuh"


namespace fa4j::cuda::v1::fa2 {

// 128 query rows over 4 warps (32 rows each), 64 keys per step: O takes 128 registers and S 64, which
// with fragments and addresses just fits the 255-register limit; two stages of K and V (64 KB) plus
// Q (32 KB) leave room for two CTAs per SM on Hopper (228 KB).
using Hdim128Tile = ForwardTile</*kHeadDim=*/128, /*kBlockM=*/128, /*kBlockN=*/64, /*kWarps=*/4, /*kStages=*/2,
                                /*kMinBlocksPerSm=*/2>;

template <>
void run_forward<128>(const ForwardParams& params, Elem elem, bool causal, cudaStream_t stream) {
    dispatch_forward<Hdim128Tile>(params, elem, causal, stream);
}

}  // namespace fa4j::cuda::v1::fa2
