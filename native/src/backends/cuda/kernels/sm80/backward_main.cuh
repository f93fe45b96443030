// 2. The SM80 backward's main kernel: one CTA per (key tile of kBlockN keys, kv head, sequence). K and V stay
// in shared memory; the CTA walks the query tiles (kBlockM rows) that attend its key tile, for every query
// head of its GQA group, recomputes S = Q·Kᵀ and P = exp(S·scale − lse) (or exp(t − lse) for transformed
// scores t, see below), and accumulates dV += Pᵀ·dO and dK += dSᵀ·Q in registers, dS = P ∘ (dP − D),
// dP = dO·Vᵀ. dQ += dS·K goes to the fp32 workspace, since many key tiles add to one query row: one bulk
// reduction of the tile per step on sm_90, fp32 atomics on sm_80. Looping the group's query heads inside
// the CTA makes dK/dV per kv head without atomics or a reduction pass.
//
// Per step of the main loop (one query tile):
//     barrier · [bulk-reduce the previous step's dQ tile] · prefetch the next Q/dO/lse/D (cp.async) ·
//     S = Q·Kᵀ → P → sP · dP = dO·Vᵀ → dS → sdS · barrier · dV += Pᵀ·dO · dK += dSᵀ·Q · dQ = dS·K → workspace
// Computing P before dP (rather than both products first, as FlashAttention-2 does) keeps one product's
// fragments live at a time next to the dK/dV accumulators, and measured faster at d=64. P and dS leave the
// registers through stmatrix on sm_90 (one instruction per 16x16 block): the kernel is throttled by its
// shared-memory instruction queue (ncu: mio_throttle, short_scoreboard), which a quarter of the store
// instructions relieves.
//
// Features (runtime fields of BackwardParams, core/score_mask.hpp states the rules):
//   - window and causal mask: the query tiles of a key tile come from query_blocks (tiles no row of which
//     attends a key of the tile are never visited, at either end); tiles outside its unmasked sub-range, and
//     key tiles past the end of the keys, get the per-element mask;
//   - varlen: each sequence's rows start at its cu_seqlens (SeqlenInfo), windows are aligned to its own
//     end, keys past seqused_k are masked and their dK/dV rows written as zeros;
//   - softcap and ALiBi (kTransform): S becomes t = softcap·tanh(scale·S/softcap) − slope·|i' − j|
//     (ScoreTransform, the forward's own function) and P = exp(t − lse). With dt/ds = scale·(1 − tanh²), dS
//     is multiplied by the softcap's derivative, and the scale comes in where it does without features: dK
//     and dQ are scale·Σ dS·(Q or K). kTransform is a template parameter, not a runtime branch: the
//     transform's code and its live values (the derivative per score until dS) would otherwise be
//     allocated in the kernel without features too, which runs at 255 registers with spills at d=128.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "backends/cuda/kernels/common/attention_params.hpp"
#include "backends/cuda/kernels/common/block_range.cuh"
#include "backends/cuda/kernels/common/score_transform.cuh"
#include "backends/cuda/kernels/common/seqlen_info.cuh"
#include "backends/cuda/kernels/sm80/backward_primitives.cuh"
#include "core/softmax_scale.hpp"

