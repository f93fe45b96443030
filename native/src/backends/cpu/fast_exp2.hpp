// 2^x for the softmax, written so that loops over a score row vectorise. libm's expf/exp2f are opaque
// scalar calls without -ffast-math (which the build avoids), and one exponential per score costs as much
// as a sizeable part of the score's two dot products. The kernels take score differences to log2
// units before exponentiating (log2(e) folded into the factor they multiply by anyway), so exp2 is what
// they need.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "backends/cpu/simd.hpp"

namespace fa4j::cpu {

// 2^min(x, 0), a softmax probability: never above 1, also where rounding (or a logsumexp that does
// not belong to the scores) leaves x above 0. Within 2 ulp of 2^x for -127 < x <= 0; 0 for x <= -127
// (including -inf); NaN for NaN.
template <class Isa>
FA4J_INLINE float probability_exp2(float x) {
    // Clamp x to [-127, 0] on its integer image: sign-magnitude turned into two's complement orders
    // like the floats. All of it is branch-free integer arithmetic on purpose: under the default
    // -ftrapping-math GCC will not turn float comparisons into vector selects, and it splits integer
    // ternaries into paths that duplicate the float work below, either way leaving the loop scalar.
    constexpr int32_t k127 = 0x42fe0000;  // 127.0f
    uint32_t x_bits;
    std::memcpy(&x_bits, &x, sizeof x_bits);
    const uint32_t magnitude = x_bits & 0x7fffffffu;
    const int32_t x_sign = -static_cast<int32_t>(x_bits >> 31);  // 0 or -1
    int32_t key = (static_cast<int32_t>(magnitude) ^ x_sign) - x_sign;
    key = std::min(std::max(key, -k127), 0);
    const int32_t key_sign = -static_cast<int32_t>(static_cast<uint32_t>(key) >> 31);
    const uint32_t clamped_bits =
        static_cast<uint32_t>((key ^ key_sign) - key_sign) | (static_cast<uint32_t>(key_sign) & 0x80000000u);
    float clamped;
    std::memcpy(&clamped, &clamped_bits, sizeof clamped);

    // Adding 1.5 * 2^23 leaves round-to-nearest(clamped) in the low mantissa bits.
    constexpr float kRound = 12582912.0f;
    const float shifted = clamped + kRound;
    const float n = shifted - kRound;
    const float f = clamped - n;  // exact, in [-0.5, 0.5]
    // Taylor series of e^(f ln 2) to degree 7: truncation error below 6e-9 on [-0.5, 0.5].
    float p = 1.5252733804059838e-05f;
    p = madd<Isa>(p, f, 1.5403530393381606e-04f);
    p = madd<Isa>(p, f, 1.3333558146428441e-03f);
    p = madd<Isa>(p, f, 9.6181291076284772e-03f);
    p = madd<Isa>(p, f, 5.5504108664821576e-02f);
    p = madd<Isa>(p, f, 2.4022650695910071e-01f);
    p = madd<Isa>(p, f, 6.9314718055994531e-01f);
    p = madd<Isa>(p, f, 1.0f);
    // The low bits of `shifted` are 0x400000 + n; adding the exponent bias and shifting into the exponent
    // field drops everything above them, giving the float 2^n (0.0 for n = -127).
    uint32_t scale_bits;
    std::memcpy(&scale_bits, &shifted, sizeof scale_bits);
    scale_bits = (scale_bits + 127u) << 23;
    float scale;
    std::memcpy(&scale, &scale_bits, sizeof scale);

    // The clamp turned NaN into a number; adding NaN (or +0) brings it back without a float select.
    const int32_t above_inf = static_cast<int32_t>(0x7f800000u - magnitude);  // negative exactly for NaN
    const uint32_t nan_bits = (static_cast<uint32_t>(above_inf) >> 31) * 0x7fc00000u;
    float nan_or_zero;
    std::memcpy(&nan_or_zero, &nan_bits, sizeof nan_or_zero);
    return p * scale + nan_or_zero;
}

}  // namespace fa4j::cpu
