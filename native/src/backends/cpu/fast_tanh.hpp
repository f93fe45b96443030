// tanh for the softcap (core/score_mask.hpp), written so that loops over a score row vectorise: libm's
// tanhf is an opaque scalar call costing more than the rest of a score's work together.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "backends/cpu/fast_exp2.hpp"
#include "backends/cpu/simd.hpp"
#include "core/score_mask.hpp"
#include "core/softmax_scale.hpp"

namespace fa4j::cpu {

// tanh(x), and in `derivative` 1 - tanh²(x), for every float: tanh within 3.4 ulp, the derivative within
// 64 ulp of itself (the rounding of the exponent -2|x|·log2(e), growing with |x|; checked against double
// over all 2^32 inputs, both ISA levels), ±1 and 0 beyond |x| = 44, NaN for NaN. Odd, so it works on
// a = |x| and puts the sign back:
//   a < 0.5   the Taylor series to x^17 (truncation below 2^-29 relative), and (1 - t)(1 + t);
//   a >= 0.5  with e = e^-2a <= 0.37: t = 1 - 2e / (1 + e), which rounds like 1 - (something small) as t
//             nears 1, and the derivative 4e / (1 + e)², which keeps its relative precision where
//             1 - t² would be all cancellation. The softcap's gradient is the derivative times dS, and
//             for saturated scores 1 - t² from a rounded t would be off by its whole size.
// Both branches are computed and one is picked with integer masks: as in fast_exp2.hpp, a float select
// would keep GCC from vectorising.
template <class Isa>
FA4J_INLINE float tanh_vectorizable(float x, float& derivative) {
    uint32_t x_bits;
    std::memcpy(&x_bits, &x, sizeof x_bits);
    const uint32_t sign = x_bits & 0x80000000u;
    const uint32_t magnitude_bits = x_bits & 0x7fffffffu;
    float a;
    std::memcpy(&a, &magnitude_bits, sizeof a);

    const float e = probability_exp2<Isa>(a * (-2.0f * kLog2e));
    const float one_plus_e = 1.0f + e;
    const float large = 1.0f - 2.0f * e / one_plus_e;
    const float large_derivative = 4.0f * e / (one_plus_e * one_plus_e);

    const float s = std::min(a, 0.5f);  // keeps the unused series finite for large |x|
    const float s2 = s * s;
    float p = 5.9002744094558598e-04f;
    p = madd<Isa>(p, s2, -1.4558343870513183e-03f);
    p = madd<Isa>(p, s2, 3.5921280365724810e-03f);
    p = madd<Isa>(p, s2, -8.8632355299021966e-03f);
    p = madd<Isa>(p, s2, 2.1869488536155203e-02f);
    p = madd<Isa>(p, s2, -5.3968253968253971e-02f);
    p = madd<Isa>(p, s2, 1.3333333333333333e-01f);
    p = madd<Isa>(p, s2, -3.3333333333333333e-01f);
    const float small = madd<Isa>(s * s2, p, s);
    const float small_derivative = tanh_derivative_from_value(small);

    constexpr uint32_t kHalfBits = 0x3f000000u;  // 0.5f
    const uint32_t use_small = 0u - static_cast<uint32_t>(magnitude_bits < kHalfBits);
    const auto pick = [use_small](float if_small, float if_large) {
        uint32_t small_bits, large_bits;
        std::memcpy(&small_bits, &if_small, sizeof small_bits);
        std::memcpy(&large_bits, &if_large, sizeof large_bits);
        return (small_bits & use_small) | (large_bits & ~use_small);
    };
    const uint32_t result_bits = pick(small, large) | sign;
    const uint32_t derivative_bits = pick(small_derivative, large_derivative);
    float result;
    std::memcpy(&result, &result_bits, sizeof result);
    std::memcpy(&derivative, &derivative_bits, sizeof derivative);
    return result;
}

// tanh_vectorizable as the function object core/score_mask.hpp's soft_cap takes.
template <class Isa>
struct VectorTanh {
    FA4J_INLINE float operator()(float x, float& derivative) const { return tanh_vectorizable<Isa>(x, derivative); }
};

}  // namespace fa4j::cpu
