// KV-cache attention on the CPU (FA4J_ATTENTION_DECODE in flashattn4j.h), and the merge of partial results
// (FA4J_ATTENTION_MERGE).
//
// A decode call runs in three steps, each a parallel loop:
//  1. the append: k_new/v_new rows are copied into their cache slots (validation has checked that they fit
//     and that no page written here is read or written by anything else in the call);
//  2. the attention tasks: one task is (kv head, a tile of up to kDecodeRows query rows, a split of the keys)
//     of one sequence, or of the shared prefix. The query rows of a task are the query heads that share the
//     kv head times the new tokens (GQA packing; for the prefix also times the sequences, since every query
//     attends the whole prefix), so each key and value row is read once per tile and split. A task is the
//     FlashAttention-2 forward over its keys (online softmax over key tiles of kBlockK, the same code as the
//     forward: online_softmax.hpp, score_tiles.hpp), with the lanes of the score tile being those query rows;
//     masks and ALiBi are applied per run of lanes (one head, consecutive positions);
//  3. the merge: where a row has several partial results (splits, the prefix), they were written in float32
//     to a workspace and are merged by log-sum-exp (core/lse_merge.hpp) in key order: the prefix's splits
//     first, then the sequence's own. A call with one split and no prefix writes out and lse directly.
// The split count comes from core/decode_split.hpp's heuristic with the thread count as the parallelism,
// unless the call forces one.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "backends/cpu/cpu_attention.hpp"
#include "backends/cpu/kernel_select.hpp"
#include "backends/cpu/online_softmax.hpp"
#include "backends/cpu/score_tiles.hpp"
#include "backends/cpu/thread_pool.hpp"
#include "backends/cpu/tile_io.hpp"
#include "backends/cpu/tile_matmul.hpp"
#include "backends/cpu/tiling.hpp"
#include "core/decode_split.hpp"
#include "core/error.hpp"
#include "core/lse_merge.hpp"
#include "core/score_mask.hpp"
#include "flashattn4j.h"

