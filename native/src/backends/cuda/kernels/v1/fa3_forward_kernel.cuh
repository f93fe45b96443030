// The Hopper forward kernel (FlashAttention-3 design, written for this library): out = softmax(scale ·
// q·kᵀ [masked]) · v and the row logsumexp, on sm_90a.
//
// One CTA owns kBlockM = 64·kConsumers query rows of one (batch, head) and has 1 + kConsumers
// warpgroups:
//   producer   warpgroup 0 gives most of its registers away (setmaxnreg) and one thread of it issues
//              TMA loads: Q once, then K and V tiles of kBlockN keys into a kStages-deep ring of
//              shared-memory buffers, each completing on a "full" mbarrier; it refills a buffer when
//              every consumer warp has arrived on its "empty" mbarrier.
//   consumers  warpgroup 1 + w owns query rows [64w, 64w + 64) and keeps S, P and O in registers:
//                S = Q·Kᵀ       wgmma m64·kBlockN·k16, A = Q and B = K from shared memory (K-major)
//                online softmax running max and sum per row, exp2 of scores scaled by scale·log2 e
//                O += P·V       wgmma m64·d·k16, A = P from registers (the S accumulators, converted
//                               to 16 bits, are already in the A-operand layout), B = V from shared
//                               memory (MN-major: the transpose bit)
//              The product for the next tile's S is issued before the current P·V, so the tensor cores
//              work on both while the softmax of the next tile runs (the P·V of tile j overlaps the
//              softmax of tile j+1).
// Key tiles are walked from the last to the first, so the tiles that need a mask (crossing the causal
// diagonal or the end of the keys) come first and every later tile runs unmasked; under the causal
// mask tiles wholly above the diagonal are never loaded. Ragged edges cost nothing extra: TMA writes
// zeros for rows past seqlen and columns past head_dim. After the last tile each consumer normalises
// O, stages it through its own rows of the Q buffer and writes it with 16-byte stores; lse =
// m·|scale| + ln l, and rows that see no key get out = 0, lse = -inf.
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <cstdint>
#include <cstdlib>
#include <mutex>

#include "backends/cuda/cuda_check.cuh"
#include "backends/cuda/kernels/v1/fa2_common.cuh"
#include "backends/cuda/kernels/v1/fa3_forward.hpp"
#include "backends/cuda/kernels/v1/sm90_primitives.cuh"

namespace fa4j::cuda::v1::fa3 {

using fa2::Elem;
using fa2::ForwardParams;

// The tile shape of one Hopper forward kernel; every loop bound and buffer offset derives from these.
template <int kHeadDim_, int kBlockN_, int kConsumers_, int kStages_, bool kPingpong_>
struct Fa3Tile {
    static constexpr int kHeadDim = kHeadDim_;
    static constexpr int kBlockN = kBlockN_;      // keys per pipeline step (the N of S = Q·Kᵀ)
    static constexpr int kConsumers = kConsumers_;  // consumer warpgroups, 64 query rows each
    static constexpr int kStages = kStages_;      // K and V buffers in the shared-memory ring
    // Consumers take turns issuing their matrix products (named barriers), so that one warpgroup's
    // softmax runs while the other's products occupy the tensor cores.
    static constexpr bool kPingpong = kPingpong_;
    static constexpr int kBlockM = 64 * kConsumers;
    static constexpr int kThreads = sm90::kWarpgroupThreads * (1 + kConsumers);
    // Registers per thread after setmaxnreg: the producer keeps few, the consumers share the rest of
    // the 64K-register file (the sum stays within it; values are multiples of 8).
    static constexpr int kProducerRegisters = kConsumers == 2 ? 24 : 32;
    static constexpr int kConsumerRegisters = kConsumers == 2 ? 240 : 160;

    static constexpr int kColBlocks = kHeadDim / sm90::kBlockCols;  // 128-byte column blocks per row
    static constexpr int kQkSteps = kHeadDim / 16;                  // k16 steps of Q·Kᵀ
    static constexpr int kPvSteps = kBlockN / 16;                   // k16 steps of P·V
    static constexpr int kSRegs = kBlockN / 2;                      // S accumulators per thread
    static constexpr int kORegs = kHeadDim / 2;                     // O accumulators per thread
    static constexpr int kPRegs = kBlockN / 4;                      // P, two 16-bit values per register

