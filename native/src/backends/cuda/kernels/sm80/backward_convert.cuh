// 3. The SM80 backward's dQ conversion: dq = dtype(scale · accumulator), through dq's strides, for every
// query row of every sequence (rows no key tile reached keep the preprocess's zeros).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backends/cuda/kernels/common/attention_params.hpp"
#include "backends/cuda/kernels/common/seqlen_info.cuh"
#include "backends/cuda/kernels/sm80/backward_primitives.cuh"

namespace fa4j::cuda::kernels::sm80::bwd {

// Blocks per (sequence, query head): kBwdThreads / (kD / 8) rows each, covering the longest sequence.
template <int kD>
__host__ __device__ inline int64_t convert_blocks_per_head(int max_seqlen_q) {
    constexpr int kRows = kBwdThreads / (kD / 8);
    return (int64_t(max_seqlen_q) + kRows - 1) / kRows;
}

// One thread per (query row, 8-column chunk). Block `first_block + blockIdx.x` of the linear order
// (sequence, head, row block), row blocks fastest.
template <typename T, class Tl>
__global__ void __launch_bounds__(kBwdThreads) backward_convert_dq_kernel(const __grid_constant__ BackwardParams p,
                                                                          int64_t first_block) {
    constexpr int kD = Tl::kD, kChunks = kD / 8, kRows = kBwdThreads / kChunks;
    const int64_t per_head = convert_blocks_per_head<kD>(p.seqlen_q);
    const int64_t block = first_block + blockIdx.x;
    const int part = static_cast<int>(block % per_head);
    const int64_t bh = block / per_head;
    const int h = static_cast<int>(bh % p.heads_q), b = static_cast<int>(bh / p.heads_q);
    const SeqlenInfo seq = SeqlenInfo::of(p, b);
    const int i = part * kRows + static_cast<int>(threadIdx.x) / kChunks;  // row within the sequence
    const int chunk = static_cast<int>(threadIdx.x) % kChunks;
    if (i >= seq.seqlen_q || chunk * 8 >= p.head_dim) return;
    const int64_t ws = int64_t(h) * p.ws_rows_per_head + workspace_row0(p.seqlens.varlen(), b, seq.q_row0, p.seqlen_q_pad) + i;
    const float* src = p.dq_accum + ws * kD;
    const float4 x = *reinterpret_cast<const float4*>(src + dq_accum_chunk(i, 2 * chunk) * 4);
    const float4 y = *reinterpret_cast<const float4*>(src + dq_accum_chunk(i, 2 * chunk + 1) * 4);
    const float s = p.softmax_scale;
    const uint32_t w[4] = {Elem<T>::pack(x.x * s, x.y * s), Elem<T>::pack(x.z * s, x.w * s),
                           Elem<T>::pack(y.x * s, y.y * s), Elem<T>::pack(y.z * s, y.w * s)};
    uint16_t* dst = const_cast<uint16_t*>(row_ptr(p.dq, b, seq.q_row0 + i, h)) + chunk * 8;
    if (p.vec16) {
        *reinterpret_cast<uint4*>(dst) = make_uint4(w[0], w[1], w[2], w[3]);
    } else {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            dst[2 * j] = static_cast<uint16_t>(w[j] & 0xffffu);
            dst[2 * j + 1] = static_cast<uint16_t>(w[j] >> 16);
        }
    }
}

}  // namespace fa4j::cuda::kernels::sm80::bwd
