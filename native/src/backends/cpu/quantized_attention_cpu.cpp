// Quantized attention forward on the CPU: the reference implementation of flashattn4j.h's "Quantized
// attention" rules (SageAttention2-style INT8/INT4 q·kᵀ with FP8/FP16 P·v, and FP8 attention). Written
// for exactness and clarity rather than speed: the quantizers are the shared ones (quantize_cpu.hpp,
// core/quantization.hpp), the integer dot products are exact, and each row walks its keys in the
// 128-key blocks of the P rule, as a GPU kernel with 128-key tiles does.
//
// Work: first every (batch, kv head) of k and v is quantized (or read, if pre-quantized), then every
// (batch, query head) of q, then tasks of 64 query rows (a Q smoothing block) compute their rows.
// Extra memory is about one float copy of q, k and v.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "backends/cpu/cpu_attention.hpp"
#include "backends/cpu/quantize_cpu.hpp"
#include "backends/cpu/thread_pool.hpp"
#include "core/quantization.hpp"
#include "core/score_mask.hpp"

namespace fa4j::cpu {
namespace {

using fa4j::quant::kKeyBlock;
using fa4j::quant::kQuerySmoothBlock;

constexpr float kInfinity = std::numeric_limits<float>::infinity();

// One (batch, kv head) of k as the scores use it.
struct KeyHead {
    std::vector<int8_t> ints;     // SAGE: [Nk][d]
    std::vector<float> values;    // FP8: the e4m3 values [Nk][d]
    std::vector<float> scales;    // SAGE: per 128-key block; FP8: one descale
    std::vector<float> mean;      // [d]: the mean subtracted from k (for lse); empty: none
    std::vector<float> smoothed;  // [Nk][d]: k before quantization (Q smoothing's m_u·k_j); empty: not needed
};

// One (batch, kv head) of v as P·v uses it.
struct ValueHead {
    std::vector<float> values;  // [Nk][d]: e4m3 values (FP8 P·v) or float16 values (FP16 P·v)
    std::vector<float> scales;  // FP8 P·v: per channel (SAGE) or one (FP8 mode); FP16 P·v: empty
};

// One (batch, query head) of q.
struct QueryHead {
    std::vector<int8_t> ints;    // SAGE: [Nq][d]
    std::vector<float> values;   // FP8: the e4m3 values [Nq][d]
    std::vector<float> scales;   // SAGE: per row; FP8: one descale
    std::vector<float> means;    // Q smoothing: [ceil(Nq/64)][d] block means; empty: none
    std::vector<float> lse_shift;  // [Nq]: softmax_scale · q_i·mean(k), added to lse; empty: none
};

struct Plan {
    const ForwardProblem& p;
    QuantMode mode;
    int64_t batch, nq, nk, hq, hkv, d, key_blocks;
    bool sage, int4, fp16_pv, smooth_q;

