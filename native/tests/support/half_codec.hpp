// Bit-exact float32 -> float16 / bfloat16 conversions (round to nearest, ties to even) and back.
// Written independently of the library's converters on purpose: a bug shared by both sides would
// cancel out in every comparison and never be seen.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace fa4j_test {

inline uint32_t bits_of(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}

inline float float_of(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// Rounds in double arithmetic with nearbyint, which is exact here and ties to even, instead of the
// bit tricks a fast converter would use.
inline uint16_t encode_f16(float f) {
    const uint16_t sign = (bits_of(f) >> 16) & 0x8000u;
    const double a = std::fabs(static_cast<double>(f));
    if (std::isnan(f)) return static_cast<uint16_t>(sign | 0x7e00u);
    if (a >= 65520.0) return static_cast<uint16_t>(sign | 0x7c00u);  // halfway to 2^16 rounds up to inf
    if (a < std::ldexp(1.0, -14))  // subnormal: a multiple of 2^-24
        return static_cast<uint16_t>(sign | static_cast<uint16_t>(std::nearbyint(std::ldexp(a, 24))));
    int exponent;
    std::frexp(a, &exponent);  // a = m * 2^exponent, m in [0.5, 1)
    --exponent;
    double mantissa = std::nearbyint((std::ldexp(a, -exponent) - 1.0) * 1024.0);
    if (mantissa == 1024.0) {  // rounding carried into the next binade
        mantissa = 0.0;
        ++exponent;
    }
    if (exponent > 15) return static_cast<uint16_t>(sign | 0x7c00u);
    return static_cast<uint16_t>(sign | ((exponent + 15) << 10) | static_cast<int>(mantissa));
}

inline float decode_f16(uint16_t h) {
    const double sign = (h & 0x8000u) ? -1.0 : 1.0;
    const int exponent = (h >> 10) & 0x1f;
    const int mantissa = h & 0x3ff;
    if (exponent == 31)
        return mantissa ? std::numeric_limits<float>::quiet_NaN()
                        : static_cast<float>(sign * std::numeric_limits<double>::infinity());
    if (exponent == 0) return static_cast<float>(sign * std::ldexp(mantissa, -24));
    return static_cast<float>(sign * std::ldexp(1024 + mantissa, exponent - 25));
}

inline uint16_t encode_bf16(float f) {
    if (std::isnan(f)) return 0x7fc0u;  // the carry below could turn a NaN into an infinity
    const uint32_t u = bits_of(f);
    return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

inline float decode_bf16(uint16_t h) { return float_of(static_cast<uint32_t>(h) << 16); }

}  // namespace fa4j_test