namespace fa4j::cuda::kernels::sm80::bwd {

// ---- scheduler -----------------------------------------------------------------------------------------

// The work of one CTA: key tile n_block of kv head hk of sequence b. The linear work index runs over
// (sequence, kv head, key tile) with key tiles fastest: the CTAs in flight together belong to one or two
// heads and walk the same query rows, which L2 then serves; under the causal mask key tile 0 has the most
// query tiles, so the longest CTAs start first. The launcher covers backward_work_count() indices, in grids
// of at most 2^30 CTAs each (no grid-dimension limit on batch or heads).
struct BackwardWork {
    int n_block, hk, b;
};

template <class Tl>
__host__ __device__ inline int64_t backward_work_count(const BackwardParams& p) {
    const int64_t n_tiles = (int64_t(p.seqlen_k) + Tl::kBlockN - 1) / Tl::kBlockN;  // of the longest sequence
    return n_tiles * p.heads_kv * p.batch;
}

template <class Tl>
__device__ __forceinline__ BackwardWork backward_work(const BackwardParams& p, int64_t index) {
    const int n_tiles = (p.seqlen_k + Tl::kBlockN - 1) / Tl::kBlockN;
    BackwardWork w;
    w.n_block = static_cast<int>(index % n_tiles);
    const int64_t rest = index / n_tiles;
    w.hk = static_cast<int>(rest % p.heads_kv);
    w.b = static_cast<int>(rest / p.heads_kv);
    return w;
}

// The keys whose dK/dV rows sequence b writes: those it owns (cu_seqlens_k, clamped as SeqlenInfo clamps
// them), of which the first seq.seqlen_k are used (seqused_k); the rest get zero gradients, as in
// flash-attn. Dense: all seqlen_k keys.
__device__ __forceinline__ int backward_owned_keys(const BackwardParams& p, const SeqlenInfo& seq, int b) {
    if (!p.seqlens.varlen() || p.seqlens.seqused_k == nullptr) return seq.seqlen_k;
    const int64_t end = clamp_index(p.seqlens.cu_seqlens_k[b + 1], seq.k_row0, p.seqlens.total_k);
    const int64_t owned = end - seq.k_row0;
    return static_cast<int>(owned < p.seqlen_k ? owned : p.seqlen_k);
}

// The per-element mask of a key tile, tile-local: key column c (key n0 + c) is visible to tile row r of the
// query tile at m0 (query i = m0 + r) iff
//     (m0 + r) + lo <= c <= min((m0 + r) + hi, last_key),
//     lo = (seqlen_k - seqlen_q) - n0 - window_left,  hi = (seqlen_k - seqlen_q) - n0 + window_right,
// which is the rule i' - left <= j <= i' + right, j < seqlen_k of core/score_mask.hpp with i' = i +
// seqlen_k - seqlen_q and j = n0 + c. lo and hi are clamped to [-(2^30 + 256), kBlockN], which keeps every
// comparison's result for rows m0 + r < 2^30 + 256 (sequences are at most 2^30 long) and columns in
// [0, kBlockN), and keeps the sums in int: below the clamp a bound is below column 0 for every row, above
// it past the last column.
struct TileMask {
    int lo, hi, last_key;

