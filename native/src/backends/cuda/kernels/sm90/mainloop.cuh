// The mainloop of the Hopper forward: the TMA producer and the wgmma consumers of one work tile, and the
// pipeline between them.
//
//   producer   one thread issues TMA loads: Q once, then K and V tiles of kBlockN keys into a
//              kStages-deep ring of shared-memory buffers, each completing on a "full" mbarrier; it
//              refills a buffer when every consumer warp has arrived on its "empty" mbarrier.
//   consumers  warpgroup w owns query rows [64w, 64w + 64) of the tile and keeps S, P and O in registers:
//                S = Q·Kᵀ       wgmma m64·kBlockN·k16, A = Q and B = K from shared memory (K-major)
//                online softmax running max and sum per row, exp2 of scores scaled by scale·log2 e
//                O += P·V       wgmma m64·d·k16, A = P from registers (the S accumulators, converted
//                               to 16 bits, are already in the A-operand layout), B = V from shared
//                               memory (MN-major: the transpose bit)
//              The product for the next tile's S is issued before the current P·V, so the tensor cores
//              work on both while the softmax of the next tile runs. With kPingpong the consumer
//              warpgroups also take turns issuing (named barriers), so that one's softmax overlaps the
//              other's products.
// Key tiles come from common/block_range.cuh and are walked from the last to the first: the tiles that
// need the element mask are those outside the range's unmasked sub-range (the end of the keys, the
// causal diagonal or the right window bound at the high end; the left window bound at the low end);
// tiles outside the range are never loaded. Ragged edges cost nothing extra: TMA writes zeros for rows
// past the described tensor and columns past head_dim; rows of another sequence (varlen) that a tile
// reads are masked (keys: outside the sequence's key range) or never stored (queries).
//
// Scores are transformed (softcap, ALiBi: common/score_transform.cuh's rule) only in the kTransform
// instantiation: its per-score tanh and bias, and the registers they need, would otherwise sit in the
// plain kernel's hot loop. The window, causal mask and varlen are run-time fields of every instantiation:
// they only change which tiles are visited and the per-row key limits of masked tiles.
#pragma once

#include <cuda_runtime.h>

#include "backends/cuda/kernels/common/online_softmax.cuh"
#include "backends/cuda/kernels/common/score_transform.cuh"
#include "backends/cuda/kernels/sm90/forward_shared.cuh"
#include "backends/cuda/kernels/sm90/primitives.cuh"

namespace fa4j::cuda::sm90 {

// Online softmax of one m64 × kBlockN score tile for the two rows (r, r + 8) this thread holds. In the
// accumulator layout thread (warp w, lane 4g + q) holds, for each n8 column block j,
// s[4j + 2h + e] = S(16w + g + 8h, 8j + 2q + e).
template <int kSRegs>
struct OnlineSoftmax {
    float row_max[2];  // running maximum of ±s (the sign of the scale), a raw score (-inf: no key seen yet)
    float row_sum[2];  // this thread's partial sum of the probabilities; the quad's are added at the end
    float scale_log2, abs_scale_log2;
    bool flip;

    __device__ explicit OnlineSoftmax(const kernels::ForwardParams& p) {
        row_max[0] = row_max[1] = -INFINITY;
        row_sum[0] = row_sum[1] = 0.f;
        scale_log2 = p.scale_log2;
        abs_scale_log2 = fabsf(p.scale_log2);
        flip = p.flip_sign != 0;
    }

    // Turns s into probabilities (fp32, in place), updates the statistics and returns in `correction`
    // the factor the rows' O accumulators must be multiplied by. kMask: in row h only the columns c
    // (relative to this thread's first column, c = 8j + e) with lo[h] <= c < hi[h] are visible.
    template <bool kMask>
    __device__ __forceinline__ void step(float (&s)[kSRegs], const int (&lo)[2], const int (&hi)[2],
                                         float (&correction)[2]) {
        const float masked_score = flip ? INFINITY : -INFINITY;  // -inf once multiplied by the scale
        // Both rows' maxima first, then both rows' exponentials, so that the two quad reductions overlap.
        float r_new[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            if (kMask) {
#pragma unroll
                for (int j = 0; j < kSRegs / 4; ++j)
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        const int c = 8 * j + e;
                        if (c < lo[h] || c >= hi[h]) s[4 * j + 2 * h + e] = masked_score;
                    }
            }
            float mx = -INFINITY;
            if (flip) {
#pragma unroll
                for (int j = 0; j < kSRegs / 4; ++j) mx = fmaxf(mx, fmaxf(-s[4 * j + 2 * h], -s[4 * j + 2 * h + 1]));
            } else {
#pragma unroll
                for (int j = 0; j < kSRegs / 4; ++j) mx = fmaxf(mx, fmaxf(s[4 * j + 2 * h], s[4 * j + 2 * h + 1]));
            }
            r_new[h] = fmaxf(row_max[h], kernels::quad_max(mx));
        }
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            correction[h] = kernels::softmax_rescale(row_max[h], r_new[h], abs_scale_log2);
            const float reference = kernels::softmax_reference(r_new[h], flip);
            row_max[h] = r_new[h];
            float sum = 0.f;
#pragma unroll
            for (int j = 0; j < kSRegs / 4; ++j)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    float& x = s[4 * j + 2 * h + e];
                    x = kernels::softmax_probability(x, scale_log2, reference);
                    sum += x;
                }
            row_sum[h] = row_sum[h] * correction[h] + sum;
        }
    }
};

