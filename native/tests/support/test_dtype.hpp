// The three element types the attention calls take, as the tests name, size, describe and round them.
#pragma once

#include <flashattn4j.h>

#include <cstddef>
#include <cstdint>

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

}  // namespace fa4j_test