namespace fa4j::cpu {
namespace {

// Query rows ("lanes") one task packs. More rows make further tiles, each of which reads the keys again.
constexpr int kDecodeRows = 128;
// Split boundaries fall on multiples of this many keys.
constexpr int64_t kSplitGranularity = kRowPad;
// The heuristic leaves at least this many keys to each split: below it a split's fixed costs (its query
// tile, its partial result and merge) outweigh what it adds to the parallelism.
constexpr int64_t kMinKeysPerSplit = 256;

// Consecutive lanes first .. first + count - 1: query head h of sequence b at positions i0 .. i0 + count - 1.
struct LaneRun {
    int first, count;
    int64_t b, h, i0;
};

struct DecodeScratch : SoftmaxScratch {
    explicit DecodeScratch(int d) : SoftmaxScratch(d, kDecodeRows), v(kBlockK * d), acc(kDecodeRows * d) {}
    FloatBuffer v;    // [keys_pad x d]
    FloatBuffer acc;  // [rows_pad x d]: unnormalised output
    std::vector<LaneRun> runs;
};

// Where partial results go: state s of row (b, h, i) at out + index·d and lse + index, with index =
// ((s·batch + b)·heads_q + h)·seqlen_q + i.
struct Workspace {
    float* out = nullptr;
    float* lse = nullptr;
    int64_t batch = 0, heads = 0, seqlen = 0;
    int64_t index(int64_t s, int64_t b, int64_t h, int64_t i) const { return ((s * batch + b) * heads + h) * seqlen + i; }
};

// One task: the lanes r0 .. r1 - 1 of kv head hk, against keys `keys` of sequence b's cache or of the prefix.
// The lanes are ordered r = (hg · batches + bb) · seqlen_q + i for query head hk·group + hg and sequence
// b_first + bb; `state` is the partial result it writes (-1: out and lse directly).
struct DecodeTask {
    int64_t hk;
    bool prefix;
    int64_t b_first, batches;
    int64_t r0, r1;
    IndexRange keys;
    int64_t state;
};

FA4J_INLINE void scale_row(float* row, int n, float factor) {
#pragma omp simd
    for (int c = 0; c < n; ++c) row[c] *= factor;
}

// dst[r][c] = row_of(r)[c] for r < rows, zero up to rows_pad.
template <class Elem, class RowOf>
FA4J_INLINE void load_rows(RowOf row_of, int rows, int rows_pad, int d, float* dst) {
    for (int r = 0; r < rows; ++r) {
        const typename Elem::Storage* src = row_of(r);
        float* out = dst + r * d;
#pragma omp simd
        for (int c = 0; c < d; ++c) out[c] = Elem::to_float(src[c]);
    }
    for (int r = rows; r < rows_pad; ++r) fill_floats(dst + r * d, d, 0.0f);
}

template <class Elem>
FA4J_INLINE const typename Elem::Storage* cache_row(const DecodeProblem& p, const CacheTensor& t, int64_t b, int64_t position,
                                                    int64_t h) {
    return static_cast<const typename Elem::Storage*>(t.data) + t.offset(p.cache, b, position, h);
}

// Keys sequence b attends in its cache: cache_seqlens[b] plus the appended ones.
int64_t own_keys(const DecodeProblem& p, int64_t b) { return p.cache_seqlens[b] + p.seqlen_new; }

// Element (b, s, h, 0) of a sequence tensor of a dtype known at run time.
char* element(const SeqTensor& t, DType dtype, int64_t b, int64_t s, int64_t h) {
    return static_cast<char*>(t.data) + (b * t.batch_stride + s * t.seq_stride + h * t.head_stride) * dtype_size(dtype);
}

void load_row(DType dtype, const char* src, int64_t d, float* dst) {
    switch (dtype) {
        case DType::F32: std::memcpy(dst, src, static_cast<size_t>(d) * sizeof(float)); return;
        case DType::F16:
            for (int64_t c = 0; c < d; ++c) dst[c] = f16_to_float(reinterpret_cast<const uint16_t*>(src)[c]);
            return;
        case DType::BF16:
            for (int64_t c = 0; c < d; ++c) dst[c] = bf16_to_float(reinterpret_cast<const uint16_t*>(src)[c]);
            return;
        case DType::F8E4M3:
        case DType::F8E5M2:
        case DType::I8:
        case DType::I4: break;  // quantized data: refused by validation (require_compute_dtype)
    }
}

// Rounds to the dtype, saturating at its largest finite value (NaN stays NaN).
void store_row(DType dtype, char* dst, const float* src, int64_t d) {
    switch (dtype) {
        case DType::F32: std::memcpy(dst, src, static_cast<size_t>(d) * sizeof(float)); return;
        case DType::F16:
            for (int64_t c = 0; c < d; ++c)
                reinterpret_cast<uint16_t*>(dst)[c] = float_to_f16(std::clamp(src[c], -F16Elem::kMaxFinite, F16Elem::kMaxFinite));
            return;
        case DType::BF16:
            for (int64_t c = 0; c < d; ++c)
                reinterpret_cast<uint16_t*>(dst)[c] = float_to_bf16(std::clamp(src[c], -Bf16Elem::kMaxFinite, Bf16Elem::kMaxFinite));
            return;
        case DType::F8E4M3:
        case DType::F8E5M2:
        case DType::I8:
        case DType::I4: break;  // quantized data: refused by validation (require_compute_dtype)
    }
}

float* lse_element(const LseTensor& t, int64_t b, int64_t h, int64_t i) {
    return t.data + b * t.batch_stride + h * t.head_stride + i * t.seq_stride;
}

// The runs of lanes r0 .. r1 - 1 (lane order of DecodeTask).
void build_runs(std::vector<LaneRun>& runs, const DecodeTask& task, int64_t seqlen_q, int64_t group) {
    runs.clear();
    for (int64_t r = task.r0; r < task.r1;) {
        const int64_t i = r % seqlen_q;
        const int64_t bb = r / seqlen_q % task.batches;
        const int64_t hg = r / (seqlen_q * task.batches);
        const int64_t count = std::min(task.r1 - r, seqlen_q - i);
        runs.push_back({static_cast<int>(r - task.r0), static_cast<int>(count), task.b_first + bb, task.hk * group + hg, i});
        r += count;
    }
}

struct DecodeKernel {
    template <class Isa, class Elem>
    static FA4J_INLINE void run(const DecodeProblem& p, DecodeScratch& w, const DecodeTask& task, const Workspace& ws) {
        const AttentionConfig& config = p.config;
        const AttentionShape& shape = config.shape;
        const ScoreFeatures& features = config.features;
        const int d = static_cast<int>(shape.head_dim);
        const int lanes = static_cast<int>(task.r1 - task.r0);
        const int rows_pad = round_up(lanes, kRowPad);
        build_runs(w.runs, task, shape.seqlen_q, shape.group_size());

        float* const qt = w.qt.get();
        float* const st = w.st.get();
        float* const acc = w.acc.get();
        float* const alpha = w.alpha.get();
        // Qᵀ [d x rows_pad], with the sign of a negative scale folded in (online_softmax.hpp says why).
        for (const LaneRun& run : w.runs) {
            for (int e = 0; e < run.count; ++e) {
                const typename Elem::Storage* src = seq_row<Elem>(p.q, run.b, run.i0 + e, run.h);
                for (int c = 0; c < d; ++c) qt[c * rows_pad + run.first + e] = Elem::to_float(src[c]);
            }
        }
        for (int c = 0; c < d; ++c)
            for (int r = lanes; r < rows_pad; ++r) qt[c * rows_pad + r] = 0.0f;
        if (config.softmax_scale < 0.0f) {
#pragma omp simd
            for (int e = 0; e < d * rows_pad; ++e) qt[e] = -qt[e];
        }
        fill_floats(w.running_max.get(), rows_pad, -kInf);
        fill_floats(w.running_sum.get(), rows_pad, 0.0f);
        fill_floats(acc, rows_pad * d, 0.0f);

        // Own keys: the sequence's window (causal, local), aligned to its end. The prefix is never masked
        // (validation refuses windows and ALiBi with a prefix).
        const int64_t b = task.b_first;
        const ScoreWindow window = score_window(config, shape.seqlen_q, task.prefix ? p.prefix_len : own_keys(p, b));
        const bool transform = transforms_scores(features);
        const float abs_scale = std::fabs(config.softmax_scale);
        const SeqTensor* prefix_k = task.prefix ? &p.prefix_k : nullptr;
        const SeqTensor* prefix_v = task.prefix ? &p.prefix_v : nullptr;
        auto key_row = [&](const SeqTensor* prefix, const CacheTensor& cache, int64_t j) {
            return prefix != nullptr ? seq_row<Elem>(*prefix, 0, j, task.hk) : cache_row<Elem>(p, cache, b, j, task.hk);
        };

        for (int64_t j0 = task.keys.begin; j0 < task.keys.end; j0 += kBlockK) {
            const int keys = static_cast<int>(std::min<int64_t>(kBlockK, task.keys.end - j0));
            const int keys_pad = round_up(keys, kRowPad);
            load_rows<Elem>([&](int r) { return key_row(prefix_k, p.k_cache, j0 + r); }, keys, keys_pad, d, w.k.get());
            matmul<Isa, false>(keys_pad, rows_pad, d, w.k.get(), d, qt, rows_pad, st, rows_pad);  // Sᵀ = K Qᵀ
            if (transform) {
                for (int jj = 0; jj < keys; ++jj) {
                    for (const LaneRun& run : w.runs) {
                        const HeadScores hs{window, features.softcap, task.prefix ? 0.0f : alibi_slope(features, run.b, run.h)};
                        float* row = st + jj * rows_pad + run.first;
                        const int64_t difference = window.aligned(run.i0) - (j0 + jj);
                        if (features.softcap > 0.0f)
                            transform_score_row<Isa, true, false>(row, nullptr, run.count, abs_scale, hs, difference, 1);
                        else
                            transform_score_row<Isa, false, false>(row, nullptr, run.count, abs_scale, hs, difference, 1);
                    }
                }
            }
            if (!task.prefix && !window.tile_unmasked(0, shape.seqlen_q, j0, keys)) {
                for (int jj = 0; jj < keys; ++jj) {
                    const IndexRange visible = window.queries_of(j0 + jj);
                    float* row = st + jj * rows_pad;
                    for (const LaneRun& run : w.runs) {
                        const IndexRange local = local_range(visible, run.i0, run.count);
                        fill_floats(row + run.first, static_cast<int>(local.begin), -kInf);
                        fill_floats(row + run.first + local.end, run.count - static_cast<int>(local.end), -kInf);
                    }
                }
            }
            online_softmax_tile<Isa>(w, keys_pad, rows_pad, softmax_factor(config), [&](int jj) {
                return jj < keys ? IndexRange{0, lanes} : IndexRange{rows_pad, rows_pad};
            });
            load_rows<Elem>([&](int r) { return key_row(prefix_v, p.v_cache, j0 + r); }, keys, keys_pad, d, w.v.get());
            for (int r = 0; r < rows_pad; ++r)
                if (alpha[r] != 1.0f) scale_row(acc + r * d, d, alpha[r]);
            matmul<Isa, true, true>(rows_pad, d, keys_pad, st, rows_pad, w.v.get(), d, acc, d);  // O += P V
        }

        const float unit = score_unit(config);
        for (const LaneRun& run : w.runs) {
            for (int e = 0; e < run.count; ++e) {
                const int lane = run.first + e;
                const int64_t i = run.i0 + e;
                const float sum = w.running_sum.get()[lane];
                // A row that attends nothing keeps sum 0: its output is 0 and its logsumexp -inf.
                float* row = acc + lane * d;
                scale_row(row, d, sum > 0.0f ? 1.0f / sum : 0.0f);
                const float lse = row_logsumexp(w.running_max.get()[lane], unit, sum);
                if (task.state < 0) {
                    store_row(p.out_dtype, element(p.out, p.out_dtype, run.b, i, run.h), row, d);
                    if (p.lse.data != nullptr) *lse_element(p.lse, run.b, run.h, i) = lse;
                } else {
                    const int64_t index = ws.index(task.state, run.b, run.h, i);
                    std::memcpy(ws.out + index * d, row, static_cast<size_t>(d) * sizeof(float));
                    ws.lse[index] = lse;
                }
            }
        }
    }
};

// Step 1: k_new and v_new into their cache slots.
void append_new_keys(const DecodeProblem& p, int threads) {
    const AttentionShape& s = p.config.shape;
    const size_t bytes = static_cast<size_t>(s.head_dim) * static_cast<size_t>(dtype_size(p.config.dtype));
    const int64_t element_size = dtype_size(p.config.dtype);
    parallel_for(threads, s.batch * p.seqlen_new, [&](int64_t task, int) {
        const int64_t b = task / p.seqlen_new, t = task % p.seqlen_new;
        const int64_t position = p.cache_seqlens[b] + t;
        for (int64_t h = 0; h < s.heads_kv; ++h) {
            std::memcpy(static_cast<char*>(p.k_cache.data) + p.k_cache.offset(p.cache, b, position, h) * element_size,
                        element(p.k_new, p.config.dtype, b, t, h), bytes);
            std::memcpy(static_cast<char*>(p.v_cache.data) + p.v_cache.offset(p.cache, b, position, h) * element_size,
                        element(p.v_new, p.config.dtype, b, t, h), bytes);
        }
    });
}

// How a call is cut into tasks.
struct DecodePlan {
    int64_t tiles = 0;         // lane tiles per (sequence, kv head): group · seqlen_q lanes
    int own_splits = 1;        // splits of each sequence's own keys
    int64_t prefix_tiles = 0;  // lane tiles per kv head of the prefix pass: group · batch · seqlen_q lanes
    int prefix_splits = 0;     // splits of the prefix (0: no prefix)
    int64_t states() const { return prefix_splits + own_splits; }
    bool direct() const { return prefix_splits == 0 && own_splits == 1; }
    int64_t prefix_tasks(int64_t heads_kv) const { return heads_kv * prefix_tiles * prefix_splits; }
};

DecodePlan plan(const DecodeProblem& p, int threads) {
    const AttentionShape& s = p.config.shape;
    DecodePlan result;
    const int64_t lanes = s.group_size() * s.seqlen_q;
    result.tiles = ceil_div(lanes, kDecodeRows);
    int64_t longest = 0;
    for (int64_t b = 0; b < s.batch; ++b) {
        const IndexRange keys = score_window(p.config, s.seqlen_q, own_keys(p, b)).keys_of_rows(0, s.seqlen_q);
        longest = std::max(longest, keys.end - keys.begin);
    }
    auto splits = [&](int64_t units, int64_t keys) {
        if (p.num_splits > 0) return p.num_splits;
        return decode_num_splits({units, keys, threads, kMinKeysPerSplit, FA4J_DECODE_MAX_SPLITS});
    };
    result.own_splits = splits(s.batch * s.heads_kv * result.tiles, longest);
    if (p.has_prefix) {
        result.prefix_tiles = ceil_div(lanes * s.batch, kDecodeRows);
        result.prefix_splits = splits(s.heads_kv * result.prefix_tiles, p.prefix_len);
    }
    return result;
}

// Task number `task` of the plan: the prefix's first (they are the longest), then the sequences'.
DecodeTask task_of(const DecodeProblem& p, const DecodePlan& plan, int64_t task) {
    const AttentionShape& s = p.config.shape;
    const int64_t lanes = s.group_size() * s.seqlen_q;
    DecodeTask t{};
    const int64_t prefix_tasks = plan.prefix_tasks(s.heads_kv);
    if (task < prefix_tasks) {
        const int split = static_cast<int>(task % plan.prefix_splits);
        const int64_t tile = task / plan.prefix_splits % plan.prefix_tiles;
        t.hk = task / plan.prefix_splits / plan.prefix_tiles;
        t.prefix = true;
        t.b_first = 0;
        t.batches = s.batch;
        t.r0 = tile * kDecodeRows;
        t.r1 = std::min(lanes * s.batch, t.r0 + kDecodeRows);
        t.keys = split_keys(IndexRange{0, p.prefix_len}, plan.prefix_splits, split, kSplitGranularity);
        t.state = split;
        return t;
    }
    task -= prefix_tasks;
    const int split = static_cast<int>(task % plan.own_splits);
    const int64_t tile = task / plan.own_splits % plan.tiles;
    const int64_t bh = task / plan.own_splits / plan.tiles;
    t.hk = bh % s.heads_kv;
    t.prefix = false;
    t.b_first = bh / s.heads_kv;
    t.batches = 1;
    t.r0 = tile * kDecodeRows;
    t.r1 = std::min(lanes, t.r0 + kDecodeRows);
    const IndexRange keys = score_window(p.config, s.seqlen_q, own_keys(p, t.b_first)).keys_of_rows(0, s.seqlen_q);
    t.keys = split_keys(keys, plan.own_splits, split, kSplitGranularity);
    t.state = plan.direct() ? -1 : plan.prefix_splits + split;
    return t;
}

// Step 3: every row's partial results, merged into out and lse.
void merge_partials(const DecodeProblem& p, const DecodePlan& plan, const Workspace& ws, int threads) {
    const AttentionShape& s = p.config.shape;
    const int64_t rows = s.batch * s.heads_q * s.seqlen_q;
    const int64_t states = plan.states();
    const int64_t d = s.head_dim;
    constexpr int64_t kRowsPerTask = 16;
    parallel_for(threads, ceil_div(rows, kRowsPerTask), [&](int64_t task, int) {
        std::vector<float> lse(static_cast<size_t>(states)), scales(lse.size()), out(static_cast<size_t>(d));
        for (int64_t row = task * kRowsPerTask; row < std::min(rows, (task + 1) * kRowsPerTask); ++row) {
            const int64_t i = row % s.seqlen_q, h = row / s.seqlen_q % s.heads_q, b = row / s.seqlen_q / s.heads_q;
            for (int64_t st = 0; st < states; ++st) lse[static_cast<size_t>(st)] = ws.lse[ws.index(st, b, h, i)];
            const float merged = lse_merge_weights(lse.data(), states, scales.data());
            lse_merge_row(scales.data(), states, d, out.data(),
                          [&](int64_t st, int64_t c) { return ws.out[ws.index(st, b, h, i) * d + c]; });
            store_row(p.out_dtype, element(p.out, p.out_dtype, b, i, h), out.data(), d);
            if (p.lse.data != nullptr) *lse_element(p.lse, b, h, i) = merged;
        }
    });
}

}  // namespace

void attention_decode(const DecodeProblem& problem) {
    const AttentionShape& shape = problem.config.shape;
    const int threads = resolve_num_threads(problem.config.num_threads);
    const DecodePlan tasks = plan(problem, threads);
    // The workspace is allocated before anything is written: a call that fails for memory changes nothing.
    Workspace ws{nullptr, nullptr, shape.batch, shape.heads_q, shape.seqlen_q};
    std::unique_ptr<float[]> partial_out, partial_lse;
    const int64_t rows = shape.batch * shape.heads_q * shape.seqlen_q;
    if (!tasks.direct() && rows > 0) {
        int64_t lse_count = 0, out_count = 0;
        if (__builtin_mul_overflow(tasks.states(), rows, &lse_count) || __builtin_mul_overflow(lse_count, shape.head_dim, &out_count) ||
            out_count > (int64_t{1} << 61) / static_cast<int64_t>(sizeof(float)))
            fail(FA4J_ERROR_OUT_OF_MEMORY, "the split-KV workspace of " + std::to_string(tasks.states()) + " partial results of " +
                                               std::to_string(rows) + " rows is too large (fewer splits: num_splits)");
        partial_out.reset(new float[static_cast<size_t>(out_count)]);
        partial_lse.reset(new float[static_cast<size_t>(lse_count)]);
        ws.out = partial_out.get();
        ws.lse = partial_lse.get();
    }
    if (problem.seqlen_new > 0) append_new_keys(problem, threads);
    if (rows == 0) return;

    const int64_t count = tasks.prefix_tasks(shape.heads_kv) + shape.batch * shape.heads_kv * tasks.tiles * tasks.own_splits;
    const auto kernel = select_kernel<DecodeKernel, const DecodeProblem&, DecodeScratch&, const DecodeTask&, const Workspace&>(
        problem.config.dtype, select_isa());
    const int d = static_cast<int>(shape.head_dim);
    std::vector<std::unique_ptr<DecodeScratch>> scratch(static_cast<size_t>(threads));
    parallel_for(threads, count, [&](int64_t task, int worker) {
        std::unique_ptr<DecodeScratch>& mine = scratch[static_cast<size_t>(worker)];
        if (!mine) mine = std::make_unique<DecodeScratch>(d);  // first touch by the thread that uses it
        kernel(problem, *mine, task_of(problem, tasks, task), ws);
    });
    if (!tasks.direct()) merge_partials(problem, tasks, ws, threads);
}

void attention_merge(const MergeProblem& p) {
    const int threads = resolve_num_threads(p.num_threads);
    const int64_t rows = p.batch * p.heads * p.seqlen;
    const int64_t n = static_cast<int64_t>(p.states.size());
    const int64_t d = p.head_dim;
    constexpr int64_t kRowsPerTask = 16;
    parallel_for(threads, ceil_div(rows, kRowsPerTask), [&](int64_t task, int) {
        std::vector<float> lse(static_cast<size_t>(n)), scales(lse.size()), out(static_cast<size_t>(d));
        std::vector<float> values(static_cast<size_t>(n * d));
        for (int64_t row = task * kRowsPerTask; row < std::min(rows, (task + 1) * kRowsPerTask); ++row) {
            const int64_t i = row % p.seqlen, h = row / p.seqlen % p.heads, b = row / p.seqlen / p.heads;
            for (int64_t s = 0; s < n; ++s) lse[static_cast<size_t>(s)] = *lse_element(p.states[static_cast<size_t>(s)].lse, b, h, i);
            const float merged = lse_merge_weights(lse.data(), n, scales.data());
            for (int64_t s = 0; s < n; ++s) {
                const MergeState& state = p.states[static_cast<size_t>(s)];
                if (scales[static_cast<size_t>(s)] != 0.0f)  // weight 0: never read
                    load_row(state.dtype, element(state.out, state.dtype, b, i, h), d, values.data() + s * d);
            }
            lse_merge_row(scales.data(), n, d, out.data(), [&](int64_t s, int64_t c) { return values[static_cast<size_t>(s * d + c)]; });
            store_row(p.out_dtype, element(p.out, p.out_dtype, b, i, h), out.data(), d);
            if (p.lse.data != nullptr) *lse_element(p.lse, b, h, i) = merged;
        }
    });
}

}  // namespace fa4j::cpu
