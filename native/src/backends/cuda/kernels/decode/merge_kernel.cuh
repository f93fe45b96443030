// The log-sum-exp merge of partial attention results (FA4J_ATTENTION_MERGE; core/lse_merge.hpp defines it):
// one warp per output row (batch, query, head), its lanes across the channels. The states' descriptors
// travel in the kernel's parameters, so a launch takes at most kMaxMergeStates of them (the dispatch
// refuses more). Arithmetic follows the definition's order: weights from the float32 lse in state order,
// then out[c] = sum_s w_s · out_s[c] with s ascending, each product and sum rounded on its own (no fused
// multiply-add), so that it agrees with the CPU up to the exponential's and logarithm's last bits.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace fa4j::cuda::kernels::decode {

constexpr int kMaxMergeStates = 32;
constexpr int kMergeWarpsPerBlock = 4;

enum class MergeDtype : int32_t { F32 = 0, F16 = 1, BF16 = 2 };

struct MergeOperand {
    const void* out;                               // element (0, 0, 0, 0)
    int64_t out_batch, out_seq, out_head;          // strides in elements; channels contiguous
    const float* lse;
    int64_t lse_batch, lse_head, lse_seq;
    MergeDtype dtype;
};

struct MergeParams {
    int64_t batch, seqlen, heads, head_dim;
    int32_t count;
    MergeOperand states[kMaxMergeStates];
    void* out;
    int64_t out_batch, out_seq, out_head;
    MergeDtype out_dtype;
    float* lse;  // null: not written
    int64_t lse_batch, lse_head, lse_seq;
};

__device__ __forceinline__ float merge_load(const void* row, MergeDtype dtype, int64_t c) {
    if (dtype == MergeDtype::F32) return static_cast<const float*>(row)[c];
    if (dtype == MergeDtype::F16) return __half2float(static_cast<const __half*>(row)[c]);
    return __bfloat162float(static_cast<const __nv_bfloat16*>(row)[c]);
}

// Saturating store: beyond the dtype's range the largest finite value, NaN stays NaN.
__device__ __forceinline__ void merge_store(void* row, MergeDtype dtype, int64_t c, float x) {
    if (dtype == MergeDtype::F32) {
        static_cast<float*>(row)[c] = x;
        return;
    }
    const float limit = dtype == MergeDtype::F16 ? 65504.f : 3.38953139e38f;
    x = x > limit ? limit : x < -limit ? -limit : x;  // comparisons with NaN are false: NaN passes
    if (dtype == MergeDtype::F16) static_cast<__half*>(row)[c] = __float2half_rn(x);
    else static_cast<__nv_bfloat16*>(row)[c] = __float2bfloat16_rn(x);
}

__global__ void __launch_bounds__(32 * kMergeWarpsPerBlock) lse_merge_kernel(const __grid_constant__ MergeParams p) {
    __shared__ float weights[kMergeWarpsPerBlock][kMaxMergeStates];
    const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
    const int64_t row = static_cast<int64_t>(blockIdx.x) * kMergeWarpsPerBlock + warp;
    const int64_t rows = p.batch * p.heads * p.seqlen;
    if (row >= rows) return;  // whole warps leave together: no block-wide barrier below
    const int64_t i = row % p.seqlen, h = row / p.seqlen % p.heads, b = row / p.seqlen / p.heads;

    // Weights: every lane computes them alike (a handful of states), lane s keeps w_s in shared memory.
    float m = -INFINITY;
    bool invalid = false;
    for (int s = 0; s < p.count; ++s) {
        const MergeOperand& st = p.states[s];
        const float l = st.lse[b * st.lse_batch + h * st.lse_head + i * st.lse_seq];
        if (isnan(l) || l == INFINITY) invalid = true;
        else m = l > m ? l : m;
    }
    float total = 0.f, merged;
    if (invalid) {
        merged = NAN;
    } else if (m == -INFINITY) {
        merged = -INFINITY;
    } else {
        for (int s = 0; s < p.count; ++s) {
            const MergeOperand& st = p.states[s];
            total = __fadd_rn(total, expf(st.lse[b * st.lse_batch + h * st.lse_head + i * st.lse_seq] - m));
        }
        merged = __fadd_rn(m, logf(total));
        merged = merged > 3.402823466e38f ? 3.402823466e38f : merged;
    }
    if (lane < p.count) {
        const MergeOperand& st = p.states[lane];
        const float l = st.lse[b * st.lse_batch + h * st.lse_head + i * st.lse_seq];
        weights[warp][lane] = invalid ? NAN : m == -INFINITY ? 0.f : __fdiv_rn(expf(l - m), total);
    }
    __syncwarp();

    void* out_row = static_cast<char*>(p.out) +
                    (b * p.out_batch + i * p.out_seq + h * p.out_head) * (p.out_dtype == MergeDtype::F32 ? 4 : 2);
    for (int64_t c = lane; c < p.head_dim; c += 32) {
        float acc = 0.f;
        for (int s = 0; s < p.count; ++s) {
            const float w = weights[warp][s];
            if (w == 0.f) continue;  // weight 0: never read
            const MergeOperand& st = p.states[s];
            const void* in_row = static_cast<const char*>(st.out) +
                                 (b * st.out_batch + i * st.out_seq + h * st.out_head) * (st.dtype == MergeDtype::F32 ? 4 : 2);
            acc = __fadd_rn(acc, __fmul_rn(w, merge_load(in_row, st.dtype, c)));
        }
        merge_store(out_row, p.out_dtype, c, acc);
    }
    if (lane == 0 && p.lse != nullptr) p.lse[b * p.lse_batch + h * p.lse_head + i * p.lse_seq] = merged;
}

}  // namespace fa4j::cuda::kernels::decode
