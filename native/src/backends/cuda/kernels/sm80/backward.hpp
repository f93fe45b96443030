// The SM80 backward as its entry point (attention_backward_cuda.cu) sees it: one launcher per head-dim
// instantiation and dtype, each defined in a translation unit generated from backward.cu.in
// (cmake/Fa4jInstantiations.cmake). Plain C++ apart from cudaStream_t.
#pragma once

#include <cuda_runtime_api.h>

#include "backends/cuda/kernels/common/attention_params.hpp"

namespace fa4j::cuda::kernels::sm80 {

// The dtype names of the generated translation units (@FA4J_ELEM@).
namespace elem {
inline constexpr ElemType fp16 = ElemType::F16;
inline constexpr ElemType bf16 = ElemType::BF16;
}  // namespace elem

// Queues the backward's three kernels (preprocess, main, dQ conversion) on `stream` for a call of head dim
// p.head_dim <= kD, whose workspace p describes (backward_tiles.hpp: its layout; the caller allocates it).
// Throws fa4j::Error: FA4J_ERROR_UNSUPPORTED when the device has too little shared memory per block (the
// kernel table refuses those GPUs first), a CUDA error when a launch fails.
template <int kD, ElemType kElem>
void run_backward(const BackwardParams& p, cudaStream_t stream);

}  // namespace fa4j::cuda::kernels::sm80
