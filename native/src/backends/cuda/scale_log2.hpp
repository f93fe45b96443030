// The CUDA kernels compute softmax with exp2, so they multiply scores by softmax_scale · log2(e); that
// product must be a finite float for every kernel. One check, shared by the forward and backward entries.
#pragma once

#include <cmath>
#include <limits>

#include "core/error.hpp"

namespace fa4j::cuda {

constexpr double kLog2e = 1.4426950408889634;

// softmax_scale · log2(e) in double; UNSUPPORTED when it does not fit a float.
inline double checked_scale_log2(float softmax_scale) {
    const double scale_log2 = static_cast<double>(softmax_scale) * kLog2e;
    if (std::fabs(scale_log2) > static_cast<double>(std::numeric_limits<float>::max()))
        fail(FA4J_ERROR_UNSUPPORTED, "softmax_scale is too large for the CUDA kernels (|scale·log2(e)| overflows float32)");
    return scale_log2;
}

}  // namespace fa4j::cuda
