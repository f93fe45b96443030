// Which query tile a CTA of the sm_80 forward computes: (m_block, head, batch) from its index. The grid
// is one linear range of m_blocks × heads × batch tiles (m_blocks from seqlen_q, the longest sequence
// for varlen batches), spread over grid x, y and z only when it exceeds grid x (2^31 - 1), so that any
// batch × heads runs. The order is the one the hardware dispatches first to last: within each
// (batch, head) the m_blocks from the last to the first, since under a causal mask (or a window's
// right bound) the last query tiles attend the most keys, and a grid whose tail is made of short tiles
// balances better.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backends/cuda/kernels/common/attention_params.hpp"
#include "backends/cuda/kernels/sm80/primitives.cuh"

namespace fa4j::cuda::sm80 {

struct ForwardWork {
    int m_block;  // query rows [m_block·kBlockM, +kBlockM) of the sequence
    int head;     // query head
    int batch;    // sequence
};

template <int kBlockM>
struct ForwardTileScheduler {
    static constexpr int64_t kMaxGridX = 2147483647;  // 2^31 - 1
    static constexpr int64_t kMaxGridYZ = 65535;

    __host__ __device__ static int m_blocks(const kernels::ForwardParams& p) { return ceil_div(p.seqlen_q, kBlockM); }
    __host__ __device__ static int64_t tiles(const kernels::ForwardParams& p) {
        return static_cast<int64_t>(m_blocks(p)) * p.heads_q * p.batch;
    }

    // The launch grid: x first, then y, then z (z <= 65535 for any tile count below 2^63 / 2^47).
    static dim3 grid(const kernels::ForwardParams& p) {
        const int64_t n = tiles(p);
        const int64_t x = n < kMaxGridX ? n : kMaxGridX;
        const int64_t rest = (n + x - 1) / x;
        const int64_t y = rest < kMaxGridYZ ? rest : kMaxGridYZ;
        const int64_t z = (rest + y - 1) / y;
        return dim3(static_cast<unsigned>(x), static_cast<unsigned>(y), static_cast<unsigned>(z));
    }

    // This CTA's tile; false for the CTAs past the last tile (the grid rounds up to whole rows of x).
    // The CTA index is read with volatile moves, so a second call (the epilogue's) computes the tile
    // again instead of the compiler keeping the first call's results live through the main loop.
    __device__ __forceinline__ static bool work(const kernels::ForwardParams& p, ForwardWork& w) {
        uint32_t x, y, z, nx, ny;
        asm volatile("mov.u32 %0, %%ctaid.x;" : "=r"(x));
        asm volatile("mov.u32 %0, %%ctaid.y;" : "=r"(y));
        asm volatile("mov.u32 %0, %%ctaid.z;" : "=r"(z));
        asm volatile("mov.u32 %0, %%nctaid.x;" : "=r"(nx));
        asm volatile("mov.u32 %0, %%nctaid.y;" : "=r"(ny));
        const int64_t index = (static_cast<int64_t>(z) * ny + y) * nx + x;
        if (index >= tiles(p)) return false;
        const int blocks = m_blocks(p);
        const int64_t head_batch = index / blocks;
        w.m_block = blocks - 1 - static_cast<int>(index - head_batch * blocks);
        w.batch = static_cast<int>(head_batch / p.heads_q);
        w.head = static_cast<int>(head_batch - static_cast<int64_t>(w.batch) * p.heads_q);
        return true;
    }
};

}  // namespace fa4j::cuda::sm80
