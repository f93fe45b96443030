// The main loop of the sm_80 forward: one CTA's walk over the key/value tiles its query tile attends.
//
// The CTA's warps split its kBlockM query rows, kWarpRows each, so a warp never needs another warp's
// scores and the softmax needs no shared memory. The walk goes from the last key tile to the first,
// streaming K and V through a kStages-deep ring of shared-memory buffers with cp.async: while the
// tensor cores work on tile j, tile j-1 (and, with 3 stages, j-2) is already on its way. Per tile and warp:
//   S = Q·Kᵀ         mma.sync m16n8k16, A = Q from shared memory (ldmatrix), B = K (ldmatrix)
//   transform        softcap and ALiBi (kTransform only: common/score_transform.cuh)
//   mask             only in the tiles that cross a window bound or the end of the keys
//   online softmax   running row max and sum in registers; O is rescaled when the max grows
//                    (fragment_softmax.cuh)
//   O += P·V         P converted to 16 bits in registers and used as the A operand directly (its
//                    accumulator layout is the A layout: see primitives.cuh); B = V (ldmatrix.trans)
//
// Which tiles: common/block_range.cuh's key_blocks, from the window rule every backend shares
// (core/score_mask.hpp; causal is window_right = 0). Tiles outside the range are never loaded. The
// unmasked sub-range is seen whole by every row of the tile; the tiles that need the per-element mask
// are those after it (the right bound, the end of the keys: walked first) and, with a left bound, those
// before it (walked last).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backends/cuda/kernels/common/attention_params.hpp"
#include "backends/cuda/kernels/common/block_range.cuh"
#include "backends/cuda/kernels/common/score_transform.cuh"
#include "backends/cuda/kernels/sm80/fragment_softmax.cuh"
#include "backends/cuda/kernels/sm80/primitives.cuh"
#include "core/score_mask.hpp"

namespace fa4j::cuda::sm80 {

// Where one CTA's query tile and its sequence's keys live, and which key tiles it attends.
template <class T>
struct ForwardBlock {
    const T* q;  // query row m0 of the sequence, the CTA's head
    const T* k;  // key row 0 of the sequence, the head's key/value head
    const T* v;
    int m0;      // first query row of the tile within its sequence
    int rows;    // query rows of the tile inside the sequence: 1..kBlockM
    int seqlen_q, seqlen_k;    // of the sequence
    kernels::BlockRange keys;  // the key tiles (kBlockN keys each) the query tile attends
};

// Shared-memory byte addresses: Q (kBlockM rows), then kStages K buffers, then kStages V buffers.
struct ForwardSmem {
    uint32_t q, k, v;
};

template <class Tile, class T, bool kTransform>
struct ForwardMainloop {
    using Smem = SwizzledTile<Tile::kHeadDim>;
    using Op = Mma<T>;
    static constexpr int kBlockM = Tile::kBlockM, kBlockN = Tile::kBlockN, kStages = Tile::kStages;
    static constexpr int kMFrags = Tile::kMFrags, kSTiles = Tile::kSTiles, kOTiles = Tile::kOTiles;

    // Copies rows [0, kRows) of a tile from global memory (row 0 at `rows`, `row_stride` elements apart)
    // into a swizzled shared-memory tile. Rows >= rows_valid and chunks >= head_chunks are zero-filled
    // without reading anything (src-size 0), so a copy never reads past the tile's rows: `rows` itself,
    // a row that exists whenever the tile is loaded, is the address the empty copies carry.
    //
    // The threads form kRowsPerPass rows of kLaneChunks chunks (kLaneChunks: the largest power of two
    // dividing the row's chunks and the thread count: the whole row at d = 64, 128, 256; 4 of 12 chunks
    // at d = 96, 8 of 24 at d = 192). A thread copies chunks lane_chunk + g·kLaneChunks of rows
    // row0 + i·kRowsPerPass: its copies differ by compile-time offsets and multiples of one row step, so
    // no per-copy address is kept live across the main loop.
    template <int kRows>
    __device__ __forceinline__ static void load_tile(uint32_t smem_tile, const T* rows, int64_t row_stride,
                                                     int rows_valid, int head_chunks) {
        constexpr int kChunks = Tile::kChunksPerRow;
        constexpr int kLaneChunks = largest_common_power_of_two(kChunks, Tile::kThreads);
        constexpr int kRowsPerPass = Tile::kThreads / kLaneChunks;
        constexpr int kGroups = kChunks / kLaneChunks;
        static_assert(kRows % kRowsPerPass == 0, "whole passes");
        const int tid = static_cast<int>(threadIdx.x);
        const int lane_chunk = tid % kLaneChunks;
        const int row0 = tid / kLaneChunks;
#pragma unroll
        for (int g = 0; g < kGroups; ++g) {
            const int chunk = lane_chunk + g * kLaneChunks;
            const bool chunk_valid = chunk < head_chunks;
#pragma unroll
            for (int i = 0; i < kRows / kRowsPerPass; ++i) {
                const int row = row0 + i * kRowsPerPass;
                const bool valid = chunk_valid && row < rows_valid;
                const T* src = valid ? rows + row * row_stride + chunk * kChunkElems : rows;
                cp_async_16(smem_tile + Smem::offset(row, chunk), src, valid);
            }
        }
    }

