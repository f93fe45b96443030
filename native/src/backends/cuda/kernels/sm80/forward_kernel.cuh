// The sm_80 forward kernel: out = softmax(transformed scores, masked) · v and the row logsumexp, for
// every feature of kernels::ForwardParams (window and causal mask, softcap, ALiBi, varlen batches),
// composed of
//   tile_scheduler.cuh    which (query tile, head, sequence) a CTA computes
//   common/seqlen_info    where the sequence lives and how long it is (dense or varlen, clamped)
//   common/block_range    which key tiles the query tile attends, and which of them need the mask
//   forward_mainloop.cuh  the cp.async K/V pipeline, S = Q·Kᵀ, transform, mask, online softmax, O += P·V
//   forward_epilogue.cuh  O normalised, staged through shared memory, stored; lse
// with the tile shape of its head dim from forward_tiles.cuh.
//
// Instantiations: (head dim, dtype) × kTransform. kTransform (softcap or ALiBi) is a compile-time bool
// because the transform is per score and inside the hot loop: with it compiled in, even behind a run-time
// branch, its state (slope, softcap) and its code (tanhf, an IEEE division, the integer distance) take
// registers in the loop of every call. ptxas, sm_90a: d = 128 spills 68 bytes with the transform compiled
// in against 12 without, d = 96 204 against 32 (docs/PERF.md). Everything else is a run-time field: the
// window costs only the masked tiles (a few integer operations per row), varlen only the per-CTA offsets.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "backends/cuda/cuda_check.cuh"
#include "backends/cuda/kernels/common/attention_params.hpp"
#include "backends/cuda/kernels/common/block_range.cuh"
#include "backends/cuda/kernels/common/score_transform.cuh"
#include "backends/cuda/kernels/common/seqlen_info.cuh"
#include "backends/cuda/kernels/sm80/forward.hpp"
#include "backends/cuda/kernels/sm80/forward_epilogue.cuh"
#include "backends/cuda/kernels/sm80/forward_mainloop.cuh"
#include "backends/cuda/kernels/sm80/forward_tiles.cuh"
#include "backends/cuda/kernels/sm80/fragment_softmax.cuh"
#include "backends/cuda/kernels/sm80/tile_scheduler.cuh"

namespace fa4j::cuda::sm80 {

template <class Tile, class T, bool kTransform>
__global__ void __launch_bounds__(Tile::kThreads, Tile::kMinBlocksPerSm)
    forward_kernel(const __grid_constant__ kernels::ForwardParams p) {
    using Mainloop = ForwardMainloop<Tile, T, kTransform>;
    using Epilogue = ForwardEpilogue<Tile, T>;

    ForwardWork work;
    if (!ForwardTileScheduler<Tile::kBlockM>::work(p, work)) return;
    const kernels::SeqlenInfo seq = kernels::SeqlenInfo::of(p, work.batch);
    // One thread per (sequence, head 0) reports clamped metadata, also when the sequence turns out empty.
    if (threadIdx.x == 0 && work.m_block == 0 && work.head == 0) seq.report(p);
    const int m0 = work.m_block * Tile::kBlockM;
    if (m0 >= seq.seqlen_q) return;  // the grid covers the longest sequence; this one is shorter

    const int64_t q_row = seq.q_row0 + m0;  // the tile's first row in the (packed) query tensors
    const int kv_head = work.head / p.group_size;
    ForwardBlock<T> b;
    b.q = static_cast<const T*>(p.q.data) + work.batch * p.q.batch_stride + q_row * p.q.row_stride +
          work.head * p.q.head_stride;
    b.k = static_cast<const T*>(p.k.data) + work.batch * p.k.batch_stride + seq.k_row0 * p.k.row_stride +
          kv_head * p.k.head_stride;
    b.v = static_cast<const T*>(p.v.data) + work.batch * p.v.batch_stride + seq.k_row0 * p.v.row_stride +
          kv_head * p.v.head_stride;
    b.m0 = m0;
    b.rows = min(Tile::kBlockM, seq.seqlen_q - m0);
    b.seqlen_q = seq.seqlen_q;
    b.seqlen_k = seq.seqlen_k;
    b.keys = kernels::key_blocks(seq.window(p.score), m0, b.rows, Tile::kBlockN);

    kernels::ScoreTransform transform{};
    // Of a square sequence: the main loop gives it aligned rows i' (see there), and i' - j is the distance.
    if constexpr (kTransform) transform = kernels::ScoreTransform::of(p, seq.seqlen_k, seq.seqlen_k, work.batch, work.head);

    extern __shared__ __align__(128) unsigned char smem[];
    ForwardSmem s;
    s.q = smem_address(smem);
    s.k = s.q + Tile::kQBytes;
    s.v = s.k + Tile::kStages * Tile::kKvBytes;

    float acc_o[Tile::kMFrags][Tile::kOTiles][4] = {};
    FragmentSoftmax<Tile::kMFrags> softmax;
    softmax.init();
    Mainloop::run(p, b, transform, s, acc_o, softmax);

    // The epilogue's rows, found again from the CTA index rather than kept through the loop, which has
    // no registers to spare (a few loads that hit L1 and some integer arithmetic, once per CTA).
    ForwardTileScheduler<Tile::kBlockM>::work(p, work);
    const kernels::SeqlenInfo seq_out = kernels::SeqlenInfo::of(p, work.batch);
    const int m0_out = work.m_block * Tile::kBlockM;
    const int64_t out_q_row = seq_out.q_row0 + m0_out;
    T* out_row = static_cast<T*>(p.out.data) + work.batch * p.out.batch_stride + out_q_row * p.out.row_stride +
                 work.head * p.out.head_stride;
    float* lse_row =
        p.lse.data + work.batch * p.lse.batch_stride + work.head * p.lse.head_stride + out_q_row * p.lse.row_stride;
    Epilogue::store(p, smem, out_row, lse_row, min(Tile::kBlockM, seq_out.seqlen_q - m0_out), acc_o, softmax);
}

// Launches forward_kernel<Tile, T, kTransform> for `p` on `stream`.
template <class Tile, class T, bool kTransform>
void launch_forward(const kernels::ForwardParams& p, cudaStream_t stream) {
    using Scheduler = ForwardTileScheduler<Tile::kBlockM>;
    if (Scheduler::tiles(p) == 0) return;
    const auto kernel = forward_kernel<Tile, T, kTransform>;
    FA4J_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tile::kSmemBytes));
    kernel<<<Scheduler::grid(p), Tile::kThreads, Tile::kSmemBytes, stream>>>(p);
    FA4J_CUDA_CHECK(cudaGetLastError());
}

template <int kHeadDim, kernels::ElemType kElem>
void run_forward(const kernels::ForwardParams& params, cudaStream_t stream) {
    using Tile = typename ForwardTileOf<kHeadDim>::type;
    using T = std::conditional_t<kElem == kernels::ElemType::F16, __half, __nv_bfloat16>;
    if (params.score.transforms()) launch_forward<Tile, T, true>(params, stream);
    else launch_forward<Tile, T, false>(params, stream);
}

}  // namespace fa4j::cuda::sm80
