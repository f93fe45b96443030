// The float dtypes of the decode-family kernels' tensors, as a run-time field (float_values.cuh reads and
// writes them), and the mapping from a call's DType. Plain C++, for the entry points that fill the kernels'
// parameters.
#pragma once

#include <cstdint>
#include <string>

#include "core/dtype.hpp"
#include "core/error.hpp"
#include "core/host_device.hpp"

namespace fa4j::cuda::kernels::decode {

enum class FloatDtype : int32_t { F32 = 0, F16 = 1, BF16 = 2 };

FA4J_HOST_DEVICE inline int64_t float_bytes(FloatDtype dtype) { return dtype == FloatDtype::F32 ? 4 : 2; }

// A validated call's float dtype (validation admits no other for these kernels' tensors).
inline FloatDtype float_dtype_of(DType dtype) {
    switch (dtype) {
        case DType::F32: return FloatDtype::F32;
        case DType::F16: return FloatDtype::F16;
        case DType::BF16: return FloatDtype::BF16;
        default: fail(FA4J_ERROR_INTERNAL, std::string("a decode-family kernel got a ") + dtype_name(dtype) + " tensor");
    }
}

}  // namespace fa4j::cuda::kernels::decode
