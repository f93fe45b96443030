// The verified v1 kernels' entry points (v1_attention_forward.cu, v1_attention_backward.cu), which the
// backend's launch functions call for the kSm90ForwardV1, kSm80ForwardV1 and kSm80BackwardV1 choices. They go
// once the v2 kernels have passed the GPU suite on hardware.
#pragma once

#include <string>

#include "core/attention_problem.hpp"
#include "flashattn4j.h"

namespace fa4j::cuda::v1 {

// Why the v1 forward (the Hopper kernel when sm90, else the FlashAttention-2 kernel) cannot take these
// tensors, or "".
std::string forward_tensors_refusal(int device, const ForwardProblem& problem, bool sm90);
void attention_forward(int device, const ForwardProblem& problem, bool sm90, int head_dim, fa4j_stream stream);

std::string backward_tensors_refusal(int device, const BackwardProblem& problem);
void attention_backward(int device, const BackwardProblem& problem, int head_dim, fa4j_stream stream);

}  // namespace fa4j::cuda::v1
