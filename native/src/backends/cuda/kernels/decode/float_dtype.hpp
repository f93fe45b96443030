// The float dtypes of the decode-family kernels' tensors, as a run-time field (float_values.cuh reads and
// writes them). Plain C++, for the entry points that fill the kernels' parameters.
#pragma once

#include <cstdint>

#include "core/host_device.hpp"

namespace fa4j::cuda::kernels::decode {

enum class FloatDtype : int32_t { F32 = 0, F16 = 1, BF16 = 2 };

FA4J_HOST_DEVICE inline int64_t float_bytes(FloatDtype dtype) { return dtype == FloatDtype::F32 ? 4 : 2; }

}  // namespace fa4j::cuda::kernels::decode
