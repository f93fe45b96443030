// Every CUDA runtime call goes through FA4J_CUDA_CHECK, which turns a failure into an fa4j::Error
// carrying the call, the error's name and its description.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "core/error.hpp"

namespace fa4j::cuda {

[[noreturn]] inline void throw_cuda_error(cudaError_t error, const char* call) {
    cudaGetLastError();  // clear the sticky-free error state so the next call starts clean
    fa4j_status status = FA4J_ERROR_CUDA;
    if (error == cudaErrorMemoryAllocation) status = FA4J_ERROR_OUT_OF_MEMORY;
    if (error == cudaErrorNoDevice || error == cudaErrorInsufficientDriver) status = FA4J_ERROR_NO_DEVICE;
    fail(status, std::string(call) + " failed: " + cudaGetErrorName(error) + ": " + cudaGetErrorString(error));
}

}  // namespace fa4j::cuda

#define FA4J_CUDA_CHECK(call)                                                     \
    do {                                                                          \
        const cudaError_t fa4j_cuda_error_ = (call);                              \
        if (fa4j_cuda_error_ != cudaSuccess) ::fa4j::cuda::throw_cuda_error(fa4j_cuda_error_, #call); \
    } while (0)
