// The FlashAttention-2 forward kernel: out = softmax(scale · q·kᵀ [masked]) · v and the row logsumexp.
//
// One CTA owns kBlockM query rows of one (batch, head); its warps split those rows, kWarpRows each, so
// a warp never needs another warp's scores and the softmax needs no shared memory. The CTA walks the
// key/value sequence in tiles of kBlockN rows, from the last tile to the first, streaming K and V
// through a kStages-deep ring of shared-memory buffers with cp.async: while the tensor cores work on
// tile j, tile j-1 (and, with 3 stages, j-2) is already on its way. Per tile and warp:
//   S = Q·Kᵀ         mma.sync m16n8k16, A = Q from shared memory (ldmatrix), B = K (ldmatrix)
//   online softmax   running row max m and row sum l in registers; O is rescaled when m grows
//                    (fa2_common.cuh: m is a raw score, subtracted before scaling)
//   O += P·V         P converted to 16 bits in registers and used as the A operand directly (its
//                    accumulator layout is the A layout: see fa2_common.cuh); B = V (ldmatrix.trans)
// After the last tile O is divided by l, staged through the warp's own (no longer needed) rows of the
// Q buffer and written with 16-byte stores; lse = m·|scale| + ln l.
//
// Masking is needed only on the tiles that cross the causal diagonal or the end of the keys. The walk
// starts with exactly those (they are the last tiles in key order), so every later tile runs unmasked.
// Under the causal mask, tiles wholly above the diagonal are never loaded.
#pragma once

#include <cuda_runtime.h>

#include "backends/cuda/cuda_check.cuh"
#include "backends/cuda/kernels/v1/fa2_common.cuh"
#include "backends/cuda/kernels/v1/fa2_forward.hpp"

namespace fa4j::cuda::v1::fa2 {

// The tile shape of one forward kernel; every loop bound below derives from these.
template <int kHeadDim_, int kBlockM_, int kBlockN_, int kWarps_, int kStages_, int kMinBlocksPerSm_>
struct ForwardTile {
    static constexpr int kHeadDim = kHeadDim_;
    static constexpr int kBlockM = kBlockM_;  // query rows per CTA
    static constexpr int kBlockN = kBlockN_;  // key/value rows per pipeline step
    static constexpr int kWarps = kWarps_;
    static constexpr int kStages = kStages_;  // K/V buffers in shared memory (2: double buffering)
    static constexpr int kMinBlocksPerSm = kMinBlocksPerSm_;  // register budget: 64K / (threads · this)

    static constexpr int kThreads = kWarps * kWarpSize;
    static constexpr int kWarpRows = kBlockM / kWarps;   // query rows owned by one warp
    static constexpr int kMFrags = kWarpRows / 16;       // m16 fragments per warp
    static constexpr int kSTiles = kBlockN / 8;          // n8 accumulator tiles of S per fragment
    static constexpr int kOTiles = kHeadDim / 8;         // n8 accumulator tiles of O per fragment
    static constexpr int kQkSteps = kHeadDim / 16;       // k16 steps of Q·Kᵀ
    static constexpr int kPvSteps = kBlockN / 16;        // k16 steps of P·V
    static constexpr int kChunksPerRow = kHeadDim / kChunkElems;

    static constexpr int kQBytes = kBlockM * kHeadDim * 2;
    static constexpr int kKvBytes = kBlockN * kHeadDim * 2;  // one K (or V) buffer
    static constexpr int kSmemBytes = kQBytes + 2 * kStages * kKvBytes;

