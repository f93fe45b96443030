// The per-score features of an attention call (fa4j_attention_args in flashattn4j.h) as plain inline
// functions that every backend shares, so that each rule has one definition:
//   - which keys a query may attend: the window, of which the causal mask is the case right = 0;
//   - what that means for tiles: the keys a run of queries attends, the queries a run of keys is attended
//     by, and whether a tile needs masking at all;
//   - the transform of a scaled score: softcap, then the ALiBi bias.
// Plain C++ apart from FA4J_HOST_DEVICE, which makes the same functions callable from CUDA device code.
#pragma once

#include <cstdint>
#include <limits>

#include "core/attention_problem.hpp"
#include "core/host_device.hpp"

namespace fa4j {

FA4J_HOST_DEVICE inline int64_t clamp_index(int64_t x, int64_t lo, int64_t hi) { return x < lo ? lo : x > hi ? hi : x; }

// Indices [begin, end); never begin > end.
struct IndexRange {
    int64_t begin, end;
    FA4J_HOST_DEVICE bool empty() const { return begin == end; }
};

// `range` seen from a tile of `count` indices starting at `base`: tile-local, clipped to [0, count).
FA4J_HOST_DEVICE inline IndexRange local_range(IndexRange range, int64_t base, int64_t count) {
    const int64_t begin = clamp_index(range.begin - base, 0, count);
    return {begin, clamp_index(range.end - base, begin, count)};
}

// Which keys each query may attend. With i' = i + seqlen_k - seqlen_q, the query's position aligned to
// the end of the keys (bottom-right, as flash-attn >= 2.1), key j is visible to query i iff
//     0 <= j < seqlen_k  and  i' - left <= j <= i' + right.
// Both bounds grow with i, so the keys of a run of queries and the queries of a run of keys are ranges.
// An unbounded side is kNoBound: larger than any distance of two positions, and small enough that
// i' ± kNoBound cannot overflow for any sequence length a tensor can have (< 2^61).
struct ScoreWindow {
    static constexpr int64_t kNoBound = int64_t{1} << 62;
    int64_t seqlen_q, seqlen_k;
    int64_t left, right;  // >= 0, or kNoBound

