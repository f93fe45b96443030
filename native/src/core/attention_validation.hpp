// Turns the raw arguments of fa4j_attention_forward/backward into a validated problem, or throws an
// fa4j::Error saying exactly which argument is wrong and why.
#pragma once

#include "core/attention_problem.hpp"
#include "flashattn4j.h"

namespace fa4j {

struct ValidatedForward {
    ForwardProblem problem;
    fa4j_device device;
};

struct ValidatedBackward {
    BackwardProblem problem;
    fa4j_device device;
};

constexpr int64_t kMaxHeadDim = 256;
constexpr int64_t kHeadDimMultiple = 8;

ValidatedForward validate_forward(const fa4j_attention_params* params, const fa4j_tensor* q, const fa4j_tensor* k,
                                  const fa4j_tensor* v, const fa4j_tensor* out, const fa4j_tensor* lse);

ValidatedBackward validate_backward(const fa4j_attention_params* params, const fa4j_tensor* dout, const fa4j_tensor* q,
                                    const fa4j_tensor* k, const fa4j_tensor* v, const fa4j_tensor* out,
                                    const fa4j_tensor* lse, const fa4j_tensor* dq, const fa4j_tensor* dk,
                                    const fa4j_tensor* dv);

}  // namespace fa4j
