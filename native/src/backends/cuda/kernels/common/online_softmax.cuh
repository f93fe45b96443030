// The online softmax arithmetic of the forward kernels (the sm_80 forward and the Hopper forward), one
// definition for both: how a row's running maximum is kept, what each tile subtracts before the exp2,
// how accumulators move to a new maximum, and the row's logsumexp. The per-fragment loops around these
// are the kernels' own (they depend on the accumulator layout).
//
// Each query row keeps its running maximum as a raw score r = ±s (the sign of the scale, so that the
// largest r carries the most weight) and exponentiates 2^((s - s_max)·scale_log2): the maximum gets
// exactly 1 and nothing exceeds it, whatever the scale. FlashAttention's 2^(fma(s, scale_log2, -m)),
// m = fl(r·|scale_log2|), saves the FADD but is exact only relative to the rounded m: once |m| passes
// about 2^24 (a scale of 1e10, inputs of 1e4) every probability of a row carries a factor 2^(r·c - m)
// that overflows or flushes to 0, and out came out as NaN. Measured on an H200 against the fused form:
// the Hopper kernel 1-3% slower (about the noise of the measurement: its softmax waits on the exp
// unit), the FlashAttention-2 kernel 3% faster at d = 64 and 5-9% slower at d = 128.
//
// Scores with a transform (softcap, ALiBi: common/score_transform.cuh) carry the scale already; the
// kernels then run this with scale_log2 = log2(e), abs_scale = 1 and no sign flip (ForwardParams).
#pragma once

#include <cuda_runtime.h>

#include "core/softmax_scale.hpp"

namespace fa4j::cuda::kernels {

// 2^x on the special-function unit (one MUFU.EX2; relative error ~2^-22). exp2(-inf) = 0.
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

// What a tile subtracts from s: the score of the row maximum, or 0 for a row that has seen only masked
// keys (its scores are all masked: exp2(-inf) = 0, while subtracting -inf would give NaN).
__device__ __forceinline__ float softmax_reference(float r, bool flip) { return r == -INFINITY ? 0.f : (flip ? -r : r); }

__device__ __forceinline__ float softmax_probability(float s, float scale_log2, float reference) {
    return fast_exp2(__fmul_rn(s - reference, scale_log2));
}

// The factor that moves a row's accumulators from maximum r_old to r_new (c = |scale_log2|).
__device__ __forceinline__ float softmax_rescale(float r_old, float r_new, float c) {
    return r_old == -INFINITY ? 0.f : fast_exp2(__fmul_rn(r_old - r_new, c));  // nothing accumulated yet
}

// The row's logsumexp from its maximum r and probability sum l: r·|scale| rounded on its own, as the
// backward rounds scale·s when it recomputes P = exp(scale·s - lse), so that the row maximum gets
// exactly exp(-ln l) there. -inf for a row that attends nothing (l = 0); saturated at ±FLT_MAX
// (reachable only beyond the documented input range).
__device__ __forceinline__ float row_logsumexp(float r, float l, float abs_scale) {
    if (!(l > 0.f)) return -INFINITY;
    const float lse = __fmul_rn(r, abs_scale) + log2f(l) * kLn2;
    constexpr float kMax = 3.402823466e38f;
    return lse > kMax ? kMax : lse < -kMax ? -kMax : lse;  // NaN (from NaN inputs) stays NaN
}

}  // namespace fa4j::cuda::kernels