    explicit Plan(const ForwardProblem& problem) : p(problem) {
        const AttentionShape& s = p.config.shape;
        mode = p.config.quant.mode;
        batch = s.batch;
        nq = s.seqlen_q;
        nk = s.seqlen_k;
        hq = s.heads_q;
        hkv = s.heads_kv;
        d = s.head_dim;
        key_blocks = fa4j::quant::key_blocks(nk);
        sage = fa4j::quant::is_sage(mode);
        int4 = fa4j::quant::is_int4(mode);
        fp16_pv = fa4j::quant::pv_fp16(mode);
        smooth_q = int4 && p.config.quant.smooth_q && !p.quant.q.prequantized();
    }
    int qmax() const { return int4 ? 7 : 127; }
};

std::vector<float> decode_e4m3(const std::vector<uint8_t>& codes) {
    std::vector<float> values(codes.size());
    for (size_t i = 0; i < codes.size(); ++i) values[i] = e4m3_to_float(codes[i]);
    return values;
}

KeyHead prepare_keys(const Plan& plan, int64_t b, int64_t h) {
    const ForwardProblem& p = plan.p;
    const int64_t n = plan.nk, d = plan.d;
    const size_t count = static_cast<size_t>(n * d);
    KeyHead head;
    std::vector<float> x(count);
    quantized::read_head(p.k, p.quant.k.dtype, b, h, n, d, x.data());
    if (p.quant.k.prequantized()) {
        if (plan.sage) {
            head.ints.resize(count);
            for (size_t i = 0; i < count; ++i) head.ints[i] = static_cast<int8_t>(x[i]);
            const float* scales = p.quant.k.scale + (b * plan.hkv + h) * plan.key_blocks;
            head.scales.assign(scales, scales + plan.key_blocks);
            if (plan.smooth_q) {  // m_u·k_j from the dequantized k
                head.smoothed.resize(count);
                for (int64_t j = 0; j < n; ++j)
                    for (int64_t c = 0; c < d; ++c) head.smoothed[j * d + c] = x[j * d + c] * head.scales[j / kKeyBlock];
            }
        } else {
            head.values = std::move(x);
            head.scales.assign(1, p.quant.k.scale[b * plan.hkv + h]);
        }
        if (p.quant.k_mean != nullptr) {
            const float* mean = p.quant.k_mean + (b * plan.hkv + h) * d;
            head.mean.assign(mean, mean + d);
        }
        return head;
    }
    if (p.config.quant.smooth_k) {
        head.mean.resize(static_cast<size_t>(d));
        quantized::key_mean(x.data(), n, d, head.mean.data());
        for (int64_t j = 0; j < n; ++j)
            for (int64_t c = 0; c < d; ++c) x[j * d + c] -= head.mean[c];
    }
    if (plan.sage) {
        head.ints.resize(count);
        head.scales.resize(static_cast<size_t>(plan.key_blocks));
        quantized::quantize_key_blocks_int(x.data(), n, d, plan.qmax(), head.ints.data(), head.scales.data());
        if (plan.smooth_q) head.smoothed = std::move(x);
    } else {
        std::vector<uint8_t> codes(count);
        head.scales.resize(1);
        quantized::quantize_all_e4m3(x.data(), n, d, codes.data(), head.scales.data());
        head.values = decode_e4m3(codes);
    }
    return head;
}

ValueHead prepare_values(const Plan& plan, int64_t b, int64_t h) {
    const ForwardProblem& p = plan.p;
    const int64_t n = plan.nk, d = plan.d;
    const size_t count = static_cast<size_t>(n * d);
    ValueHead head;
    std::vector<float> x(count);
    quantized::read_head(p.v, p.quant.v.dtype, b, h, n, d, x.data());
    if (plan.fp16_pv) {
        for (float& value : x) value = fa4j::quant::round_f16_saturated(value);
        head.values = std::move(x);
        return head;
    }
    const bool per_channel = plan.sage;
    if (p.quant.v.prequantized()) {
        head.values = std::move(x);  // read_head decoded the e4m3 codes
        const int64_t groups = per_channel ? d : 1;
        const float* scales = p.quant.v.scale + (b * plan.hkv + h) * groups;
        head.scales.assign(scales, scales + groups);
        return head;
    }
    std::vector<uint8_t> codes(count);
    head.scales.resize(static_cast<size_t>(per_channel ? d : 1));
    if (per_channel) quantized::quantize_channels_e4m3(x.data(), n, d, codes.data(), head.scales.data());
    else quantized::quantize_all_e4m3(x.data(), n, d, codes.data(), head.scales.data());
    head.values = decode_e4m3(codes);
    return head;
}

QueryHead prepare_queries(const Plan& plan, const KeyHead& keys, int64_t b, int64_t h) {
    const ForwardProblem& p = plan.p;
    const int64_t n = plan.nq, d = plan.d;
    const size_t count = static_cast<size_t>(n * d);
    QueryHead head;
    std::vector<float> x(count);
    quantized::read_head(p.q, p.quant.q.dtype, b, h, n, d, x.data());
    std::vector<float> original;  // q_i in float32 for the lse correction: as given, or dequantized
    if (p.quant.q.prequantized()) {
        if (plan.sage) {
            head.ints.resize(count);
            for (size_t i = 0; i < count; ++i) head.ints[i] = static_cast<int8_t>(x[i]);
            const float* scales = p.quant.q.scale + (b * plan.hq + h) * n;
            head.scales.assign(scales, scales + n);
            if (!keys.mean.empty())
                for (int64_t i = 0; i < n; ++i)
                    for (int64_t c = 0; c < d; ++c) x[i * d + c] *= head.scales[i];
        } else {
            head.scales.assign(1, p.quant.q.scale[b * plan.hq + h]);
            head.values = x;
            if (!keys.mean.empty())
                for (float& value : x) value *= head.scales[0];
        }
        original = std::move(x);
    } else {
        original = x;
        if (plan.smooth_q) {
            const int64_t blocks = (n + kQuerySmoothBlock - 1) / kQuerySmoothBlock;
            head.means.resize(static_cast<size_t>(blocks * d));
            for (int64_t u = 0; u < blocks; ++u) {
                const int64_t i0 = u * kQuerySmoothBlock, rows = std::min<int64_t>(kQuerySmoothBlock, n - i0);
                float* mean = head.means.data() + u * d;
                quantized::row_block_mean(x.data() + i0 * d, rows, d, mean);
                for (int64_t i = i0; i < i0 + rows; ++i)
                    for (int64_t c = 0; c < d; ++c) x[i * d + c] -= mean[c];
            }
        }
        if (plan.sage) {
            head.ints.resize(count);
            head.scales.resize(static_cast<size_t>(n));
            quantized::quantize_rows_int(x.data(), n, d, plan.qmax(), head.ints.data(), head.scales.data());
        } else {
            std::vector<uint8_t> codes(count);
            head.scales.resize(1);
            quantized::quantize_all_e4m3(x.data(), n, d, codes.data(), head.scales.data());
            head.values = decode_e4m3(codes);
        }
    }
    if (!keys.mean.empty()) {
        head.lse_shift.resize(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) {
            float dot = 0.0f;
            for (int64_t c = 0; c < d; ++c) dot += original[i * d + c] * keys.mean[c];
            head.lse_shift[i] = p.config.softmax_scale * dot;
        }
    }
    return head;
}

// Stores one output row, rounded to the dtype and saturated at its largest finite value.
void store_row(const SeqTensor& out, DType dtype, int64_t b, int64_t i, int64_t h, const float* row, int64_t d) {
    for (int64_t c = 0; c < d; ++c) {
        const int64_t e = b * out.batch_stride + i * out.seq_stride + h * out.head_stride + c;
        float x = row[c];
        switch (dtype) {
            case DType::F16:
                x = std::min(std::max(x, -65504.0f), 65504.0f);
                static_cast<uint16_t*>(out.data)[e] = float_to_f16(x);
                break;
            case DType::BF16:
                x = std::min(std::max(x, -3.3895313892515355e38f), 3.3895313892515355e38f);
                static_cast<uint16_t*>(out.data)[e] = float_to_bf16(x);
                break;
            default:  // float32 (validation admits only the compute dtypes for out)
                static_cast<float*>(out.data)[e] = x;
                break;
        }
    }
}

// Per-thread scratch.
struct RowScratch {
    std::vector<float> x, bias, partial, acc;
    RowScratch(int64_t nk, int64_t d)
        : x(static_cast<size_t>(kKeyBlock)), bias(static_cast<size_t>(nk)), partial(static_cast<size_t>(d)),
          acc(static_cast<size_t>(d)) {}
};

// max that keeps NaN (a NaN score must reach the row's output).
float nan_max(float a, float b) {
    if (a != a) return a;
    if (b != b) return b;
    return b > a ? b : a;
}

// The rows [i0, i0 + rows) of query head (b, h): a Q smoothing block.
void attend_rows(const Plan& plan, const QueryHead& qh, const KeyHead& kh, const ValueHead& vh, int64_t b, int64_t h,
                 int64_t i0, int64_t rows, RowScratch& w) {
    const ForwardProblem& p = plan.p;
    const AttentionConfig& config = p.config;
    const int64_t d = plan.d;
    const ScoreWindow window = score_window(config);
    const float slope = alibi_slope(config.features, b, h);
    const bool alibi = config.features.alibi_slopes != nullptr;
    const float scale = config.softmax_scale;
    const IndexRange block_keys = window.keys_of_rows(i0, rows);
    // Q smoothing: m_u·k_j for the keys of this block, a float32 fma chain in channel order.
    if (!qh.means.empty()) {
        const float* mean = qh.means.data() + (i0 / kQuerySmoothBlock) * d;
        for (int64_t j = block_keys.begin; j < block_keys.end; ++j) {
            const float* k = kh.smoothed.data() + j * d;
            float dot = 0.0f;
            for (int64_t c = 0; c < d; ++c) dot = std::fma(mean[c], k[c], dot);
            w.bias[static_cast<size_t>(j)] = dot;
        }
    }
    const float p_scale = plan.fp16_pv ? 1.0f : fa4j::quant::kPScale;
    for (int64_t i = i0; i < i0 + rows; ++i) {
        const IndexRange keys = window.keys_of(i);
        float m = -kInfinity, l = 0.0f;
        std::fill(w.acc.begin(), w.acc.end(), 0.0f);
        const int8_t* qi = plan.sage ? qh.ints.data() + i * d : nullptr;
        const float* qv = plan.sage ? nullptr : qh.values.data() + i * d;
        const float q_scale = plan.sage ? qh.scales[static_cast<size_t>(i)] : qh.scales[0];
        const int64_t first_block = keys.empty() ? 0 : keys.begin / kKeyBlock;
        const int64_t end_block = keys.empty() ? 0 : (keys.end - 1) / kKeyBlock + 1;
        for (int64_t t = first_block; t < end_block; ++t) {
            const int64_t j0 = std::max(keys.begin, t * kKeyBlock), j1 = std::min(keys.end, (t + 1) * kKeyBlock);
            const float dequant = q_scale * (plan.sage ? kh.scales[static_cast<size_t>(t)] : kh.scales[0]);
            float block_max = -kInfinity;
            for (int64_t j = j0; j < j1; ++j) {
                float s;
                if (plan.sage) {
                    const int8_t* kj = kh.ints.data() + j * d;
                    int32_t dot = 0;
                    for (int64_t c = 0; c < d; ++c) dot += static_cast<int32_t>(qi[c]) * static_cast<int32_t>(kj[c]);
                    s = static_cast<float>(dot) * dequant;
                    if (!qh.means.empty()) s += w.bias[static_cast<size_t>(j)];
                } else {
                    const float* kj = kh.values.data() + j * d;
                    float dot = 0.0f;
                    for (int64_t c = 0; c < d; ++c) dot += qv[c] * kj[c];
                    s = dot * dequant;
                }
                float x = scale * s;
                if (alibi) x = alibi_biased(x, slope, alibi_distance(window.aligned(i) - j));
                w.x[static_cast<size_t>(j - j0)] = x;
                block_max = nan_max(block_max, x);
            }
            const float m_new = nan_max(m, block_max);
            if (m_new == -kInfinity) continue;  // every score -inf: probabilities 0, nothing changes
            const float alpha = m == -kInfinity ? 0.0f : std::exp(m - m_new);
            std::fill(w.partial.begin(), w.partial.end(), 0.0f);
            float block_sum = 0.0f;
            for (int64_t j = j0; j < j1; ++j) {
                const float prob = std::exp(w.x[static_cast<size_t>(j - j0)] - m_new);
                block_sum += prob;
                const float pq = plan.fp16_pv ? fa4j::quant::quantize_p_fp16(prob) : fa4j::quant::quantize_p_fp8(prob);
                const float* vj = vh.values.data() + j * d;
                for (int64_t c = 0; c < d; ++c) w.partial[c] += pq * vj[c];
            }
            l = l * alpha + block_sum;
            for (int64_t c = 0; c < d; ++c) w.acc[c] = w.acc[c] * alpha + w.partial[c];
            m = m_new;
        }
        // A row that attends no key: out 0, lse -inf.
        const bool any = !keys.empty();
        const float inv = any ? 1.0f / (l * p_scale) : 0.0f;
        for (int64_t c = 0; c < d; ++c) {
            const float v_scale = vh.scales.empty() ? 1.0f : vh.scales.size() == 1 ? vh.scales[0] : vh.scales[c];
            w.acc[c] = any ? w.acc[c] * inv * v_scale : 0.0f;
        }
        store_row(p.out, config.dtype, b, i, h, w.acc.data(), d);
        float lse = any ? m + std::log(l) : -kInfinity;
        if (any && !qh.lse_shift.empty()) lse += qh.lse_shift[static_cast<size_t>(i)];
        p.lse.data[b * p.lse.batch_stride + h * p.lse.head_stride + i * p.lse.seq_stride] = lse;
    }
}

}  // namespace

void quantized_attention_forward(const ForwardProblem& problem) {
    const Plan plan(problem);
    const int threads = resolve_num_threads(problem.config.num_threads);
    const int64_t kv_heads = plan.batch * plan.hkv, q_heads = plan.batch * plan.hq;
    std::vector<KeyHead> keys(static_cast<size_t>(kv_heads));
    std::vector<ValueHead> values(static_cast<size_t>(kv_heads));
    parallel_for(threads, kv_heads, [&](int64_t task, int) {
        const int64_t b = task / plan.hkv, h = task % plan.hkv;
        keys[static_cast<size_t>(task)] = prepare_keys(plan, b, h);
        values[static_cast<size_t>(task)] = prepare_values(plan, b, h);
    });
    const int64_t group = plan.hq / plan.hkv;
    std::vector<QueryHead> queries(static_cast<size_t>(q_heads));
    parallel_for(threads, q_heads, [&](int64_t task, int) {
        const int64_t b = task / plan.hq, h = task % plan.hq;
        queries[static_cast<size_t>(task)] = prepare_queries(plan, keys[static_cast<size_t>(b * plan.hkv + h / group)], b, h);
    });
    const int64_t blocks = (plan.nq + kQuerySmoothBlock - 1) / kQuerySmoothBlock;
    std::vector<std::unique_ptr<RowScratch>> scratch(static_cast<size_t>(threads));
    parallel_for(threads, q_heads * blocks, [&](int64_t task, int worker) {
        auto& mine = scratch[static_cast<size_t>(worker)];
        if (!mine) mine = std::make_unique<RowScratch>(plan.nk, plan.d);
        const int64_t head = task / blocks, u = task % blocks;
        const int64_t b = head / plan.hq, h = head % plan.hq;
        const int64_t kv = b * plan.hkv + h / group;
        const int64_t i0 = u * kQuerySmoothBlock;
        attend_rows(plan, queries[static_cast<size_t>(head)], keys[static_cast<size_t>(kv)], values[static_cast<size_t>(kv)],
                    b, h, i0, std::min<int64_t>(kQuerySmoothBlock, plan.nq - i0), *mine);
    });
}

}  // namespace fa4j::cpu