template <class Tile_, class T_, bool kTransform_>
struct ForwardMainloop {
    using Tile = Tile_;
    using T = T_;
    static constexpr bool kTransform = kTransform_;
    using Smem = ForwardSmem<Tile>;
    using Softmax = OnlineSoftmax<Tile::kSRegs>;
    static constexpr int kBlockM = Tile::kBlockM, kBlockN = Tile::kBlockN, kStages = Tile::kStages;

    // Named barriers: 0 is __syncthreads', 1..kConsumers the epilogue's, then one turn per consumer.
    static constexpr int kTurnBarrier = 1 + Tile::kConsumers;
    static constexpr int kTurnThreads = 2 * kWarpgroupThreads;

    // ---- producer (one thread) ----
    // Loads Q and the key tiles of `w` (which has keys). kWaitQ: first wait until the consumers are done
    // with the previous tile's Q buffer (their epilogue stages O there), for schedulers that run several
    // tiles per CTA.
    template <bool kWaitQ>
    __device__ static void load(const ForwardKernelParams& kp, const Smem& sm, const WorkTile& w, PipelineState& st) {
        const ForwardTensorMaps& maps = kp.tma;
        const int kv_head = w.head / kp.p.group_size;
        const int q_head = w.head * maps.q_head_mul, q_batch = w.batch * maps.q_batch_mul;
        const int k_head = kv_head * maps.k_head_mul, k_batch = w.batch * maps.k_batch_mul;
        const int v_head = kv_head * maps.v_head_mul, v_batch = w.batch * maps.v_batch_mul;
        // Row coordinates of the described tensors (< 2^31: forward_tensors_refusal bounds the rows).
        const int q_row = static_cast<int>(w.seq.q_row0) + w.m0;
        const int k_row0 = static_cast<int>(w.seq.k_row0);

        if (kWaitQ && st.q_tiles > 0) mbarrier_wait(sm.q_empty(), static_cast<uint32_t>(st.q_tiles - 1) & 1u);
        mbarrier_arrive_expect_tx(sm.q_full(), Tile::kQBytes);
#pragma unroll
        for (int c = 0; c < Tile::kColBlocks; ++c)
            tma_load_4d(sm.q() + static_cast<uint32_t>(c * kBlockM * kSwizzleRowBytes), &maps.q, sm.q_full(),
                        c * kBlockCols, q_row, q_head, q_batch);
        const int count = w.keys.count();
        for (int it = 0; it < count; ++it) {
            const int stage = st.template stage<kStages>(it);
            const uint32_t phase = st.template phase<kStages>(it);
            const int n0 = (w.keys.end - 1 - it) * kBlockN;
            mbarrier_wait(sm.empty_k(stage), phase ^ 1u);
            mbarrier_arrive_expect_tx(sm.full_k(stage), Tile::kKvBytes);
#pragma unroll
            for (int c = 0; c < Tile::kColBlocks; ++c)
                tma_load_4d(sm.k(stage) + static_cast<uint32_t>(c * kBlockN * kSwizzleRowBytes), &maps.k, sm.full_k(stage),
                            c * kBlockCols, k_row0 + n0, k_head, k_batch);
            mbarrier_wait(sm.empty_v(stage), phase ^ 1u);
            mbarrier_arrive_expect_tx(sm.full_v(stage), Tile::kKvBytes);
#pragma unroll
            for (int c = 0; c < Tile::kColBlocks; ++c)
                tma_load_4d(sm.v(stage) + static_cast<uint32_t>(c * kBlockN * kSwizzleRowBytes), &maps.v, sm.full_v(stage),
                            c * kBlockCols, k_row0 + n0, v_head, v_batch);
        }
        st.kv_steps += count;
        st.q_tiles += 1;
    }