    static constexpr int kQBytes = kBlockM * kHeadDim * 2;
    static constexpr int kKvBytes = kBlockN * kHeadDim * 2;  // one K (or V) buffer
    static constexpr int kQOffset = 0;
    static constexpr int kKOffset = kQOffset + kQBytes;
    static constexpr int kVOffset = kKOffset + kStages * kKvBytes;
    static constexpr int kBarrierOffset = kVOffset + kStages * kKvBytes;
    static constexpr int kBarriers = 1 + 4 * kStages;  // Q full; K full, V full, K empty, V empty per stage
    // + 1024: the dynamic shared memory is aligned up to the swizzle period at run time.
    static constexpr int kSmemBytes = kBarrierOffset + 8 * kBarriers + sm90::kSwizzleAtomBytes;

    static_assert(kHeadDim % sm90::kBlockCols == 0, "head dims are whole 128-byte column blocks");
    static_assert(kBlockN % 16 == 0 && kBlockN <= 256, "kBlockN is a wgmma N and a TMA box height");
    static_assert(kBlockM <= 256, "the Q tile is one TMA box high");
    static_assert(kQBytes % sm90::kSwizzleAtomBytes == 0 && kKvBytes % sm90::kSwizzleAtomBytes == 0,
                  "tiles keep the 1024-byte alignment of the swizzle");
    static_assert(kProducerRegisters * 128 + kConsumerRegisters * 128 * kConsumers <= 65536, "register file");
    static_assert(kSmemBytes <= 227 * 1024, "shared memory per CTA");
};

// What the kernel takes: the call's parameters and TMA descriptors of q, k and v as 4-D tensors
// (head_dim, seqlen, heads, batch). A head or batch dimension with stride 0 (broadcast views) is
// described as extent 1 and addressed at coordinate 0 (its multiplier is 0).
struct Fa3KernelParams {
    CUtensorMap tma_q;
    CUtensorMap tma_k;
    CUtensorMap tma_v;
    ForwardParams p;
    int q_head_mul, q_batch_mul;
    int k_head_mul, k_batch_mul;
    int v_head_mul, v_batch_mul;
    int m_blocks;       // query blocks per (batch, head)
    int heads_fastest;  // 1: blockIdx.x = (m_block from the last, head) with the head fastest, so that the
                        // heaviest causal blocks of every head start first; 0: m_block fastest (K/V of a
                        // head stay in L2 while its query blocks run)
};

// Offset of 16-byte chunk `chunk` of row `row` in a swizzled tile of `rows` rows (sm90_primitives.cuh).
__device__ __forceinline__ uint32_t swizzled_offset(int rows, int row, int chunk) {
    return static_cast<uint32_t>((chunk / 8) * rows * sm90::kSwizzleRowBytes + row * sm90::kSwizzleRowBytes +
                                 ((chunk % 8) ^ (row % 8)) * 16);
}

// Online softmax of one m64 × kBlockN score tile for the two rows (r, r + 8) this thread holds (the
// arithmetic is fa2_common.cuh's: the running maximum kept as a raw score, subtracted before scaling).
// In the accumulator layout thread (warp w, lane 4g + q) holds, for each n8 column block j,
// s[4j + 2h + e] = S(16w + g + 8h, 8j + 2q + e).
template <int kSRegs>
struct OnlineSoftmax {
    float row_max[2];  // running maximum of ±s (the sign of the scale), a raw score (-inf: no key seen yet)
    float row_sum[2];  // this thread's partial sum of the probabilities; the quad's are added at the end
    float scale_log2, abs_scale_log2;
    bool flip;

