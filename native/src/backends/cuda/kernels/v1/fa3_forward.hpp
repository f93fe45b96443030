// The Hopper (sm_90a) forward kernels in the FlashAttention-3 spirit (fa3_forward_kernel.cuh): same
// parameters and semantics as the FlashAttention-2 forward (fa2_forward.hpp), launched only on compute
// capability 9.0 devices. Plain C++: the entry point includes this without the kernels.
#pragma once

#include <cuda_runtime_api.h>

#include "backends/cuda/kernels/v1/fa2_forward.hpp"

namespace fa4j::cuda::v1::fa3 {

// Queues one forward launch of the Hopper kernel for head dim kHeadDim (a call with head dim d runs on
// the smallest of 64, 128 that is >= d). Returns false, having queued nothing, when the tensors'
// strides cannot be described to the TMA unit (a sequence stride of 0, say): the caller then runs the
// FlashAttention-2 kernel. Throws fa4j::Error on a CUDA error.
// Whether the TMA unit can describe the tensors of `params` (their strides and alignment).
bool tma_describable(const fa2::ForwardParams& params, fa2::Elem elem);

template <int kHeadDim>
bool run_forward(const fa2::ForwardParams& params, fa2::Elem elem, bool causal, cudaStream_t stream);

template <>
bool run_forward<64>(const fa2::ForwardParams&, fa2::Elem, bool, cudaStream_t);
template <>
bool run_forward<128>(const fa2::ForwardParams&, fa2::Elem, bool, cudaStream_t);

}  // namespace fa4j::cuda::v1::fa3
