// The epilogue of the sm_80 forward: O divided by the row sums, staged through shared memory (each warp
// through its own rows of the Q buffer, which it no longer needs) and written with 16-byte stores; the
// rows' logsumexp lse = max·|scale| + ln(sum). Only rows inside the sequence are written (rows_in_tile),
// only columns inside the call's head dim, so a ragged tile never touches another sequence's rows.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backends/cuda/kernels/common/attention_params.hpp"
#include "backends/cuda/kernels/sm80/fragment_softmax.cuh"
#include "backends/cuda/kernels/sm80/primitives.cuh"

namespace fa4j::cuda::sm80 {

template <class Tile, class T>
struct ForwardEpilogue {
    using Smem = SwizzledTile<Tile::kHeadDim>;
    using Op = Mma<T>;
    static constexpr int kMFrags = Tile::kMFrags, kOTiles = Tile::kOTiles;

    // `out_row` and `lse_row` point at the tile's first query row (of this head); rows_in_tile of its
    // rows exist. `smem` is the start of the Q buffer.
    __device__ __forceinline__ static void store(const kernels::ForwardParams& p, unsigned char* smem, T* out_row,
                                                 float* lse_row, int rows_in_tile, float (&acc_o)[kMFrags][kOTiles][4],
                                                 const FragmentSoftmax<kMFrags>& softmax) {
        const int tid = static_cast<int>(threadIdx.x);
        const int warp = tid / kWarpSize, lane = tid % kWarpSize;
        const int warp_row0 = warp * Tile::kWarpRows;

        float lse[kMFrags][2];
        softmax.finish(acc_o, lse, p.abs_scale);

        // Every copy has landed and every warp is past its last read of Q (also when there was no key tile
        // at all, and Q's copies may still be in flight), so each warp may now overwrite its own Q rows
        // with its output rows.
        cp_async_wait<0>();
        __syncthreads();
#pragma unroll
        for (int mf = 0; mf < kMFrags; ++mf)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int row = warp_row0 + mf * 16 + (lane >> 2) + 8 * h;
#pragma unroll
                for (int ot = 0; ot < kOTiles; ++ot) {
                    const uint32_t packed = Op::pack(acc_o[mf][ot][2 * h], acc_o[mf][ot][2 * h + 1]);
                    *reinterpret_cast<uint32_t*>(smem + Smem::offset(row, ot) + (lane & 3) * 4) = packed;
                }
            }
        __syncwarp();

        const int head_chunks = p.head_dim / kChunkElems;
        constexpr int kWarpChunks = Tile::kWarpRows * Tile::kChunksPerRow;
#pragma unroll
        for (int i = 0; i < kWarpChunks / kWarpSize; ++i) {
            const int index = i * kWarpSize + lane;
            const int row = warp_row0 + index / Tile::kChunksPerRow;
            const int chunk = index % Tile::kChunksPerRow;
            if (row < rows_in_tile && chunk < head_chunks) {
                const uint4 value = *reinterpret_cast<const uint4*>(smem + Smem::offset(row, chunk));
                *reinterpret_cast<uint4*>(out_row + row * p.out.row_stride + chunk * kChunkElems) = value;
            }
        }

        if ((lane & 3) == 0) {
#pragma unroll
            for (int mf = 0; mf < kMFrags; ++mf)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const int row = warp_row0 + mf * 16 + (lane >> 2) + 8 * h;
                    if (row < rows_in_tile) lse_row[row * p.lse.row_stride] = lse[mf][h];
                }
        }
    }
};

}  // namespace fa4j::cuda::sm80