    // ---- consumers ----
    // Runs consumer warpgroup `consumer` (thread ctid of it) over the key tiles of `w` (which has keys):
    // o (zeroed here) and softmax end with the tile's unnormalised output and row statistics.
    __device__ static void mma(const ForwardKernelParams& kp, const Smem& sm, const WorkTile& w, PipelineState& st,
                               int consumer, int ctid, float (&o)[Tile::kORegs], Softmax& softmax) {
        const kernels::ForwardParams& p = kp.p;
        const int warp = ctid / 32, lane = ctid % 32;
        const int wg_row0 = consumer * 64;                          // first row of this warpgroup in the tile
        const int thread_row0 = wg_row0 + 16 * warp + (lane >> 2);  // rows thread_row0 and thread_row0 + 8

        // The keys each of this thread's rows may attend (used in masked tiles only): the window rule of
        // core/score_mask.hpp for this sequence, clamped to its keys.
        const ScoreWindow window = w.seq.window(p.score);
        int key_lo[2], key_hi[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const IndexRange keys = window.keys_of(w.m0 + thread_row0 + 8 * h);
            key_lo[h] = static_cast<int>(keys.begin);
            key_hi[h] = static_cast<int>(keys.end);
        }

#pragma unroll
        for (int i = 0; i < Tile::kORegs; ++i) o[i] = 0.f;
        float s[Tile::kSRegs];
        uint32_t pf[Tile::kPRegs];

        // S = Q·Kᵀ for the K tile in `stage`: k16 steps walk 32 bytes along a 128-byte row, then the next
        // column block.
        const auto issue_qk = [&](int stage) {
            const uint32_t q_base = sm.q() + static_cast<uint32_t>(wg_row0 * kSwizzleRowBytes);
            const uint32_t k_base = sm.k(stage);
#pragma unroll
            for (int kk = 0; kk < Tile::kQkSteps; ++kk) {
                const uint32_t col = static_cast<uint32_t>((kk % 4) * 32);
                const uint64_t desc_q = smem_descriptor(
                    q_base + static_cast<uint32_t>((kk / 4) * kBlockM * kSwizzleRowBytes) + col, 16, kSwizzleAtomBytes);
                const uint64_t desc_k = smem_descriptor(
                    k_base + static_cast<uint32_t>((kk / 4) * kBlockN * kSwizzleRowBytes) + col, 16, kSwizzleAtomBytes);
                wgmma_ss<T, kBlockN>(desc_q, desc_k, s, kk > 0);
            }
        };
        // O += P·V for the V tile in `stage`: k16 steps walk 16 key rows (2048 bytes); N = the padded head
        // dim spans the column blocks, kBlockN rows apart.
        const auto issue_pv = [&](int stage) {
            const uint32_t v_base = sm.v(stage);
#pragma unroll
            for (int kk = 0; kk < Tile::kPvSteps; ++kk) {
                const uint64_t desc_v =
                    smem_descriptor(v_base + static_cast<uint32_t>(kk * 16 * kSwizzleRowBytes),
                                    static_cast<uint32_t>(kBlockN * kSwizzleRowBytes), kSwizzleAtomBytes);
                wgmma_rs<T, Tile::kHeadDimPadded>(&pf[4 * kk], desc_v, o);
            }
        };

        // Transformed scores (kTransform): s = scale·s, softcap, ALiBi, exactly as ScoreTransform, with the
        // query-key distance in int (|i' - j| < 2^31: rows and keys < 2^30).
        [[maybe_unused]] kernels::ScoreTransform transform{};
        [[maybe_unused]] int row_aligned[2] = {0, 0};  // i' = i + seqlen_k - seqlen_q of this thread's rows
        if constexpr (kTransform) {
            transform = kernels::ScoreTransform::of(p, w.seq.seqlen_q, w.seq.seqlen_k, w.batch, w.head);
#pragma unroll
            for (int h = 0; h < 2; ++h)
                row_aligned[h] = w.m0 + thread_row0 + 8 * h + static_cast<int>(transform.diagonal);
        }
        const auto transform_scores = [&](int col_base) {
#pragma unroll
            for (int i = 0; i < Tile::kSRegs; ++i) s[i] = s[i] * transform.scale;
            if (transform.softcap > 0.0f) {
#pragma unroll
                for (int i = 0; i < Tile::kSRegs; ++i) {
                    float unused;
                    s[i] = soft_cap(s[i], transform.softcap, kernels::DeviceTanh{}, unused);
                }
            }
            if (transform.slope != 0.0f) {
#pragma unroll
                for (int j = 0; j < Tile::kSRegs / 4; ++j)
#pragma unroll
                    for (int h = 0; h < 2; ++h)
#pragma unroll
                        for (int e = 0; e < 2; ++e) {
                            float& x = s[4 * j + 2 * h + e];
                            x = alibi_biased(x, transform.slope, alibi_distance(row_aligned[h] - (col_base + 8 * j + e)));
                        }
            }
        };

        // Softmax of key tile n_block: masked if it lies outside the range's unmasked sub-range.
        const auto softmax_tile = [&](int n_block, float (&correction)[2]) {
            const int col_base = n_block * kBlockN + (lane & 3) * 2;
            if constexpr (kTransform) transform_scores(col_base);
            if (w.keys.masked(n_block)) {
                int lo[2], hi[2];
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    lo[h] = key_lo[h] - col_base;
                    hi[h] = key_hi[h] - col_base;
                }
                softmax.template step<true>(s, lo, hi, correction);
            } else {
                const int none[2] = {0, 0};
                softmax.template step<false>(s, none, none, correction);
            }
        };
        const auto convert_p = [&]() {
#pragma unroll
            for (int j = 0; j < Tile::kSRegs / 4; ++j)
#pragma unroll
                for (int h = 0; h < 2; ++h) pf[2 * j + h] = pack_pair<T>(s[4 * j + 2 * h], s[4 * j + 2 * h + 1]);
        };
        const auto release = [&](uint32_t bar) {
            if (lane == 0) mbarrier_arrive(bar);
        };
        // Pingpong: consumer w waits for its turn on barrier kTurnBarrier + w before issuing products and
        // then passes the turn to consumer w + 1 (the last one to consumer 0, which it also primes once per
        // work tile). Every consumer issues the same count + 1 batches; the last consumer skips its final
        // pass, so every barrier sees as many passes as waits in every work tile, and one turn circulates.
        const auto wait_turn = [&]() {
            if (Tile::kPingpong) named_barrier_sync(kTurnBarrier + consumer, kTurnThreads);
        };
        const auto pass_turn = [&](bool final_batch) {
            if (Tile::kPingpong && !(final_batch && consumer == Tile::kConsumers - 1))
                named_barrier_arrive(kTurnBarrier + (consumer + 1) % Tile::kConsumers, kTurnThreads);
        };

