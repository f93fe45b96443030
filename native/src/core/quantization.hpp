// The rules of quantized attention (flashattn4j.h, "Quantized attention"), each with one definition:
// which dtype and scale shape each input has per mode, the granularities, and the scalar arithmetic of
// the quantizers, which every backend must reproduce bit for bit (the CPU backend calls these functions;
// a CUDA kernel implements the same float32 operations: IEEE division, cvt.rni / cvt.rn.satfinite).
#pragma once

#include <cmath>
#include <cstdint>

#include "core/attention_problem.hpp"
#include "core/dtype.hpp"
#include "flashattn4j.h"

namespace fa4j::quant {

// Keys per k scale group and per block of the softmax's running maximum (P quantization), and the chunk
// length of the key mean's two-level sum.
constexpr int kKeyBlock = 128;
// Query rows per block of Q smoothing (SAGE_INT4_*).
constexpr int kQuerySmoothBlock = 64;
// The static scale of P before its float8 rounding: p <= 1 becomes at most 448, the e4m3 maximum.
constexpr float kPScale = 448.0f;
// amax below this (zero included) quantizes to scale 0 and values 0: no division overflows or leaves the
// normal range then.
constexpr float kTinyAmax = 0x1p-100f;

enum class Operand { Q = 0, K = 1, V = 2 };

inline const char* operand_name(Operand operand) {
    switch (operand) {
        case Operand::Q: return "q";
        case Operand::K: return "k";
        case Operand::V: return "v";
    }
    return "?";
}

inline const char* mode_name(QuantMode mode) {
    switch (mode) {
        case QuantMode::None: return "NONE";
        case QuantMode::SageInt8Fp8: return "SAGE_INT8_FP8";
        case QuantMode::SageInt8Fp16: return "SAGE_INT8_FP16";
        case QuantMode::SageInt4Fp8: return "SAGE_INT4_FP8";
        case QuantMode::SageInt4Fp16: return "SAGE_INT4_FP16";
        case QuantMode::Fp8: return "FP8";
    }
    return "?";
}

inline bool is_sage(QuantMode mode) { return mode != QuantMode::None && mode != QuantMode::Fp8; }
inline bool is_int4(QuantMode mode) { return mode == QuantMode::SageInt4Fp8 || mode == QuantMode::SageInt4Fp16; }
// P·v in float16 (v used as float16, no v scale) rather than float8.
inline bool pv_fp16(QuantMode mode) { return mode == QuantMode::SageInt8Fp16 || mode == QuantMode::SageInt4Fp16; }

// The dtype a pre-quantized operand has in `mode`; for v in the FP16 P·v modes F16, which is no quantized
// dtype (v is then given in high precision, and the library rounds it to float16).
inline DType quantized_dtype(QuantMode mode, Operand operand) {
    if (mode == QuantMode::Fp8) return DType::F8E4M3;
    if (operand == Operand::V) return pv_fp16(mode) ? DType::F16 : DType::F8E4M3;
    return is_int4(mode) ? DType::I4 : DType::I8;
}

// Whether the operand has a scale in `mode` (every one but v in the FP16 P·v modes).
inline bool has_scale(QuantMode mode, Operand operand) { return !(operand == Operand::V && pv_fp16(mode)); }

inline int64_t key_blocks(int64_t seqlen_k) { return (seqlen_k + kKeyBlock - 1) / kKeyBlock; }

// The scale tensor's shape of `operand` in `mode` for a [batch, seq, heads, head_dim] input; returns its rank.
inline int scale_shape(QuantMode mode, Operand operand, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
                       int64_t shape[3]) {
    shape[0] = batch;
    shape[1] = heads;
    if (mode == QuantMode::Fp8) return 2;  // per (batch, head)
    shape[2] = operand == Operand::Q ? seq : operand == Operand::K ? key_blocks(seq) : head_dim;
    return 3;
}

// A validated fa4j_quantize call: one operand of shape [batch, seq, heads, head_dim].
struct QuantizeProblem {
    QuantMode mode;
    Operand operand;
    bool smooth;  // k: subtract the key mean first
    int num_threads;
    int64_t batch, seq, heads, head_dim;
    DType input_dtype, output_dtype;
    SeqTensor input, output;  // strides in elements of each dtype (int4: nibbles)
    float* scale;             // contiguous, scale_shape()
    float* mean;              // contiguous [batch, heads, head_dim], or null
};

// ---- scalar arithmetic ------------------------------------------------------------------------------

// amax that keeps a NaN once it has seen one (|x| of an infinity is infinite, which also stays).
inline float amax_update(float amax, float x) {
    const float a = std::fabs(x);
    return (a > amax || a != a) ? a : amax;
}

// A group's scale and the factor that quantizes it, from its amax and the format's largest value
// (127 or 7 for integers, 448 for e4m3): scale = amax / max, factor = max / amax, both rounded to float.
struct GroupScale {
    float scale;   // the dequantization factor that is stored
    float factor;  // the quantization factor: values are rounded from x * factor
    bool finite;   // false: the group held a NaN or an infinity
};

inline GroupScale group_scale(float amax, float format_max) {
    if (!(amax <= 3.4028234663852886e38f)) return {std::nanf(""), 0.0f, false};  // NaN or infinity
    if (amax < kTinyAmax) return {0.0f, 0.0f, true};
    return {amax / format_max, format_max / amax, true};
}

// The integer (in [-qmax, qmax]) of x in a group: rint(x * factor), clamped; 0 in a non-finite group.
inline int quantize_int(float x, const GroupScale& g, int qmax) {
    if (!g.finite) return 0;
    const float y = x * g.factor;
    if (!(y == y)) return 0;  // unreachable for finite groups: |x| <= amax
    const float r = std::nearbyint(y);  // to nearest even (the default rounding mode)
    return r > static_cast<float>(qmax) ? qmax : r < static_cast<float>(-qmax) ? -qmax : static_cast<int>(r);
}

// The e4m3 code of x in a group: e4m3(x * factor), to nearest even, saturated; NaN in a non-finite group.
inline uint8_t quantize_e4m3(float x, const GroupScale& g) {
    if (!g.finite) return 0x7f;
    return float_to_e4m3(x * g.factor, true);
}

// float16 value of v for FP16 P·v: to nearest even, saturated at ±65504 (NaN stays NaN).
inline float round_f16_saturated(float v) {
    if (v != v) return v;
    const float r = f16_to_float(float_to_f16(v));
    return std::isinf(r) ? std::copysign(65504.0f, v) : r;
}

// The float8 value of P for FP8 P·v: e4m3(448 p), to nearest even, saturated (p in [0, 1]).
inline float quantize_p_fp8(float p) { return e4m3_to_float(float_to_e4m3(p * kPScale, true)); }

// The float16 value of P for FP16 P·v.
inline float quantize_p_fp16(float p) { return f16_to_float(float_to_f16(p)); }

// Sum of x[0], x[stride], ..., x[(n-1)·stride] as the key mean's rule sums: consecutive chunks of
// kKeyBlock elements, each summed in order from 0, the chunk sums added in order. `at(j)` reads element j.
template <class At>
inline float chunked_sum(int64_t n, At at) {
    float total = 0.0f;
    for (int64_t j0 = 0; j0 < n; j0 += kKeyBlock) {
        float chunk = 0.0f;
        const int64_t end = j0 + kKeyBlock < n ? j0 + kKeyBlock : n;
        for (int64_t j = j0; j < end; ++j) chunk += at(j);
        total += chunk;
    }
    return total;
}

}  // namespace fa4j::quant