    // Turns s into probabilities (fp32, in place), updates the statistics and returns in `correction`
    // the factor the rows' O accumulators must be multiplied by. `visible[h]`: in row h, columns from
    // visible[h] on (relative to this thread's first column) are masked (kMask only).
    template <bool kMask>
    __device__ __forceinline__ void step(float (&s)[kSRegs], const int (&visible)[2], float (&correction)[2]) {
        const float masked_score = flip ? INFINITY : -INFINITY;  // -inf once multiplied by the scale
        // Both rows' maxima first, then both rows' exponentials: the two quad reductions overlap (with
        // each row done in turn the d = 64 kernel measured 6% slower).
        float r_new[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            if (kMask) {
#pragma unroll
                for (int j = 0; j < kSRegs / 4; ++j)
#pragma unroll
                    for (int e = 0; e < 2; ++e)
                        if (8 * j + e >= visible[h]) s[4 * j + 2 * h + e] = masked_score;
            }
            float mx = -INFINITY;
            if (flip) {
#pragma unroll
                for (int j = 0; j < kSRegs / 4; ++j) mx = fmaxf(mx, fmaxf(-s[4 * j + 2 * h], -s[4 * j + 2 * h + 1]));
            } else {
#pragma unroll
                for (int j = 0; j < kSRegs / 4; ++j) mx = fmaxf(mx, fmaxf(s[4 * j + 2 * h], s[4 * j + 2 * h + 1]));
            }
            r_new[h] = fmaxf(row_max[h], fa2::quad_max(mx));
        }
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            correction[h] = fa2::softmax_rescale(row_max[h], r_new[h], abs_scale_log2);
            const float reference = fa2::softmax_reference(r_new[h], flip);
            row_max[h] = r_new[h];
            float sum = 0.f;
#pragma unroll
            for (int j = 0; j < kSRegs / 4; ++j)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    float& x = s[4 * j + 2 * h + e];
                    x = fa2::softmax_probability(x, scale_log2, reference);
                    sum += x;
                }
            row_sum[h] = row_sum[h] * correction[h] + sum;
        }
    }
};

