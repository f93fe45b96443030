#include "backends/cuda/kernel_params.hpp"

#include <cmath>
#include <limits>

#include "backends/cuda/metadata_errors.hpp"
#include "core/softmax_scale.hpp"

namespace fa4j::cuda {

kernels::RowTensor row_tensor(const SeqTensor& t) { return {t.data, t.batch_stride, t.seq_stride, t.head_stride}; }

kernels::LseTensor lse_tensor(const LseTensor& t) { return {t.data, t.batch_stride, t.head_stride, t.seq_stride}; }

kernels::ScoreParams score_params(const AttentionConfig& config) {
    kernels::ScoreParams score;
    const ScoreWindow window = score_window(config);  // causal folded in; kNoBound for unbounded sides
    score.window_left = window.left;
    score.window_right = window.right;
    score.softcap = config.features.softcap;
    score.alibi_slopes = config.features.alibi_slopes;
    score.alibi_batch_stride = config.features.alibi_batch_stride;
    score.alibi_head_stride = config.features.alibi_head_stride;
    return score;
}

void fill_attention_params(int device, const AttentionConfig& config, const SeqTensor& q, const SeqTensor& k,
                           const SeqTensor& v, kernels::AttentionParams& p) {
    const AttentionShape& s = config.shape;
    p.q = row_tensor(q);
    p.k = row_tensor(k);
    p.v = row_tensor(v);
    p.elem = config.dtype == DType::F16 ? kernels::ElemType::F16 : kernels::ElemType::BF16;
    p.batch = static_cast<int>(s.batch);
    p.seqlen_q = static_cast<int>(s.seqlen_q);
    p.seqlen_k = static_cast<int>(s.seqlen_k);
    p.heads_q = static_cast<int>(s.heads_q);
    p.heads_kv = static_cast<int>(s.heads_kv);
    p.group_size = static_cast<int>(s.group_size());
    p.head_dim = static_cast<int>(s.head_dim);
    p.softmax_scale = config.softmax_scale;

    p.score = score_params(config);

    const VarlenInfo& varlen = config.varlen;
    p.seqlens = kernels::SeqlenParams{};
    if (varlen.enabled()) {
        p.seqlens.cu_seqlens_q = varlen.cu_seqlens_q;
        p.seqlens.cu_seqlens_k = varlen.cu_seqlens_k;
        p.seqlens.seqused_k = varlen.seqused_k;
        p.seqlens.total_q = varlen.total_q;
        p.seqlens.total_k = varlen.total_k;
        if (device >= 0) p.seqlens.metadata_error = metadata_error_flag(device);
    }
}

kernels::ForwardParams forward_params(int device, const ForwardProblem& problem) {
    const AttentionConfig& config = problem.config;
    kernels::ForwardParams p{};
    fill_attention_params(device, config, problem.q, problem.k, problem.v, p);
    p.out = row_tensor(problem.out);
    p.lse = lse_tensor(problem.lse);
    if (p.score.transforms()) {
        // Transformed scores carry the scale (ScoreTransform): the softmax only exponentiates them.
        p.scale_log2 = kLog2e;
        p.flip_sign = 0;
        p.abs_scale = 1.0f;
    } else {
        // exp2 replaces exp: scores are multiplied by scale·log2(e) (finite: validation bounds the scale). A
        // zero scale (uniform attention) becomes the smallest normal float, which yields the same
        // probabilities but keeps masked scores at -inf.
        float scale_log2 = softmax_scale_log2(config.softmax_scale);
        if (scale_log2 == 0.0f) scale_log2 = std::numeric_limits<float>::min();
        p.scale_log2 = scale_log2;
        p.flip_sign = scale_log2 < 0.0f ? 1 : 0;
        p.abs_scale = std::fabs(config.softmax_scale);
    }
    return p;
}

kernels::BackwardParams backward_params(int device, const BackwardProblem& problem) {
    kernels::BackwardParams p{};
    fill_attention_params(device, problem.config, problem.q, problem.k, problem.v, p);
    p.out = row_tensor(problem.out);
    p.dout = row_tensor(problem.dout);
    p.dq = row_tensor(problem.dq);
    p.dk = row_tensor(problem.dk);
    p.dv = row_tensor(problem.dv);
    p.lse = lse_tensor(problem.lse);
    return p;
}

}  // namespace fa4j::cuda
