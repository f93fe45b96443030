// The three element types the attention calls take, as the tests name, size, describe and round them.
#pragma once

#include <flashattn4j.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "support/half_codec.hpp"

namespace fa4j_test {

enum class Dt { F32, F16, BF16 };

inline const char* dt_name(Dt dt) { return dt == Dt::F32 ? "fp32" : dt == Dt::F16 ? "fp16" : "bf16"; }

inline size_t dt_size(Dt dt) { return dt == Dt::F32 ? 4 : 2; }

inline fa4j_dtype dtype_descriptor(Dt dt) {
    return fa4j_dtype{static_cast<uint8_t>(dt == Dt::BF16 ? FA4J_DTYPE_CODE_BFLOAT : FA4J_DTYPE_CODE_FLOAT),
                      static_cast<uint8_t>(dt_size(dt) * 8), 1};
}

// The value x becomes when stored as `dt`.
inline float round_to(Dt dt, float x) {
    if (dt == Dt::F16) return decode_f16(encode_f16(x));
    if (dt == Dt::BF16) return decode_bf16(encode_bf16(x));
    return x;
}

// The largest finite value of `dt`.
inline double max_finite(Dt dt) {
    if (dt == Dt::F16) return 65504.0;
    if (dt == Dt::BF16) return 3.3895313892515355e38;  // 0x7f7f
    return static_cast<double>(std::numeric_limits<float>::max());
}

// x clamped to the finite range of `dt` (infinities and NaN unchanged): what a result whose exact value
// is finite but out of range must be stored as (flashattn4j.h: results saturate).
inline double saturate(Dt dt, double x) {
    if (std::isinf(x) || std::isnan(x)) return x;
    return std::clamp(x, -max_finite(dt), max_finite(dt));
}

// round_to, saturating: a finite x beyond the dtype's range becomes its largest finite value.
inline float round_to_saturating(Dt dt, double x) { return round_to(dt, static_cast<float>(saturate(dt, x))); }

}  // namespace fa4j_test