template <class Tile, class T, bool kCausal>
__global__ void __launch_bounds__(Tile::kThreads, 1) fa3_forward_kernel(const __grid_constant__ Fa3KernelParams kp) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    using Op = fa2::Mma<T>;
    constexpr int kBlockM = Tile::kBlockM, kBlockN = Tile::kBlockN, kStages = Tile::kStages;
    constexpr int kHeadDim = Tile::kHeadDim;
    const ForwardParams& p = kp.p;

    extern __shared__ unsigned char smem_raw[];
    const uint32_t smem = (sm90::smem_address(smem_raw) + (sm90::kSwizzleAtomBytes - 1)) &
                          ~static_cast<uint32_t>(sm90::kSwizzleAtomBytes - 1);
    unsigned char* const smem_ptr = smem_raw + (smem - sm90::smem_address(smem_raw));
    const uint32_t s_q = smem + Tile::kQOffset;
    const uint32_t s_k = smem + Tile::kKOffset;
    const uint32_t s_v = smem + Tile::kVOffset;
    const uint32_t bars = smem + Tile::kBarrierOffset;
    const uint32_t bar_q = bars;
    const auto full_k = [&](int stage) { return bars + 8u * static_cast<uint32_t>(1 + stage); };
    const auto full_v = [&](int stage) { return bars + 8u * static_cast<uint32_t>(1 + kStages + stage); };
    const auto empty_k = [&](int stage) { return bars + 8u * static_cast<uint32_t>(1 + 2 * kStages + stage); };
    const auto empty_v = [&](int stage) { return bars + 8u * static_cast<uint32_t>(1 + 3 * kStages + stage); };

    const int tid = static_cast<int>(threadIdx.x);
    const int warpgroup = tid / sm90::kWarpgroupThreads;
    // Under the causal mask the last query blocks have the most keys: launch them first, so the grid's
    // tail is made of the short ones.
    const int block = static_cast<int>(blockIdx.x);
    const int m_block = kp.heads_fastest ? kp.m_blocks - 1 - block / p.heads_q : kp.m_blocks - 1 - block % kp.m_blocks;
    const int head = kp.heads_fastest ? block % p.heads_q : block / kp.m_blocks;
    const int batch = static_cast<int>(blockIdx.y);
    const int kv_head = head / p.group_size;
    const int m0 = m_block * kBlockM;
    const int rows_in_block = min(kBlockM, p.seqlen_q - m0);

    // Key tiles this block needs: all of them, or under the causal mask those up to its last row's
    // diagonal. Tiles below n_unmasked are visible to every row of the block and lie inside seqlen_k.
    int key_end = p.seqlen_k;
    int keys_seen_by_all = p.seqlen_k;
    if (kCausal) {
        key_end = min(key_end, m0 + rows_in_block + p.causal_offset);
        keys_seen_by_all = min(keys_seen_by_all, m0 + p.causal_offset + 1);
    }
    const int n_blocks = key_end > 0 ? fa2::ceil_div(key_end, kBlockN) : 0;
    const int n_unmasked = keys_seen_by_all > 0 ? keys_seen_by_all / kBlockN : 0;

    if (tid == 0) {
        sm90::mbarrier_init(bar_q, 1);
        for (int stage = 0; stage < kStages; ++stage) {
            sm90::mbarrier_init(full_k(stage), 1);
            sm90::mbarrier_init(full_v(stage), 1);
            // Every consumer warp arrives once it is done with the buffer.
            sm90::mbarrier_init(empty_k(stage), 4 * Tile::kConsumers);
            sm90::mbarrier_init(empty_v(stage), 4 * Tile::kConsumers);
        }
        sm90::mbarrier_init_fence();
    }
    __syncthreads();

    if (warpgroup == 0) {
        // ---------------- producer ----------------
        sm90::setmaxnreg_decrease<Tile::kProducerRegisters>();
        if (tid == 0 && n_blocks > 0) {
            sm90::tma_prefetch_descriptor(&kp.tma_q);
            sm90::tma_prefetch_descriptor(&kp.tma_k);
            sm90::tma_prefetch_descriptor(&kp.tma_v);
            const int q_head = head * kp.q_head_mul, q_batch = batch * kp.q_batch_mul;
            const int k_head = kv_head * kp.k_head_mul, k_batch = batch * kp.k_batch_mul;
            const int v_head = kv_head * kp.v_head_mul, v_batch = batch * kp.v_batch_mul;
            sm90::mbarrier_arrive_expect_tx(bar_q, Tile::kQBytes);
#pragma unroll
            for (int c = 0; c < Tile::kColBlocks; ++c)
                sm90::tma_load_4d(s_q + static_cast<uint32_t>(c * kBlockM * sm90::kSwizzleRowBytes), &kp.tma_q, bar_q,
                                  c * sm90::kBlockCols, m0, q_head, q_batch);
            for (int it = 0; it < n_blocks; ++it) {
                const int stage = it % kStages;
                const uint32_t phase = static_cast<uint32_t>(it / kStages) & 1u;
                const int n0 = (n_blocks - 1 - it) * kBlockN;
                const uint32_t slot = static_cast<uint32_t>(stage * Tile::kKvBytes);
                sm90::mbarrier_wait(empty_k(stage), phase ^ 1u);
                sm90::mbarrier_arrive_expect_tx(full_k(stage), Tile::kKvBytes);
#pragma unroll
                for (int c = 0; c < Tile::kColBlocks; ++c)
                    sm90::tma_load_4d(s_k + slot + static_cast<uint32_t>(c * kBlockN * sm90::kSwizzleRowBytes),
                                      &kp.tma_k, full_k(stage), c * sm90::kBlockCols, n0, k_head, k_batch);
                sm90::mbarrier_wait(empty_v(stage), phase ^ 1u);
                sm90::mbarrier_arrive_expect_tx(full_v(stage), Tile::kKvBytes);
#pragma unroll
                for (int c = 0; c < Tile::kColBlocks; ++c)
                    sm90::tma_load_4d(s_v + slot + static_cast<uint32_t>(c * kBlockN * sm90::kSwizzleRowBytes),
                                      &kp.tma_v, full_v(stage), c * sm90::kBlockCols, n0, v_head, v_batch);
            }
        }
    } else {
        // ---------------- consumers ----------------
        sm90::setmaxnreg_increase<Tile::kConsumerRegisters>();
        const int consumer = warpgroup - 1;
        const int ctid = tid - warpgroup * sm90::kWarpgroupThreads;
        const int warp = ctid / fa2::kWarpSize, lane = ctid % fa2::kWarpSize;
        const int wg_row0 = consumer * 64;                          // first row of this warpgroup in the block
        const int thread_row0 = wg_row0 + 16 * warp + (lane >> 2);  // rows thread_row0 and thread_row0 + 8

        float o[Tile::kORegs];
    #pragma unroll
        for (int i = 0; i < Tile::kORegs; ++i) o[i] = 0.f;
        float s[Tile::kSRegs];
        uint32_t pf[Tile::kPRegs];
        OnlineSoftmax<Tile::kSRegs> softmax;
        softmax.row_max[0] = softmax.row_max[1] = -INFINITY;
        softmax.row_sum[0] = softmax.row_sum[1] = 0.f;
        softmax.scale_log2 = p.scale_log2;
        softmax.abs_scale_log2 = fabsf(p.scale_log2);
        softmax.flip = p.flip_sign != 0;

        // S = Q·Kᵀ for the K tile in `stage`: k16 steps walk 32 bytes along a 128-byte row, then the next
        // column block.
        const auto issue_qk = [&](int stage) {
            const uint32_t q_base = s_q + static_cast<uint32_t>(wg_row0 * sm90::kSwizzleRowBytes);
            const uint32_t k_base = s_k + static_cast<uint32_t>(stage * Tile::kKvBytes);
    #pragma unroll
            for (int kk = 0; kk < Tile::kQkSteps; ++kk) {
                const uint32_t col = static_cast<uint32_t>((kk % 4) * 32);
                const uint64_t desc_q = sm90::smem_descriptor(
                    q_base + static_cast<uint32_t>((kk / 4) * kBlockM * sm90::kSwizzleRowBytes) + col, 16,
                    sm90::kSwizzleAtomBytes);
                const uint64_t desc_k = sm90::smem_descriptor(
                    k_base + static_cast<uint32_t>((kk / 4) * kBlockN * sm90::kSwizzleRowBytes) + col, 16,
                    sm90::kSwizzleAtomBytes);
                sm90::wgmma_ss<T, kBlockN>(desc_q, desc_k, s, kk > 0);
            }
        };
        // O += P·V for the V tile in `stage`: k16 steps walk 16 key rows (2048 bytes); N = head dim spans
        // the column blocks, kBlockN rows apart.
        const auto issue_pv = [&](int stage) {
            const uint32_t v_base = s_v + static_cast<uint32_t>(stage * Tile::kKvBytes);
    #pragma unroll
            for (int kk = 0; kk < Tile::kPvSteps; ++kk) {
                const uint64_t desc_v = sm90::smem_descriptor(
                    v_base + static_cast<uint32_t>(kk * 16 * sm90::kSwizzleRowBytes),
                    static_cast<uint32_t>(kBlockN * sm90::kSwizzleRowBytes), sm90::kSwizzleAtomBytes);
                sm90::wgmma_rs<T, kHeadDim>(&pf[4 * kk], desc_v, o);
            }
        };
        // Softmax of the tile n_block (masked if it crosses the diagonal or the end of the keys).
        const auto softmax_tile = [&](int n_block, float (&correction)[2]) {
            if (n_block >= n_unmasked) {
                const int col_base = n_block * kBlockN + (lane & 3) * 2;
                int visible[2];
    #pragma unroll
                for (int h = 0; h < 2; ++h) {
                    visible[h] = p.seqlen_k - col_base;
                    if (kCausal) visible[h] = min(visible[h], m0 + thread_row0 + 8 * h + p.causal_offset + 1 - col_base);
                }
                softmax.template step<true>(s, visible, correction);
            } else {
                const int visible[2] = {0, 0};
                softmax.template step<false>(s, visible, correction);
            }
        };
        const auto convert_p = [&]() {
    #pragma unroll
            for (int j = 0; j < Tile::kSRegs / 4; ++j)
    #pragma unroll
                for (int h = 0; h < 2; ++h) pf[2 * j + h] = Op::pack(s[4 * j + 2 * h], s[4 * j + 2 * h + 1]);
        };
        const auto release = [&](uint32_t bar) {
            if (lane == 0) sm90::mbarrier_arrive(bar);
        };
        // Pingpong: consumer w waits for its turn on barrier kTurnBarrier + w before issuing products and
        // then passes the turn to consumer w + 1 (the last one to consumer 0, which it also primes once).
        // Every consumer issues the same n_blocks + 1 batches; the last consumer skips its final pass, so
        // every barrier sees as many passes as waits.
        constexpr int kTurnBarrier = 1 + Tile::kConsumers;  // 1..kConsumers are the epilogue's
        constexpr int kTurnThreads = 2 * sm90::kWarpgroupThreads;
        const auto wait_turn = [&]() {
            if (Tile::kPingpong) sm90::named_barrier_sync(kTurnBarrier + consumer, kTurnThreads);
        };
        const auto pass_turn = [&](bool final_batch) {
            if (Tile::kPingpong && !(final_batch && consumer == Tile::kConsumers - 1))
                sm90::named_barrier_arrive(kTurnBarrier + (consumer + 1) % Tile::kConsumers, kTurnThreads);
        };

        if (n_blocks > 0) {
            if (consumer == Tile::kConsumers - 1) pass_turn(false);  // consumer 0 goes first
            sm90::mbarrier_wait(bar_q, 0);
            // First tile: S, softmax, P (O is still 0: no rescale).
            {
                sm90::mbarrier_wait(full_k(0), 0);
                wait_turn();
                sm90::wgmma_fence();
                issue_qk(0);
                sm90::wgmma_commit();
                pass_turn(false);
                sm90::wgmma_wait<0>();
                sm90::pin_registers(s);
                release(empty_k(0));
                float correction[2];
                softmax_tile(n_blocks - 1, correction);
                convert_p();
            }
            for (int it = 1; it < n_blocks; ++it) {
                const int stage = it % kStages, prev_stage = (it - 1) % kStages;
                const uint32_t phase = static_cast<uint32_t>(it / kStages) & 1u;
                const uint32_t prev_phase = static_cast<uint32_t>((it - 1) / kStages) & 1u;
                sm90::mbarrier_wait(full_k(stage), phase);
                sm90::mbarrier_wait(full_v(prev_stage), prev_phase);
                sm90::pin_registers(pf);
                sm90::pin_registers(o);
                wait_turn();
                sm90::wgmma_fence();
                issue_qk(stage);
                sm90::wgmma_commit();
                issue_pv(prev_stage);
                sm90::wgmma_commit();
                pass_turn(false);
                sm90::wgmma_wait<1>();  // S of this tile is done (P·V of the previous one may still run)
                sm90::pin_registers(s);
                release(empty_k(stage));
                float correction[2];
                softmax_tile(n_blocks - 1 - it, correction);
                sm90::wgmma_wait<0>();  // P·V of the previous tile is done: O and P are free
                sm90::pin_registers(o);
                sm90::pin_registers(pf);
                release(empty_v(prev_stage));
    #pragma unroll
                for (int j = 0; j < Tile::kORegs / 4; ++j)
    #pragma unroll
                    for (int h = 0; h < 2; ++h) {
                        o[4 * j + 2 * h] *= correction[h];
                        o[4 * j + 2 * h + 1] *= correction[h];
                    }
                convert_p();
            }
            {
                const int last = n_blocks - 1;
                const int stage = last % kStages;
                const uint32_t phase = static_cast<uint32_t>(last / kStages) & 1u;
                sm90::mbarrier_wait(full_v(stage), phase);
                sm90::pin_registers(pf);
                sm90::pin_registers(o);
                wait_turn();
                sm90::wgmma_fence();
                issue_pv(stage);
                sm90::wgmma_commit();
                pass_turn(true);
                sm90::wgmma_wait<0>();
                sm90::pin_registers(o);
                sm90::pin_registers(pf);
                release(empty_v(stage));
            }
        }

        // ---- epilogue: normalise, write O and lse ----
        float lse[2];
    #pragma unroll
        for (int h = 0; h < 2; ++h) {
            const float l = fa2::quad_sum(softmax.row_sum[h]);
            // l == 0 exactly when the row attends no key (otherwise its maximum contributes about 1).
            const float inv = l > 0.f ? 1.f / l : 0.f;
            lse[h] = fa2::row_logsumexp(softmax.row_max[h], l, p.abs_scale);
    #pragma unroll
            for (int j = 0; j < Tile::kORegs / 4; ++j) {
                o[4 * j + 2 * h] *= inv;
                o[4 * j + 2 * h + 1] *= inv;
            }
        }

        // This warpgroup's wgmmas are done, and its Q rows are read by no one else: stage O there.
    #pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int row = thread_row0 + 8 * h;
    #pragma unroll
            for (int j = 0; j < Tile::kORegs / 4; ++j) {
                const uint32_t packed = Op::pack(o[4 * j + 2 * h], o[4 * j + 2 * h + 1]);
                *reinterpret_cast<uint32_t*>(smem_ptr + Tile::kQOffset + swizzled_offset(kBlockM, row, j) + (lane & 3) * 4) =
                    packed;
            }
        }
        sm90::named_barrier_sync(1 + consumer, sm90::kWarpgroupThreads);

        T* o_rows = static_cast<T*>(p.o) + batch * p.o_batch_stride + head * p.o_head_stride + m0 * p.o_row_stride;
        const int head_chunks = p.head_dim / fa2::kChunkElems;
        constexpr int kChunksPerRow = kHeadDim / fa2::kChunkElems;
        constexpr int kWgChunks = 64 * kChunksPerRow;
    #pragma unroll
        for (int i = 0; i < kWgChunks / sm90::kWarpgroupThreads; ++i) {
            const int index = i * sm90::kWarpgroupThreads + ctid;
            const int row = wg_row0 + index / kChunksPerRow;
            const int chunk = index % kChunksPerRow;
            if (row < rows_in_block && chunk < head_chunks) {
                const uint4 value =
                    *reinterpret_cast<const uint4*>(smem_ptr + Tile::kQOffset + swizzled_offset(kBlockM, row, chunk));
                *reinterpret_cast<uint4*>(o_rows + row * p.o_row_stride + chunk * fa2::kChunkElems) = value;
            }
        }

        if ((lane & 3) == 0) {
            float* lse_rows = p.lse + batch * p.lse_batch_stride + head * p.lse_head_stride + m0 * p.lse_row_stride;
    #pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int row = thread_row0 + 8 * h;
                if (row < rows_in_block) lse_rows[row * p.lse_row_stride] = lse[h];
            }
        }
    }
