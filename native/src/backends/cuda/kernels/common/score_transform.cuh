// The transform of a score on the device, written once for every kernel: the raw dot product s = q·k
// becomes scale·s, then softcap·tanh(·/softcap), then minus slope·|i' - j| (ALiBi), exactly as
// core/score_mask.hpp defines them for every backend. Kernels without softcap or ALiBi never call it:
// they keep raw scores and fold the scale into the exponent (ForwardParams::scale_log2).
#pragma once

#include <cuda_runtime.h>

#include "backends/cuda/kernels/common/attention_params.hpp"
#include "core/score_mask.hpp"

namespace fa4j::cuda::kernels {

// tanh on the device, with 1 - tanh² for the backward's dS (the forward and backward use this same one,
// so P is recomputed bit for bit). tanhf, not tanh.approx: its 2^-11 relative error would show in fp16
// gradients against the float64 reference.
// The derivative comes from e = exp(-2|x|) as 4e / (1 + e)² (what the CPU backend computes), not from
// 1 - t²: where tanh nears ±1 the rounded t has lost the digits that 1 - t² needs (at |x| = 5 the
// derivative is 1.8e-4 and 1 - t² keeps about two of its digits).
struct DeviceTanh {
    __device__ __forceinline__ float operator()(float x, float& derivative) const {
        const float t = tanhf(x);
        const float e = __expf(-2.0f * fabsf(x));
        const float one_plus_e = 1.0f + e;
        derivative = fabsf(x) < 0.5f ? tanh_derivative_from_value(t) : 4.0f * e / (one_plus_e * one_plus_e);
        return t;
    }
};

// The transform for one (batch, query head) of one sequence.
struct ScoreTransform {
    float scale;
    float softcap;      // 0: none
    float inv_softcap;  // 1 / softcap: a multiplication in the loop, not an IEEE division (whose
                        // slow path costs the SM80 kernels up to 160 bytes of spills)
    float slope;     // 0: no ALiBi
    int64_t diagonal;  // seqlen_k - seqlen_q of the sequence: query i sits at i' = i + diagonal

    __device__ __forceinline__ static ScoreTransform of(const AttentionParams& p, int64_t seqlen_q, int64_t seqlen_k,
                                                        int b, int h) {
        ScoreTransform t;
        t.scale = p.softmax_scale;
        t.softcap = p.score.softcap;
        t.inv_softcap = p.score.softcap > 0.0f ? 1.0f / p.score.softcap : 0.0f;
        t.slope = p.score.alibi_slopes != nullptr
                      ? p.score.alibi_slopes[b * p.score.alibi_batch_stride + h * p.score.alibi_head_stride]
                      : 0.0f;
        t.diagonal = seqlen_k - seqlen_q;
        return t;
    }

    // The transformed score of query row i and key j, and in `cap_derivative` d(softcap part)/d(scaled s)
    // (1 without softcap), which the backward multiplies dS by.
    __device__ __forceinline__ float operator()(float s, int64_t i, int64_t j, float& cap_derivative) const {
        float t = s * scale;
        cap_derivative = 1.0f;
        // softcap · tanh(t / softcap) (core/score_mask.hpp's soft_cap), with the division as a product.
        if (softcap > 0.0f) t = softcap * DeviceTanh{}(t * inv_softcap, cap_derivative);
        if (slope != 0.0f) t = alibi_biased(t, slope, alibi_distance(i + diagonal - j));
        return t;
    }
    __device__ __forceinline__ float operator()(float s, int64_t i, int64_t j) const {
        float unused;
        return (*this)(s, i, j, unused);
    }
};

}  // namespace fa4j::cuda::kernels
