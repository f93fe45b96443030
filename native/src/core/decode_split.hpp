// Split-KV (Flash-Decoding) planning, shared by every backend: how many splits of its keys each sequence of a
// decode call is cut into, and which keys each split gets.
//
// A decode call has little work per key and few independent pieces of it: batch × kv heads (× row tiles
// where many queries share a KV head), each of which walks all of its sequence's keys. When those pieces
// cannot keep the device busy, the keys of each are cut into splits computed independently, and the
// partial results are merged by log-sum-exp (core/lse_merge.hpp). More splits fill the device but cost a
// merge and, below a few hundred keys per split, more overhead than they save.
//
// The heuristic models the device as `parallelism` workers (CPU: its threads; CUDA: SMs × resident blocks
// per SM) that take pieces in waves: with `units · s` equal pieces, the last wave is partly idle, and the
// efficiency of s splits is (units·s) / (waves · parallelism) with waves = ceil(units·s / parallelism). It
// picks the smallest s whose efficiency is within 15% of the best one reachable, among the counts that leave
// each split at least `min_keys_per_split` keys. Plenty of pieces (four waves or more without splitting)
// need no split at all.
#pragma once

#include <algorithm>
#include <cstdint>

#include "core/score_mask.hpp"

namespace fa4j {

struct SplitHeuristicInput {
    int64_t units;               // independent pieces of work per split: batch × kv heads × row tiles
    int64_t keys;                // keys of the longest piece
    int64_t parallelism;         // pieces the device runs at once
    int64_t min_keys_per_split;  // no split smaller than this (unless the keys are fewer)
    int max_splits;              // upper bound (FA4J_DECODE_MAX_SPLITS or less)
};

inline int decode_num_splits(const SplitHeuristicInput& in) {
    if (in.units <= 0 || in.keys <= 0 || in.parallelism <= 1) return 1;
    if (in.units >= 4 * in.parallelism) return 1;
    const int64_t by_keys = std::max<int64_t>(1, in.keys / std::max<int64_t>(1, in.min_keys_per_split));
    const int limit = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({by_keys, int64_t{in.max_splits},
                                                                               4 * in.parallelism})));
    auto efficiency = [&](int s) {
        const int64_t pieces = in.units * s;
        const int64_t waves = (pieces + in.parallelism - 1) / in.parallelism;
        return static_cast<double>(pieces) / static_cast<double>(waves * in.parallelism);
    };
    double best = 0;
    for (int s = 1; s <= limit; ++s) best = std::max(best, efficiency(s));
    for (int s = 1; s <= limit; ++s)
        if (efficiency(s) >= 0.85 * best) return s;
    return 1;
}

// The keys of split s of `splits` of the range `keys`: consecutive chunks of equal size rounded up to a
// multiple of `granularity` (the kernels' key tile, or a page), the last one shorter; splits past the end
// are empty (their partial result has lse -inf and weight 0).
FA4J_HOST_DEVICE inline IndexRange split_keys(IndexRange keys, int splits, int s, int64_t granularity) {
    const int64_t length = keys.end - keys.begin;
    int64_t chunk = (length + splits - 1) / splits;
    chunk = (chunk + granularity - 1) / granularity * granularity;
    const int64_t start = keys.begin + chunk * s;
    const int64_t begin = start < keys.end ? start : keys.end;
    return {begin, begin + chunk < keys.end ? begin + chunk : keys.end};
}

}  // namespace fa4j
