// The CUDA kernels the library has and which one a call runs on: the one table of arch x head dim x dtype
// x features -> kernel and instantiation, which both the capability query and the call consult, so that
// "is this supported, and if not, why" has one answer. Plain C++ (no CUDA headers): a build without CUDA
// still answers, from the same table.
#pragma once

#include <string>

#include "backends/cuda/cuda_backend.hpp"
#include "core/attention_problem.hpp"
#include "flashattn4j.h"

namespace fa4j {

using cuda::CudaArch;
using cuda::CudaKernel;
using cuda::CudaKernelChoice;


// Why `kernel` cannot run `config` on `arch` in this direction, or "" when it can, from the table alone
// (arch, dtype, head dim, features, sizes); tensor-level conditions (alignment, TMA) are the backend's.
std::string cuda_kernel_refusal(CudaKernel kernel, const AttentionConfig& config, CudaArch arch);

// Whether the build offers `kernel` (verified, or FA4J_UNVERIFIED_KERNELS) and the GPU can run it, or "":
// the table's whole answer for the decode and merge kernels, which take any head dim, dtype and feature.
std::string cuda_kernel_availability(CudaKernel kernel, CudaArch arch);

// The kernels a family may use for a direction, in order of preference (AUTO: fastest first).
// Fills `out` (at most kMaxCudaCandidates) and returns the count.
constexpr int kMaxCudaCandidates = 4;
int cuda_kernel_candidates(fa4j_attention_direction direction, fa4j_kernel_family family, CudaKernel* out);

// The head-dim instantiation of `kernel` for a call of head dim `head_dim`, or 0 if it has none.
int cuda_kernel_head_dim(CudaKernel kernel, int64_t head_dim);

}  // namespace fa4j
