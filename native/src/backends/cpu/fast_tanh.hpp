// tanh for the softcap (core/score_mask.hpp), written so that loops over a score row vectorise: libm's
// tanhf is an opaque scalar call costing more than the rest of a score's work together.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "backends/cpu/fast_exp2.hpp"
#include "backends/cpu/simd.hpp"
#include "core/softmax_scale.hpp"

namespace fa4j::cpu {

// tanh(x) within 3 ulp for every float (checked against double tanh over all 2^32 inputs), ±1 beyond
// |x| = 9.1, NaN for NaN. Odd, so it works on |x| and puts the sign back:
//   |x| < 0.5   the Taylor series to x^17 (truncation below 2^-29 relative);
//   |x| >= 0.5  (1 - e) / (1 + e) with e = e^-2|x| <= 0.37, so 1 - e cancels less than 2 bits.
// Both are computed and one is picked with integer masks: as in fast_exp2.hpp, a float select would
// keep GCC from vectorising.
template <class Isa>
FA4J_INLINE float tanh_vectorizable(float x) {
    uint32_t x_bits;
    std::memcpy(&x_bits, &x, sizeof x_bits);
    const uint32_t sign = x_bits & 0x80000000u;
    const uint32_t magnitude_bits = x_bits & 0x7fffffffu;
    float a;
    std::memcpy(&a, &magnitude_bits, sizeof a);

    const float e = probability_exp2<Isa>(a * (-2.0f * kLog2e));
    const float large = (1.0f - e) / (1.0f + e);

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

    constexpr uint32_t kHalfBits = 0x3f000000u;  // 0.5f
    const uint32_t use_small = 0u - static_cast<uint32_t>(magnitude_bits < kHalfBits);
    uint32_t small_bits, large_bits;
    std::memcpy(&small_bits, &small, sizeof small_bits);
    std::memcpy(&large_bits, &large, sizeof large_bits);
    const uint32_t result_bits = ((small_bits & use_small) | (large_bits & ~use_small)) | sign;
    float result;
    std::memcpy(&result, &result_bits, sizeof result);
    return result;
}

// tanh_vectorizable as the function object core/score_mask.hpp's soft_cap takes.
template <class Isa>
struct VectorTanh {
    FA4J_INLINE float operator()(float x) const { return tanh_vectorizable<Isa>(x); }
};

}  // namespace fa4j::cpu
