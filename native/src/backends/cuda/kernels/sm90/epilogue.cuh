// The epilogue of the Hopper forward: normalises a consumer warpgroup's O rows, stages them through its own
// rows of the Q buffer (its wgmmas are done and no one else reads those rows) and writes them to `out`
// with 16-byte stores, and writes lse = m·|scale| + ln l. Rows that see no key get out = 0, lse = -inf;
// rows past the sequence's end (the tile's padding, or the next sequence's rows in a varlen tensor) and
// columns past the call's head dim are never written.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backends/cuda/kernels/common/online_softmax.cuh"
#include "backends/cuda/kernels/sm90/forward_shared.cuh"
#include "backends/cuda/kernels/sm90/primitives.cuh"

namespace fa4j::cuda::sm90 {

template <class Tile, class T>
struct ForwardEpilogue {
    using Smem = ForwardSmem<Tile>;
    static constexpr int kChunkElems = 8;  // 16 bytes of 16-bit elements
    static constexpr int kChunksPerRow = Tile::kHeadDimPadded / kChunkElems;

    // Offset of 16-byte chunk `chunk` of row `row` in the swizzled Q tile (primitives.cuh's layout).
    __device__ static uint32_t swizzled_offset(int row, int chunk) {
        return static_cast<uint32_t>((chunk / 8) * Tile::kBlockM * kSwizzleRowBytes + row * kSwizzleRowBytes +
                                     ((chunk % 8) ^ (row % 8)) * 16);
    }

    // Consumer warpgroup `consumer` (thread ctid) writes its 64 rows of work tile `w`. `staged`: o holds the
    // tile's accumulators (w has keys) and goes through shared memory; otherwise every row attends nothing
    // and zeros are written without touching shared memory (whose Q buffer a persistent producer may be
    // refilling for the next tile already).
    template <class Softmax>
    __device__ static void store(const ForwardKernelParams& kp, const Smem& sm, const WorkTile& w, int consumer,
                                 int ctid, float (&o)[Tile::kORegs], Softmax& softmax, bool staged) {
        const kernels::ForwardParams& p = kp.p;
        const int warp = ctid / 32, lane = ctid % 32;
        const int wg_row0 = consumer * 64;
        const int thread_row0 = wg_row0 + 16 * warp + (lane >> 2);

        float lse[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const float l = kernels::quad_sum(softmax.row_sum[h]);
            // l == 0 exactly when the row attends no key (otherwise its maximum contributes about 1).
            const float inv = l > 0.f ? 1.f / l : 0.f;
            lse[h] = kernels::row_logsumexp(softmax.row_max[h], l, p.abs_scale);
#pragma unroll
            for (int j = 0; j < Tile::kORegs / 4; ++j) {
                o[4 * j + 2 * h] *= inv;
                o[4 * j + 2 * h + 1] *= inv;
            }
        }

        if (staged) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int row = thread_row0 + 8 * h;
#pragma unroll
                for (int j = 0; j < Tile::kORegs / 4; ++j) {
                    const uint32_t packed = pack_pair<T>(o[4 * j + 2 * h], o[4 * j + 2 * h + 1]);
                    *reinterpret_cast<uint32_t*>(sm.q_ptr() + swizzled_offset(row, j) + (lane & 3) * 4) = packed;
                }
            }
            named_barrier_sync(1 + consumer, kWarpgroupThreads);
        }

        // Element offsets in int64: rows of a packed tensor times its row stride exceed 2^31.
        const int64_t q_row = w.seq.q_row0 + w.m0;  // the tile's first row in the tensor
        T* const o_rows = static_cast<T*>(p.out.data) + w.batch * p.out.batch_stride + w.head * p.out.head_stride +
                          q_row * p.out.row_stride;
        const int head_chunks = p.head_dim / kChunkElems;
        constexpr int kWgChunks = 64 * kChunksPerRow;
#pragma unroll
        for (int i = 0; i < kWgChunks / kWarpgroupThreads; ++i) {
            const int index = i * kWarpgroupThreads + ctid;
            const int row = wg_row0 + index / kChunksPerRow;
            const int chunk = index % kChunksPerRow;
            if (row < w.rows && chunk < head_chunks) {
                uint4 value = make_uint4(0, 0, 0, 0);
                if (staged) value = *reinterpret_cast<const uint4*>(sm.q_ptr() + swizzled_offset(row, chunk));
                *reinterpret_cast<uint4*>(o_rows + row * p.out.row_stride + chunk * kChunkElems) = value;
            }
        }

        if ((lane & 3) == 0) {
            float* const lse_rows = p.lse.data + w.batch * p.lse.batch_stride + w.head * p.lse.head_stride +
                                    q_row * p.lse.row_stride;
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int row = thread_row0 + 8 * h;
                if (row < w.rows) lse_rows[row * p.lse.row_stride] = lse[h];
            }
        }
    }
};

}  // namespace fa4j::cuda::sm90