    static_assert(kWarpRows * kWarps == kBlockM && kWarpRows % 16 == 0, "each warp owns whole m16 fragments");
    static_assert(kBlockN % 16 == 0 && kHeadDim % 16 == 0, "k16 steps");
    static_assert(kThreads % kChunksPerRow == 0, "a thread copies the same column chunk of every row it loads");
    static_assert(kBlockN % (kThreads / kChunksPerRow) == 0 && kBlockM % (kThreads / kChunksPerRow) == 0,
                  "tiles split evenly across the threads' copies");
    static_assert(kStages >= 2, "at least double buffering");
    static_assert((kThreads / kChunksPerRow) % kSwizzleChunks == 0, "a thread's copies keep one swizzled column");
};

// Copies rows [0, kRows) of a tile from global (row 0 at `rows`, `row_stride` elements apart) into a
// swizzled shared-memory tile. Rows >= rows_valid and columns past the head dim are zero-filled;
// `fallback` is a readable address handed to the copies that read nothing.
template <class Tile, int kRows, class T>
__device__ __forceinline__ void load_tile(uint32_t smem_tile, const T* rows, int64_t row_stride, int rows_valid,
                                          bool chunk_valid, const T* fallback) {
    using Smem = SwizzledTile<Tile::kHeadDim>;
    constexpr int kRowsPerPass = Tile::kThreads / Tile::kChunksPerRow;
    const int chunk = static_cast<int>(threadIdx.x) % Tile::kChunksPerRow;
    const int row0 = static_cast<int>(threadIdx.x) / Tile::kChunksPerRow;
#pragma unroll
    for (int i = 0; i < kRows / kRowsPerPass; ++i) {
        const int row = row0 + i * kRowsPerPass;
        const bool valid = chunk_valid && row < rows_valid;
        const T* src = valid ? rows + row * row_stride + chunk * kChunkElems : fallback;
        cp_async_16(smem_tile + Smem::offset(row, chunk), src, valid);
    }
}

template <class Tile, class T, bool kCausal>
__global__ void __launch_bounds__(Tile::kThreads, Tile::kMinBlocksPerSm) forward_kernel(const __grid_constant__ ForwardParams p) {
    using Smem = SwizzledTile<Tile::kHeadDim>;
    using Op = Mma<T>;
    constexpr int kBlockM = Tile::kBlockM, kBlockN = Tile::kBlockN, kStages = Tile::kStages;
    constexpr int kMFrags = Tile::kMFrags, kSTiles = Tile::kSTiles, kOTiles = Tile::kOTiles;

    extern __shared__ __align__(128) unsigned char smem[];
    const uint32_t s_q = smem_address(smem);
    const uint32_t s_k = s_q + Tile::kQBytes;
    const uint32_t s_v = s_k + kStages * Tile::kKvBytes;

    const int tid = static_cast<int>(threadIdx.x);
    const int warp = tid / kWarpSize, lane = tid % kWarpSize;
    // Under the causal mask the last query blocks have the most keys: launch them first, so the grid's
    // tail is made of the short ones.
    const int m_block = static_cast<int>(gridDim.x - 1 - blockIdx.x);
    const int head = static_cast<int>(blockIdx.y), batch = static_cast<int>(blockIdx.z);
    const int m0 = m_block * kBlockM;
    const int rows_in_block = min(kBlockM, p.seqlen_q - m0);

    const T* q_head = static_cast<const T*>(p.q) + batch * p.q_batch_stride + head * p.q_head_stride;
    const int kv_head = head / p.group_size;
    const T* k_head = static_cast<const T*>(p.k) + batch * p.k_batch_stride + kv_head * p.k_head_stride;
    const T* v_head = static_cast<const T*>(p.v) + batch * p.v_batch_stride + kv_head * p.v_head_stride;
    const bool chunk_valid = tid % Tile::kChunksPerRow < p.head_dim / kChunkElems;

    // Key tiles this block needs: all of them, or under the causal mask those up to its last row's
    // diagonal. Tiles below n_unmasked are visible to every row of the block and lie inside seqlen_k.
    int key_end = p.seqlen_k;
    int keys_seen_by_all = p.seqlen_k;
    if (kCausal) {
        key_end = min(key_end, m0 + rows_in_block + p.causal_offset);
        keys_seen_by_all = min(keys_seen_by_all, m0 + p.causal_offset + 1);
    }
    const int n_blocks = key_end > 0 ? ceil_div(key_end, kBlockN) : 0;
    const int n_unmasked = keys_seen_by_all > 0 ? keys_seen_by_all / kBlockN : 0;

    // Prologue: Q and the first kStages-1 key/value tiles, one commit group per tile (Q rides with the
    // first), so that "tile i has landed" is always "all but the newest kStages-2 groups are done".
    load_tile<Tile, kBlockM>(s_q, q_head + m0 * p.q_row_stride, p.q_row_stride, rows_in_block, chunk_valid, q_head);
#pragma unroll
    for (int stage = 0; stage < kStages - 1; ++stage) {
        const int n_block = n_blocks - 1 - stage;
        if (n_block >= 0) {
            const int n0 = n_block * kBlockN;
            load_tile<Tile, kBlockN>(s_k + stage * Tile::kKvBytes, k_head + n0 * p.k_row_stride, p.k_row_stride,
                                     p.seqlen_k - n0, chunk_valid, k_head);
            load_tile<Tile, kBlockN>(s_v + stage * Tile::kKvBytes, v_head + n0 * p.v_row_stride, p.v_row_stride,
                                     p.seqlen_k - n0, chunk_valid, v_head);
        }
        cp_async_commit();
    }

    float acc_o[kMFrags][kOTiles][4] = {};
    // Row statistics of the two rows (g and g+8) this lane holds in each fragment: the running maximum
    // as a raw score ±s (see the online softmax in fa2_common.cuh), and this lane's partial sum of the
    // probabilities relative to it (the quad's four partial sums are added once, at the end).
    float row_max[kMFrags][2], row_sum[kMFrags][2];
#pragma unroll
    for (int mf = 0; mf < kMFrags; ++mf)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            row_max[mf][h] = -INFINITY;
            row_sum[mf][h] = 0.f;
        }