    template <int kBlockN>
    __device__ __forceinline__ static TileMask of(const SeqlenInfo& seq, const ScoreParams& score, int n0, int keys) {
        const int64_t diag = int64_t(seq.seqlen_k) - seq.seqlen_q - n0;
        constexpr int64_t kLow = -((int64_t{1} << 30) + 256);
        return {static_cast<int>(clamp_index(diag - score.window_left, kLow, kBlockN)),
                static_cast<int>(clamp_index(diag + score.window_right, kLow, kBlockN)), keys - 1};
    }
};

// What the main loop of a CTA reads each step (see the kernel), in shared memory.
struct CtaConstants {
    int64_t q_row0;   // the sequence's first packed query row
    int64_t k_row0;   // and key row
    int64_t ws_row0;  // its first workspace row (backward_tiles.hpp)
    int seqlen_q, seqlen_k;
    int b, hk;     // the sequence and kv head
    int n0;        // the key tile's first key
    int out_rows;  // dK/dV rows the tile writes
    int iters;     // steps: (query head of the group, query tile) pairs
    int m_begin, m_count;               // query tiles attending the key tile (query_blocks)
    int unmasked_begin, unmasked_end;   // of which these need no per-element mask
    TileMask mask;
};

// ---- main kernel ---------------------------------------------------------------------------------------

// kVec16 is p.vec16 made a template parameter: the 2-byte fallback copies never sit in the main loop of the
// kernel that the aligned (usual) case runs, where their registers and branches would cost.
template <typename T, class Tl, bool kTransform, bool kVec16>
__global__ void __launch_bounds__(kBwdThreads, 1)
    backward_main_kernel(const __grid_constant__ BackwardParams p, int64_t first_work) {
    constexpr int kD = Tl::kD, kBlockM = Tl::kBlockM, kBlockN = Tl::kBlockN;
    constexpr int kDChunks = kD / 8, kNChunks = kBlockN / 8;
    // sm_90: dQ by bulk reduction (uses_bulk_dq), P and dS through stmatrix; sm_80: atomics, 4-byte stores.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    constexpr bool kSm90 = true;
#else
    constexpr bool kSm90 = false;
#endif
    constexpr bool kBulk = kSm90, kStmatrix = kSm90;
    // How masked tiles get their mask (see mask_tiles below): the transformed path always in shared memory.
    constexpr bool kMaskInSmem = Tl::kMaskInSmem || kTransform;
    extern __shared__ __align__(1024) unsigned char smem[];
    const uint32_t s_base = prim::smem_address(smem);
    if (s_base % 1024 != 0) __trap();  // warp_gemm's XOR addressing relies on 1 KiB aligned tiles
    const uint32_t sK = s_base + Tl::kOffK, sV = s_base + Tl::kOffV;
    const uint32_t sP = s_base + Tl::kOffP, sdS = s_base + Tl::kOffDS, sDq = s_base + Tl::kOffDq;
    const float* s_lse = reinterpret_cast<const float*>(smem + Tl::kOffLse);
    const float* s_delta = reinterpret_cast<const float*>(smem + Tl::kOffDelta);

    // ---- this CTA's key tile, and the query tiles that attend it
    const int tid = static_cast<int>(threadIdx.x), warp = tid >> 5;
    const BackwardWork work = backward_work<Tl>(p, first_work + blockIdx.x);
    const int hk = work.hk, b = work.b;
    const int n0 = work.n_block * kBlockN;
    const SeqlenInfo seq = SeqlenInfo::of(p, b);
    const int owned_keys = backward_owned_keys(p, seq, b);
    if (n0 >= owned_keys) return;  // past this sequence's keys (the grid covers the longest sequence)
    const int keys = min(kBlockN, seq.seqlen_k - n0);  // keys that queries may attend (<= 0: none, seqused_k)
    const int out_rows = min(kBlockN, owned_keys - n0);
    // The values the main loop reads each step, in shared memory rather than registers (the loop runs at the
    // register limit): the loop reads them after barriers and cp.async waits, so they are not hoisted.
    CtaConstants& cta = *reinterpret_cast<CtaConstants*>(smem + Tl::kOffCta);
    static_assert(sizeof(CtaConstants) <= Tl::kCtaBytes, "room for the CTA's constants");
    if (tid == 0) {
        BlockRange range;  // query tiles (of kBlockM rows) attending the key tile
        TileMask mask{0, 0, 0};
        if (keys > 0) {
            range = query_blocks(seq.window(p.score), n0, keys, kBlockM);
            // Key columns past the last key are zero-filled: their S = 0 would give P > 0 without the mask.
            if (keys < kBlockN) range.unmasked_begin = range.unmasked_end = range.begin;
            mask = TileMask::of<kBlockN>(seq, p.score, n0, keys);
        }
        cta.q_row0 = seq.q_row0;
        cta.k_row0 = seq.k_row0;
        cta.seqlen_k = seq.seqlen_k;
        cta.b = b;
        cta.hk = hk;
        cta.n0 = n0;
        cta.iters = range.count() * p.group_size;
        cta.out_rows = out_rows;
        cta.ws_row0 = workspace_row0(p.seqlens.varlen(), b, seq.q_row0, p.seqlen_q_pad);
        cta.seqlen_q = seq.seqlen_q;
        cta.m_begin = range.begin;
        cta.m_count = range.count();
        cta.unmasked_begin = range.unmasked_begin;
        cta.unmasked_end = range.unmasked_end;
        cta.mask = mask;
    }
    __syncthreads();

    load_tile<kBlockN, kD>(sK, row_ptr(p.k, b, seq.k_row0 + n0, hk), p.k.row_stride, keys, p.head_dim, kVec16, tid);
    load_tile<kBlockN, kD>(sV, row_ptr(p.v, b, seq.k_row0 + n0, hk), p.v.row_stride, keys, p.head_dim, kVec16, tid);

    // Step t of the loop: query head hk·group + t / m_count, query tile m_begin + t % m_count.
    const auto step_head = [&](int t) { return cta.hk * p.group_size + t / cta.m_count; };
    const auto step_m0 = [&](int t) { return (cta.m_begin + t % cta.m_count) * kBlockM; };
    // Workspace row (over all heads) of step t's first query row.
    const auto step_ws_row = [&](int t) {
        return int64_t(step_head(t)) * p.ws_rows_per_head + cta.ws_row0 + step_m0(t);
    };
    const auto load_query_tile = [&](int t, int stage) {
        const int ltid = opaque(tid);  // see opaque()
        const int head = step_head(t), m0 = step_m0(t);
        const int rows = cta.seqlen_q - m0;
        load_tile<kBlockM, kD>(s_base + Tl::kOffQ + stage * Tl::kTileQ, row_ptr(p.q, cta.b, cta.q_row0 + m0, head),
                               p.q.row_stride, rows, p.head_dim, kVec16, ltid);
        load_tile<kBlockM, kD>(s_base + Tl::kOffDO + stage * Tl::kTileQ, row_ptr(p.dout, cta.b, cta.q_row0 + m0, head),
                               p.dout.row_stride, rows, p.head_dim, kVec16, ltid);
        const int64_t ws_row = step_ws_row(t);
        constexpr int kVecs = kBlockM / 4;  // float4s per row vector
        static_assert(2 * kVecs <= kBwdThreads, "one 16-byte copy per thread for lse and D");
        if (ltid < kVecs)
            prim::cp_async_16(s_base + Tl::kOffLse + (stage * kBlockM + ltid * 4) * 4, p.lse_rows + ws_row + ltid * 4, true);
        else if (ltid < 2 * kVecs)
            prim::cp_async_16(s_base + Tl::kOffDelta + (stage * kBlockM + (ltid - kVecs) * 4) * 4,
                             p.delta + ws_row + (ltid - kVecs) * 4, true);
    };
    // The workspace rows of step t's dQ tile.
    const auto dq_tile = [&](int t) { return p.dq_accum + step_ws_row(t) * kD; };

    float acc_dk[Tl::kKvMT][Tl::kKvNT][4], acc_dv[Tl::kKvMT][Tl::kKvNT][4];
    clear(acc_dk);
    clear(acc_dv);

    // This warp's position in each of the three warp grids.
    const int sdp_row = (warp / Tl::kSdpWarpsN) * Tl::kSdpRows, sdp_col = (warp % Tl::kSdpWarpsN) * Tl::kSdpCols;
    const int kv_row = (warp / Tl::kKvWarpsD) * Tl::kKvRows, kv_col = (warp % Tl::kKvWarpsD) * Tl::kKvCols;
    const int dq_row = (warp / Tl::kDqWarpsD) * Tl::kDqRows, dq_col = (warp % Tl::kDqWarpsD) * Tl::kDqCols;
    const float scale = p.softmax_scale;

    if (cta.iters > 0) load_query_tile(0, 0);
    prim::cp_async_commit();

    for (int t = 0; t < cta.iters; ++t) {
        const int stage = t & 1;
        // Everything derived from the lane index is recomputed from this opaque copy each step (see
        // opaque()): left to itself the compiler hoists some seventy fragment addresses out of the loop.
        const int lane = opaque(tid & 31);
        const int g = lane >> 2, tig = lane & 3;  // mma fragment: row group, thread in group
        // This lane's element (row sdp_row + g, column sdp_col + 2·tig) of sP/sdS; its other fragments are
        // whole rows (+ constant) or chunks (^ constant) away.
        const uint32_t ps_lane = swz_elem<kNChunks>(sdp_row + g, sdp_col + 2 * tig);
        // The row this lane addresses for stmatrix: row lane%8 (+8 for matrices 1, 3) of chunk lane/16.
        const uint32_t stsm_lane = swz<kNChunks>(sdp_row + (lane & 7) + ((lane >> 3) & 1) * 8, sdp_col / 8 + (lane >> 4));
        const uint32_t sQ = s_base + Tl::kOffQ + stage * Tl::kTileQ;
        const uint32_t sdO = s_base + Tl::kOffDO + stage * Tl::kTileQ;
        // This step's tiles have landed, and every warp is done with the previous step, whose buffers
        // (the other stage, sP, sdS) may now be overwritten and whose dQ tile is staged.
        prim::cp_async_wait<0>();
        __syncthreads();
        if constexpr (kBulk) {
            if (tid == 0 && t > 0) bulk_reduce_add_f32(dq_tile(t - 1), sDq, uint32_t(kBlockM * kD * 4));
        }
        if (t + 1 < cta.iters) load_query_tile(t + 1, stage ^ 1);
        prim::cp_async_commit();

        const int m_block = cta.m_begin + t % cta.m_count;
        const int m0 = m_block * kBlockM;
        const float* lse = s_lse + stage * kBlockM;
        const float* delta = s_delta + stage * kBlockM;
        const bool masked = m_block < cta.unmasked_begin || m_block >= cta.unmasked_end;

        // Rounds the accumulator fragments a and b (n8 columns nt, nt + 1 of the warp tile's m16 row block
        // mt) to the dtype into the [kBlockM][kBlockN] tile at `tile`.
        const auto store_pair = [&](uint32_t tile, const float (&a)[4], const float (&c)[4], int mt, int nt) {
            const uint32_t rows = uint32_t(mt * 16 * kBlockN * 2);
            if constexpr (kStmatrix) {
                // Matrices: (rows 0-7, n8 tile nt), (rows 8-15, nt), (0-7, nt+1), (8-15, nt+1).
                stmatrix_x4(tile + (stsm_lane ^ uint32_t(nt * 16)) + rows, Elem<T>::pack(a[0], a[1]),
                            Elem<T>::pack(a[2], a[3]), Elem<T>::pack(c[0], c[1]), Elem<T>::pack(c[2], c[3]));
            } else {
#pragma unroll
                for (int half = 0; half < 2; ++half) {
                    const uint32_t off = rows + uint32_t(half * 8 * kBlockN * 2);
                    st_shared_u32(tile + (ps_lane ^ uint32_t(nt * 16)) + off, Elem<T>::pack(a[2 * half], a[2 * half + 1]));
                    st_shared_u32(tile + (ps_lane ^ uint32_t((nt + 1) * 16)) + off,
                                  Elem<T>::pack(c[2 * half], c[2 * half + 1]));
                }
            }
        };
        // Rounds the fragments v (n8 columns nt0.. of the warp tile) into the tile.
        const auto store_fragments = [&](uint32_t tile, const auto& v, int nt0) {
            constexpr int kNT = int(sizeof(v[0]) / sizeof(v[0][0]));
#pragma unroll
            for (int mt = 0; mt < Tl::kSMT; ++mt)
#pragma unroll
                for (int j = 0; j < kNT; j += 2) store_pair(tile, v[mt][j], v[mt][j + 1], mt, nt0 + j);
        };
        // P = exp(S·scale − lse) in place of S (zero where masked, when masking in registers), rounded to the
        // dtype into sP. S·scale is rounded before lse is subtracted, as the forward rounded max·|scale| into
        // lse (row_logsumexp, fa2_common.cuh): a row's maximum then gets exactly exp(−ln sum) however large
        // the scores. The fused 2^(S·scale_log2 − lse·log2e) carries lse·log2e's rounding instead, which with
        // lse near 1e8 (inputs of 1e4) exceeds 1 and gave the maximum anything from 0 to overflow. The cap at
        // 1 keeps P finite also for an lse that does not belong to these scores. (Keeping the fused form beside this
        // one for small |lse|, chosen per warp, measured slower, by its code size, than the three extra
        // instructions per score.)
        // Masked tiles, two ways (BwdTile::kMaskInSmem, chosen per head dim by ptxas's spills: the kernel runs
        // at the register limit, and where the mask's values land decides what spills; with softcap or ALiBi
        // always the second):
        //   in registers: P is zeroed where TileMask hides the key, as it is computed;
        //   in shared memory: P and dS are computed as if every key were visible, then the hidden elements
        //     are zeroed in sP and sdS, which is all the dV, dK and dQ products read. Each warp zeroes within
        //     the region of the tiles it stored itself (its S/dP warp tile), so a __syncwarp orders the two;
        //     the barrier before the products orders the rest.
        // Either way the hidden elements of sP and sdS are exactly 0.
        const auto visible = [&](int mt, int half, int nt, int e) {  // this thread's element (mt, half, nt, e)
            const int row = m0 + sdp_row + mt * 16 + g + half * 8, c = sdp_col + nt * 8 + 2 * tig + e;
            return c >= row + cta.mask.lo && c <= min(row + cta.mask.hi, cta.mask.last_key);
        };
        const auto mask_tiles = [&]() {
            __syncwarp();
            constexpr int kRowChunks = Tl::kSdpCols / 8;
            static_assert(Tl::kSdpRows * kRowChunks % 32 == 0, "whole chunks per lane");
#pragma unroll 1
            for (int idx = lane; idx < Tl::kSdpRows * kRowChunks; idx += 32) {
                const int r = sdp_row + idx / kRowChunks, c0 = sdp_col + (idx % kRowChunks) * 8;
                // Visible elements [begin, end) of the chunk's 8.
                const int begin = min(max(m0 + r + cta.mask.lo - c0, 0), 8);
                const int end = max(min(min(m0 + r + cta.mask.hi, cta.mask.last_key) - c0 + 1, 8), begin);
                if (begin == 0 && end == 8) continue;
                const uint32_t keep = (0xffu >> (8 - end)) & (0xffu << begin);  // bit e: element e stays
                uint32_t word_mask[4];
#pragma unroll
                for (int w = 0; w < 4; ++w)
                    word_mask[w] = ((keep >> (2 * w)) & 1u ? 0x0000ffffu : 0u) | ((keep >> (2 * w + 1)) & 1u ? 0xffff0000u : 0u);
                const uint32_t off = swz<kNChunks>(r, c0 / 8);
#pragma unroll
                for (int tile = 0; tile < 2; ++tile) {
                    const uint32_t addr = (tile == 0 ? sP : sdS) + off;
                    const uint4 v = ld_shared_v4(addr);
                    st_shared_v4(addr, make_uint4(v.x & word_mask[0], v.y & word_mask[1], v.z & word_mask[2], v.w & word_mask[3]));
                }
            }
        };
        const auto scores_to_p = [&](float (&sc)[Tl::kSMT][Tl::kSNT][4]) {
#pragma unroll
            for (int mt = 0; mt < Tl::kSMT; ++mt) {
#pragma unroll
                for (int half = 0; half < 2; ++half) {
                    const float row_lse = lse[sdp_row + mt * 16 + g + half * 8];
#pragma unroll
                    for (int nt = 0; nt < Tl::kSNT; ++nt) {
#pragma unroll
                        for (int e = 0; e < 2; ++e) {
                            float& x = sc[mt][nt][2 * half + e];
                            const float pr = prim::fast_exp2(fminf(__fmul_rn(x, scale) - row_lse, 0.0f) * kLog2e);
                            x = !kMaskInSmem && masked && !visible(mt, half, nt, e) ? 0.0f : pr;
                        }
                    }
                }
            }
            store_fragments(sP, sc, 0);
        };
        // With softcap or ALiBi: the transformed score t (ScoreTransform, as the forward computed it) and
        // P = exp(t − lse) into sP, then, in place, P times the softcap's derivative, which is what dS
        // needs (dp_to_ds). One pair of n8 tiles at a time, so that only its 8 derivatives are live.
        const auto transformed_scores_to_p = [&](float (&sc)[Tl::kSMT][Tl::kSNT][4], int head) {
            ScoreTransform tr = ScoreTransform::of(p, cta.seqlen_q, cta.seqlen_k, cta.b, head);
            tr.diagonal += m0 - cta.n0;  // tile-local: i' − j = (m0 + r) + diagonal − (n0 + c)
#pragma unroll
            for (int mt = 0; mt < Tl::kSMT; ++mt) {
                float row_lse[2];
#pragma unroll
                for (int half = 0; half < 2; ++half) row_lse[half] = lse[sdp_row + mt * 16 + g + half * 8];
#pragma unroll
                for (int j = 0; j < Tl::kSNT; j += 2) {
                    float derivative[2][4];
#pragma unroll
                    for (int jj = 0; jj < 2; ++jj)
#pragma unroll
                        for (int e = 0; e < 4; ++e) {
                            const int half = e >> 1;
                            const int r = sdp_row + mt * 16 + g + half * 8;
                            const int c = sdp_col + (j + jj) * 8 + 2 * tig + (e & 1);
                            const float t_score = tr(sc[mt][j + jj][e], r, c, derivative[jj][e]);
                            sc[mt][j + jj][e] = prim::fast_exp2(fminf(t_score - row_lse[half], 0.0f) * kLog2e);
                        }
                    store_pair(sP, sc[mt][j], sc[mt][j + 1], mt, j);
#pragma unroll
                    for (int jj = 0; jj < 2; ++jj)
#pragma unroll
                        for (int e = 0; e < 4; ++e) sc[mt][j + jj][e] *= derivative[jj][e];
                }
            }
        };
        // dS = P ∘ (dP − D) in place of dP, into sdS (pr: P, times the softcap's derivative when transformed).
        const auto dp_to_ds = [&](const float (&pr)[Tl::kSMT][Tl::kSNT][4], float (&dp)[Tl::kSMT][Tl::kSNT][4]) {
#pragma unroll
            for (int mt = 0; mt < Tl::kSMT; ++mt) {
#pragma unroll
                for (int half = 0; half < 2; ++half) {
                    const float row_delta = delta[sdp_row + mt * 16 + g + half * 8];
#pragma unroll
                    for (int nt = 0; nt < Tl::kSNT; ++nt) {
                        dp[mt][nt][2 * half] = pr[mt][nt][2 * half] * (dp[mt][nt][2 * half] - row_delta);
                        dp[mt][nt][2 * half + 1] = pr[mt][nt][2 * half + 1] * (dp[mt][nt][2 * half + 1] - row_delta);
                    }
                }
            }
            store_fragments(sdS, dp, 0);
        };

        // P first, then dP = dO·Vᵀ: only one of the two fp32 tiles is live next to the dK/dV accumulators
        // while the other is computed.
        float s[Tl::kSMT][Tl::kSNT][4];
        clear(s);
        warp_gemm<T, Tl::kSMT, Tl::kSNT, kD, false, false, kDChunks, kDChunks>(s, sQ, sdp_row, sK, sdp_col, lane);
        if constexpr (kTransform) transformed_scores_to_p(s, step_head(t));
        else scores_to_p(s);
        {
            float dp[Tl::kSMT][Tl::kSNT][4];
            clear(dp);
            warp_gemm<T, Tl::kSMT, Tl::kSNT, kD, false, false, kDChunks, kDChunks>(dp, sdO, sdp_row, sV, sdp_col, lane);
            dp_to_ds(s, dp);
        }
        if constexpr (kMaskInSmem) {
            if (masked) mask_tiles();
        }
        // The previous step's dQ tile must be read out of the staging buffer before it is rewritten below.
        if constexpr (kBulk) {
            if (tid == 0) bulk_wait_read();
        }
        __syncthreads();

        // dV += Pᵀ·dO, dK += dSᵀ·Q (Pᵀ, dSᵀ read transposed from the [query][key] tiles).
        warp_gemm<T, Tl::kKvMT, Tl::kKvNT, kBlockM, true, true, kNChunks, kDChunks>(acc_dv, sP, kv_row, sdO, kv_col,
                                                                                     lane);
        warp_gemm<T, Tl::kKvMT, Tl::kKvNT, kBlockM, true, true, kNChunks, kDChunks>(acc_dk, sdS, kv_row, sQ, kv_col,
                                                                                     lane);

        // dQ (unscaled) += dS·K, added to the fp32 workspace: other CTAs add their key tiles to the same rows.
        float dq[Tl::kQMT][Tl::kQNT][4];
        clear(dq);
        warp_gemm<T, Tl::kQMT, Tl::kQNT, kBlockN, false, true, kNChunks, kDChunks>(dq, sdS, dq_row, sK, dq_col, lane);
        if constexpr (kBulk) {
            // Staged as the workspace's image (dq_accum_offset); the bulk copy is issued next step.
            float* stage_dq = reinterpret_cast<float*>(smem + Tl::kOffDq);
#pragma unroll
            for (int mt = 0; mt < Tl::kQMT; ++mt)
#pragma unroll
                for (int half = 0; half < 2; ++half) {
                    const int r = dq_row + mt * 16 + g + half * 8;
#pragma unroll
                    for (int nt = 0; nt < Tl::kQNT; ++nt) {
                        const int c = dq_col + nt * 8 + 2 * tig;
                        *reinterpret_cast<float2*>(stage_dq + dq_accum_offset<kD>(r, c)) =
                            make_float2(dq[mt][nt][2 * half], dq[mt][nt][2 * half + 1]);
                    }
                }
            fence_proxy_async_shared();
        } else {
            float* dq_rows = dq_tile(t);
#pragma unroll
            for (int mt = 0; mt < Tl::kQMT; ++mt)
#pragma unroll
                for (int nt = 0; nt < Tl::kQNT; ++nt) {
                    const float* d = dq[mt][nt];
                    const int r = dq_row + mt * 16 + g, c = dq_col + nt * 8 + 2 * tig;
                    atomic_add2(dq_rows + dq_accum_offset<kD>(r, c), d[0], d[1]);
                    atomic_add2(dq_rows + dq_accum_offset<kD>(r + 8, c), d[2], d[3]);
                }
        }
    }

    // ---- epilogue: the last dQ tile's bulk reduction, then dK·scale and dV rounded to the dtype, staged
    // through the K/V tiles for 16-byte stores. Key rows past seqused_k (out_rows > keys) hold zeros: every
    // P and dS of their columns was masked.
    prim::cp_async_wait<0>();  // with no query tile (iters == 0) the K/V copies may still be landing
    __syncthreads();          // every warp is done reading sK and sV (and has staged its last dQ)
    if constexpr (kBulk) {
        if (tid == 0 && cta.iters > 0) {
            bulk_reduce_add_f32(dq_tile(cta.iters - 1), sDq, uint32_t(kBlockM * kD * 4));
            bulk_wait_all();
        }
    }
    const int g = (tid & 31) >> 2, tig = tid & 3;
#pragma unroll
    for (int mt = 0; mt < Tl::kKvMT; ++mt)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int r = kv_row + mt * 16 + g + half * 8;
#pragma unroll
            for (int nt = 0; nt < Tl::kKvNT; ++nt) {
                const int c = kv_col + nt * 8 + 2 * tig;
                st_shared_u32(sK + swz_elem<kDChunks>(r, c),
                              Elem<T>::pack(acc_dk[mt][nt][2 * half] * scale, acc_dk[mt][nt][2 * half + 1] * scale));
                st_shared_u32(sV + swz_elem<kDChunks>(r, c),
                              Elem<T>::pack(acc_dv[mt][nt][2 * half], acc_dv[mt][nt][2 * half + 1]));
            }
        }
    __syncthreads();
    uint16_t* dk = const_cast<uint16_t*>(row_ptr(p.dk, cta.b, cta.k_row0 + cta.n0, cta.hk));
    uint16_t* dv = const_cast<uint16_t*>(row_ptr(p.dv, cta.b, cta.k_row0 + cta.n0, cta.hk));
    store_tile<kBlockN, kD>(dk, p.dk.row_stride, cta.out_rows, p.head_dim, sK, kVec16, tid);
    store_tile<kBlockN, kD>(dv, p.dv.row_stride, cta.out_rows, p.head_dim, sV, kVec16, tid);
}

}  // namespace fa4j::cuda::kernels::sm80::bwd
