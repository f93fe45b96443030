// 2^x for the softmax, written so that loops over a score row vectorise. libm's expf/exp2f are opaque
// scalar calls without -ffast-math (which the build avoids), and one exponential per score costs as much
// as a sizeable part of the score's two dot products. The kernels keep scores in the log2 domain
// (log2(e) is folded into the softmax scale once), so exp2 is what they need.
#pragma once

#include <cstdint>
#include <cstring>

#include "backends/cpu/simd.hpp"

namespace fa4j::cpu {

// Within 2 ulp of 2^x for x in [-126, 127]; 0 below -127 (and for -inf); +inf and NaN are not
// produced from finite input above 127 (clamped), NaN input gives NaN.
template <class Isa>
FA4J_INLINE float fast_exp2(float x) {
    // Adding 1.5 * 2^23 leaves round-to-nearest(x) in the low mantissa bits for |x| < 2^22.
    constexpr float kRound = 12582912.0f;
    x = x < -127.0f ? -127.0f : x;
    x = x > 127.0f ? 127.0f : x;
    const float shifted = x + kRound;
    const float n = shifted - kRound;
    const float f = x - n;  // exact, in [-0.5, 0.5]
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
    uint32_t bits;
    std::memcpy(&bits, &shifted, sizeof bits);
    bits = (bits + 127u) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

}  // namespace fa4j::cpu
