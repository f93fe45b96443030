// FlashAttention-2 forward on the CPU. One task is one tile of kBlockQ query rows of one (batch, head);
// it walks the key tiles its rows may attend, keeping per query a running maximum and sum of the
// exponentiated scores (online softmax) and an output accumulator rescaled whenever the maximum grows.
// Extra memory is a few tiles per thread, whatever the sequence lengths.
//
// Scores are computed transposed, Sᵀ = K Qᵀ (keys are rows): then Qᵀ is made once per task, key and
// value tiles are used as stored, and the softmax statistics of all queries update together along
// vector lanes.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "backends/cpu/cpu_attention.hpp"
#include "backends/cpu/fast_exp2.hpp"
#include "backends/cpu/kernel_select.hpp"
#include "backends/cpu/thread_pool.hpp"
#include "backends/cpu/tile_io.hpp"
#include "backends/cpu/tile_matmul.hpp"
#include "backends/cpu/tiling.hpp"

namespace fa4j::cpu {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

struct ForwardScratch {
    explicit ForwardScratch(int d)
        : qt(d * kBlockQ), k(kBlockK * d), v(kBlockK * d), st(kBlockK * kBlockQ), acc(kBlockQ * d),
          running_max(kBlockQ), running_sum(kBlockQ), tile_max(kBlockQ), tile_sum(kBlockQ), alpha(kBlockQ) {}
    FloatBuffer qt;           // [d x rows_pad]
    FloatBuffer k, v;         // [keys_pad x d]
    FloatBuffer st;           // [keys_pad x rows_pad]: scores, then probabilities
    FloatBuffer acc;          // [rows_pad x d]: unnormalised output
    FloatBuffer running_max;  // per query: the largest score seen (a raw dot product, see below)
    FloatBuffer running_sum;  // per query: sum of 2^((score - running_max) * scale_log2)
    FloatBuffer tile_max, tile_sum, alpha;  // per query, for the current key tile
};

// Turns the scores Sᵀ [keys_pad x rows_pad] of one key tile into unnormalised probabilities
// 2^((s - max) * scale_log2), folds them into each query's running maximum and sum, and leaves in
// `alpha` the factor each query's output accumulator must be multiplied by before this tile is added.
// `first_visible(j)` is the first query that may attend key j of the tile.
//
// Scores stay raw dot products (with the sign of the scale folded into q, so that the largest one
// carries the most weight) and the maximum is subtracted before scaling: the maximum's probability is
// exactly 1 and every other one lies in [0, 1] whatever the scale. Scaling first would leave,
// for a scale that takes scores out of float32, Inf - Inf = NaN; for a merely large one (1e10), max
// subtraction of rounded products.
template <class Isa, class FirstVisible>
FA4J_INLINE void online_softmax_tile(ForwardScratch& w, int keys_pad, int rows_pad, float scale_log2,
                                     FirstVisible first_visible) {
    float* const st = w.st.get();
    float* const running_max = w.running_max.get();
    float* const running_sum = w.running_sum.get();
    float* const tile_max = w.tile_max.get();
    float* const tile_sum = w.tile_sum.get();
    float* const alpha = w.alpha.get();

    fill_floats(tile_max, rows_pad, -kInf);
    for (int j = 0; j < keys_pad; ++j) {
        float* row = st + j * rows_pad;
        fill_floats(row, first_visible(j), -kInf);
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

// Logsumexp of a row from its largest raw score (sign of the scale folded in) and its sum of
// probabilities relative to it: max·|scale| rounded to float first, exactly as the backward rounds
// scale·s when it recomputes P = exp(scale·s - lse), so that the row maximum gets P = 1/sum there.
// Saturates at ±FLT_MAX (reachable only with float32 or bfloat16 inputs beyond the float16 range).
FA4J_INLINE float row_logsumexp(float max_score, float abs_scale, float sum) {
    if (!(sum > 0.0f)) return -kInf;  // attends nothing
    const float lse = max_score * abs_scale + std::log(sum);
    return std::clamp(lse, -std::numeric_limits<float>::max(), std::numeric_limits<float>::max());
}

FA4J_INLINE void scale_row(float* row, int n, float factor) {
#pragma omp simd
    for (int c = 0; c < n; ++c) row[c] *= factor;
}

struct ForwardKernel {
    template <class Isa, class Elem>
    static FA4J_INLINE void run(const ForwardProblem& p, ForwardScratch& w, int64_t task) {
        const AttentionConfig& config = p.config;
        const AttentionShape& shape = config.shape;
        const int d = static_cast<int>(shape.head_dim);
        const auto [b, h, i0, rows] = query_tile_of_task(shape, task);
        const int64_t h_kv = h / shape.group_size();
        const int rows_pad = round_up(rows, kRowPad);
        // exp2 wants scale·log2(e); the scale's sign is folded into q below. A zero scale (uniform
        // attention) becomes the smallest normal float, which gives the same probabilities but keeps
        // masked scores at -inf rather than -inf·0 = NaN.
        const float abs_scale = std::fabs(config.softmax_scale);
        const float scale_log2 = abs_scale > 0.0f ? softmax_scale_log2(abs_scale) : std::numeric_limits<float>::min();
        const int64_t offset = shape.causal_offset();

        float* const qt = w.qt.get();
        float* const k = w.k.get();
        float* const v = w.v.get();
        float* const st = w.st.get();
        float* const acc = w.acc.get();
        float* const alpha = w.alpha.get();
        float* const running_max = w.running_max.get();
        float* const running_sum = w.running_sum.get();

        load_tile_transposed<Elem>(p.q, b, h, i0, rows, rows_pad, d, qt);
        if (config.softmax_scale < 0.0f) scale_row(qt, d * rows_pad, -1.0f);  // the largest score is then the max
        fill_floats(running_max, rows_pad, -kInf);
        fill_floats(running_sum, rows_pad, 0.0f);
        fill_floats(acc, rows_pad * d, 0.0f);

        const int64_t key_end = key_end_for_rows(config, i0, rows);
        for (int64_t j0 = 0; j0 < key_end; j0 += kBlockK) {
            const int keys = static_cast<int>(std::min<int64_t>(kBlockK, key_end - j0));
            const int keys_pad = round_up(keys, kRowPad);
            load_tile<Elem>(p.k, b, h_kv, j0, keys, keys_pad, d, k);
            load_tile<Elem>(p.v, b, h_kv, j0, keys, keys_pad, d, v);
            matmul<Isa, false>(keys_pad, rows_pad, d, k, d, qt, rows_pad, st, rows_pad);  // Sᵀ = K Qᵀ
            online_softmax_tile<Isa>(w, keys_pad, rows_pad, scale_log2, [&](int j) {
                if (j >= keys) return rows_pad;  // padding key
                if (!config.causal) return 0;
                return static_cast<int>(std::clamp<int64_t>(j0 + j - offset - i0, 0, rows_pad));
            });
            for (int r = 0; r < rows_pad; ++r)
                if (alpha[r] != 1.0f) scale_row(acc + r * d, d, alpha[r]);
            matmul<Isa, true, true>(rows_pad, d, keys_pad, st, rows_pad, v, d, acc, d);  // O += P V
        }

        float* const lse = p.lse.data + b * p.lse.batch_stride + h * p.lse.head_stride;
        for (int r = 0; r < rows; ++r) {
            const float sum = running_sum[r];
            // A query that attends nothing keeps sum 0: its output is 0 and its logsumexp -inf.
            scale_row(acc + r * d, d, sum > 0.0f ? 1.0f / sum : 0.0f);
            lse[(i0 + r) * p.lse.seq_stride] = row_logsumexp(running_max[r], abs_scale, sum);
        }
        store_tile<Elem>(acc, 1.0f, p.out, b, h, i0, rows, d);
    }
};

}  // namespace

void attention_forward(const ForwardProblem& problem) {
    const AttentionShape& shape = problem.config.shape;
    const int64_t tasks = shape.batch * shape.heads_q * ceil_div(shape.seqlen_q, kBlockQ);
    const auto kernel = select_kernel<ForwardKernel, const ForwardProblem&, ForwardScratch&, int64_t>(
        problem.config.dtype, select_isa());
    const int threads = resolve_num_threads(problem.config.num_threads);
    const int d = static_cast<int>(shape.head_dim);
    std::vector<std::unique_ptr<ForwardScratch>> scratch(static_cast<size_t>(threads));
    parallel_for(threads, tasks, [&](int64_t task, int worker) {
        std::unique_ptr<ForwardScratch>& mine = scratch[static_cast<size_t>(worker)];
        if (!mine) mine = std::make_unique<ForwardScratch>(d);  // first touch by the thread that uses it
        kernel(problem, *mine, task);
    });
}

}  // namespace fa4j::cpu
