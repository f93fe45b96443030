// Backward kernels for head dims 72 to 128 (fp16 and bf16, causal and not); head dims below 128 run
// with the columns past their end zero-filled.
#include "backends/cuda/kernels/v1/fa2_backward_kernel.cuh"


namespace fa4j::cuda::v1::fa2bwd {

// 64 query rows per step, 128 keys per CTA. dK and dV for 128 keys take 128 of the 255 registers, so
// the query tile stays at 64 rows (32 registers each for S/P and dP). S/dP and dQ as 2 x 4 warps of
// 32 x 32 and dK/dV as 4 x 2 warps of 32 x 64: the warp tiles that read the least shared memory.
// dQ leaves through shared memory as one bulk reduction per step (DqWrite::kBulk), P and dS through
// stmatrix. Measured on the H100, bf16 B=2 N=8192 H=16, non-causal / causal TFLOP/s (docs/PERF.md,
// backward v2; variants of one run compared with each other): kBulk 292.8 / 268.3 against red.v2
// atomics (the v1 scheme) 272.6 / 246.9, red.v4 after a lane-pair shuffle 270.4 / 241.8, dP in two
// column slices (16 fewer registers, dO fragments read twice) 269.4 / 256.6; stmatrix 301.6 against
// 299.6 with 4-byte stores (causal within the run-to-run spread, 260-274). Staggered query walks
// (Params::stagger) measured +4 % causal in one run and -3 % in the next: off.
using Hdim128Tile = BwdTile</*kD=*/128, /*kBlockM=*/64, /*kBlockN=*/128, /*kSdpWarpsM=*/2, /*kKvWarpsN=*/4,
                            /*kDqWarpsM=*/2, DqWrite::kBulk>;
constexpr bool kHdim128Stagger = false;

template <>
void run_backward<128>(const Params& p, bool bf16, bool causal, cudaStream_t stream) {
    dispatch_backward<Hdim128Tile>(p, bf16, causal, kHdim128Stagger, stream);
}

}  // namespace fa4j::cuda::v1::fa2bwd
