// 1. The SM80 backward's preprocess: per query row D = rowsum(dO ∘ O) and the forward's lse into the
// workspace, and the fp32 dQ accumulator zeroed, for every workspace row the main kernel will touch: each
// sequence's rows rounded up to the query tile. Padding rows, and rows that attend nothing (lse = -inf),
// get lse = +inf, so that their P = exp(s - lse) is exactly 0 (and their gradients too); padding rows D = 0.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backends/cuda/kernels/common/attention_params.hpp"
#include "backends/cuda/kernels/common/seqlen_info.cuh"
#include "backends/cuda/kernels/sm80/backward_primitives.cuh"

namespace fa4j::cuda::kernels::sm80::bwd {

// Blocks per (sequence, query head): kBwdThreads / (kD / 8) rows each, covering the longest sequence's rows
// rounded up to the query tile; at least one, which reports the sequence's clamped metadata.
template <class Tl>
__host__ __device__ inline int64_t preprocess_blocks_per_head(int max_seqlen_q) {
    constexpr int kRows = kBwdThreads / (Tl::kD / 8);
    static_assert(Tl::kBlockM % kRows == 0, "a block's rows belong to one query tile");
    const int64_t blocks = round_up(max_seqlen_q, Tl::kBlockM) / kRows;
    return blocks > 0 ? blocks : 1;
}

// One thread per (workspace row, 8-column chunk); kD/8 consecutive lanes share a row. Block `first_block +
// blockIdx.x` of the linear order (sequence, head, row block), row blocks fastest.
template <typename T, class Tl>
__global__ void __launch_bounds__(kBwdThreads) backward_preprocess_kernel(const __grid_constant__ BackwardParams p,
                                                                          int64_t first_block) {
    constexpr int kD = Tl::kD, kChunks = kD / 8, kRows = kBwdThreads / kChunks;
    const int64_t per_head = preprocess_blocks_per_head<Tl>(p.seqlen_q);
    const int64_t block = first_block + blockIdx.x;
    const int part = static_cast<int>(block % per_head);
    const int64_t bh = block / per_head;
    const int h = static_cast<int>(bh % p.heads_q), b = static_cast<int>(bh / p.heads_q);
    const SeqlenInfo seq = SeqlenInfo::of(p, b);
    if (h == 0 && part == 0 && threadIdx.x == 0) seq.report(p);

    const int i = part * kRows + static_cast<int>(threadIdx.x) / kChunks;  // row within the sequence
    const int chunk = static_cast<int>(threadIdx.x) % kChunks;
    const bool valid = i < round_up(seq.seqlen_q, Tl::kBlockM);
    float sum = 0.0f;
    if (i < seq.seqlen_q && chunk * 8 < p.head_dim) {
        const uint16_t* o = row_ptr(p.out, b, seq.q_row0 + i, h) + chunk * 8;
        const uint16_t* d = row_ptr(p.dout, b, seq.q_row0 + i, h) + chunk * 8;
        uint16_t ov[8], dv[8];
        if (p.vec16) {
            *reinterpret_cast<uint4*>(ov) = *reinterpret_cast<const uint4*>(o);
            *reinterpret_cast<uint4*>(dv) = *reinterpret_cast<const uint4*>(d);
        } else {
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                ov[j] = o[j];
                dv[j] = d[j];
            }
        }
#pragma unroll
        for (int j = 0; j < 8; ++j) sum += Elem<T>::to_float(ov[j]) * Elem<T>::to_float(dv[j]);
    }
    // Every lane of the warp takes part (rows of one warp may differ in `valid`).
#pragma unroll
    for (int offset = kChunks / 2; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    if (!valid) return;

    const int64_t ws = int64_t(h) * p.ws_rows_per_head + workspace_row0(p.seqlens.varlen(), b, seq.q_row0, p.seqlen_q_pad) + i;
    float4* acc = reinterpret_cast<float4*>(p.dq_accum + ws * kD + chunk * 8);
    acc[0] = make_float4(0.f, 0.f, 0.f, 0.f);
    acc[1] = make_float4(0.f, 0.f, 0.f, 0.f);
    if (chunk == 0) {
        p.delta[ws] = sum;
        float row_lse = INFINITY;  // padding rows: P = exp(s - inf) = 0
        if (i < seq.seqlen_q) {
            const float lse = p.lse.data[b * p.lse.batch_stride + h * p.lse.head_stride + (seq.q_row0 + i) * p.lse.row_stride];
            // A row that attends no key has lse = -inf; +inf makes its P (and gradients) exactly 0.
            if (lse != -INFINITY) row_lse = lse;
        }
        p.lse_rows[ws] = row_lse;
    }
}

}  // namespace fa4j::cuda::kernels::sm80::bwd
