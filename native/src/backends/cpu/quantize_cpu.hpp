// The quantizers of quantized attention on the CPU (the rules: core/quantization.hpp and flashattn4j.h),
// per head of one operand, shared by fa4j_quantize and the quantized attention forward, so that a
// pre-quantized input and one the attention call quantizes itself are the same bits.
#pragma once

#include <cstdint>
#include <vector>

#include "core/attention_problem.hpp"
#include "core/dtype.hpp"
#include "core/quantization.hpp"

namespace fa4j::cpu::quantized {

// Element (b, s, h, c) of a [batch, seq, head, head_dim] tensor of any dtype, as a float: compute dtypes
// exactly, int8 and int4 as their integers, float8 decoded.
float element(const SeqTensor& t, DType dtype, int64_t b, int64_t s, int64_t h, int64_t c);

// Writes rows [s0, s0 + rows) of head (b, h) of an int8 or int4 tensor from `ints` [rows][d].
void store_ints(const SeqTensor& t, DType dtype, int64_t b, int64_t h, int64_t s0, int64_t rows, int64_t d,
                const int8_t* ints);
// The same for a float8_e4m3fn tensor from its codes.
void store_codes(const SeqTensor& t, int64_t b, int64_t h, int64_t s0, int64_t rows, int64_t d, const uint8_t* codes);

// Head (b, h) of t, rows [0, seq), as floats [seq][d].
void read_head(const SeqTensor& t, DType dtype, int64_t b, int64_t h, int64_t seq, int64_t d, float* out);

// Per-channel mean of x [n][d] by the key mean's rule: 128-row chunks summed in order, divided by n.
void key_mean(const float* x, int64_t n, int64_t d, float* mean);

// Per-channel mean of x [n][d] by the Q smoothing rule: rows summed in order, divided by n.
void row_block_mean(const float* x, int64_t n, int64_t d, float* mean);

// Integer quantization (qmax 127 or 7) of x [n][d] with one scale per row (q, SAGE modes).
void quantize_rows_int(const float* x, int64_t n, int64_t d, int qmax, int8_t* ints, float* scales);

// Integer quantization of x [n][d] with one scale per block of 128 rows (k, SAGE modes).
void quantize_key_blocks_int(const float* x, int64_t n, int64_t d, int qmax, int8_t* ints, float* scales);

// e4m3 quantization of x [n][d] with one scale for all of it (FP8 mode's per-head descales).
void quantize_all_e4m3(const float* x, int64_t n, int64_t d, uint8_t* codes, float* scale);

// e4m3 quantization of x [n][d] with one scale per channel (v, FP8 P·v of the SAGE modes).
void quantize_channels_e4m3(const float* x, int64_t n, int64_t d, uint8_t* codes, float* scales);

}  // namespace fa4j::cpu::quantized

namespace fa4j::cpu {

// fa4j_quantize on CPU tensors.
void quantize(const fa4j::quant::QuantizeProblem& problem);

}  // namespace fa4j::cpu
