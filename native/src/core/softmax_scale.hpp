// The numeric range every backend works in, in one place: the constants of the exp2 softmax and the
// largest softmax scale a call may use.
//
// Representable range (documented in flashattn4j.h and the README): inputs whose elements lie within
// the float16 range (|x| <= 65504, which covers every float16 tensor) and a softmax scale with
// |scale| · head_dim · 65504² <= 2^126 give finite results within the FlashAttention tolerance. Then
// every scaled score scale·q·k, the logsumexp and the differences of scores fit float32 with a margin
// of 2, and float32 sums of products of inputs (q·k, dout·v, dout·out, dS·k) stay far from overflow.
// A larger scale is refused up front (validation), since a score past float32 would reach the
// backward only as a logsumexp saturated at FLT_MAX, which no longer says which key held the maximum.
#pragma once

#include <cmath>
#include <cstdint>

namespace fa4j {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Largest input magnitude the guarantee above is stated for: the float16 maximum.
constexpr double kRangeMaxInput = 65504.0;
// Bound on |scale · q·k| within that range: 2^126, half of float32's 2^127 binade, so that the
// difference of two such scores, and scale·log2(e) times one, stay finite.
constexpr double kMaxScaledScore = 8.507059173023462e37;  // 2^126

// The largest |softmax_scale| a call with this head dim may use.
inline double max_softmax_scale(int64_t head_dim) {
    return kMaxScaledScore / (static_cast<double>(head_dim) * kRangeMaxInput * kRangeMaxInput);
}

// The CPU backward recomputes P = exp(scale·s - lse) from the forward's lse for rows with |lse| up to
// this. Beyond it, lse's float rounding (|lse|·2^-24) starts to show in P, and once it exceeds ln(2) it
// swallows ln(sum) itself: keys tied for the maximum would all get P = 1. There it reruns the forward's
// softmax statistics instead (exact). The CUDA backward always uses lse (flashattn4j.h says what that
// costs where |lse| is huge).
constexpr float kLseRecomputeLimit = 128.0f;

// softmax_scale · log2(e), the factor the kernels' exp2 needs, rounded to float as every kernel uses it.
inline float softmax_scale_log2(float softmax_scale) { return softmax_scale * kLog2e; }

}  // namespace fa4j
