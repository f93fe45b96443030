// The float dtypes the decode-family kernels read and write element by element (float32, float16,
// bfloat16; a run-time field, not a template: these kernels are memory-bound), with the library's rounding
// on output: to nearest, saturating at the dtype's largest finite value, NaN kept.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "backends/cuda/kernels/decode/float_dtype.hpp"

namespace fa4j::cuda::kernels::decode {

__device__ __forceinline__ float load_float(const void* base, FloatDtype dtype, int64_t element) {
    if (dtype == FloatDtype::F32) return static_cast<const float*>(base)[element];
    if (dtype == FloatDtype::F16) return __half2float(static_cast<const __half*>(base)[element]);
    return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[element]);
}

__device__ __forceinline__ void store_float(void* base, FloatDtype dtype, int64_t element, float x) {
    if (dtype == FloatDtype::F32) {
        static_cast<float*>(base)[element] = x;
        return;
    }
    const float limit = dtype == FloatDtype::F16 ? 65504.f : 3.38953139e38f;
    x = x > limit ? limit : x < -limit ? -limit : x;  // comparisons with NaN are false: NaN passes
    if (dtype == FloatDtype::F16) static_cast<__half*>(base)[element] = __float2half_rn(x);
    else static_cast<__nv_bfloat16*>(base)[element] = __float2bfloat16_rn(x);
}

// Copies one element unchanged (an append: caches and new keys share the dtype).
__device__ __forceinline__ void copy_element(void* to, const void* from, FloatDtype dtype, int64_t to_element, int64_t from_element) {
    if (dtype == FloatDtype::F32) static_cast<float*>(to)[to_element] = static_cast<const float*>(from)[from_element];
    else static_cast<uint16_t*>(to)[to_element] = static_cast<const uint16_t*>(from)[from_element];
}

}  // namespace fa4j::cuda::kernels::decode
