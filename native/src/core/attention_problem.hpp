// A validated attention call, in the form every backend consumes: shapes resolved, element pointers
// offset, strides in elements. Built only by core/attention_validation.cpp, so a backend may trust it.
#pragma once

#include <cstdint>

#include "core/dtype.hpp"

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

struct AttentionConfig {
    AttentionShape shape;
    DType dtype;
    float softmax_scale;
    bool causal;
    int num_threads;  // CPU backend; 0 = default
};

struct ForwardProblem {
    AttentionConfig config;
    SeqTensor q, k, v;
    SeqTensor out;
    LseTensor lse;
};

struct BackwardProblem {
    AttentionConfig config;
    SeqTensor dout, q, k, v, out;
    LseTensor lse;
    SeqTensor dq, dk, dv;
};

}  // namespace fa4j
