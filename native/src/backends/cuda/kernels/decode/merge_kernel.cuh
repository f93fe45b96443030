// The log-sum-exp merge of partial attention results (FA4J_ATTENTION_MERGE; core/lse_merge.hpp defines it):
// one warp per output row (batch, query, head), its lanes across the channels. The states' descriptors
// travel in the kernel's parameters, so a launch takes at most kMaxMergeStates of them (the dispatch
// refuses more). Arithmetic follows the definition's order: weights from the float32 lse in state order,
// then out[c] = sum_s w_s · out_s[c] with s ascending, each product and sum rounded on its own (no fused
// multiply-add), so that it agrees with the CPU up to the exponential's and logarithm's last bits.
#pragma once

#include <cstdint>

#include "backends/cuda/kernels/decode/float_values.cuh"
#include "backends/cuda/kernels/decode/merge_params.hpp"

namespace fa4j::cuda::kernels::decode {

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
                    (b * p.out_batch + i * p.out_seq + h * p.out_head) * float_bytes(p.out_dtype);
    for (int64_t c = lane; c < p.head_dim; c += 32) {
        float acc = 0.f;
        for (int s = 0; s < p.count; ++s) {
            const float w = weights[warp][s];
            if (w == 0.f) continue;  // weight 0: never read
            const MergeOperand& st = p.states[s];
            const void* in_row = static_cast<const char*>(st.out) +
                                 (b * st.out_batch + i * st.out_seq + h * st.out_head) * float_bytes(st.dtype);
            acc = __fadd_rn(acc, __fmul_rn(w, load_float(in_row, st.dtype, c)));
        }
        store_float(out_row, p.out_dtype, c, acc);
    }
    if (lane == 0 && p.lse != nullptr) p.lse[b * p.lse_batch + h * p.lse_head + i * p.lse_seq] = merged;
}

}  // namespace fa4j::cuda::kernels::decode
