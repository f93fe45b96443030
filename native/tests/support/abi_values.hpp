// The C ABI's device and dtype descriptors as the native drivers name them (flashattn4j.h lists the dtypes).
#pragma once

#include <flashattn4j.h>

namespace fa4j_test {

constexpr fa4j_device kCpu{FA4J_DEVICE_CPU, 0};
constexpr fa4j_dtype kF32{FA4J_DTYPE_CODE_FLOAT, 32, 1};
constexpr fa4j_dtype kF16{FA4J_DTYPE_CODE_FLOAT, 16, 1};
constexpr fa4j_dtype kBF16{FA4J_DTYPE_CODE_BFLOAT, 16, 1};
constexpr fa4j_dtype kI32{FA4J_DTYPE_CODE_INT, 32, 1};
constexpr fa4j_dtype kI8{FA4J_DTYPE_CODE_INT, 8, 1};
constexpr fa4j_dtype kI4{FA4J_DTYPE_CODE_INT, 4, 1};
constexpr fa4j_dtype kE4M3{FA4J_DTYPE_CODE_FLOAT8_E4M3FN, 8, 1};
constexpr fa4j_dtype kE5M2{FA4J_DTYPE_CODE_FLOAT8_E5M2, 8, 1};

}  // namespace fa4j_test
