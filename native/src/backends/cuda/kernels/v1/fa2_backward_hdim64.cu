// Backward kernels for head dims up to 64 (fp16 and bf16, causal and not); head dims below 64 run here
// with the columns past their end zero-filled.
#include "backends/cuda/kernels/v1/fa2_backward_kernel.cuh"


namespace fa4j::cuda::v1::fa2bwd {

// 128 query rows per step, 128 keys per CTA: dK/dV take 64 registers, S/P and dP 64 each. Twice the
// FLOPs of a 64-row step per barrier pair and per lse/D load; S/dP as 2 x 4 warps of 64 x 32, dK/dV and
// dQ as 4 x 2 warps of 32 x 32. dQ as one bulk reduction per step, P and dS through stmatrix. Measured
// on the H100, bf16 B=2 N=8192 H=16, non-causal / causal TFLOP/s (docs/PERF.md, backward v2; variants
// of one run compared with each other). Run 1 (4-byte P/dS stores): 64-row steps with red.v2 atomics
// (the v1 shape) 215.9 / 207.1; 128 rows with red.v2 246.6 / 223.6, red.v4 237.0 / 213.4, kBulk
// 256.8 / 240.0; S/dP as 4 x 2 warps of 32 x 64 256.6 / 234.5. Run 2: S and dP both before P and dS
// (FlashAttention-2's order) 249.0 / 201.3 against 255.3 / 230.5. Run 3: stmatrix 275.0 / 241.3
// against 265.6 / 239.7 with 4-byte stores (ncu: fewer mio_throttle and short_scoreboard stalls).
using Hdim64Tile = BwdTile</*kD=*/64, /*kBlockM=*/128, /*kBlockN=*/128, /*kSdpWarpsM=*/2, /*kKvWarpsN=*/4,
                           /*kDqWarpsM=*/4, DqWrite::kBulk>;
constexpr bool kHdim64Stagger = false;

template <>
void run_backward<64>(const Params& p, bool bf16, bool causal, cudaStream_t stream) {
    dispatch_backward<Hdim64Tile>(p, bf16, causal, kHdim64Stagger, stream);
}

}  // namespace fa4j::cuda::v1::fa2bwd