    FA4J_HOST_DEVICE int64_t aligned(int64_t i) const { return i + seqlen_k - seqlen_q; }
    FA4J_HOST_DEVICE bool visible(int64_t i, int64_t j) const {
        return j >= 0 && j < seqlen_k && aligned(i) - left <= j && j <= aligned(i) + right;
    }
    // Keys query i attends (empty for a row that attends nothing).
    FA4J_HOST_DEVICE IndexRange keys_of(int64_t i) const {
        const int64_t begin = clamp_index(aligned(i) - left, 0, seqlen_k);
        return {begin, clamp_index(aligned(i) + right + 1, begin, seqlen_k)};
    }
    // Queries that attend key j.
    FA4J_HOST_DEVICE IndexRange queries_of(int64_t j) const {
        const int64_t begin = clamp_index(j - aligned(0) - right, 0, seqlen_q);
        return {begin, clamp_index(j - aligned(0) + left + 1, begin, seqlen_q)};
    }
    // The keys some query of rows [i0, i0 + rows) attends (rows > 0): from the first row's first key to
    // the last row's last, tight at both ends (rows that attend nothing come first, and the first row
    // that attends a key starts at key 0 then; empty when no row attends a key).
    FA4J_HOST_DEVICE IndexRange keys_of_rows(int64_t i0, int64_t rows) const {
        const int64_t begin = keys_of(i0).begin;
        return {begin, clamp_index(keys_of(i0 + rows - 1).end, begin, seqlen_k)};
    }
    // The queries that attend some key of [j0, j0 + keys) (keys > 0), tight likewise.
    FA4J_HOST_DEVICE IndexRange queries_of_keys(int64_t j0, int64_t keys) const {
        const int64_t begin = queries_of(j0).begin;
        return {begin, clamp_index(queries_of(j0 + keys - 1).end, begin, seqlen_q)};
    }
    // Whether every query of [i0, i0 + rows) attends every key of [j0, j0 + keys): such a tile needs no mask.
    FA4J_HOST_DEVICE bool tile_unmasked(int64_t i0, int64_t rows, int64_t j0, int64_t keys) const {
        return keys_of(i0 + rows - 1).begin <= j0 && j0 + keys <= keys_of(i0).end;
    }
};

// The window of a call with these sequence lengths (per sequence for variable-length batches). `causal`
// is the same as window_right = 0 whatever window_right says (validation also folds it in; reading it
// here keeps the older entry points, which set only `causal`, on the same code). A negative bound is
// unbounded.
inline ScoreWindow score_window(const AttentionConfig& config, int64_t seqlen_q, int64_t seqlen_k) {
    const ScoreFeatures& f = config.features;
    const int64_t left = f.window_left < 0 ? ScoreWindow::kNoBound : f.window_left;
    int64_t right = f.window_right < 0 ? ScoreWindow::kNoBound : f.window_right;
    if (config.causal) right = 0;
    return {seqlen_q, seqlen_k, left, right};
}

inline ScoreWindow score_window(const AttentionConfig& config) {
    return score_window(config, config.shape.seqlen_q, config.shape.seqlen_k);
}

// Whether the scores are transformed (softcap or ALiBi) rather than only scaled and masked.
inline bool transforms_scores(const ScoreFeatures& f) { return f.softcap > 0.0f || f.alibi_slopes != nullptr; }

// The ALiBi slope of batch b, query head h; 0 (no bias) without ALiBi.
FA4J_HOST_DEVICE inline float alibi_slope(const ScoreFeatures& f, int64_t b, int64_t h) {
    return f.alibi_slopes != nullptr ? f.alibi_slopes[b * f.alibi_batch_stride + h * f.alibi_head_stride] : 0.0f;
}

// |i' - j| as a float from the integer i' - j, correctly rounded (exact below 2^24) in whatever integer
// type the backend computes it (the CPU's vector loops use int32).
template <class Int>
FA4J_HOST_DEVICE inline float alibi_distance(Int aligned_query_minus_key) {
    return static_cast<float>(aligned_query_minus_key < 0 ? -aligned_query_minus_key : aligned_query_minus_key);
}

// softcap · tanh(s / softcap) for softcap > 0, and in `derivative` its derivative with respect to s,
// 1 - tanh²(s / softcap), which the backward multiplies dS by. `tanh(x, derivative)` is the backend's
// (a vectorisable one on the CPU, tanhf on a GPU) and returns tanh(x) and 1 - tanh²(x): the forward and
// the backward of one backend must use the same, so that P is recomputed bit for bit. The derivative
// should not be computed from a rounded tanh where it nears ±1: 1 - t² then loses all its digits
// (tanh_derivative_from_value below is for |t| well away from 1).
template <class Tanh>
FA4J_HOST_DEVICE inline float soft_cap(float s, float softcap, Tanh tanh, float& derivative) {
    return softcap * tanh(s / softcap, derivative);
}

// 1 - t² for t = tanh(x), as (1 - t)(1 + t): exact products, no cancellation beyond t's own rounding.
FA4J_HOST_DEVICE inline float tanh_derivative_from_value(float t) { return (1.0f - t) * (1.0f + t); }

// The ALiBi-biased score s - slope · distance, saturated at ±FLT_MAX: a bias beyond float (a huge slope
// times a long distance) then still orders the keys' scores, where an infinity would turn the softmax's
// differences into NaN. NaN stays NaN.
FA4J_HOST_DEVICE inline float alibi_biased(float s, float slope, float distance) {
    constexpr float kMax = std::numeric_limits<float>::max();
    const float biased = s - slope * distance;
    const float low = biased < -kMax ? -kMax : biased;
    return low > kMax ? kMax : low;
}

}  // namespace fa4j
