// A validated attention call, in the form every backend consumes: shapes resolved, element pointers
// offset, strides in elements. Built only by core/attention_validation.cpp, so a backend may trust it.
#pragma once

#include <cstdint>
#include <vector>

#include "core/dtype.hpp"
#include "core/kv_cache.hpp"

namespace fa4j {

struct AttentionShape {
    int64_t batch;
    int64_t seqlen_q;
    int64_t seqlen_k;
    int64_t heads_q;
    int64_t heads_kv;
    int64_t head_dim;

    int64_t group_size() const { return heads_q / heads_kv; }  // query heads per key/value head
    // Keys a causal query row may attend: j <= i + causal_offset() (bottom-right alignment).
    int64_t causal_offset() const { return seqlen_k - seqlen_q; }
};

// A [batch, seq, head, head_dim] tensor with contiguous head_dim. `data` points at element (0,0,0,0).
struct SeqTensor {
    void* data;
    int64_t batch_stride;
    int64_t seq_stride;
    int64_t head_stride;
};

// The float32 [batch, head, seq] logsumexp tensor.
struct LseTensor {
    float* data;
    int64_t batch_stride;
    int64_t head_stride;
    int64_t seq_stride;
};

// What is applied to each score after q·k (fa4j_attention_args in the header): the order is scale, softcap,
// ALiBi bias, then the window mask. Defaults are "none".
struct ScoreFeatures {
    float softcap = 0;  // 0: none; else s = softcap * tanh(s / softcap)
    // Window around the aligned query position i' = i + seqlen_k - seqlen_q: key j is kept iff
    // i' - window_left <= j <= i' + window_right; kUnbounded: no bound on that side. Validation folds
    // `causal` in (window_right = min(window_right, 0)), so backends read the window alone.
    static constexpr int64_t kUnbounded = -1;
    int64_t window_left = kUnbounded;
    int64_t window_right = kUnbounded;
    // ALiBi: s -= slope * |i' - j| with slope = alibi_slopes[b * alibi_batch_stride + h * alibi_head_stride]
    // (float32, on the call's device); null: none.
    const float* alibi_slopes = nullptr;
    int64_t alibi_batch_stride = 0;
    int64_t alibi_head_stride = 0;

    bool has_window() const { return window_left != kUnbounded || window_right != kUnbounded; }
    bool any() const { return softcap != 0 || has_window() || alibi_slopes != nullptr; }
};

// Variable-length batches (flash_attn_varlen_func): sequence b's query rows are cu_seqlens_q[b] ..
// cu_seqlens_q[b+1] - 1 of the packed tensors (whose batch stride is then 0), likewise for keys, of which
// only the first seqused_k[b] are used when seqused_k is given. Pointers are on the call's device; for CPU
// calls validation has checked the values.
struct VarlenInfo {
    const int32_t* cu_seqlens_q = nullptr;  // null: a dense batch
    const int32_t* cu_seqlens_k = nullptr;
    const int32_t* seqused_k = nullptr;
    int64_t total_q = 0, total_k = 0;  // rows of the packed tensors
    bool enabled() const { return cu_seqlens_q != nullptr; }
};

// ---- quantization (flashattn4j.h, "Quantized attention") ----------------------------------------------
enum class QuantMode { None = 0, SageInt8Fp8 = 1, SageInt8Fp16 = 2, SageInt4Fp8 = 3, SageInt4Fp16 = 4, Fp8 = 5 };

struct QuantConfig {
    QuantMode mode = QuantMode::None;
    bool smooth_k = true;  // when the library quantizes k
    bool smooth_q = true;  // SAGE_INT4_* when the library quantizes q
    bool enabled() const { return mode != QuantMode::None; }
};

// One of q, k, v of a quantized call: its dtype (a compute dtype: the library quantizes it; else the mode's
// quantized dtype for it) and, when pre-quantized, its contiguous float32 scale tensor (null otherwise).
struct QuantOperand {
    DType dtype = DType::F32;
    const float* scale = nullptr;
    bool prequantized() const { return scale != nullptr; }
};

struct QuantInputs {
    QuantOperand q, k, v;
    const float* k_mean = nullptr;  // [batch, heads_kv, head_dim] contiguous: the caller's mean of a pre-quantized k
};
// -------------------------------------------------------------------------------------------------

struct AttentionConfig {
    AttentionShape shape;  // varlen: batch = number of sequences, seqlen_q/k = max_seqlen_q/k
    DType dtype;           // of q, k, v, out; quantized calls: of out (q, k, v: QuantInputs)
    float softmax_scale;
    bool causal;      // also folded into features.window_right
    int num_threads;  // CPU backend; 0 = default
    bool deterministic = false;  // results bitwise identical run to run (fa4j_attention_args.deterministic)
    ScoreFeatures features;
    VarlenInfo varlen;
    QuantConfig quant{};  // mode None: plain attention
};

struct ForwardProblem {
    AttentionConfig config;
    SeqTensor q, k, v;  // quantized calls: strides in elements of each operand's own dtype (int4: nibbles)
    SeqTensor out;
    LseTensor lse;
    QuantInputs quant{};  // quantized calls only
};

struct BackwardProblem {
    AttentionConfig config;
    SeqTensor dout, q, k, v, out;
    LseTensor lse;
    SeqTensor dq, dk, dv;
};

// KV-cache attention (FA4J_ATTENTION_DECODE). config.shape: batch, seqlen_q = new queries, seqlen_k = the
// capacity (no sequence holds more keys), heads, head_dim; config.varlen is off. Sequence b attends its
// first cache_seqlens[b] + seqlen_new cache positions, after k_new/v_new have been written at
// cache_seqlens[b] .. (+ seqlen_new), and, with a prefix, the prefix's keys before them.
struct DecodeProblem {
    AttentionConfig config;
    SeqTensor q;
    KvCacheLayout cache;
    CacheTensor k_cache, v_cache;
    const int32_t* cache_seqlens;  // [batch], on the call's device (CPU: checked)
    SeqTensor k_new, v_new;        // data null: nothing to append
    int64_t seqlen_new;            // 0 without k_new
    SeqTensor prefix_k, prefix_v;  // [prefix_len, heads_kv, head_dim] as batch stride 0; data null: no prefix
    int64_t prefix_len;
    bool has_prefix;
    SeqTensor out;
    DType out_dtype;  // q's dtype or F32
    LseTensor lse;    // data null: not written
    int num_splits;   // 0: heuristic
};

// One partial result of FA4J_ATTENTION_MERGE: out [batch, seqlen, heads, head_dim] and lse [batch, heads, seqlen].
struct MergeState {
    SeqTensor out;
    DType dtype;
    LseTensor lse;
};

struct MergeProblem {
    int64_t batch, seqlen, heads, head_dim;
    std::vector<MergeState> states;
    SeqTensor out;
    DType out_dtype;
    LseTensor lse;  // data null: not written
    int num_threads;
};

}  // namespace fa4j
