// FlashAttention-2 backward on the CPU, in three passes that need no atomics and give the same bits
// whatever the thread count, because every output element is owned by exactly one task and summed in
// a fixed order:
//   1. per query row: D = rowsum(dout ∘ out), and how P will be recomputed (from lse, or for rows
//      whose lse is too large for that, from the forward's softmax statistics, rerun here);
//   2. per (batch, kv head, key tile): dK and dV, summed over every query head of the group and every
//      query tile that attends the key tile, recomputing P = exp(S - lse) on the way;
//   3. per (batch, query head, query tile): dQ, summed over the key tiles it attends, recomputing P again.
// With softcap or ALiBi, S is the transformed score (score_tiles.hpp), and dS is multiplied by the
// softcap's derivative before it makes dQ and dK.
// Recomputing P twice costs two extra tile products per tile pair; the alternatives are an N x N
// buffer or racing updates of dQ. Each pass orients its scores so that the tile it keeps for the whole
// task (K and V in pass 2, Q and dO in pass 3) is the one transposed, once, and the tiles it streams
// are used as stored.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "backends/cpu/cpu_attention.hpp"
#include "backends/cpu/fast_exp2.hpp"
#include "backends/cpu/kernel_select.hpp"
#include "backends/cpu/online_softmax.hpp"
#include "backends/cpu/score_tiles.hpp"
#include "backends/cpu/thread_pool.hpp"
#include "backends/cpu/tile_io.hpp"
#include "backends/cpu/tile_matmul.hpp"
#include "backends/cpu/tiling.hpp"
#include "core/score_mask.hpp"