    // Queues the copies of key tile n_block into K/V buffer `slot`.
    __device__ __forceinline__ static void load_kv(const kernels::ForwardParams& p, const ForwardBlock<T>& b,
                                                   const ForwardSmem& smem, uint32_t slot, int n_block, int head_chunks) {
        const int n0 = n_block * kBlockN;
        load_tile<kBlockN>(smem.k + slot, b.k + n0 * p.k.row_stride, p.k.row_stride, b.seqlen_k - n0, head_chunks);
        load_tile<kBlockN>(smem.v + slot, b.v + n0 * p.v.row_stride, p.v.row_stride, b.seqlen_k - n0, head_chunks);
    }

    // The walk. On return acc_o holds O unnormalised and `softmax` the row statistics; copies may still
    // be pending (only empty groups), and warps may still read Q: the epilogue synchronises.
    __device__ __forceinline__ static void run(const kernels::ForwardParams& p, const ForwardBlock<T>& b,
                                               const kernels::ScoreTransform& transform, const ForwardSmem& smem,
                                               float (&acc_o)[kMFrags][kOTiles][4], FragmentSoftmax<kMFrags>& softmax) {
        const int tid = static_cast<int>(threadIdx.x);
        const int warp = tid / kWarpSize, lane = tid % kWarpSize;
        const int head_chunks = p.head_dim / kChunkElems;

        // Prologue: Q and the first kStages-1 key/value tiles, one commit group per tile (Q rides with the
        // first), so that "tile i has landed" is always "all but the newest kStages-2 groups are done".
        load_tile<kBlockM>(smem.q, b.q, p.q.row_stride, b.rows, head_chunks);
#pragma unroll
        for (int stage = 0; stage < kStages - 1; ++stage) {
            const int n_block = b.keys.end - 1 - stage;
            if (n_block >= b.keys.begin) load_kv(p, b, smem, static_cast<uint32_t>(stage) * Tile::kKvBytes, n_block, head_chunks);
            cp_async_commit();
        }

        const int warp_row0 = warp * Tile::kWarpRows;
        // This lane's accumulator rows are row0 + 16·mf + 8·h of the sequence, its columns
        // n0 + (lane % 4)·2 + 8·nt + e of the key tile. The mask and the transform see rows at their
        // aligned positions i' = i + seqlen_k - seqlen_q (core/score_mask.hpp): the window and the
        // transform of a square sequence (seqlen_q = seqlen_k) take i' for i, and one register carries a
        // lane's row through the loop instead of the row and both lengths.
        const int aligned_row0 = b.m0 + warp_row0 + (lane >> 2) + (b.seqlen_k - b.seqlen_q);
        // ldmatrix lane offsets (see LdmatrixLane). Q: matrices rows 0-7|8-15 × chunks 2kk|2kk+1 give a0..a3.
        // K: matrices keys 0-7 × chunks 2kk|2kk+1, then keys 8-15 × the same: b0,b1 of two key tiles.
        // V (transposed): matrices keys 0-7|8-15 × chunks 2np, then × 2np+1: b0,b1 of two head-dim tiles.
        const LdmatrixLane<Tile::kHeadDim> q_lane(warp_row0 + (lane & 15), lane >> 4);
        const LdmatrixLane<Tile::kHeadDim> k_lane((lane & 7) + ((lane >> 4) << 3), (lane >> 3) & 1);
        const LdmatrixLane<Tile::kHeadDim> v_lane((lane & 7) + (((lane >> 3) & 1) << 3), lane >> 4);
        const float scale_log2 = p.scale_log2;
        const float abs_scale_log2 = fabsf(scale_log2);
        const bool flip = p.flip_sign != 0;
        const float masked_score = flip ? INFINITY : -INFINITY;  // becomes -inf once multiplied by the scale

        for (int it = 0, n_block = b.keys.end - 1; n_block >= b.keys.begin; ++it, --n_block) {
            cp_async_wait<kStages - 2>();  // this thread's copies of tile `it` have landed
            __syncthreads();               // ... and everyone's; every warp is also done with tile it-1's buffer
            {
                // Refill the buffer tile it-1 used with tile it+kStages-1.
                const int n_next = n_block - (kStages - 1);
                if (n_next >= b.keys.begin)
                    load_kv(p, b, smem, static_cast<uint32_t>((it + kStages - 1) % kStages) * Tile::kKvBytes, n_next,
                            head_chunks);
                cp_async_commit();
            }
            const uint32_t slot = static_cast<uint32_t>(it % kStages) * Tile::kKvBytes;
            const uint32_t s_k_tile = smem.k + slot, s_v_tile = smem.v + slot;

            // ---- S = Q·Kᵀ ----
            float s[kMFrags][kSTiles][4] = {};
#pragma unroll
            for (int kk = 0; kk < Tile::kQkSteps; ++kk) {
                uint32_t a[kMFrags][4];
#pragma unroll
                for (int mf = 0; mf < kMFrags; ++mf) ldmatrix_x4(a[mf], smem.q + q_lane.at(kk, mf * 16));
#pragma unroll
                for (int np = 0; np < kSTiles / 2; ++np) {
                    uint32_t bk[4];  // b0,b1 of key tile 2np, then of key tile 2np+1
                    ldmatrix_x4(bk, s_k_tile + k_lane.at(kk, np * 16));
#pragma unroll
                    for (int mf = 0; mf < kMFrags; ++mf) {
                        Op::run(s[mf][2 * np], a[mf], bk[0], bk[1]);
                        Op::run(s[mf][2 * np + 1], a[mf], bk[2], bk[3]);
                    }
                }
            }

            const int col_base = n_block * kBlockN + (lane & 3) * 2;
            // ---- softcap, ALiBi: the scores become the transformed scaled scores ----
            if constexpr (kTransform) {
#pragma unroll
                for (int mf = 0; mf < kMFrags; ++mf)
#pragma unroll
                    for (int h = 0; h < 2; ++h) {
                        const int row = aligned_row0 + mf * 16 + 8 * h;
#pragma unroll
                        for (int nt = 0; nt < kSTiles; ++nt)
#pragma unroll
                            for (int e = 0; e < 2; ++e)
                                s[mf][nt][2 * h + e] = transform(s[mf][nt][2 * h + e], row, col_base + nt * 8 + e);
                    }
            }

            // ---- mask (only the tiles that cross a window bound or the end of the keys) ----
            if (b.keys.masked(n_block)) {
                const ScoreWindow window{b.seqlen_k, b.seqlen_k, p.score.window_left, p.score.window_right};
#pragma unroll
                for (int mf = 0; mf < kMFrags; ++mf)
#pragma unroll
                    for (int h = 0; h < 2; ++h) {
                        // The row's keys [begin, end) (clamped to the sequence's keys), relative to this
                        // lane's first column: column 8·nt + e is visible iff lo <= 8·nt + e < hi.
                        const IndexRange keys = window.keys_of(aligned_row0 + mf * 16 + 8 * h);
                        const int lo = static_cast<int>(keys.begin) - col_base;
                        const int hi = static_cast<int>(keys.end) - col_base;
#pragma unroll
                        for (int nt = 0; nt < kSTiles; ++nt)
#pragma unroll
                            for (int e = 0; e < 2; ++e)
                                if (nt * 8 + e < lo || nt * 8 + e >= hi) s[mf][nt][2 * h + e] = masked_score;
                    }
            }

            // ---- online softmax: s becomes P ----
            softmax.update(s, acc_o, scale_log2, abs_scale_log2, flip);

            // ---- O += P·V ----
#pragma unroll
            for (int kk = 0; kk < Tile::kPvSteps; ++kk) {
                uint32_t pa[kMFrags][4];  // the accumulators of key tiles 2kk and 2kk+1 are the A fragment of step kk
#pragma unroll
                for (int mf = 0; mf < kMFrags; ++mf) {
                    pa[mf][0] = Op::pack(s[mf][2 * kk][0], s[mf][2 * kk][1]);
                    pa[mf][1] = Op::pack(s[mf][2 * kk][2], s[mf][2 * kk][3]);
                    pa[mf][2] = Op::pack(s[mf][2 * kk + 1][0], s[mf][2 * kk + 1][1]);
                    pa[mf][3] = Op::pack(s[mf][2 * kk + 1][2], s[mf][2 * kk + 1][3]);
                }
#pragma unroll
                for (int np = 0; np < kOTiles / 2; ++np) {
                    uint32_t bv[4];  // b0,b1 of head-dim tile 2np, then of head-dim tile 2np+1
                    ldmatrix_x4_trans(bv, s_v_tile + v_lane.at(np, kk * 16));
#pragma unroll
                    for (int mf = 0; mf < kMFrags; ++mf) {
                        Op::run(acc_o[mf][2 * np], pa[mf], bv[0], bv[1]);
                        Op::run(acc_o[mf][2 * np + 1], pa[mf], bv[2], bv[3]);
                    }
                }
            }
        }
    }
};

}  // namespace fa4j::cuda::sm80
