#include "backends/cpu/quantize_cpu.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "backends/cpu/thread_pool.hpp"
#include "core/quantization.hpp"

namespace fa4j::cpu::quantized {
namespace {

// Element offset (in elements of the dtype) of (b, s, h, c).
int64_t offset_of(const SeqTensor& t, int64_t b, int64_t s, int64_t h, int64_t c) {
    return b * t.batch_stride + s * t.seq_stride + h * t.head_stride + c;
}

}  // namespace

float element(const SeqTensor& t, DType dtype, int64_t b, int64_t s, int64_t h, int64_t c) {
    const int64_t e = offset_of(t, b, s, h, c);
    switch (dtype) {
        case DType::F32: return static_cast<const float*>(t.data)[e];
        case DType::F16: return f16_to_float(static_cast<const uint16_t*>(t.data)[e]);
        case DType::BF16: return bf16_to_float(static_cast<const uint16_t*>(t.data)[e]);
        case DType::F8E4M3: return e4m3_to_float(static_cast<const uint8_t*>(t.data)[e]);
        case DType::F8E5M2: return e5m2_to_float(static_cast<const uint8_t*>(t.data)[e]);
        case DType::I8: return static_cast<float>(static_cast<const int8_t*>(t.data)[e]);
        case DType::I4: return static_cast<float>(int4_get(static_cast<const uint8_t*>(t.data), e));
    }
    return 0.0f;
}

void store_ints(const SeqTensor& t, DType dtype, int64_t b, int64_t h, int64_t s0, int64_t rows, int64_t d,
                const int8_t* ints) {
    for (int64_t r = 0; r < rows; ++r) {
        const int64_t e = offset_of(t, b, s0 + r, h, 0);
        const int8_t* row = ints + r * d;
        if (dtype == DType::I8) {
            std::memcpy(static_cast<int8_t*>(t.data) + e, row, static_cast<size_t>(d));
        } else {
            auto* bytes = static_cast<uint8_t*>(t.data);
            for (int64_t c = 0; c < d; ++c) int4_set(bytes, e + c, row[c]);
        }
    }
}

void store_codes(const SeqTensor& t, int64_t b, int64_t h, int64_t s0, int64_t rows, int64_t d, const uint8_t* codes) {
    for (int64_t r = 0; r < rows; ++r)
        std::memcpy(static_cast<uint8_t*>(t.data) + offset_of(t, b, s0 + r, h, 0), codes + r * d, static_cast<size_t>(d));
}

void read_head(const SeqTensor& t, DType dtype, int64_t b, int64_t h, int64_t seq, int64_t d, float* out) {
    for (int64_t s = 0; s < seq; ++s)
        for (int64_t c = 0; c < d; ++c) out[s * d + c] = element(t, dtype, b, s, h, c);
}

void key_mean(const float* x, int64_t n, int64_t d, float* mean) {
    for (int64_t c = 0; c < d; ++c) {
        const float sum = fa4j::quant::chunked_sum(n, [&](int64_t j) { return x[j * d + c]; });
        mean[c] = n > 0 ? sum / static_cast<float>(n) : 0.0f;
    }
}

void row_block_mean(const float* x, int64_t n, int64_t d, float* mean) {
    for (int64_t c = 0; c < d; ++c) {
        float sum = 0.0f;
        for (int64_t r = 0; r < n; ++r) sum += x[r * d + c];
        mean[c] = n > 0 ? sum / static_cast<float>(n) : 0.0f;
    }
}

namespace {

float amax_of(const float* x, int64_t count) {
    float amax = 0.0f;
    for (int64_t i = 0; i < count; ++i) amax = fa4j::quant::amax_update(amax, x[i]);
    return amax;
}

void quantize_int_group(const float* x, int64_t count, int qmax, int8_t* ints, float* scale) {
    const fa4j::quant::GroupScale g = fa4j::quant::group_scale(amax_of(x, count), static_cast<float>(qmax));
    for (int64_t i = 0; i < count; ++i) ints[i] = static_cast<int8_t>(fa4j::quant::quantize_int(x[i], g, qmax));
    *scale = g.scale;
}

}  // namespace

void quantize_rows_int(const float* x, int64_t n, int64_t d, int qmax, int8_t* ints, float* scales) {
    for (int64_t r = 0; r < n; ++r) quantize_int_group(x + r * d, d, qmax, ints + r * d, scales + r);
}

void quantize_key_blocks_int(const float* x, int64_t n, int64_t d, int qmax, int8_t* ints, float* scales) {
    const int64_t block = fa4j::quant::kKeyBlock;
    for (int64_t j0 = 0, t = 0; j0 < n; j0 += block, ++t) {
        const int64_t rows = n - j0 < block ? n - j0 : block;
        quantize_int_group(x + j0 * d, rows * d, qmax, ints + j0 * d, scales + t);
    }
}

void quantize_all_e4m3(const float* x, int64_t n, int64_t d, uint8_t* codes, float* scale) {
    const fa4j::quant::GroupScale g = fa4j::quant::group_scale(amax_of(x, n * d), kE4m3Max);
    for (int64_t i = 0; i < n * d; ++i) codes[i] = fa4j::quant::quantize_e4m3(x[i], g);
    *scale = g.scale;
}

void quantize_channels_e4m3(const float* x, int64_t n, int64_t d, uint8_t* codes, float* scales) {
    for (int64_t c = 0; c < d; ++c) {
        float amax = 0.0f;
        for (int64_t j = 0; j < n; ++j) amax = fa4j::quant::amax_update(amax, x[j * d + c]);
        const fa4j::quant::GroupScale g = fa4j::quant::group_scale(amax, kE4m3Max);
        for (int64_t j = 0; j < n; ++j) codes[j * d + c] = fa4j::quant::quantize_e4m3(x[j * d + c], g);
        scales[c] = g.scale;
    }
}

}  // namespace fa4j::cpu::quantized

