// The CPU backend: FlashAttention-2 on the CPU (tiled over keys, online softmax, O(N) extra memory),
// multi-threaded, synchronous. Also the second implementation GPU kernels are checked against.
#pragma once

#include "core/attention_problem.hpp"

namespace fa4j::cpu {

void attention_forward(const ForwardProblem& problem);
void attention_backward(const BackwardProblem& problem);

// KV-cache attention (attention_decode_cpu.cpp): appends, split-KV with GQA packing, shared prefix.
void attention_decode(const DecodeProblem& problem);
// The log-sum-exp merge of partial results (core/lse_merge.hpp).
void attention_merge(const MergeProblem& problem);
// Quantized attention (problem.config.quant.mode != None): the reference implementation of the rules of
// flashattn4j.h, "Quantized attention" (quantized_attention_cpu.cpp).
void quantized_attention_forward(const ForwardProblem& problem);

}  // namespace fa4j::cpu
