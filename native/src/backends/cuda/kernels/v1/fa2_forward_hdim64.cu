// Forward kernels for head dims up to 64 (fp16 and bf16, causal and not). Head dims below 64 run here
// with the columns past their end zero-filled.
#include "backends/cuda/kernels/v1/fa2_forward_kernel.cuh"


namespace fa4j::cuda::v1::fa2 {

// 128 query rows over 4 warps (32 rows, two m16 fragments each): every K and V fragment a warp loads
// from shared memory feeds two MMAs, half the shared-memory traffic per FLOP of 16-row warps. 64 keys
// per step: O (64) and S (64) accumulators leave ptxas room to keep the next fragments in flight
// without spilling (a 128-key step needs 128 for S and spills).
using Hdim64Tile = ForwardTile</*kHeadDim=*/64, /*kBlockM=*/128, /*kBlockN=*/64, /*kWarps=*/4, /*kStages=*/2,
                               /*kMinBlocksPerSm=*/2>;

template <>
void run_forward<64>(const ForwardParams& params, Elem elem, bool causal, cudaStream_t stream) {
    dispatch_forward<Hdim64Tile>(params, elem, causal, stream);
}

}  // namespace fa4j::cuda::v1::fa2