#else
    (void)kp;
    FA4J_SM90_UNAVAILABLE();
#endif
}

// ---- host side: TMA descriptors and launch ---------------------------------------------------------

inline PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
    static PFN_cuTensorMapEncodeTiled_v12000 encode = nullptr;
    static std::once_flag once;
    std::call_once(once, [] {
        void* fn = nullptr;
        cudaDriverEntryPointQueryResult found{};
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found) ==
                cudaSuccess &&
            found == cudaDriverEntryPointSuccess)
            encode = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
        else
            (void)cudaGetLastError();
    });
    return encode;
}

// A TMA descriptor of a [batch, seqlen, heads, head_dim] view (strides in elements, head_dim
// contiguous) read in boxes of 64 columns × box_rows rows, 128-byte swizzled. Head and batch
// dimensions with stride 0 collapse to extent 1 (their multiplier becomes 0). False if TMA cannot
// describe the view.
inline bool make_tensor_map(CUtensorMap* map, CUtensorMapDataType type, const void* base, int head_dim, int seqlen,
                            int heads, int batch, int64_t row_stride, int64_t head_stride, int64_t batch_stride,
                            int box_rows, int& head_mul, int& batch_mul) {
    const PFN_cuTensorMapEncodeTiled_v12000 encode = tensor_map_encoder();
    if (encode == nullptr) return false;
    constexpr int64_t kElem = 2;
    constexpr int64_t kMaxStride = int64_t{1} << 40;
    const auto stride_ok = [&](int64_t stride) { return stride > 0 && (stride * kElem) % 16 == 0 && stride * kElem < kMaxStride; };
    // A dimension of extent 1 gets a harmless stride; a broadcast one (stride 0) becomes extent 1.
    head_mul = 1;
    batch_mul = 1;
    if (heads > 1 && head_stride == 0) heads = 1, head_mul = 0;
    if (batch > 1 && batch_stride == 0) batch = 1, batch_mul = 0;
    if (seqlen < 1) seqlen = 1;  // no key: the kernel loads nothing, but the descriptor must be valid
    if (seqlen == 1) row_stride = 8;
    if (heads == 1) head_stride = 8;
    if (batch == 1) batch_stride = 8;
    if (!stride_ok(row_stride) || !stride_ok(head_stride) || !stride_ok(batch_stride)) return false;
    const cuuint64_t dims[4] = {static_cast<cuuint64_t>(head_dim), static_cast<cuuint64_t>(seqlen),
                                static_cast<cuuint64_t>(heads), static_cast<cuuint64_t>(batch)};
    const cuuint64_t strides[3] = {static_cast<cuuint64_t>(row_stride * kElem), static_cast<cuuint64_t>(head_stride * kElem),
                                   static_cast<cuuint64_t>(batch_stride * kElem)};
    const cuuint32_t box[4] = {static_cast<cuuint32_t>(sm90::kBlockCols), static_cast<cuuint32_t>(box_rows), 1, 1};
    const cuuint32_t element_strides[4] = {1, 1, 1, 1};
    const CUresult result = encode(map, type, 4, const_cast<void*>(base), dims, strides, box, element_strides,
                                   CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                   CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    return result == CUDA_SUCCESS;
}

template <class Tile, class T, bool kCausal>
void launch_forward(const Fa3KernelParams& kp, cudaStream_t stream) {
    const auto kernel = fa3_forward_kernel<Tile, T, kCausal>;
    FA4J_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tile::kSmemBytes));
    const dim3 grid(static_cast<unsigned>(kp.m_blocks * kp.p.heads_q), static_cast<unsigned>(kp.p.batch));
    kernel<<<grid, Tile::kThreads, Tile::kSmemBytes, stream>>>(kp);
    FA4J_CUDA_CHECK(cudaGetLastError());
}

