// How the CPU kernels cut attention into tiles: tile sizes, padding, the order of tasks, and the aligned
// scratch buffers tiles live in. Which tile pairs and elements the mask leaves is core/score_mask.hpp's.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <new>

#include "backends/cpu/simd.hpp"
#include "core/attention_problem.hpp"
#include "core/softmax_scale.hpp"

namespace fa4j::cpu {

// 64 x 64 score tiles: the working set of a task (a few 64 x head_dim float tiles plus the scores, about
// 80 KB at head_dim 64 and 300 KB at 256) stays within L2 of recent cores, and 64 keys per step
// amortise the per-query softmax bookkeeping.
constexpr int kBlockQ = 64;
constexpr int kBlockK = 64;

// Tiles in float are padded with zeros to these multiples, so the matrix products (tile_matmul.hpp)
// never see a ragged edge: a tile's rows to a multiple of the largest register-block height, its
// columns to a multiple of the narrowest register-block width. head_dim is a multiple of 8 already.
constexpr int kRowPad = 8;
constexpr int kColPad = 8;

constexpr float kInf = std::numeric_limits<float>::infinity();

inline int round_up(int value, int multiple) { return (value + multiple - 1) / multiple * multiple; }

FA4J_INLINE void fill_floats(float* data, int count, float value) {
#pragma omp simd
    for (int i = 0; i < count; ++i) data[i] = value;
}

inline int64_t ceil_div(int64_t value, int64_t divisor) { return (value + divisor - 1) / divisor; }

// The query tile a task works on. Heads are outermost, so that threads running at the same time
// share one head's keys and values in cache; within a head tiles run last to first, which under the
// causal mask is longest first and leaves the short ones to even out the threads at the end.
struct QueryTile {
    int64_t b, h, i0;
    int rows;
};

inline QueryTile query_tile_of_task(const AttentionShape& s, int64_t task) {
    const int64_t tiles = ceil_div(s.seqlen_q, kBlockQ);
    const int64_t bh = task / tiles;
    const int64_t i0 = (tiles - 1 - task % tiles) * kBlockQ;
    return {bh / s.heads_q, bh % s.heads_q, i0, static_cast<int>(std::min<int64_t>(kBlockQ, s.seqlen_q - i0))};
}

// The key tile a task works on: kv heads outermost for the same reason; within a head first to last,
// since under the causal mask early keys are attended by the most queries.
struct KeyTile {
    int64_t b, h_kv, j0;
    int keys;
};

inline KeyTile key_tile_of_task(const AttentionShape& s, int64_t task) {
    const int64_t tiles = ceil_div(s.seqlen_k, kBlockK);
    const int64_t bh = task / tiles;
    const int64_t j0 = task % tiles * kBlockK;
    return {bh / s.heads_kv, bh % s.heads_kv, j0, static_cast<int>(std::min<int64_t>(kBlockK, s.seqlen_k - j0))};
}

// A float array aligned to a cache line, so tile rows (multiples of 8 floats) start on vector
// boundaries and no vector load splits a line needlessly.
class FloatBuffer {
public:
    explicit FloatBuffer(size_t count)
        : data_(static_cast<float*>(::operator new[](std::max<size_t>(count, 1) * sizeof(float), kAlignment))) {}
    float* get() const { return data_.get(); }

private:
    static constexpr std::align_val_t kAlignment{64};
    struct Free {
        void operator()(float* p) const { ::operator delete[](p, kAlignment); }
    };
    std::unique_ptr<float, Free> data_;
};

}  // namespace fa4j::cpu