namespace fa4j::cpu {
namespace {

// Pass 1's results, one float per query row, indexed [(b * heads_q + h) * seqlen_q + i]. A row's
// probabilities are recomputed as P = 2^min((s·mul - ref)·factor - log2_norm, 0) from scores s, raw
// dot products or, with softcap or ALiBi, transformed scores (score_tiles.hpp), which carry the scale:
//   from lse      mul = scale (1 for transformed scores), ref = lse, factor = log2(e), log2_norm = 0.
//                 scale·s is rounded to float before lse is subtracted, as the forward rounded
//                 max·|scale| into lse (online_softmax.hpp): the row maximum then gets exactly
//                 exp(-ln sum). ref = +inf where lse is -inf (the row attends nothing), so that its P
//                 is 0 rather than NaN.
//   recomputed    mul = ±1 (the scale's sign; 1 for transformed scores), ref = the forward's running
//                 maximum, factor = softmax_factor (online_softmax.hpp), log2_norm = log2(sum): the
//                 forward's own probabilities, for rows whose |lse| exceeds kLseRecomputeLimit
//                 (core/softmax_scale.hpp), where lse's rounding would show.
// The cap at 1 keeps P finite also for an lse that does not belong to these scores.
struct RowStats {
    float* delta;  // rowsum(dout ∘ out)
    float* mul;
    float* ref;
    float* factor;
    float* log2_norm;
};

// A row's recipe for P (see RowStats), copied into a task's lane arrays.
struct RowRecipes {
    explicit RowRecipes(size_t n) : mul(n), ref(n), factor(n), log2_norm(n), delta(n) {}
    FloatBuffer mul, ref, factor, log2_norm, delta;
};

FA4J_INLINE int64_t stats_index(const AttentionShape& shape, int64_t b, int64_t h, int64_t i) {
    return (b * shape.heads_q + h) * shape.seqlen_q + i;
}

// The recipes of rows [i0, i0 + rows) of one head, padded to rows_pad with rows that have P = 0.
FA4J_INLINE void load_row_stats(const AttentionShape& shape, const RowStats& stats, int64_t b, int64_t h, int64_t i0,
                                int rows, int rows_pad, RowRecipes& out) {
    const int64_t first = stats_index(shape, b, h, i0);
    for (int r = 0; r < rows; ++r) {
        out.mul.get()[r] = stats.mul[first + r];
        out.ref.get()[r] = stats.ref[first + r];
        out.factor.get()[r] = stats.factor[first + r];
        out.log2_norm.get()[r] = stats.log2_norm[first + r];
        out.delta.get()[r] = stats.delta[first + r];
    }
    for (int r = rows; r < rows_pad; ++r) {
        out.mul.get()[r] = 1.0f;
        out.ref.get()[r] = kInf;
        out.factor.get()[r] = kLog2e;
        out.log2_norm.get()[r] = 0.0f;
        out.delta.get()[r] = 0.0f;
    }
}

template <class Isa>
FA4J_INLINE float recomputed_probability(float s, float mul, float ref, float factor, float log2_norm) {
    return probability_exp2<Isa>((s * mul - ref) * factor - log2_norm);
}

// Zero outside the lanes [visible.begin, visible.end) of a row of n. Masking is a pass of its own:
// with a select in the loop that computes P, GCC computes the exponential only for selected lanes,
// which needs branches and so stays scalar.
FA4J_INLINE void zero_outside(float* row, int n, IndexRange visible) {
    fill_floats(row, static_cast<int>(visible.begin), 0.0f);
    fill_floats(row + visible.end, n - static_cast<int>(visible.end), 0.0f);
}

// row[j] = P of query row r for the keys j it attends (`visible`), else 0; `row` holds its scores s on entry.
template <class Isa>
FA4J_INLINE void probabilities_row(float* row, int n, IndexRange visible, const RowRecipes& recipes, int r) {
    const float mul = recipes.mul.get()[r], ref = recipes.ref.get()[r];
    const float factor = recipes.factor.get()[r], log2_norm = recipes.log2_norm.get()[r];
#pragma omp simd
    for (int j = 0; j < n; ++j) row[j] = recomputed_probability<Isa>(row[j], mul, ref, factor, log2_norm);
    zero_outside(row, n, visible);
}

// The transposed case: one key's scores against queries i, each with its own recipe; the queries
// `visible` attend the key.
template <class Isa>
FA4J_INLINE void probabilities_column(float* row, int n, IndexRange visible, const RowRecipes& recipes) {
    const float* mul = recipes.mul.get();
    const float* ref = recipes.ref.get();
    const float* factor = recipes.factor.get();
    const float* log2_norm = recipes.log2_norm.get();
#pragma omp simd
    for (int i = 0; i < n; ++i) row[i] = recomputed_probability<Isa>(row[i], mul[i], ref[i], factor[i], log2_norm[i]);
    zero_outside(row, n, visible);
}

// dS ∘= the softcap's derivative: `count` elements of a tile.
FA4J_INLINE void multiply_elements(float* ds, const float* cap_derivative, int count) {
#pragma omp simd
    for (int e = 0; e < count; ++e) ds[e] *= cap_derivative[e];
}

// ------------------------------------------------------------------------------------------------
// Pass 1: one task per (batch, head, query tile).

struct StatsScratch : SoftmaxScratch {
    explicit StatsScratch(int d) : SoftmaxScratch(d), dout(kBlockQ * d), out(kBlockQ * d) {}
    FloatBuffer dout, out;
};

struct StatsKernel {
    template <class Isa, class Elem>
    static FA4J_INLINE void run(const BackwardProblem& p, const RowStats& stats, StatsScratch& w, int64_t task) {
        const AttentionConfig& config = p.config;
        const AttentionShape& shape = config.shape;
        const int d = static_cast<int>(shape.head_dim);
        const auto [b, h, i0, rows] = query_tile_of_task(shape, task);
        float* const dout = w.dout.get();
        float* const out = w.out.get();
        load_tile<Elem>(p.dout, b, h, i0, rows, rows, d, dout);
        load_tile<Elem>(p.out, b, h, i0, rows, rows, d, out);
        const float* lse = p.lse.data + b * p.lse.batch_stride + h * p.lse.head_stride;
        const bool transformed = transforms_scores(config.features);
        bool rerun = false;
        for (int r = 0; r < rows; ++r) {
            // Summed in the order, and with the fused steps, of the tile products that give dP = dout·v
            // (tile_matmul.hpp): where a row's softmax is one-hot, out is that key's v exactly, and
            // dS = P·(dP - D) is then exactly 0, as in exact arithmetic. Any other order leaves the
            // rounding difference of two large sums, which dq = scale·dS·k can blow up beyond the
            // gradient itself (inputs of 1e4 gave errors of 1e10 where the gradient is 0).
            float dot = 0.0f;
            for (int c = 0; c < d; ++c) dot = madd<Isa>(dout[r * d + c], out[r * d + c], dot);
            const int64_t index = stats_index(shape, b, h, i0 + r);
            const float row_lse = lse[(i0 + r) * p.lse.seq_stride];
            stats.delta[index] = dot;
            stats.mul[index] = transformed ? 1.0f : config.softmax_scale;
            stats.ref[index] = row_lse == -kInf ? kInf : row_lse;
            stats.factor[index] = kLog2e;
            stats.log2_norm[index] = 0.0f;
            rerun = rerun || (std::fabs(row_lse) > kLseRecomputeLimit && row_lse != -kInf);
        }
        if (!rerun) return;
        // The forward's statistics of this tile, by the forward's own code on the same tiles. Every row of
        // the tile takes them: they are exact wherever lse is.
        start_query_tile<Elem>(config, p.q, b, h, i0, rows, w);
        const HeadScores hs = head_scores(config, b, h);
        const IndexRange key_range = hs.window.keys_of_rows(i0, rows);
        for (int64_t j0 = key_range.begin; j0 < key_range.end; j0 += kBlockK)
            softmax_key_tile<Isa, Elem>(config, hs, p.k, b, h / shape.group_size(), j0,
                                        static_cast<int>(std::min<int64_t>(kBlockK, key_range.end - j0)), i0, rows, w);
        const float sign = transformed || config.softmax_scale >= 0.0f ? 1.0f : -1.0f;
        for (int r = 0; r < rows; ++r) {
            const float sum = w.running_sum.get()[r];
            if (!(sum > 0.0f)) continue;  // attends nothing: P = 0 from lse = -inf already
            const int64_t index = stats_index(shape, b, h, i0 + r);
            stats.mul[index] = sign;
            stats.ref[index] = w.running_max.get()[r];
            stats.factor[index] = softmax_factor(config);
            stats.log2_norm[index] = std::log2(sum);
        }
    }
};

// ------------------------------------------------------------------------------------------------
// Pass 2: one task per (batch, kv head, key tile), streaming the query tiles of every head of its group.

struct KeyPassScratch {
    explicit KeyPassScratch(int d)
        : kt(d * kBlockK), vt(d * kBlockK), dk(kBlockK * d), dv(kBlockK * d), q(kBlockQ * d), dout(kBlockQ * d),
          p(kBlockQ * kBlockK), ds(kBlockQ * kBlockK), cap_derivative(kBlockQ * kBlockK), recipes(kBlockQ) {}
    FloatBuffer kt, vt;            // [d x keys_pad]
    FloatBuffer dk, dv;            // [keys_pad x d]
    FloatBuffer q, dout;           // [rows_pad x d]
    FloatBuffer p, ds;             // [rows_pad x keys_pad]: P, and dP turned into dS in place
    FloatBuffer cap_derivative;    // [rows_pad x keys_pad], with softcap
    RowRecipes recipes;            // [rows_pad]
};

struct KeyPassKernel {
    template <class Isa, class Elem>
    static FA4J_INLINE void run(const BackwardProblem& problem, const RowStats& stats, KeyPassScratch& w,
                                int64_t task) {
        const AttentionConfig& config = problem.config;
        const AttentionShape& shape = config.shape;
        const int d = static_cast<int>(shape.head_dim);
        const auto [b, h_kv, j0, keys] = key_tile_of_task(shape, task);
        const int keys_pad = round_up(keys, kRowPad);

        float* const kt = w.kt.get();
        float* const vt = w.vt.get();
        float* const dk = w.dk.get();
        float* const dv = w.dv.get();
        float* const q = w.q.get();
        float* const dout = w.dout.get();
        float* const p = w.p.get();
        float* const ds = w.ds.get();
        const float* const delta = w.recipes.delta.get();

        load_tile_transposed<Elem>(problem.k, b, h_kv, j0, keys, keys_pad, d, kt);
        load_tile_transposed<Elem>(problem.v, b, h_kv, j0, keys, keys_pad, d, vt);
        fill_floats(dk, keys_pad * d, 0.0f);
        fill_floats(dv, keys_pad * d, 0.0f);

        const bool transformed = transforms_scores(config.features);
        const bool capped = config.features.softcap > 0.0f;
        const IndexRange query_range = score_window(config).queries_of_keys(j0, keys);
        for (int64_t h = h_kv * shape.group_size(); h < (h_kv + 1) * shape.group_size(); ++h) {
            const HeadScores hs = head_scores(config, b, h);
            for (int64_t i0 = query_range.begin; i0 < query_range.end; i0 += kBlockQ) {
                const int rows = static_cast<int>(std::min<int64_t>(kBlockQ, query_range.end - i0));
                const int rows_pad = round_up(rows, kRowPad);
                load_tile<Elem>(problem.q, b, h, i0, rows, rows_pad, d, q);
                load_tile<Elem>(problem.dout, b, h, i0, rows, rows_pad, d, dout);
                load_row_stats(shape, stats, b, h, i0, rows, rows_pad, w.recipes);

                matmul<Isa, false>(rows_pad, keys_pad, d, q, d, kt, keys_pad, p, keys_pad);  // S = Q Kᵀ
                if (transformed)  // row r is query i0 + r, lane jj key j0 + jj
                    transform_score_tile<Isa, true>(p, w.cap_derivative.get(), rows_pad, keys_pad, config.softmax_scale,
                                                    hs, hs.window.aligned(i0) - j0, 1, -1);
                for (int r = 0; r < rows_pad; ++r) {
                    const IndexRange visible =
                        r < rows ? local_range(hs.window.keys_of(i0 + r), j0, keys) : IndexRange{0, 0};
                    probabilities_row<Isa>(p + r * keys_pad, keys_pad, visible, w.recipes, r);
                }
                matmul<Isa, true, true>(keys_pad, d, rows_pad, p, keys_pad, dout, d, dv, d);   // dV += Pᵀ dO
                matmul<Isa, false>(rows_pad, keys_pad, d, dout, d, vt, keys_pad, ds, keys_pad);  // dP = dO Vᵀ
                for (int r = 0; r < rows_pad; ++r) {
                    const float* p_row = p + r * keys_pad;
                    float* ds_row = ds + r * keys_pad;
                    const float row_delta = delta[r];
#pragma omp simd
                    for (int j = 0; j < keys_pad; ++j) ds_row[j] = p_row[j] * (ds_row[j] - row_delta);
                }
                if (capped) multiply_elements(ds, w.cap_derivative.get(), rows_pad * keys_pad);
                matmul<Isa, true, true>(keys_pad, d, rows_pad, ds, keys_pad, q, d, dk, d);  // dK += dSᵀ Q (unscaled)
            }
        }
        store_tile<Elem, true>(dk, config.softmax_scale, problem.dk, b, h_kv, j0, keys, d);
        store_tile<Elem, true>(dv, 1.0f, problem.dv, b, h_kv, j0, keys, d);
    }
};

// ------------------------------------------------------------------------------------------------
// Pass 3: one task per (batch, query head, query tile), streaming the key tiles it attends. Works on
// transposed scores (keys are rows), so each query's recipe for P and D run along vector lanes.

struct QueryPassScratch {
    explicit QueryPassScratch(int d)
        : qt(d * kBlockQ), doutt(d * kBlockQ), dq(kBlockQ * d), k(kBlockK * d), v(kBlockK * d),
          pt(kBlockK * kBlockQ), dst(kBlockK * kBlockQ), cap_derivative(kBlockK * kBlockQ), recipes(kBlockQ) {}
    FloatBuffer qt, doutt;       // [d x rows_pad]
    FloatBuffer dq;              // [rows_pad x d]
    FloatBuffer k, v;            // [keys_pad x d]
    FloatBuffer pt, dst;         // [keys_pad x rows_pad]: Pᵀ, and dPᵀ turned into dSᵀ in place
    FloatBuffer cap_derivative;  // [keys_pad x rows_pad], with softcap
    RowRecipes recipes;          // [rows_pad]
};

struct QueryPassKernel {
    template <class Isa, class Elem>
    static FA4J_INLINE void run(const BackwardProblem& problem, const RowStats& stats, QueryPassScratch& w,
                                int64_t task) {
        const AttentionConfig& config = problem.config;
        const AttentionShape& shape = config.shape;
        const int d = static_cast<int>(shape.head_dim);
        const auto [b, h, i0, rows] = query_tile_of_task(shape, task);
        const int64_t h_kv = h / shape.group_size();
        const int rows_pad = round_up(rows, kRowPad);
        const HeadScores hs = head_scores(config, b, h);
        const bool transformed = transforms_scores(config.features);
        const bool capped = config.features.softcap > 0.0f;

        float* const qt = w.qt.get();
        float* const doutt = w.doutt.get();
        float* const dq = w.dq.get();
        float* const k = w.k.get();
        float* const v = w.v.get();
        float* const pt = w.pt.get();
        float* const dst = w.dst.get();
        const float* const delta = w.recipes.delta.get();

        load_tile_transposed<Elem>(problem.q, b, h, i0, rows, rows_pad, d, qt);
        load_tile_transposed<Elem>(problem.dout, b, h, i0, rows, rows_pad, d, doutt);
        load_row_stats(shape, stats, b, h, i0, rows, rows_pad, w.recipes);
        fill_floats(dq, rows_pad * d, 0.0f);

        const IndexRange key_range = hs.window.keys_of_rows(i0, rows);
        for (int64_t j0 = key_range.begin; j0 < key_range.end; j0 += kBlockK) {
            const int keys = static_cast<int>(std::min<int64_t>(kBlockK, key_range.end - j0));
            const int keys_pad = round_up(keys, kRowPad);
            load_tile<Elem>(problem.k, b, h_kv, j0, keys, keys_pad, d, k);
            load_tile<Elem>(problem.v, b, h_kv, j0, keys, keys_pad, d, v);

            matmul<Isa, false>(keys_pad, rows_pad, d, k, d, qt, rows_pad, pt, rows_pad);  // Sᵀ = K Qᵀ
            if (transformed)  // row jj is key j0 + jj, lane i query i0 + i
                transform_score_tile<Isa, true>(pt, w.cap_derivative.get(), keys_pad, rows_pad, config.softmax_scale, hs,
                                                hs.window.aligned(i0) - j0, -1, 1);
            for (int jj = 0; jj < keys_pad; ++jj) {
                const IndexRange visible =
                    jj < keys ? local_range(hs.window.queries_of(j0 + jj), i0, rows) : IndexRange{0, 0};
                probabilities_column<Isa>(pt + jj * rows_pad, rows_pad, visible, w.recipes);
            }
            matmul<Isa, false>(keys_pad, rows_pad, d, v, d, doutt, rows_pad, dst, rows_pad);  // dPᵀ = V dOᵀ
            for (int jj = 0; jj < keys_pad; ++jj) {
                const float* p_row = pt + jj * rows_pad;
                float* ds_row = dst + jj * rows_pad;
#pragma omp simd
                for (int i = 0; i < rows_pad; ++i) ds_row[i] = p_row[i] * (ds_row[i] - delta[i]);
            }
            if (capped) multiply_elements(dst, w.cap_derivative.get(), keys_pad * rows_pad);
            matmul<Isa, true, true>(rows_pad, d, keys_pad, dst, rows_pad, k, d, dq, d);  // dQ += dS K (unscaled)
        }
        store_tile<Elem, true>(dq, config.softmax_scale, problem.dq, b, h, i0, rows, d);
    }
};

// Runs every task of one pass on the pool, each worker with scratch of its own made on first use.
template <class Kernel, class Scratch>
void run_pass(const BackwardProblem& problem, const RowStats& stats, int threads, IsaLevel isa, int64_t tasks) {
    const auto kernel = select_kernel<Kernel, const BackwardProblem&, const RowStats&, Scratch&, int64_t>(
        problem.config.dtype, isa);
    const int d = static_cast<int>(problem.config.shape.head_dim);
    std::vector<std::unique_ptr<Scratch>> scratch(static_cast<size_t>(threads));
    parallel_for(threads, tasks, [&](int64_t task, int worker) {
        std::unique_ptr<Scratch>& mine = scratch[static_cast<size_t>(worker)];
        if (!mine) mine = std::make_unique<Scratch>(d);
        kernel(problem, stats, *mine, task);
    });
}

}  // namespace

void attention_backward(const BackwardProblem& problem) {
    const AttentionShape& shape = problem.config.shape;
    const int threads = resolve_num_threads(problem.config.num_threads);
    const IsaLevel isa = select_isa();
    const int64_t q_tiles = shape.batch * shape.heads_q * ceil_div(shape.seqlen_q, kBlockQ);
    const int64_t k_tiles = shape.batch * shape.heads_kv * ceil_div(shape.seqlen_k, kBlockK);

    const size_t rows = static_cast<size_t>(shape.batch * shape.heads_q * shape.seqlen_q);
    std::vector<float> delta(rows), mul(rows), ref(rows), factor(rows), log2_norm(rows);
    const RowStats stats{delta.data(), mul.data(), ref.data(), factor.data(), log2_norm.data()};

    run_pass<StatsKernel, StatsScratch>(problem, stats, threads, isa, q_tiles);
    run_pass<KeyPassKernel, KeyPassScratch>(problem, stats, threads, isa, k_tiles);
    run_pass<QueryPassKernel, QueryPassScratch>(problem, stats, threads, isa, q_tiles);
}

}  // namespace fa4j::cpu
