// FlashAttention-2 backward on the CPU, in three passes that need no atomics and give the same bits
// whatever the thread count, because every output element is owned by exactly one task and summed in
// a fixed order:
//   1. per query row: D = rowsum(dout ∘ out);
//   2. per (batch, kv head, key tile): dK and dV, summed over every query head of the group and every
//      query tile, recomputing P = exp(S - lse) on the way;
//   3. per (batch, query head, query tile): dQ, summed over key tiles, recomputing P again.
// Recomputing P twice costs two extra tile products per tile pair; the alternatives are an N x N
// buffer or racing updates of dQ. Each pass orients its scores so that the tile it keeps for the whole
// task (K and V in pass 2, Q and dO in pass 3) is the one transposed, once, and the tiles it streams
// are used as stored.
#include <algorithm>
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

// Pass 1's results, one float per query row, indexed [(b * heads_q + h) * seqlen_q + i].
struct RowStats {
    float* delta;  // rowsum(dout ∘ out)
    float* lse;    // the forward's lse; +inf where it is -inf, so that such a row's P is 0 rather than NaN
};

FA4J_INLINE int64_t stats_index(const AttentionShape& shape, int64_t b, int64_t h, int64_t i) {
    return (b * shape.heads_q + h) * shape.seqlen_q + i;
}

// The statistics of rows [i0, i0 + rows) of one head, padded to rows_pad with rows that have P = 0.
FA4J_INLINE void load_row_stats(const AttentionShape& shape, const RowStats& stats, int64_t b, int64_t h, int64_t i0,
                                int rows, int rows_pad, float* lse, float* delta) {
    const int64_t first = stats_index(shape, b, h, i0);
    for (int r = 0; r < rows; ++r) {
        lse[r] = stats.lse[first + r];
        delta[r] = stats.delta[first + r];
    }
    for (int r = rows; r < rows_pad; ++r) {
        lse[r] = kInf;
        delta[r] = 0.0f;
    }
}

// P = exp(scale·s - lse), recomputed from the raw score s. scale·s is rounded to float before lse is
// subtracted, as the forward rounded max·|scale| into lse (attention_forward_cpu.cpp): the row maximum
// then gets exactly exp(-ln sum), also where scores are so large that lse's rounding error exceeds 1
// (a fused scale·s - lse would give the maximum 2^±(that error), anything from 0 to overflow). Capped
// at 1: an lse that does not belong to these scores may not make P overflow.
template <class Isa>
FA4J_INLINE float recomputed_probability(float s, float scale, float lse) {
    return probability_exp2<Isa>((s * scale - lse) * kLog2e);
}

// row[j] = P for j < visible, else 0; `row` holds raw scores s on entry.
template <class Isa>
FA4J_INLINE void probabilities_row(float* row, int n, int visible, float scale, float lse) {
#pragma omp simd
    for (int j = 0; j < n; ++j) row[j] = recomputed_probability<Isa>(row[j], scale, lse);
    fill_floats(row + visible, n - visible, 0.0f);
}

// The transposed case: one key's scores against queries i, each with its own lse[i]; queries
// [first, end) attend the key. Masking is a separate pass: with a select in the loop GCC computes the
// exponential only for selected lanes, which needs branches and so stays scalar.
template <class Isa>
FA4J_INLINE void probabilities_column(float* row, int n, int first, int end, float scale, const float* lse) {
#pragma omp simd
    for (int i = 0; i < n; ++i) row[i] = recomputed_probability<Isa>(row[i], scale, lse[i]);
    fill_floats(row, first, 0.0f);
    fill_floats(row + end, n - end, 0.0f);
}

// ------------------------------------------------------------------------------------------------
// Pass 1: one task per (batch, head, query tile).

struct StatsScratch {
    explicit StatsScratch(int d) : dout(kBlockQ * d), out(kBlockQ * d) {}
    FloatBuffer dout, out;
};

