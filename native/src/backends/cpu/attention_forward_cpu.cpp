// FlashAttention-2 forward on the CPU. One task is one tile of kBlockQ query rows of one (batch, head);
// it walks the key tiles its rows may attend, keeping per row a running maximum and sum of the
// exponentiated scores (online softmax) and an output accumulator rescaled whenever the maximum grows.
// Extra memory is a few tiles per thread, whatever the sequence lengths.
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
        : q(kBlockQ * d), kt(d * kBlockK), v(kBlockK * d), scores(kBlockQ * kBlockK), acc(kBlockQ * d),
          row_max(kBlockQ), row_sum(kBlockQ) {}
    FloatBuffer q;        // [rows_pad x d]
    FloatBuffer kt;       // [d x keys_pad], keys transposed so scores come out row by row
    FloatBuffer v;        // [keys_pad x d]
    FloatBuffer scores;   // [rows_pad x keys_pad], scores then probabilities
    FloatBuffer acc;      // [rows_pad x d], unnormalised output
    FloatBuffer row_max;  // running maximum of each row's scores, log2 domain
    FloatBuffer row_sum;  // running sum of 2^(score - row_max)
};

// Turns one row of raw scores q·k into unnormalised probabilities 2^(scale * q·k - new max), masking
// keys from `visible` on, and folds the row into its running maximum and sum. Returns the factor the
// row's output accumulator must be multiplied by before this tile's probabilities are added.
template <class Isa>
FA4J_INLINE float online_softmax_row(float* row, int keys_pad, int visible, float scale_log2, float& running_max,
                                     float& running_sum) {
    float tile_max = -kInf;
#pragma omp simd reduction(max : tile_max)
    for (int j = 0; j < keys_pad; ++j) {
        const float x = j < visible ? row[j] * scale_log2 : -kInf;
        row[j] = x;
        tile_max = x > tile_max ? x : tile_max;
    }
    const float new_max = running_max > tile_max ? running_max : tile_max;
    if (new_max == -kInf) {
        // No attendable key so far: 2^(x - max) would be NaN. The row stays empty and so does its output.
        fill_floats(row, keys_pad, 0.0f);
        return 1.0f;
    }
    float tile_sum = 0.0f;
#pragma omp simd reduction(+ : tile_sum)
    for (int j = 0; j < keys_pad; ++j) {
        const float p = fast_exp2<Isa>(row[j] - new_max);
        row[j] = p;
        tile_sum += p;
    }
    const float alpha = std::exp2(running_max - new_max);  // 0 when running_max is still -inf
    running_sum = running_sum * alpha + tile_sum;
    running_max = new_max;
    return alpha;
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
        // Tasks run heaviest first: under the causal mask late query tiles see the most keys.
        const int64_t heads = shape.batch * shape.heads_q;
        const int64_t q_tile = ceil_div(shape.seqlen_q, kBlockQ) - 1 - task / heads;
        const int64_t b = task % heads / shape.heads_q;
        const int64_t h = task % heads % shape.heads_q;
        const int64_t h_kv = h / shape.group_size();
        const int64_t i0 = q_tile * kBlockQ;
        const int rows = static_cast<int>(std::min<int64_t>(kBlockQ, shape.seqlen_q - i0));
        const int rows_pad = round_up(rows, kRowPad);
        const float scale_log2 = config.softmax_scale * kLog2e;

        float* const q = w.q.get();
        float* const kt = w.kt.get();
        float* const v = w.v.get();
        float* const scores = w.scores.get();
        float* const acc = w.acc.get();
        float* const row_max = w.row_max.get();
        float* const row_sum = w.row_sum.get();

        load_tile<Elem>(p.q, b, h, i0, rows, rows_pad, d, q);
        fill_floats(row_max, rows_pad, -kInf);
        fill_floats(row_sum, rows_pad, 0.0f);
        fill_floats(acc, rows_pad * d, 0.0f);

        const int64_t key_end = key_end_for_rows(config, i0, rows);
        for (int64_t j0 = 0; j0 < key_end; j0 += kBlockK) {
            const int keys = static_cast<int>(std::min<int64_t>(kBlockK, key_end - j0));
            const int keys_pad = round_up(keys, kColPad);
            load_tile_transposed<Elem>(p.k, b, h_kv, j0, keys, keys_pad, d, kt);
            load_tile<Elem>(p.v, b, h_kv, j0, keys, keys_pad, d, v);
            matmul<Isa, false>(rows_pad, keys_pad, d, q, d, kt, keys_pad, scores, keys_pad);
            for (int r = 0; r < rows_pad; ++r) {
                const int visible = visible_keys(config, i0 + r, j0, keys);
                const float alpha =
                    online_softmax_row<Isa>(scores + r * keys_pad, keys_pad, visible, scale_log2, row_max[r], row_sum[r]);
                if (alpha != 1.0f) scale_row(acc + r * d, d, alpha);
            }
            matmul<Isa, true>(rows_pad, d, keys_pad, scores, keys_pad, v, d, acc, d);
        }

        float* const lse = p.lse.data + b * p.lse.batch_stride + h * p.lse.head_stride;
        for (int r = 0; r < rows; ++r) {
            const float sum = row_sum[r];
            // A row that attends nothing keeps sum 0: its output is 0 and its logsumexp -inf.
            scale_row(acc + r * d, d, sum > 0.0f ? 1.0f / sum : 0.0f);
            lse[(i0 + r) * p.lse.seq_stride] = sum > 0.0f ? row_max[r] * kLn2 + std::log(sum) : -kInf;
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
