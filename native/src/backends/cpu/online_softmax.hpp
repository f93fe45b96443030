// The online softmax of the CPU kernels: the running maximum and sum of one query tile's rows over the
// key tiles they attend. The forward (attention_forward_cpu.cpp) builds its output on it; the backward
// (attention_backward_cpu.cpp) reruns it, for rows whose logsumexp is too large for P = exp(scale·s -
// lse) to be recomputed from it, and gets the same statistics bit for bit because it is this code on
// the same tiles in the same order.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "backends/cpu/fast_exp2.hpp"
#include "backends/cpu/score_tiles.hpp"
#include "backends/cpu/simd.hpp"
#include "backends/cpu/tile_io.hpp"
#include "backends/cpu/tile_matmul.hpp"
#include "backends/cpu/tiling.hpp"
#include "core/attention_problem.hpp"
#include "core/score_mask.hpp"

namespace fa4j::cpu {

// What the online softmax of one query tile needs; the forward adds its value tile and accumulator.
struct SoftmaxScratch {
    // `rows`: the most query rows a tile has (kBlockQ; decode packs more, attention_decode_cpu.cpp).
    explicit SoftmaxScratch(int d, int rows = kBlockQ)
        : qt(d * rows), k(kBlockK * d), st(kBlockK * rows), running_max(rows), running_sum(rows), tile_max(rows),
          tile_sum(rows), alpha(rows) {}
    FloatBuffer qt;           // [d x rows_pad]
    FloatBuffer k;            // [keys_pad x d]
    FloatBuffer st;           // [keys_pad x rows_pad]: scores, then probabilities
    FloatBuffer running_max;  // per query: the largest score seen (a raw dot product unless transformed, see below)
    FloatBuffer running_sum;  // per query: sum of 2^((score - running_max) * scale_log2)
    FloatBuffer tile_max, tile_sum, alpha;  // per query, for the current key tile
};

// |softmax_scale|·log2(e), the factor of the kernels' exp2: the scale's sign is folded into q instead
// (start_query_tile). A zero scale (uniform attention) becomes the smallest normal float, which gives
// the same probabilities but keeps masked scores at -inf rather than -inf·0 = NaN. Transformed scores
// (score_tiles.hpp) carry the scale already: log2(e).
inline float softmax_factor(const AttentionConfig& config) {
    if (transforms_scores(config.features)) return kLog2e;
    const float abs_scale = std::fabs(config.softmax_scale);
    return abs_scale > 0.0f ? softmax_scale_log2(abs_scale) : std::numeric_limits<float>::min();
}

// What one unit of the scores the softmax sees is worth in scale·q·k: |scale| for raw dot products
// (sign folded into q), 1 for transformed scores.
inline float score_unit(const AttentionConfig& config) {
    return transforms_scores(config.features) ? 1.0f : std::fabs(config.softmax_scale);
}

// Turns the scores Sᵀ [keys_pad x rows_pad] of one key tile into unnormalised probabilities
// 2^((s - max) * scale_log2), folds them into each query's running maximum and sum, and leaves in
// `alpha` the factor each query's output accumulator must be multiplied by before this tile is added.
// `visible(j)` is the range of the tile's queries that may attend key j (an IndexRange of lanes).
//
// Scores stay raw dot products (with the sign of the scale folded into q, so that the largest one
// carries the most weight) and the maximum is subtracted before scaling: the maximum's probability is
// exactly 1 and every other one lies in [0, 1] whatever the scale. Scaling first would leave,
// for a scale that takes scores out of float32, Inf - Inf = NaN; for a merely large one (1e10), max
// subtraction of rounded products. Transformed scores (softcap, ALiBi: score_tiles.hpp) are scaled
// first, necessarily; scale·q·k is finite within the representable range, and the maximum's
// probability is still exactly 1.
template <class Isa, class Visible>
FA4J_INLINE void online_softmax_tile(SoftmaxScratch& w, int keys_pad, int rows_pad, float scale_log2,
                                     Visible visible) {
    float* const st = w.st.get();
    float* const running_max = w.running_max.get();
    float* const running_sum = w.running_sum.get();
    float* const tile_max = w.tile_max.get();
    float* const tile_sum = w.tile_sum.get();
    float* const alpha = w.alpha.get();

    fill_floats(tile_max, rows_pad, -kInf);
    for (int j = 0; j < keys_pad; ++j) {
        float* row = st + j * rows_pad;
        const IndexRange lanes = visible(j);
        fill_floats(row, static_cast<int>(lanes.begin), -kInf);
        fill_floats(row + lanes.end, rows_pad - static_cast<int>(lanes.end), -kInf);
#pragma omp simd
        for (int i = 0; i < rows_pad; ++i) tile_max[i] = row[i] > tile_max[i] ? row[i] : tile_max[i];
    }
    // Per query and cheap next to the tile: plain scalar code with the -inf cases spelled out.
    for (int i = 0; i < rows_pad; ++i) {
        const float new_max = std::max(running_max[i], tile_max[i]);
        if (new_max == -kInf) {
            // Nothing attendable yet: exponentiate against 0 so masked scores give 0, not NaN.
            tile_max[i] = 0.0f;
            alpha[i] = 1.0f;
        } else {
            alpha[i] = std::exp2((running_max[i] - new_max) * scale_log2);  // 0 while running_max is -inf
            running_max[i] = new_max;
            tile_max[i] = new_max;
        }
    }
    fill_floats(tile_sum, rows_pad, 0.0f);
    for (int j = 0; j < keys_pad; ++j) {
        float* row = st + j * rows_pad;
#pragma omp simd
        for (int i = 0; i < rows_pad; ++i) {
            row[i] = probability_exp2<Isa>((row[i] - tile_max[i]) * scale_log2);
            tile_sum[i] += row[i];
        }
    }
#pragma omp simd
    for (int i = 0; i < rows_pad; ++i) running_sum[i] = madd<Isa>(running_sum[i], alpha[i], tile_sum[i]);
}

// Qᵀ of query rows [i0, i0 + rows) of head h, negated for a negative scale (so that the largest score
// carries the most weight), and fresh running statistics.
template <class Elem>
FA4J_INLINE void start_query_tile(const AttentionConfig& config, const SeqTensor& q, int64_t b, int64_t h, int64_t i0,
                                  int rows, SoftmaxScratch& w) {
    const int d = static_cast<int>(config.shape.head_dim);
    const int rows_pad = round_up(rows, kRowPad);
    float* const qt = w.qt.get();
    load_tile_transposed<Elem>(q, b, h, i0, rows, rows_pad, d, qt);
    if (config.softmax_scale < 0.0f) {
#pragma omp simd
        for (int e = 0; e < d * rows_pad; ++e) qt[e] = -qt[e];
    }
    fill_floats(w.running_max.get(), rows_pad, -kInf);
    fill_floats(w.running_sum.get(), rows_pad, 0.0f);
}

// The key tile [j0, j0 + keys) of kv head h_kv against the query tile of query head hs: Sᵀ = K Qᵀ into
// st, transformed if the call transforms scores, then turned into probabilities and folded into the
// running statistics (online_softmax_tile).
template <class Isa, class Elem>
FA4J_INLINE void softmax_key_tile(const AttentionConfig& config, const HeadScores& hs, const SeqTensor& k, int64_t b,
                                  int64_t h_kv, int64_t j0, int keys, int64_t i0, int rows, SoftmaxScratch& w) {
    const int d = static_cast<int>(config.shape.head_dim);
    const int rows_pad = round_up(rows, kRowPad);
    const int keys_pad = round_up(keys, kRowPad);
    load_tile<Elem>(k, b, h_kv, j0, keys, keys_pad, d, w.k.get());
    matmul<Isa, false>(keys_pad, rows_pad, d, w.k.get(), d, w.qt.get(), rows_pad, w.st.get(), rows_pad);  // Sᵀ = K Qᵀ
    if (transforms_scores(config.features)) {
        // Qᵀ carries the scale's sign, so |scale| makes scale·q·k. Row jj is key j0 + jj, lane i query i0 + i.
        transform_score_tile<Isa, false>(w.st.get(), nullptr, keys_pad, rows_pad, std::fabs(config.softmax_scale), hs,
                                         hs.window.aligned(i0) - j0, -1, 1);
    }
    online_softmax_tile<Isa>(w, keys_pad, rows_pad, softmax_factor(config), [&](int j) {
        if (j >= keys) return IndexRange{rows_pad, rows_pad};  // padding key
        return local_range(hs.window.queries_of(j0 + j), i0, rows_pad);
    });
}

// Logsumexp of a row from its largest score (raw with the sign of the scale folded in, or transformed)
// and its sum of probabilities relative to it: max·unit (score_unit) rounded to float first, exactly as
// the backward rounds scale·s when it recomputes P = exp(scale·s - lse) (the CUDA backward for every
// lse; the CPU one up to kLseRecomputeLimit), so that the row maximum gets P = 1/sum there. Saturates
// at ±FLT_MAX (reachable only with float32 or bfloat16 inputs beyond the float16 range).
FA4J_INLINE float row_logsumexp(float max_score, float unit, float sum) {
    if (!(sum > 0.0f)) return -kInf;  // attends nothing
    const float lse = max_score * unit + std::log(sum);
    return std::clamp(lse, -std::numeric_limits<float>::max(), std::numeric_limits<float>::max());
}

}  // namespace fa4j::cpu
