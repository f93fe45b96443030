// Which tiles a CTA visits, written once for every kernel from the window rule of core/score_mask.hpp
// (causal = window_right 0): the key tiles a query tile attends (forward, dQ), the query tiles a key tile
// is attended by (dK/dV), and which of those tiles need the per-element mask. Tiles outside the range are
// never loaded; tiles inside the "unmasked" sub-range are seen whole by every row and inside the sequence.
#pragma once

#include <cuda_runtime.h>

#include "core/score_mask.hpp"

namespace fa4j::cuda::kernels {

// Tiles [begin, end) of some block size, of which [unmasked_begin, unmasked_end) need no mask.
struct BlockRange {
    int begin = 0, end = 0;
    int unmasked_begin = 0, unmasked_end = 0;

    __host__ __device__ int count() const { return end - begin; }
    __host__ __device__ bool masked(int block) const { return block < unmasked_begin || block >= unmasked_end; }
};

namespace detail {
__host__ __device__ inline int floor_div(int64_t a, int b) { return static_cast<int>(a / b); }  // a >= 0
__host__ __device__ inline int ceil_div(int64_t a, int b) { return static_cast<int>((a + b - 1) / b); }

// Tiles of size `block` covering `range`, and the sub-range of tiles wholly inside `full` (the indices
// every row sees).
__host__ __device__ inline BlockRange tiles_of(IndexRange range, IndexRange full, int block) {
    BlockRange r;
    if (range.empty()) return r;
    r.begin = floor_div(range.begin, block);
    r.end = ceil_div(range.end, block);
    if (!full.empty()) {
        r.unmasked_begin = ceil_div(full.begin, block);
        r.unmasked_end = floor_div(full.end, block);
    }
    if (r.unmasked_end < r.unmasked_begin) r.unmasked_begin = r.unmasked_end = r.begin;
    return r;
}
}  // namespace detail

// The key tiles (of block_n keys) that query rows [m0, m0 + rows) attend, rows >= 1.
__host__ __device__ inline BlockRange key_blocks(const ScoreWindow& w, int64_t m0, int rows, int block_n) {
    const IndexRange keys = w.keys_of_rows(m0, rows);
    // Keys every row sees: from the last row's first key to the first row's last.
    const IndexRange first = w.keys_of(m0), last = w.keys_of(m0 + rows - 1);
    const IndexRange full = last.begin < first.end ? IndexRange{last.begin, first.end} : IndexRange{0, 0};
    return detail::tiles_of(keys, full, block_n);
}

// The query tiles (of block_m rows) that attend key rows [n0, n0 + keys), keys >= 1.
__host__ __device__ inline BlockRange query_blocks(const ScoreWindow& w, int64_t n0, int keys, int block_m) {
    const IndexRange queries = w.queries_of_keys(n0, keys);
    const IndexRange first = w.queries_of(n0), last = w.queries_of(n0 + keys - 1);
    const IndexRange full = last.begin < first.end ? IndexRange{last.begin, first.end} : IndexRange{0, 0};
    return detail::tiles_of(queries, full, block_m);
}

}  // namespace fa4j::cuda::kernels
