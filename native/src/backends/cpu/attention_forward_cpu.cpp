// FlashAttention-2 forward on the CPU. One task is one tile of kBlockQ query rows of one (batch, head);
// it walks the key tiles its rows may attend (core/score_mask.hpp), keeping per query a running maximum
// and sum of the exponentiated scores (online softmax) and an output accumulator rescaled whenever the
// maximum grows. Extra memory is a few tiles per thread, whatever the sequence lengths.
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
#include "backends/cpu/kernel_select.hpp"
#include "backends/cpu/online_softmax.hpp"
#include "backends/cpu/thread_pool.hpp"
#include "backends/cpu/tile_io.hpp"
#include "backends/cpu/tile_matmul.hpp"
#include "backends/cpu/tiling.hpp"

namespace fa4j::cpu {
namespace {

struct ForwardScratch : SoftmaxScratch {
    explicit ForwardScratch(int d) : SoftmaxScratch(d), v(kBlockK * d), acc(kBlockQ * d) {}
    FloatBuffer v;    // [keys_pad x d]
    FloatBuffer acc;  // [rows_pad x d]: unnormalised output
};

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

        float* const v = w.v.get();
        float* const st = w.st.get();
        float* const acc = w.acc.get();
        float* const alpha = w.alpha.get();
        float* const running_max = w.running_max.get();
        float* const running_sum = w.running_sum.get();

        start_query_tile<Elem>(config, p.q, b, h, i0, rows, w);
        fill_floats(acc, rows_pad * d, 0.0f);

        const HeadScores hs = head_scores(config, b, h);
        const IndexRange key_range = hs.window.keys_of_rows(i0, rows);
        for (int64_t j0 = key_range.begin; j0 < key_range.end; j0 += kBlockK) {
            const int keys = static_cast<int>(std::min<int64_t>(kBlockK, key_range.end - j0));
            const int keys_pad = round_up(keys, kRowPad);
            softmax_key_tile<Isa, Elem>(config, hs, p.k, b, h_kv, j0, keys, i0, rows, w);
            load_tile<Elem>(p.v, b, h_kv, j0, keys, keys_pad, d, v);
            for (int r = 0; r < rows_pad; ++r)
                if (alpha[r] != 1.0f) scale_row(acc + r * d, d, alpha[r]);
            matmul<Isa, true, true>(rows_pad, d, keys_pad, st, rows_pad, v, d, acc, d);  // O += P V
        }

        const float unit = score_unit(config);
        float* const lse = p.lse.data + b * p.lse.batch_stride + h * p.lse.head_stride;
        for (int r = 0; r < rows; ++r) {
            const float sum = running_sum[r];
            // A query that attends nothing keeps sum 0: its output is 0 and its logsumexp -inf.
            scale_row(acc + r * d, d, sum > 0.0f ? 1.0f / sum : 0.0f);
            lse[(i0 + r) * p.lse.seq_stride] = row_logsumexp(running_max[r], unit, sum);
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
