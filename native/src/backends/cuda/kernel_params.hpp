// The kernels' parameter structs (kernels/common/attention_params.hpp) filled in from a validated problem:
// one place that turns the library's problem description into what every kernel reads.
#pragma once

#include "backends/cuda/kernels/common/attention_params.hpp"
#include "core/attention_problem.hpp"

namespace fa4j::cuda {

// The fields every direction shares: tensors q, k, v, shapes, scale, features, varlen metadata (with the
// device's metadata-error flag when varlen). A negative `device` describes the call without attaching the
// flag, whose first use allocates it: for the tensor checks of a support query, which allocates nothing.
// The per-score features of a call (window with causal folded in, softcap, ALiBi), as every kernel reads them.
kernels::ScoreParams score_params(const AttentionConfig& config);

void fill_attention_params(int device, const AttentionConfig& config, const SeqTensor& q, const SeqTensor& k,
                           const SeqTensor& v, kernels::AttentionParams& params);

kernels::ForwardParams forward_params(int device, const ForwardProblem& problem);

// The backward's tensors and shared fields; the workspace fields (pointers, layout, vec16) are the
// kernel's entry point's to fill.
kernels::BackwardParams backward_params(int device, const BackwardProblem& problem);

kernels::RowTensor row_tensor(const SeqTensor& t);
kernels::LseTensor lse_tensor(const LseTensor& t);

}  // namespace fa4j::cuda
