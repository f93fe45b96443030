// The per-score features (core/score_mask.hpp) on the CPU kernels' score tiles.
//
// Without softcap and ALiBi the kernels keep raw dot products and scale them inside the exp2
// (online_softmax.hpp says why); the window only masks. With either, the scale can no longer wait:
// the tiles are turned into transformed scores soft_cap(scale·s) - slope·|i' - j| right after the
// product, and everything downstream (maximum, exp2, lse, the backward's recomputed P) works on them
// with the factor log2(e). The forward, its rerun in the backward and both backward passes apply the
// same functions to the same dot products (a product's summation order does not depend on the tile's
// orientation, tile_matmul.hpp), so the scores, and P, agree bit for bit.
#pragma once

#include <algorithm>
#include <cstdint>

#include "backends/cpu/fast_tanh.hpp"
#include "backends/cpu/simd.hpp"
#include "core/attention_problem.hpp"
#include "core/score_mask.hpp"

namespace fa4j::cpu {

// The features as they apply to one (batch, query head).
struct HeadScores {
    ScoreWindow window;
    float softcap;  // > 0: capped
    float slope;    // ALiBi slope; 0 without ALiBi
};

inline HeadScores head_scores(const AttentionConfig& config, int64_t b, int64_t h) {
    return {score_window(config), config.features.softcap, alibi_slope(config.features, b, h)};
}

// One row of a score tile, n lanes of raw dot products, turned into transformed scores; lane e holds the
// pair with i' - j = difference + step·e. With kDerivative also the softcap's derivative, which dS is
// multiplied by. Distances are int32 so that the loop vectorises; they are exact up to 2^30, far beyond
// any sequence attention could be run on here, and saturate there.
template <class Isa, bool kSoftcap, bool kDerivative>
FA4J_INLINE void transform_score_row(float* row, float* derivative, int n, float scale, const HeadScores& hs,
                                     int64_t difference, int step) {
    constexpr int64_t kLimit = int64_t{1} << 30;
    const int32_t first = static_cast<int32_t>(std::clamp<int64_t>(difference, -kLimit, kLimit));
    const float softcap = hs.softcap, slope = hs.slope;
#pragma omp simd
    for (int e = 0; e < n; ++e) {
        float s = row[e] * scale;
        if constexpr (kSoftcap) {
            float cap_derivative;
            s = soft_cap(s, softcap, VectorTanh<Isa>{}, cap_derivative);
            if constexpr (kDerivative) derivative[e] = cap_derivative;
        }
        row[e] = alibi_biased(s, slope, alibi_distance(first + step * e));
    }
}

// A whole tile [rows x ld] (rows of it at tile + r·ld, derivatives likewise at derivative + r·ld):
// element (r, e) is the pair with i' - j = difference + row_step·r + lane_step·e. `scale` multiplies the
// tile's dot products into scale·q·k.
template <class Isa, bool kDerivative>
FA4J_INLINE void transform_score_tile(float* tile, float* derivative, int rows, int ld, float scale,
                                      const HeadScores& hs, int64_t difference, int row_step, int lane_step) {
    for (int r = 0; r < rows; ++r) {
        float* d = kDerivative ? derivative + r * ld : nullptr;
        const int64_t row_difference = difference + static_cast<int64_t>(row_step) * r;
        if (hs.softcap > 0.0f)
            transform_score_row<Isa, true, kDerivative>(tile + r * ld, d, ld, scale, hs, row_difference, lane_step);
        else
            transform_score_row<Isa, false, false>(tile + r * ld, d, ld, scale, hs, row_difference, lane_step);
    }
}

}  // namespace fa4j::cpu