struct StatsKernel {
    template <class Isa, class Elem>
    static FA4J_INLINE void run(const BackwardProblem& p, const RowStats& stats, StatsScratch& w, int64_t task) {
        const AttentionShape& shape = p.config.shape;
        const int d = static_cast<int>(shape.head_dim);
        const auto [b, h, i0, rows] = query_tile_of_task(shape, task);
        float* const dout = w.dout.get();
        float* const out = w.out.get();
        load_tile<Elem>(p.dout, b, h, i0, rows, rows, d, dout);
        load_tile<Elem>(p.out, b, h, i0, rows, rows, d, out);
        const float* lse = p.lse.data + b * p.lse.batch_stride + h * p.lse.head_stride;
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
            stats.lse[index] = row_lse == -kInf ? kInf : row_lse;
        }
    }
};

// ------------------------------------------------------------------------------------------------
// Pass 2: one task per (batch, kv head, key tile), streaming the query tiles of every head of its group.

struct KeyPassScratch {
    explicit KeyPassScratch(int d)
        : kt(d * kBlockK), vt(d * kBlockK), dk(kBlockK * d), dv(kBlockK * d), q(kBlockQ * d), dout(kBlockQ * d),
          p(kBlockQ * kBlockK), ds(kBlockQ * kBlockK), lse(kBlockQ), delta(kBlockQ) {}
    FloatBuffer kt, vt;      // [d x keys_pad]
    FloatBuffer dk, dv;      // [keys_pad x d]
    FloatBuffer q, dout;     // [rows_pad x d]
    FloatBuffer p, ds;       // [rows_pad x keys_pad]: P, and dP turned into dS in place
    FloatBuffer lse, delta;  // [rows_pad]
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
        const float scale = config.softmax_scale;

        float* const kt = w.kt.get();
        float* const vt = w.vt.get();
        float* const dk = w.dk.get();
        float* const dv = w.dv.get();
        float* const q = w.q.get();
        float* const dout = w.dout.get();
        float* const p = w.p.get();
        float* const ds = w.ds.get();
        float* const lse = w.lse.get();
        float* const delta = w.delta.get();

        load_tile_transposed<Elem>(problem.k, b, h_kv, j0, keys, keys_pad, d, kt);
        load_tile_transposed<Elem>(problem.v, b, h_kv, j0, keys, keys_pad, d, vt);
        fill_floats(dk, keys_pad * d, 0.0f);
        fill_floats(dv, keys_pad * d, 0.0f);

        const int64_t q_begin = first_query_for_key(config, j0);
        for (int64_t h = h_kv * shape.group_size(); h < (h_kv + 1) * shape.group_size(); ++h) {
            for (int64_t i0 = q_begin; i0 < shape.seqlen_q; i0 += kBlockQ) {
                const int rows = static_cast<int>(std::min<int64_t>(kBlockQ, shape.seqlen_q - i0));
                const int rows_pad = round_up(rows, kRowPad);
                load_tile<Elem>(problem.q, b, h, i0, rows, rows_pad, d, q);
                load_tile<Elem>(problem.dout, b, h, i0, rows, rows_pad, d, dout);
                load_row_stats(shape, stats, b, h, i0, rows, rows_pad, lse, delta);

                matmul<Isa, false>(rows_pad, keys_pad, d, q, d, kt, keys_pad, p, keys_pad);  // S = Q Kᵀ
                for (int r = 0; r < rows_pad; ++r) {
                    const int visible = r < rows ? visible_keys(config, i0 + r, j0, keys) : 0;
                    probabilities_row<Isa>(p + r * keys_pad, keys_pad, visible, scale, lse[r]);
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
                matmul<Isa, true, true>(keys_pad, d, rows_pad, ds, keys_pad, q, d, dk, d);  // dK += dSᵀ Q (unscaled)
            }
        }
        store_tile<Elem, true>(dk, config.softmax_scale, problem.dk, b, h_kv, j0, keys, d);
        store_tile<Elem, true>(dv, 1.0f, problem.dv, b, h_kv, j0, keys, d);
    }
};

