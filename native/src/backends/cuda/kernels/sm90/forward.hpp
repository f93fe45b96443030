// The Hopper (sm_90a) forward kernel (forward_kernel.cuh) as the CUDA backend sees it: plain C++, so that
// the entry point includes this without the kernels. Launched only on compute capability 9.0 devices
// (dispatch/cuda_kernel_table.cpp's SM90 forward row).
#pragma once

#include <cuda_runtime_api.h>

#include "backends/cuda/kernels/common/attention_params.hpp"

namespace fa4j::cuda::sm90 {

// Whether the TMA unit can describe the tensors of `params` (strides multiples of 16 bytes, below 2^40
// bytes); the caller refuses the call for this kernel otherwise.
bool tma_describable(const kernels::ForwardParams& params);

// Queues one forward launch on `stream` with the instantiation for head dim `head_dim` (one of
// cmake/Fa4jInstantiations.cmake's FA4J_KERNEL_SM90_FORWARD_HEAD_DIMS: the smallest >= the call's). Returns
// false, having queued nothing, when there is no such instantiation or TMA cannot describe the tensors.
// Throws fa4j::Error on a CUDA error.
bool run_forward(const kernels::ForwardParams& params, int head_dim, cudaStream_t stream);

// One instantiation (a generated translation unit per head dim and dtype: forward.cu.in).
template <int kHeadDim, kernels::ElemType kElem>
bool run_forward_instance(const kernels::ForwardParams& params, cudaStream_t stream);

}  // namespace fa4j::cuda::sm90
