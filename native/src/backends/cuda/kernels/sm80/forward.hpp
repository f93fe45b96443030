// The sm_80 forward (FlashAttention-2 design on cp.async + ldmatrix + mma.sync; runs on every GPU from
// sm_80 on) as the entry point sees it: one launcher per instantiated (head dim, dtype), defined in the
// translation units cmake/Fa4jInstantiations.cmake generates from forward.cu.in. Plain C++: the entry
// point includes this without the kernels.
#pragma once

#include <cuda_runtime_api.h>

#include "backends/cuda/kernels/common/attention_params.hpp"

namespace fa4j::cuda::sm80 {

// Queues the forward of `params` with the kernel for head dim kHeadDim (>= params.head_dim: the columns
// beyond it are zero-filled, never written) and dtype kElem on `stream`: raises the kernel's dynamic
// shared-memory limit, launches, checks the launch. Every feature of ForwardParams is a run-time field
// (window, softcap, ALiBi, varlen). Throws fa4j::Error on a CUDA error.
template <int kHeadDim, kernels::ElemType kElem>
void run_forward(const kernels::ForwardParams& params, cudaStream_t stream);

// The dtype names of the instantiation templates (@FA4J_ELEM@).
namespace elem {
constexpr kernels::ElemType fp16 = kernels::ElemType::F16;
constexpr kernels::ElemType bf16 = kernels::ElemType::BF16;
}  // namespace elem

}  // namespace fa4j::cuda::sm80
