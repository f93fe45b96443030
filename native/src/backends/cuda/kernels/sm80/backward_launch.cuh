// The SM80 backward's launcher: the three kernels in stream order (preprocess, main, dQ conversion), each
// over a linear index of CTAs in grids of at most 2^30, so that no batch or head count meets a grid limit.
// Included only by the generated translation units (backward.cu.in).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "backends/cuda/cuda_check.cuh"
#include "backends/cuda/kernels/sm80/backward.hpp"
#include "backends/cuda/kernels/sm80/backward_convert.cuh"
#include "backends/cuda/kernels/sm80/backward_main.cuh"
#include "backends/cuda/kernels/sm80/backward_preprocess.cuh"
#include "backends/cuda/kernels/sm80/backward_tiles.hpp"
#include "core/error.hpp"

namespace fa4j::cuda::kernels::sm80 {

// Calls launch(first_block, count) for consecutive grids covering `blocks` CTAs (grid x allows 2^31 - 1),
// checking each launch.
template <class Launch>
void launch_linear(int64_t blocks, Launch launch) {
    constexpr int64_t kMaxGrid = int64_t{1} << 30;
    for (int64_t first = 0; first < blocks; first += kMaxGrid) {
        launch(first, static_cast<unsigned>(blocks - first < kMaxGrid ? blocks - first : kMaxGrid));
        FA4J_CUDA_CHECK(cudaGetLastError());
    }
}

template <int kD, ElemType kElem>
void run_backward(const BackwardParams& p, cudaStream_t stream) {
    using namespace bwd;
    using T = typename ElemOf<kElem>::type;
    using Tl = BackwardTile<kD>;
    int device = 0, cc_major = 0, smem_optin = 0;
    FA4J_CUDA_CHECK(cudaGetDevice(&device));
    FA4J_CUDA_CHECK(cudaDeviceGetAttribute(&cc_major, cudaDevAttrComputeCapabilityMajor, device));
    FA4J_CUDA_CHECK(cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    // The kernel table refuses the GPUs without enough (from the documented limits per compute
    // capability); this is the device's own word.
    const int smem = backward_smem_bytes(kD, cc_major);
    if (smem_optin < smem)
        fail(FA4J_ERROR_UNSUPPORTED, "the SM80 backward kernel needs " + std::to_string(smem) +
                                         " bytes of shared memory per block for head dims up to " + std::to_string(kD) +
                                         "; this device allows " + std::to_string(smem_optin) +
                                         " (compute capability 8.0, 8.7 and 9.0 GPUs such as the A100 and H100 have enough)");

    const int64_t heads = int64_t(p.batch) * p.heads_q;
    launch_linear(heads * preprocess_blocks_per_head<Tl>(p.seqlen_q), [&](int64_t first, unsigned blocks) {
        backward_preprocess_kernel<T, Tl><<<blocks, kBwdThreads, 0, stream>>>(p, first);
    });
    const int64_t work = backward_work_count<Tl>(p);
    if (work > 0) {
        const auto kernel = p.score.transforms()
                                ? (p.vec16 ? backward_main_kernel<T, Tl, true, true> : backward_main_kernel<T, Tl, true, false>)
                                : (p.vec16 ? backward_main_kernel<T, Tl, false, true> : backward_main_kernel<T, Tl, false, false>);
        FA4J_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
        launch_linear(work, [&](int64_t first, unsigned blocks) {
            kernel<<<blocks, kBwdThreads, static_cast<size_t>(smem), stream>>>(p, first);
        });
    }
    launch_linear(heads * convert_blocks_per_head<kD>(p.seqlen_q), [&](int64_t first, unsigned blocks) {
        backward_convert_dq_kernel<T, Tl><<<blocks, kBwdThreads, 0, stream>>>(p, first);
    });
}

}  // namespace fa4j::cuda::kernels::sm80
