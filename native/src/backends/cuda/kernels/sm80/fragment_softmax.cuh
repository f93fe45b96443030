// The online softmax over mma.sync accumulator fragments (common/online_softmax.cuh has the arithmetic):
// each lane holds two rows (g and g+8) of each m16 fragment, and the four lanes of a quad hold the
// columns of the same rows. Row maxima are reduced across the quad every tile; the probability sums
// stay per lane and are reduced once, at the end.
#pragma once

#include <cuda_runtime.h>

#include "backends/cuda/kernels/common/online_softmax.cuh"
#include "backends/cuda/kernels/sm80/primitives.cuh"

namespace fa4j::cuda::sm80 {

template <int kMFrags>
struct FragmentSoftmax {
    // The running maximum as a raw score ±s (see common/online_softmax.cuh), and this lane's partial sum
    // of the probabilities relative to it, of rows g (h = 0) and g+8 (h = 1) of each fragment.
    float row_max[kMFrags][2], row_sum[kMFrags][2];

    __device__ __forceinline__ void init() {
#pragma unroll
        for (int mf = 0; mf < kMFrags; ++mf)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                row_max[mf][h] = -INFINITY;
                row_sum[mf][h] = 0.f;
            }
    }

    // Folds one tile of scores into the statistics: s becomes the tile's probabilities (relative to the
    // new maximum) and acc_o is rescaled to the new maximum.
    template <int kSTiles, int kOTiles>
    __device__ __forceinline__ void update(float (&s)[kMFrags][kSTiles][4], float (&acc_o)[kMFrags][kOTiles][4],
                                           float scale_log2, float abs_scale_log2, bool flip) {
        // Every row's maximum first, then the exponentials: the quad reductions overlap (on the Hopper
        // kernel, with each row done in turn, d = 64 measured 6% slower).
        float r_new[kMFrags][2];
#pragma unroll
        for (int mf = 0; mf < kMFrags; ++mf)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                // The tile row's maximum of ±s; the negation is an operand modifier.
                float mx = -INFINITY;
                if (flip) {
#pragma unroll
                    for (int nt = 0; nt < kSTiles; ++nt) mx = fmaxf(mx, fmaxf(-s[mf][nt][2 * h], -s[mf][nt][2 * h + 1]));
                } else {
#pragma unroll
                    for (int nt = 0; nt < kSTiles; ++nt) mx = fmaxf(mx, fmaxf(s[mf][nt][2 * h], s[mf][nt][2 * h + 1]));
                }
                r_new[mf][h] = fmaxf(row_max[mf][h], quad_max(mx));
            }
#pragma unroll
        for (int mf = 0; mf < kMFrags; ++mf)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const float correction = kernels::softmax_rescale(row_max[mf][h], r_new[mf][h], abs_scale_log2);
                const float reference = kernels::softmax_reference(r_new[mf][h], flip);
                row_max[mf][h] = r_new[mf][h];
                float sum = row_sum[mf][h] * correction;
#pragma unroll
                for (int ot = 0; ot < kOTiles; ++ot) {
                    acc_o[mf][ot][2 * h] *= correction;
                    acc_o[mf][ot][2 * h + 1] *= correction;
                }
#pragma unroll
                for (int nt = 0; nt < kSTiles; ++nt)
#pragma unroll
                    for (int e = 2 * h; e < 2 * h + 2; ++e) {
                        s[mf][nt][e] = kernels::softmax_probability(s[mf][nt][e], scale_log2, reference);
                        sum += s[mf][nt][e];
                    }
                row_sum[mf][h] = sum;
            }
    }

    // After the last tile: divides acc_o by each row's sum and returns the rows' logsumexp in lse.
    // l == 0 exactly when the row attends no key (otherwise its maximum contributes about 1): out = 0
    // and lse = -inf there.
    template <int kOTiles>
    __device__ __forceinline__ void finish(float (&acc_o)[kMFrags][kOTiles][4], float (&lse)[kMFrags][2],
                                           float abs_scale) const {
#pragma unroll
        for (int mf = 0; mf < kMFrags; ++mf)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const float l = quad_sum(row_sum[mf][h]);
                const float inv = l > 0.f ? 1.f / l : 0.f;
                lse[mf][h] = kernels::row_logsumexp(row_max[mf][h], l, abs_scale);
#pragma unroll
                for (int ot = 0; ot < kOTiles; ++ot) {
                    acc_o[mf][ot][2 * h] *= inv;
                    acc_o[mf][ot][2 * h + 1] *= inv;
                }
            }
    }
};

}  // namespace fa4j::cuda::sm80