namespace fa4j::cpu {

void quantize(const fa4j::quant::QuantizeProblem& p) {
    using fa4j::quant::Operand;
    const bool sage = fa4j::quant::is_sage(p.mode);
    const int qmax = fa4j::quant::is_int4(p.mode) ? 7 : 127;
    const int64_t n = p.seq, d = p.head_dim, heads = p.batch * p.heads;
    const int64_t key_blocks = fa4j::quant::key_blocks(n);
    parallel_for(resolve_num_threads(p.num_threads), heads, [&](int64_t task, int) {
        const int64_t b = task / p.heads, h = task % p.heads;
        const size_t count = static_cast<size_t>(n * d);
        std::vector<float> x(count);
        quantized::read_head(p.input, p.input_dtype, b, h, n, d, x.data());
        if (p.smooth) {
            std::vector<float> mean(static_cast<size_t>(d));
            quantized::key_mean(x.data(), n, d, mean.data());
            for (int64_t j = 0; j < n; ++j)
                for (int64_t c = 0; c < d; ++c) x[j * d + c] -= mean[c];
            if (p.mean != nullptr) std::copy(mean.begin(), mean.end(), p.mean + task * d);
        }
        if (!sage || p.operand == Operand::V) {
            std::vector<uint8_t> codes(count);
            if (sage) quantized::quantize_channels_e4m3(x.data(), n, d, codes.data(), p.scale + task * d);
            else quantized::quantize_all_e4m3(x.data(), n, d, codes.data(), p.scale + task);
            quantized::store_codes(p.output, b, h, 0, n, d, codes.data());
            return;
        }
        std::vector<int8_t> ints(count);
        if (p.operand == Operand::Q) quantized::quantize_rows_int(x.data(), n, d, qmax, ints.data(), p.scale + task * n);
        else quantized::quantize_key_blocks_int(x.data(), n, d, qmax, ints.data(), p.scale + task * key_blocks);
        quantized::store_ints(p.output, p.output_dtype, b, h, 0, n, d, ints.data());
    });
}

}  // namespace fa4j::cpu