        const int count = w.keys.count();
        const int last_block = w.keys.end - 1;
        if (consumer == Tile::kConsumers - 1) pass_turn(false);  // consumer 0 goes first
        mbarrier_wait(sm.q_full(), static_cast<uint32_t>(st.q_tiles) & 1u);
        // First tile: S, softmax, P (O is still 0: no rescale).
        {
            const int stage = st.template stage<kStages>(0);
            mbarrier_wait(sm.full_k(stage), st.template phase<kStages>(0));
            wait_turn();
            wgmma_fence();
            issue_qk(stage);
            wgmma_commit();
            pass_turn(false);
            wgmma_wait<0>();
            pin_registers(s);
            release(sm.empty_k(stage));
            float correction[2];
            softmax_tile(last_block, correction);
            convert_p();
        }
        for (int it = 1; it < count; ++it) {
            const int stage = st.template stage<kStages>(it), prev_stage = st.template stage<kStages>(it - 1);
            mbarrier_wait(sm.full_k(stage), st.template phase<kStages>(it));
            mbarrier_wait(sm.full_v(prev_stage), st.template phase<kStages>(it - 1));
            pin_registers(pf);
            pin_registers(o);
            wait_turn();
            wgmma_fence();
            issue_qk(stage);
            wgmma_commit();
            issue_pv(prev_stage);
            wgmma_commit();
            pass_turn(false);
            wgmma_wait<1>();  // S of this tile is done (P·V of the previous one may still run)
            pin_registers(s);
            release(sm.empty_k(stage));
            float correction[2];
            softmax_tile(last_block - it, correction);
            wgmma_wait<0>();  // P·V of the previous tile is done: O and P are free
            pin_registers(o);
            pin_registers(pf);
            release(sm.empty_v(prev_stage));
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
            const int stage = st.template stage<kStages>(count - 1);
            mbarrier_wait(sm.full_v(stage), st.template phase<kStages>(count - 1));
            pin_registers(pf);
            pin_registers(o);
            wait_turn();
            wgmma_fence();
            issue_pv(stage);
            wgmma_commit();
            pass_turn(true);
            wgmma_wait<0>();
            pin_registers(o);
            pin_registers(pf);
            release(sm.empty_v(stage));
        }
        st.kv_steps += count;
        st.q_tiles += 1;
    }
};

}  // namespace fa4j::cuda::sm90