// ------------------------------------------------------------------------------------------------
// Pass 3: one task per (batch, query head, query tile), streaming the key tiles it attends. Works on
// transposed scores (keys are rows), so each query's lse and D run along vector lanes.

struct QueryPassScratch {
    explicit QueryPassScratch(int d)
        : qt(d * kBlockQ), doutt(d * kBlockQ), dq(kBlockQ * d), k(kBlockK * d), v(kBlockK * d),
          pt(kBlockK * kBlockQ), dst(kBlockK * kBlockQ), lse(kBlockQ), delta(kBlockQ) {}
    FloatBuffer qt, doutt;   // [d x rows_pad]
    FloatBuffer dq;          // [rows_pad x d]
    FloatBuffer k, v;        // [keys_pad x d]
    FloatBuffer pt, dst;     // [keys_pad x rows_pad]: Pᵀ, and dPᵀ turned into dSᵀ in place
    FloatBuffer lse, delta;  // [rows_pad]
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
        const float scale = config.softmax_scale;
        const int64_t offset = shape.causal_offset();

        float* const qt = w.qt.get();
        float* const doutt = w.doutt.get();
        float* const dq = w.dq.get();
        float* const k = w.k.get();
        float* const v = w.v.get();
        float* const pt = w.pt.get();
        float* const dst = w.dst.get();
        float* const lse = w.lse.get();
        float* const delta = w.delta.get();

        load_tile_transposed<Elem>(problem.q, b, h, i0, rows, rows_pad, d, qt);
        load_tile_transposed<Elem>(problem.dout, b, h, i0, rows, rows_pad, d, doutt);
        load_row_stats(shape, stats, b, h, i0, rows, rows_pad, lse, delta);
        fill_floats(dq, rows_pad * d, 0.0f);

        const int64_t key_end = key_end_for_rows(config, i0, rows);
        for (int64_t j0 = 0; j0 < key_end; j0 += kBlockK) {
            const int keys = static_cast<int>(std::min<int64_t>(kBlockK, key_end - j0));
            const int keys_pad = round_up(keys, kRowPad);
            load_tile<Elem>(problem.k, b, h_kv, j0, keys, keys_pad, d, k);
            load_tile<Elem>(problem.v, b, h_kv, j0, keys, keys_pad, d, v);

            matmul<Isa, false>(keys_pad, rows_pad, d, k, d, qt, rows_pad, pt, rows_pad);  // Sᵀ = K Qᵀ
            for (int jj = 0; jj < keys_pad; ++jj) {
                const int first =
                    config.causal ? static_cast<int>(std::clamp<int64_t>(j0 + jj - offset - i0, 0, rows)) : 0;
                const int end = jj < keys ? rows : 0;
                probabilities_column<Isa>(pt + jj * rows_pad, rows_pad, first, end, scale, lse);
            }
            matmul<Isa, false>(keys_pad, rows_pad, d, v, d, doutt, rows_pad, dst, rows_pad);  // dPᵀ = V dOᵀ
            for (int jj = 0; jj < keys_pad; ++jj) {
                const float* p_row = pt + jj * rows_pad;
                float* ds_row = dst + jj * rows_pad;
#pragma omp simd
                for (int i = 0; i < rows_pad; ++i) ds_row[i] = p_row[i] * (ds_row[i] - delta[i]);
            }
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
    std::vector<float> delta(rows), lse(rows);
    const RowStats stats{delta.data(), lse.data()};

    run_pass<StatsKernel, StatsScratch>(problem, stats, threads, isa, q_tiles);
    run_pass<KeyPassKernel, KeyPassScratch>(problem, stats, threads, isa, k_tiles);
    run_pass<QueryPassKernel, QueryPassScratch>(problem, stats, threads, isa, q_tiles);
}

}  // namespace fa4j::cpu
