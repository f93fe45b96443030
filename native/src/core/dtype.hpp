// Element types the kernels understand, and exact scalar conversions between them and float.
// Written out by hand (no _Float16 / __bf16) so the CPU backend builds with any C++17 compiler and the
// rounding is the same everywhere: round-to-nearest-even, NaN preserved, overflow to infinity.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace fa4j {

// F32, F16 and BF16 are attention's compute dtypes; the others are quantized storage (flashattn4j.h lists
// them): F8E4M3 (float8_e4m3fn), F8E5M2 (float8_e5m2), I8 (int8) and I4 (int4, packed two per byte, the
// even element in the low nibble). int32 tensors (sequence offsets) are checked apart and are no DType.
enum class DType { F32, F16, BF16, F8E4M3, F8E5M2, I8, I4 };

inline const char* dtype_name(DType dtype) {
    switch (dtype) {
        case DType::F32: return "float32";
        case DType::F16: return "float16";
        case DType::BF16: return "bfloat16";
        case DType::F8E4M3: return "float8_e4m3fn";
        case DType::F8E5M2: return "float8_e5m2";
        case DType::I8: return "int8";
        case DType::I4: return "int4";
    }
    return "?";
}

inline int dtype_bits(DType dtype) {
    switch (dtype) {
        case DType::F32: return 32;
        case DType::F16:
        case DType::BF16: return 16;
        case DType::F8E4M3:
        case DType::F8E5M2:
        case DType::I8: return 8;
        case DType::I4: return 4;
    }
    return 0;
}

// Bytes per element of the whole-byte dtypes (every dtype but I4, whose elements are nibbles).
inline int dtype_size(DType dtype) { return dtype_bits(dtype) / 8; }

// The dtypes attention computes on and reads as plain values: float32, float16, bfloat16.
inline bool is_compute_dtype(DType dtype) { return dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16; }

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

// ---- 8-bit floats and small integers ---------------------------------------------------------------

// The nearest float with `mantissa_bits` explicit mantissa bits, exponent bias `bias` and subnormals to
// |x| (finite, not NaN), as a magnitude code (biased exponent << mantissa_bits | mantissa), rounded to
// nearest even. Codes past the format's largest finite value are returned as computed; callers saturate or
// map them to infinity/NaN.
inline uint32_t small_float_magnitude(float x, int mantissa_bits, int bias) {
    const uint32_t u = float_bits(x) & 0x7fffffffu;
    const int biased = static_cast<int>(u >> 23);
    if (biased == 0) return 0;  // float subnormals lie far below half of any small format's least subnormal
    const int exponent = biased - 127;
    const int min_exponent = 1 - bias;  // of the small format's normal numbers
    const uint64_t significand = (u & 0x7fffffu) | 0x800000u;  // 24 bits, value significand * 2^(exponent - 23)
    int shift = 23 - mantissa_bits;
    if (exponent < min_exponent) shift += min_exponent - exponent;  // subnormal in the small format
    if (shift >= 25) return 0;  // below half the least subnormal
    const uint64_t half = uint64_t{1} << (shift - 1);
    uint64_t q = significand >> shift;
    const uint64_t rest = significand & ((uint64_t{1} << shift) - 1u);
    if (rest > half || (rest == half && (q & 1u))) ++q;
    // A carry out of the mantissa moves into the exponent field by itself, subnormal to normal included.
    if (exponent < min_exponent) return static_cast<uint32_t>(q);
    return (static_cast<uint32_t>(exponent + bias) << mantissa_bits) + static_cast<uint32_t>(q - (uint64_t{1} << mantissa_bits));
}

constexpr float kE4m3Max = 448.0f;
constexpr float kE5m2Max = 57344.0f;

inline float e4m3_to_float(uint8_t code) {
    const uint32_t magnitude = code & 0x7fu;
    const float sign = (code & 0x80u) ? -1.0f : 1.0f;
    if (magnitude == 0x7fu) return bits_float(0x7fc00000u | ((code & 0x80u) << 24));  // NaN
    const uint32_t exponent = magnitude >> 3, mantissa = magnitude & 7u;
    if (exponent == 0) return sign * static_cast<float>(mantissa) * 0x1p-9f;
    return sign * bits_float(((exponent + 120u) << 23) | (mantissa << 20));
}

// float -> float8_e4m3fn, to nearest even. NaN gives NaN; magnitudes rounding past 448 give NaN (the
// format has no infinity), or ±448 when `saturate` (cvt.rn.satfinite, which also maps ±infinity to ±448).
inline uint8_t float_to_e4m3(float x, bool saturate) {
    const uint8_t sign = static_cast<uint8_t>((float_bits(x) >> 24) & 0x80u);
    if (x != x) return static_cast<uint8_t>(sign | 0x7fu);
    const uint32_t abs = float_bits(x) & 0x7fffffffu;
    uint32_t magnitude = abs >= 0x7f800000u ? 0x100u : small_float_magnitude(x, 3, 7);
    if (magnitude > 0x7eu) magnitude = saturate ? 0x7eu : 0x7fu;
    return static_cast<uint8_t>(sign | magnitude);
}

// float8_e5m2 is the top byte of a float16.
inline float e5m2_to_float(uint8_t code) { return f16_to_float(static_cast<uint16_t>(code << 8)); }

// float -> float8_e5m2, to nearest even (directly, not through float16: no double rounding). NaN gives
// NaN; magnitudes rounding past 57344 give infinity, or ±57344 when `saturate`.
inline uint8_t float_to_e5m2(float x, bool saturate) {
    const uint8_t sign = static_cast<uint8_t>((float_bits(x) >> 24) & 0x80u);
    if (x != x) return static_cast<uint8_t>(sign | 0x7eu);
    const uint32_t abs = float_bits(x) & 0x7fffffffu;
    uint32_t magnitude = abs >= 0x7f800000u ? 0x100u : small_float_magnitude(x, 2, 15);
    if (magnitude > 0x7bu) magnitude = saturate ? 0x7bu : 0x7cu;
    return static_cast<uint8_t>(sign | magnitude);
}

// float -> integer for tensor conversions: to nearest even, saturated at [lo, hi], NaN gives 0.
inline int32_t float_to_int_saturated(float x, int32_t lo, int32_t hi) {
    if (x != x) return 0;
    if (x <= static_cast<float>(lo)) return lo;
    if (x >= static_cast<float>(hi)) return hi;
    return static_cast<int32_t>(std::nearbyint(x));  // the default rounding mode: to nearest even
}

// Packed int4: element e of a tensor lives in byte e / 2, the low nibble for even e, the high for odd.
inline int int4_get(const uint8_t* bytes, int64_t element) {
    const uint8_t byte = bytes[element >> 1];
    const int nibble = (element & 1) ? (byte >> 4) : (byte & 0xf);
    return nibble >= 8 ? nibble - 16 : nibble;
}

inline void int4_set(uint8_t* bytes, int64_t element, int value) {
    uint8_t& byte = bytes[element >> 1];
    const uint8_t nibble = static_cast<uint8_t>(value & 0xf);
    byte = (element & 1) ? static_cast<uint8_t>((byte & 0x0fu) | (nibble << 4)) : static_cast<uint8_t>((byte & 0xf0u) | nibble);
}

}  // namespace fa4j
