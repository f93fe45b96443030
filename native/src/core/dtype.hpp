// Element types the kernels understand, and exact scalar conversions between them and float.
// Written out by hand (no _Float16 / __bf16) so the CPU backend builds with any C++17 compiler and the
// rounding is the same everywhere: round-to-nearest-even, NaN preserved, overflow to infinity.
#pragma once

#include <cstdint>
#include <cstring>

namespace fa4j {

enum class DType { F32, F16, BF16 };

inline const char* dtype_name(DType dtype) {
    switch (dtype) {
        case DType::F32: return "float32";
        case DType::F16: return "float16";
        case DType::BF16: return "bfloat16";
    }
    return "?";
}

inline int dtype_size(DType dtype) { return dtype == DType::F32 ? 4 : 2; }

inline uint32_t float_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}

inline float bits_float(uint32_t u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

inline float bf16_to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

inline uint16_t float_to_bf16(float f) {
    uint32_t u = float_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return static_cast<uint16_t>(u >> 16);
}

inline float f16_to_float(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    const uint32_t exponent = (h >> 10) & 0x1fu;
    const uint32_t mantissa = h & 0x3ffu;
    if (exponent == 0x1f) return bits_float(sign | 0x7f800000u | (mantissa << 13));  // inf / NaN
    if (exponent != 0) return bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
    if (mantissa == 0) return bits_float(sign);
    // Subnormal half: value = mantissa * 2^-24, exact in float.
    const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
    return sign ? -magnitude : magnitude;
}

inline uint16_t float_to_f16(float f) {
    const uint32_t u = float_bits(f);
    const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
    const uint32_t abs = u & 0x7fffffffu;
    if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));  // NaN
    if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to >= 65520: infinity
    if (abs < 0x38800000u) {
        // Result is subnormal (or zero): round abs/2^-24 to the nearest integer, ties to even.
        if (abs < 0x33000000u) return sign;  // below half the smallest subnormal
        const uint32_t exponent = abs >> 23;
        const uint32_t mantissa = (abs & 0x7fffffu) | 0x800000u;
        // value = mantissa * 2^(exponent - 150); in units of the smallest subnormal (2^-24) that is
        // mantissa >> (126 - exponent).
        const uint32_t shift = 126u - exponent;
        uint32_t result = mantissa >> shift;
        const uint32_t remainder = mantissa & ((1u << shift) - 1u);
        const uint32_t halfway = 1u << (shift - 1u);
        if (remainder > halfway || (remainder == halfway && (result & 1u))) ++result;
        return static_cast<uint16_t>(sign | result);
    }
    // Normal: rebias exponent and round the 13 dropped mantissa bits to nearest even.
    uint32_t rebased = abs - 0x38000000u;
    rebased += 0xfffu + ((rebased >> 13) & 1u);
    return static_cast<uint16_t>(sign | (rebased >> 13));
}

}  // namespace fa4j
