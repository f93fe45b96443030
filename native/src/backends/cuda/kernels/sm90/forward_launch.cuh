// Host side of the Hopper forward: builds the kernel's parameters (TMA descriptors, the schedule) and
// launches an instantiation. Included by the generated per-(head dim, dtype) translation units
// (forward.cu.in) and by measurement tools.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "backends/cuda/cuda_check.cuh"
#include "backends/cuda/kernels/sm90/epilogue.cuh"
#include "backends/cuda/kernels/sm90/forward.hpp"
#include "backends/cuda/kernels/sm90/forward_kernel.cuh"
#include "backends/cuda/kernels/sm90/forward_tile.cuh"
#include "backends/cuda/kernels/sm90/mainloop.cuh"
#include "backends/cuda/kernels/sm90/tensor_map.hpp"
#include "backends/cuda/kernels/sm90/tile_scheduler.cuh"

namespace fa4j::cuda::sm90 {

template <kernels::ElemType kElem>
using ElemOf = std::conditional_t<kElem == kernels::ElemType::F16, __half, __nv_bfloat16>;

// The element type a generated translation unit names as fp16 or bf16 (cmake's FA4J_ELEM).
constexpr kernels::ElemType elem_named(const char* name) {
    return name[0] == 'f' ? kernels::ElemType::F16 : kernels::ElemType::BF16;
}

// Whether a mask makes later query tiles of a (batch, head) see more keys than earlier ones (the causal
// mask, a right-bounded window without a left bound): then the heaviest tiles of every head go first.
inline bool tiles_grow_with_m(const kernels::ScoreParams& score) {
    return score.window_left == ScoreWindow::kNoBound && score.window_right != ScoreWindow::kNoBound;
}

// The schedule of the default single-tile scheduler: the order of v1's 2-D grid (tile_scheduler.cuh).
inline TileSchedulerParams single_tile_schedule(const kernels::ForwardParams& p, int block_m) {
    TileSchedulerParams s{};
    s.m_blocks = static_cast<int>((static_cast<int64_t>(p.seqlen_q) + block_m - 1) / block_m);
    s.heads = p.heads_q;
    s.batch = p.batch;
    s.heads_fastest = tiles_grow_with_m(p.score) ? 1 : 0;
    s.total = static_cast<int64_t>(s.m_blocks) * s.heads * s.batch;
    s.hb_per_section = s.heads;
    return s;
}

template <class Kernel>
void launch_forward_kernel(const ForwardKernelParams& kp, int sm_count, cudaStream_t stream) {
    const auto kernel = forward_kernel<Kernel>;
    FA4J_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Kernel::kSmemBytes));
    const dim3 grid = Kernel::Scheduler::grid(kp.sched, sm_count);
    kernel<<<grid, Kernel::kThreads, Kernel::kSmemBytes, stream>>>(kp);
    FA4J_CUDA_CHECK(cudaGetLastError());
}

// Launches tile `Tile` with scheduler `Scheduler` (schedule `sched`): the score-transform instantiation
// when the call has softcap or ALiBi, the plain one otherwise. False (nothing queued) if TMA cannot
// describe the tensors or the scheduler cannot address the tiles.
template <class Tile, class T, class Scheduler>
bool launch_forward(const kernels::ForwardParams& p, const TileSchedulerParams& sched, int sm_count,
                    cudaStream_t stream) {
    if (sched.total == 0 || described_rows_q(p) == 0) return true;  // no output row exists
    if (!Scheduler::supports(sched)) return false;
    ForwardKernelParams kp{};
    kp.p = p;
    kp.sched = sched;
    if (!describe_forward_tensors(p, Tile::kBlockM, Tile::kBlockN, kp.tma)) return false;
    if (p.score.transforms())
        launch_forward_kernel<ForwardKernel<ForwardMainloop<Tile, T, true>, ForwardEpilogue<Tile, T>, Scheduler>>(
            kp, sm_count, stream);
    else
        launch_forward_kernel<ForwardKernel<ForwardMainloop<Tile, T, false>, ForwardEpilogue<Tile, T>, Scheduler>>(
            kp, sm_count, stream);
    return true;
}

// The release instantiation: the head dim's tile (tile_size.hpp), one work tile per CTA.
template <int kHeadDim, kernels::ElemType kElem>
bool run_forward_instance(const kernels::ForwardParams& p, cudaStream_t stream) {
    using Tile = ForwardTileOf<kHeadDim>;
    return launch_forward<Tile, ElemOf<kElem>, SingleTileScheduler>(p, single_tile_schedule(p, Tile::kBlockM),
                                                                     /*sm_count=*/0, stream);
}

}  // namespace fa4j::cuda::sm90