    const int warp_row0 = warp * Tile::kWarpRows;
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

    for (int it = 0, n_block = n_blocks - 1; n_block >= 0; ++it, --n_block) {
        cp_async_wait<kStages - 2>();  // this thread's copies of tile `it` have landed
        __syncthreads();               // ... and everyone's; every warp is also done with tile it-1's buffer
        {
            // Refill the buffer tile it-1 used with tile it+kStages-1.
            const int n_next = n_block - (kStages - 1);
            if (n_next >= 0) {
                const uint32_t slot = static_cast<uint32_t>((it + kStages - 1) % kStages) * Tile::kKvBytes;
                const int n0 = n_next * kBlockN;
                load_tile<Tile, kBlockN>(s_k + slot, k_head + n0 * p.k_row_stride, p.k_row_stride, p.seqlen_k - n0,
                                         chunk_valid, k_head);
                load_tile<Tile, kBlockN>(s_v + slot, v_head + n0 * p.v_row_stride, p.v_row_stride, p.seqlen_k - n0,
                                         chunk_valid, v_head);
            }
            cp_async_commit();
        }
        const uint32_t slot = static_cast<uint32_t>(it % kStages) * Tile::kKvBytes;
        const uint32_t s_k_tile = s_k + slot, s_v_tile = s_v + slot;

        // ---- S = Q·Kᵀ ----
        float s[kMFrags][kSTiles][4] = {};
#pragma unroll
        for (int kk = 0; kk < Tile::kQkSteps; ++kk) {
            uint32_t a[kMFrags][4];
#pragma unroll
            for (int mf = 0; mf < kMFrags; ++mf) ldmatrix_x4(a[mf], s_q + q_lane.at(kk, mf * 16));
#pragma unroll
            for (int np = 0; np < kSTiles / 2; ++np) {
                uint32_t b[4];  // b0,b1 of key tile 2np, then of key tile 2np+1
                ldmatrix_x4(b, s_k_tile + k_lane.at(kk, np * 16));
#pragma unroll
                for (int mf = 0; mf < kMFrags; ++mf) {
                    Op::run(s[mf][2 * np], a[mf], b[0], b[1]);
                    Op::run(s[mf][2 * np + 1], a[mf], b[2], b[3]);
                }
            }
        }

        // ---- mask (only the tiles that cross the diagonal or the end of the keys) ----
        if (n_block >= n_unmasked) {
            // Columns of this lane are col_base + 8·nt + {0, 1}; in each row, those from `visible` on are hidden.
            const int col_base = n_block * kBlockN + (lane & 3) * 2;
#pragma unroll
            for (int mf = 0; mf < kMFrags; ++mf)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    int visible = p.seqlen_k - col_base;
                    if (kCausal) {
                        const int row = m0 + warp_row0 + mf * 16 + (lane >> 2) + 8 * h;
                        visible = min(visible, row + p.causal_offset + 1 - col_base);
                    }
#pragma unroll
                    for (int nt = 0; nt < kSTiles; ++nt)
#pragma unroll
                        for (int e = 0; e < 2; ++e)
                            if (nt * 8 + e >= visible) s[mf][nt][2 * h + e] = masked_score;
                }
        }

        // ---- online softmax ----
        // Every row's maximum first, then the exponentials: the quad reductions overlap (on the Hopper
        // kernel, with each row done in turn, d = 64 measured 6% slower).
        float r_new[kMFrags][2];
#pragma unroll
        for (int mf = 0; mf < kMFrags; ++mf)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                // The tile row's maximum of ±s; the negation is an operand modifier.
                float mx = -INFINITY;
                if (flip) {
#pragma unroll
                    for (int nt = 0; nt < kSTiles; ++nt) mx = fmaxf(mx, fmaxf(-s[mf][nt][2 * h], -s[mf][nt][2 * h + 1]));
                } else {
#pragma unroll
                    for (int nt = 0; nt < kSTiles; ++nt) mx = fmaxf(mx, fmaxf(s[mf][nt][2 * h], s[mf][nt][2 * h + 1]));
                }
                r_new[mf][h] = fmaxf(row_max[mf][h], quad_max(mx));
            }
#pragma unroll
        for (int mf = 0; mf < kMFrags; ++mf)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const float correction = softmax_rescale(row_max[mf][h], r_new[mf][h], abs_scale_log2);
                const float reference = softmax_reference(r_new[mf][h], flip);
                row_max[mf][h] = r_new[mf][h];
                float sum = row_sum[mf][h] * correction;