// Builds the TMA descriptors (false if they cannot be made), then launches the dtype × causal
// instantiation of Tile.
template <class Tile>
bool dispatch_forward(const ForwardParams& p, Elem elem, bool causal, cudaStream_t stream) {
    Fa3KernelParams kp{};
    kp.p = p;
    kp.m_blocks = fa2::ceil_div(p.seqlen_q, Tile::kBlockM);
    if (static_cast<int64_t>(kp.m_blocks) * p.heads_q > int64_t{0x7fffffff}) return false;  // grid x
    kp.heads_fastest = causal ? 1 : 0;
    const CUtensorMapDataType type = elem == Elem::F16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
    const int heads_kv = p.heads_q / p.group_size;
    if (!make_tensor_map(&kp.tma_q, type, p.q, p.head_dim, p.seqlen_q, p.heads_q, p.batch, p.q_row_stride,
                         p.q_head_stride, p.q_batch_stride, Tile::kBlockM, kp.q_head_mul, kp.q_batch_mul))
        return false;
    if (p.seqlen_k == 0) {  // nothing is loaded but Q: k and v (maybe null) get q's descriptor
        kp.tma_k = kp.tma_v = kp.tma_q;
    } else if (!make_tensor_map(&kp.tma_k, type, p.k, p.head_dim, p.seqlen_k, heads_kv, p.batch, p.k_row_stride,
                         p.k_head_stride, p.k_batch_stride, Tile::kBlockN, kp.k_head_mul, kp.k_batch_mul) ||
        !make_tensor_map(&kp.tma_v, type, p.v, p.head_dim, p.seqlen_k, heads_kv, p.batch, p.v_row_stride,
                         p.v_head_stride, p.v_batch_stride, Tile::kBlockN, kp.v_head_mul, kp.v_batch_mul))
        return false;
    if (elem == Elem::F16) {
        if (causal) launch_forward<Tile, __half, true>(kp, stream);
        else launch_forward<Tile, __half, false>(kp, stream);
    } else {
        if (causal) launch_forward<Tile, __nv_bfloat16, true>(kp, stream);
        else launch_forward<Tile, __nv_bfloat16, false>(kp, stream);
    }
    return true;
}

}  // namespace fa4j::cuda::v1::fa3
