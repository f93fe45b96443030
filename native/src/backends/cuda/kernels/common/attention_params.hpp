// What the attention kernels receive: one struct per direction on a shared base, plain C++ (no CUDA
// types) so that the entry points fill them in without seeing device code. Kernels read features from
// here at run time: a zero-cost-when-absent feature (window, softcap, ALiBi, varlen) is a field, not a
// template instantiation.
#pragma once

#include <cstdint>

#include "core/score_mask.hpp"

namespace fa4j::cuda::kernels {

enum class ElemType : uint8_t { F16, BF16 };

// A [batch, seq, heads, head_dim] tensor with contiguous head_dim; `data` points at element (0,0,0,0).
// Varlen tensors are [tokens, heads, head_dim]: batch_stride is 0 and a sequence's rows start at its
// first packed row (SeqlenInfo), so one address formula serves both.
struct RowTensor {
    void* data;
    int64_t batch_stride, row_stride, head_stride;
};

// The float32 logsumexp, [batch, heads, seq] dense, [heads, tokens] varlen (batch_stride 0).
struct LseTensor {
    float* data;
    int64_t batch_stride, head_stride, row_stride;
};

// The per-score features (core/score_mask.hpp states the rules): scale, softcap, ALiBi bias, window mask,
// in that order. The causal mask is window_right = 0.
struct ScoreParams {
    int64_t window_left = ScoreWindow::kNoBound;
    int64_t window_right = ScoreWindow::kNoBound;
    float softcap = 0;                     // 0: none
    const float* alibi_slopes = nullptr;   // float32 on the device; null: none
    int64_t alibi_batch_stride = 0, alibi_head_stride = 0;

    FA4J_HOST_DEVICE bool transforms() const { return softcap > 0.0f || alibi_slopes != nullptr; }
};

// Variable-length batches (flash_attn_varlen_func). The vectors live on the device and are not read on
// the host: kernels clamp whatever they say to [0, total) and to the maximum lengths, and raise
// *metadata_error when they had to (SeqlenInfo), which the next synchronising call reports.
struct SeqlenParams {
    const int32_t* cu_seqlens_q = nullptr;  // [batch + 1]; null: a dense batch
    const int32_t* cu_seqlens_k = nullptr;  // [batch + 1]
    const int32_t* seqused_k = nullptr;     // [batch] or null: keys of sequence b actually used
    int64_t total_q = 0, total_k = 0;       // rows of the packed tensors
    int* metadata_error = nullptr;          // the device's flag (metadata_errors.hpp)

    FA4J_HOST_DEVICE bool varlen() const { return cu_seqlens_q != nullptr; }
};

struct AttentionParams {
    RowTensor q, k, v;
    ElemType elem;
    int batch;      // sequences
    int seqlen_q;   // dense: the length; varlen: the maximum (max_seqlen_q), which sizes the grid
    int seqlen_k;
    int heads_q, heads_kv;
    int group_size;  // query heads per key/value head (GQA): kv head = head / group_size
    int head_dim;    // the call's head dim, <= the kernel's: columns beyond it are zero-filled, never written
    float softmax_scale;
    ScoreParams score;
    SeqlenParams seqlens;
};

struct ForwardParams : AttentionParams {
    RowTensor out;
    LseTensor lse;
    // The online softmax's constants (common/online_softmax: 2^((s - ref)·scale_log2) on raw scores s). For
    // transformed scores (softcap, ALiBi) s is the transformed score, which carries the scale already:
    // scale_log2 = log2(e), abs_scale = 1, flip_sign = 0.
    float scale_log2;  // never 0: a zero scale becomes the smallest normal float (same uniform softmax)
    int flip_sign;     // scale < 0: the row maximum of scale·s is scale·min(s), and masked scores are +inf
    float abs_scale;   // lse = max·abs_scale + ln(sum)
};

// The backward's: P is recomputed from the forward's lse (P = exp(scale·s - lse), or exp(t - lse) for
// transformed scores t, whose lse the forward took over t). The workspace is the kernels' own (allocated by
// the entry point per call; kernels/sm80/backward_tiles.hpp lays out its rows).
struct BackwardParams : AttentionParams {
    RowTensor out, dout;   // inputs, shaped like q
    RowTensor dq;          // output, like q (written, never read)
    RowTensor dk, dv;      // outputs, like k and v
    LseTensor lse;         // the forward's, natural log; -inf for a row that attends nothing

    // Workspace: per query head, ws_rows_per_head rows of
    float* dq_accum;  // fp32 dQ / scale [rows][head_dim_pad], accumulated over key tiles (zeroed first)
    float* lse_rows;  // lse per row; +inf where P must be 0 (a row that attends nothing, padding rows)
    float* delta;     // D = rowsum(dO ∘ O) per row; 0 for padding rows
    int64_t ws_rows_per_head;
    int seqlen_q_pad;  // dense: the rows per (sequence, head): seqlen_q rounded up to the row padding
    // Every 16-bit tensor's base address is 16-byte aligned and its strides are multiples of 8 elements, so
    // tiles move as 16-byte vectors (cp.async); otherwise the kernels fall back to 2-byte accesses.
    bool vec16;
};

}  // namespace fa4j::cuda::kernels
