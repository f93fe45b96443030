// Turns the raw arguments of an attention call into a validated problem, or throws an fa4j::Error saying
// exactly which argument is wrong and why. One path for every entry point: fa4j_attention's arguments
// struct, and the older fa4j_attention_forward/backward, which are expressed as one.
#pragma once

#include "core/attention_problem.hpp"
#include "flashattn4j.h"

namespace fa4j {

struct ValidatedForward {
    ForwardProblem problem;
    fa4j_device device;
    fa4j_kernel_family family = FA4J_KERNEL_AUTO;
};

struct ValidatedBackward {
    BackwardProblem problem;
    fa4j_device device;
    fa4j_kernel_family family = FA4J_KERNEL_AUTO;
};

struct ValidatedDecode {
    DecodeProblem problem;
    fa4j_device device;
    fa4j_kernel_family family = FA4J_KERNEL_AUTO;
};

struct ValidatedMerge {
    MergeProblem problem;
    fa4j_device device;
    fa4j_kernel_family family = FA4J_KERNEL_AUTO;
};

struct ValidatedCall {
    fa4j_attention_direction direction;
    ValidatedForward forward;    // when direction == FA4J_ATTENTION_FORWARD
    ValidatedBackward backward;  // when direction == FA4J_ATTENTION_BACKWARD
    ValidatedDecode decode;      // when direction == FA4J_ATTENTION_DECODE
    ValidatedMerge merge;        // when direction == FA4J_ATTENTION_MERGE
};

constexpr int64_t kMaxHeadDim = 256;
constexpr int64_t kHeadDimMultiple = 8;
// Paged KV caches: page sizes are multiples of this.
constexpr int64_t kPageSizeMultiple = 8;

ValidatedCall validate(const fa4j_attention_args* args);

// The older entry points' arguments as an fa4j_attention_args (tensors are borrowed).
fa4j_attention_args forward_args(const fa4j_attention_params* params, const fa4j_tensor* q, const fa4j_tensor* k,
                                 const fa4j_tensor* v, const fa4j_tensor* out, const fa4j_tensor* lse);
fa4j_attention_args backward_args(const fa4j_attention_params* params, const fa4j_tensor* dout, const fa4j_tensor* q,
                                  const fa4j_tensor* k, const fa4j_tensor* v, const fa4j_tensor* out,
                                  const fa4j_tensor* lse, const fa4j_tensor* dq, const fa4j_tensor* dk,
                                  const fa4j_tensor* dv);

}  // namespace fa4j
