// Moving tiles between the caller's tensors (any dtype, any strides) and the float scratch the kernels
// compute in. Conversions give exactly the values of core/dtype.hpp's; rows past the data are
// zero-filled so that padding contributes nothing to the matrix products.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>

#include "backends/cpu/simd.hpp"
#include "core/attention_problem.hpp"
#include "core/dtype.hpp"

namespace fa4j::cpu {

// kMaxFinite: the largest finite value of the dtype, where saturating stores stop.
struct F32Elem {
    using Storage = float;
    static constexpr float kMaxFinite = std::numeric_limits<float>::max();
    static FA4J_INLINE float to_float(float x) { return x; }
    static FA4J_INLINE float from_float(float x) { return x; }
};

// The same value as core/dtype.hpp's f16_to_float, bit for bit (checked for all 65536 inputs), but
// without branches, so that tile loads vectorise; with the branchy version fp16 ran at less than half
// the speed of bf16. Exponent and mantissa are placed into a float as if its bias were 15 and then
// scaled by 2^112, which is exact for normal and subnormal halves alike; for infinity and NaN the
// exponent field is then forced to all ones.
FA4J_INLINE float f16_to_float_branchless(uint16_t h) {
    const uint32_t exponent_mantissa = h & 0x7fffu;
    float magnitude;
    const uint32_t shifted = exponent_mantissa << 13;
    std::memcpy(&magnitude, &shifted, sizeof magnitude);
    magnitude *= 0x1p112f;
    uint32_t bits;
    std::memcpy(&bits, &magnitude, sizeof bits);
    bits |= exponent_mantissa >= 0x7c00u ? 0x7f800000u : 0u;
    bits |= static_cast<uint32_t>(h & 0x8000u) << 16;
    float result;
    std::memcpy(&result, &bits, sizeof result);
    return result;
}

struct F16Elem {
    using Storage = uint16_t;
    static constexpr float kMaxFinite = 65504.0f;
    static FA4J_INLINE float to_float(uint16_t x) { return f16_to_float_branchless(x); }
    static FA4J_INLINE uint16_t from_float(float x) { return float_to_f16(x); }
};

struct Bf16Elem {
    using Storage = uint16_t;
    static constexpr float kMaxFinite = 3.3895313892515355e38f;  // 0x7f7f: above it float rounds to infinity
    static FA4J_INLINE float to_float(uint16_t x) { return bf16_to_float(x); }
    static FA4J_INLINE uint16_t from_float(float x) { return float_to_bf16(x); }
};

// Element (b, s, h, 0) of a [batch, seq, head, head_dim] tensor.
template <class Elem>
FA4J_INLINE typename Elem::Storage* seq_row(const SeqTensor& t, int64_t b, int64_t s, int64_t h) {
    return static_cast<typename Elem::Storage*>(t.data) + b * t.batch_stride + s * t.seq_stride + h * t.head_stride;
}

// dst[r][c] (row length d) = t[b, s0 + r, h, c] for r < rows; zero for rows <= r < rows_pad.
template <class Elem>
FA4J_INLINE void load_tile(const SeqTensor& t, int64_t b, int64_t h, int64_t s0, int rows, int rows_pad, int d,
                           float* dst) {
    for (int r = 0; r < rows; ++r) {
        const typename Elem::Storage* src = seq_row<Elem>(t, b, s0 + r, h);
        float* out = dst + r * d;
#pragma omp simd
        for (int c = 0; c < d; ++c) out[c] = Elem::to_float(src[c]);
    }
    for (int r = rows; r < rows_pad; ++r) {
        float* out = dst + r * d;
#pragma omp simd
        for (int c = 0; c < d; ++c) out[c] = 0.0f;
    }
}

// The same tile transposed: dst[c][r] (row length rows_pad).
template <class Elem>
FA4J_INLINE void load_tile_transposed(const SeqTensor& t, int64_t b, int64_t h, int64_t s0, int rows, int rows_pad,
                                      int d, float* dst) {
    for (int r = 0; r < rows; ++r) {
        const typename Elem::Storage* src = seq_row<Elem>(t, b, s0 + r, h);
        for (int c = 0; c < d; ++c) dst[c * rows_pad + r] = Elem::to_float(src[c]);
    }
    for (int c = 0; c < d; ++c)
        for (int r = rows; r < rows_pad; ++r) dst[c * rows_pad + r] = 0.0f;
}

// t[b, s0 + r, h, c] = factor * src[r][c] (row length d) for r < rows, rounded to the tensor's dtype.
// kSaturate: values beyond the dtype's range (infinities included) become ±kMaxFinite, NaN stays NaN.
// For results whose exact value is finite but too large for the dtype (a gradient of float16 inputs
// near 65504, scale·dS·k past float32): the nearest finite value rather than an infinity that would
// turn into NaN downstream. Forward outputs need none: out is a convex combination of v.
template <class Elem, bool kSaturate = false>
FA4J_INLINE void store_tile(const float* src, float factor, const SeqTensor& t, int64_t b, int64_t h, int64_t s0,
                            int rows, int d) {
    for (int r = 0; r < rows; ++r) {
        typename Elem::Storage* dst = seq_row<Elem>(t, b, s0 + r, h);
        const float* in = src + r * d;
#pragma omp simd
        for (int c = 0; c < d; ++c) {
            float x = factor * in[c];
            if constexpr (kSaturate) x = std::min(std::max(x, -Elem::kMaxFinite), Elem::kMaxFinite);
            dst[c] = Elem::from_float(x);
        }
    }
}

}  // namespace fa4j::cpu
