// What the merge kernel (merge_kernel.cuh) receives: the states' descriptors travel in the launch parameters,
// so a launch takes at most kMaxMergeStates of them. Plain C++, for the entry points that fill it.
#pragma once

#include <cstdint>

#include "backends/cuda/kernels/decode/float_dtype.hpp"

namespace fa4j::cuda::kernels::decode {

constexpr int kMaxMergeStates = 32;
constexpr int kMergeWarpsPerBlock = 4;

struct MergeOperand {
    const void* out;                               // element (0, 0, 0, 0)
    int64_t out_batch, out_seq, out_head;          // strides in elements; channels contiguous
    const float* lse;
    int64_t lse_batch, lse_head, lse_seq;
    FloatDtype dtype;
};

struct MergeParams {
    int64_t batch, seqlen, heads, head_dim;
    int32_t count;
    MergeOperand states[kMaxMergeStates];
    void* out;
    int64_t out_batch, out_seq, out_head;
    FloatDtype out_dtype;
    float* lse;  // null: not written
    int64_t lse_batch, lse_head, lse_seq;
};

}  // namespace fa4j::cuda::kernels::decode
