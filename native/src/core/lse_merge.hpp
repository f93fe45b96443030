// The log-sum-exp merge of partial attention results (FA4J_ATTENTION_MERGE in flashattn4j.h), one
// definition for split-KV, shared prefixes and the merge call: attention of a query over disjoint key sets
// K_1 .. K_n, each given as its normalised output out_s and logsumexp lse_s, is over their union
//     m = max_s lse_s,  w_s = exp(lse_s - m),  W = sum_s w_s,
//     out = sum_s (w_s / W) · out_s,  lse = m + log W.
// Computed in float32 with s ascending (the order is part of the definition: it fixes the rounding).
// The largest weight is exactly 1, so W lies in [1, n] and nothing overflows. A state with lse -inf
// attended no key: weight 0, and its out is not read; if every state is so, out = 0 and lse = -inf. A NaN
// or +inf lse has no meaning as a logsumexp and gives NaN.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

namespace fa4j {

// Fills scales[s] = w_s / W (0 for states that contribute nothing) and returns the merged lse.
inline float lse_merge_weights(const float* lse, int64_t n, float* scales) {
    constexpr float kInf = std::numeric_limits<float>::infinity();
    constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
    float m = -kInf;
    bool invalid = false;
    for (int64_t s = 0; s < n; ++s) {
        if (std::isnan(lse[s]) || lse[s] == kInf) invalid = true;
        else m = lse[s] > m ? lse[s] : m;
    }
    if (invalid) {
        for (int64_t s = 0; s < n; ++s) scales[s] = kNaN;
        return kNaN;
    }
    if (m == -kInf) {
        for (int64_t s = 0; s < n; ++s) scales[s] = 0.0f;
        return -kInf;
    }
    float total = 0.0f;
    for (int64_t s = 0; s < n; ++s) {
        scales[s] = std::exp(lse[s] - m);  // exp(-inf) = 0
        total += scales[s];
    }
    for (int64_t s = 0; s < n; ++s) scales[s] /= total;
    const float merged = m + std::log(total);
    constexpr float kMax = std::numeric_limits<float>::max();
    return merged > kMax ? kMax : merged;
}

// out[c] = sum_s scales[s] · value(s, c) for c < d, s ascending, skipping states of scale 0 (whose values
// are never read). NaN scales propagate.
template <class Value>
inline void lse_merge_row(const float* scales, int64_t n, int64_t d, float* out, Value value) {
    for (int64_t c = 0; c < d; ++c) out[c] = 0.0f;
    for (int64_t s = 0; s < n; ++s) {
        const float w = scales[s];
        if (w == 0.0f) continue;
        for (int64_t c = 0; c < d; ++c) out[c] += w * value(s, c);
    }
}

}  // namespace fa4j