#pragma unroll
                for (int ot = 0; ot < kOTiles; ++ot) {
                    acc_o[mf][ot][2 * h] *= correction;
                    acc_o[mf][ot][2 * h + 1] *= correction;
                }
#pragma unroll
                for (int nt = 0; nt < kSTiles; ++nt)
#pragma unroll
                    for (int e = 2 * h; e < 2 * h + 2; ++e) {
                        s[mf][nt][e] = softmax_probability(s[mf][nt][e], scale_log2, reference);
                        sum += s[mf][nt][e];
                    }
                row_sum[mf][h] = sum;
            }

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
                uint32_t b[4];  // b0,b1 of head-dim tile 2np, then of head-dim tile 2np+1
                ldmatrix_x4_trans(b, s_v_tile + v_lane.at(np, kk * 16));
#pragma unroll
                for (int mf = 0; mf < kMFrags; ++mf) {
                    Op::run(acc_o[mf][2 * np], pa[mf], b[0], b[1]);
                    Op::run(acc_o[mf][2 * np + 1], pa[mf], b[2], b[3]);
                }
            }
        }
    }

    // ---- epilogue: normalise, write O and lse ----
    float lse[kMFrags][2];
#pragma unroll
    for (int mf = 0; mf < kMFrags; ++mf)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const float l = quad_sum(row_sum[mf][h]);
            // l == 0 exactly when the row attends no key (otherwise its maximum contributes about 1):
            // out = 0 and lse = -inf there.
            const float inv = l > 0.f ? 1.f / l : 0.f;
            lse[mf][h] = row_logsumexp(row_max[mf][h], l, p.abs_scale);
#pragma unroll
            for (int ot = 0; ot < kOTiles; ++ot) {
                acc_o[mf][ot][2 * h] *= inv;
                acc_o[mf][ot][2 * h + 1] *= inv;
            }
        }

    // Every copy has landed and every warp is past its last read of Q (also when there was no key tile
    // at all), so each warp may now overwrite its own Q rows with its output rows.
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

    T* o_rows = static_cast<T*>(p.o) + batch * p.o_batch_stride + head * p.o_head_stride + m0 * p.o_row_stride;
    const int head_chunks = p.head_dim / kChunkElems;
    constexpr int kWarpChunks = Tile::kWarpRows * Tile::kChunksPerRow;
    static_assert(kWarpChunks % kWarpSize == 0, "the warp's output rows split evenly across its lanes");
#pragma unroll
    for (int i = 0; i < kWarpChunks / kWarpSize; ++i) {
        const int index = i * kWarpSize + lane;
        const int row = warp_row0 + index / Tile::kChunksPerRow;
        const int chunk = index % Tile::kChunksPerRow;
        if (row < rows_in_block && chunk < head_chunks) {
            const uint4 value = *reinterpret_cast<const uint4*>(smem + Smem::offset(row, chunk));
            *reinterpret_cast<uint4*>(o_rows + row * p.o_row_stride + chunk * kChunkElems) = value;
        }
    }

    if ((lane & 3) == 0) {
        float* lse_rows = p.lse + batch * p.lse_batch_stride + head * p.lse_head_stride + m0 * p.lse_row_stride;
#pragma unroll
        for (int mf = 0; mf < kMFrags; ++mf)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int row = warp_row0 + mf * 16 + (lane >> 2) + 8 * h;
                if (row < rows_in_block) lse_rows[row * p.lse_row_stride] = lse[mf][h];
            }
    }
}

// Launches forward_kernel<Tile, T, kCausal> for `p` on `stream`.
template <class Tile, class T, bool kCausal>
void launch_forward(const ForwardParams& p, cudaStream_t stream) {
    const auto kernel = forward_kernel<Tile, T, kCausal>;
    FA4J_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tile::kSmemBytes));
    const dim3 grid(static_cast<unsigned>(ceil_div(p.seqlen_q, Tile::kBlockM)), static_cast<unsigned>(p.heads_q),
                    static_cast<unsigned>(p.batch));
    kernel<<<grid, Tile::kThreads, Tile::kSmemBytes, stream>>>(p);
    FA4J_CUDA_CHECK(cudaGetLastError());
}

// dtype × causal → one of the four instantiations of a tile shape.
template <class Tile>
void dispatch_forward(const ForwardParams& p, Elem elem, bool causal, cudaStream_t stream) {
    if (elem == Elem::F16) {
        if (causal) launch_forward<Tile, __half, true>(p, stream);
        else launch_forward<Tile, __half, false>(p, stream);
    } else {
        if (causal) launch_forward<Tile, __nv_bfloat16, true>(p, stream);
        else launch_forward<Tile, __nv_bfloat16, false>(p, stream);
    }
}

}  // namespace fa4j::cuda::v1::fa2
