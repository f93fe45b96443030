// Moving tiles between the caller's tensors (any dtype, any strides) and the float scratch the kernels
// compute in. Conversions are the exact ones of core/dtype.hpp; rows past the data are zero-filled so
// that padding contributes nothing to the matrix products.
#pragma once

#include <cstdint>

#include "backends/cpu/simd.hpp"
#include "core/attention_problem.hpp"
#include "core/dtype.hpp"

namespace fa4j::cpu {

struct F32Elem {
    using Storage = float;
    static FA4J_INLINE float to_float(float x) { return x; }
    static FA4J_INLINE float from_float(float x) { return x; }
};

struct F16Elem {
    using Storage = uint16_t;
    static FA4J_INLINE float to_float(uint16_t x) { return f16_to_float(x); }
    static FA4J_INLINE uint16_t from_float(float x) { return float_to_f16(x); }
};

struct Bf16Elem {
    using Storage = uint16_t;
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

// dst[c][r] = src[r][c] for a [rows x cols] float tile.
FA4J_INLINE void transpose_tile(const float* src, int rows, int cols, float* dst) {
    for (int r = 0; r < rows; ++r)
        for (int c = 0; c < cols; ++c) dst[c * rows + r] = src[r * cols + c];
}

// t[b, s0 + r, h, c] = factor * src[r][c] (row length d) for r < rows, rounded to the tensor's dtype.
template <class Elem>
FA4J_INLINE void store_tile(const float* src, float factor, const SeqTensor& t, int64_t b, int64_t h, int64_t s0,
                            int rows, int d) {
    for (int r = 0; r < rows; ++r) {
        typename Elem::Storage* dst = seq_row<Elem>(t, b, s0 + r, h);
        const float* in = src + r * d;
#pragma omp simd
        for (int c = 0; c < d; ++c) dst[c] = Elem::from_float(factor * in[c]);
    }
}

}  // namespace fa4j::cpu
