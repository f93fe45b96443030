// Makes a device current for the calling thread for one library call, and restores the caller's
// current device afterwards: a library must not change thread state its caller relies on (a
// multi-GPU program that set device 1 keeps device 1 after a call that ran on device 0).
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "backends/cuda/cuda_backend.hpp"
#include "backends/cuda/cuda_check.cuh"
#include "core/error.hpp"

namespace fa4j::cuda {

class CurrentDevice {
public:
    // Checks that `device` exists (NO_DEVICE / INVALID_ARGUMENT otherwise), then makes it current.
    explicit CurrentDevice(int device) {
        const int count = device_count();
        if (count == 0) fail(FA4J_ERROR_NO_DEVICE, "no CUDA device is available");
        FA4J_REQUIRE(device >= 0 && device < count,
                "CUDA device " + std::to_string(device) + " does not exist (" + std::to_string(count) + " present)");
        FA4J_CUDA_CHECK(cudaGetDevice(&previous_));
        if (previous_ != device) FA4J_CUDA_CHECK(cudaSetDevice(device));
        else previous_ = -1;  // nothing to restore
    }

    ~CurrentDevice() {
        // Best effort: an error here cannot be reported, and the call's own status has been decided.
        if (previous_ >= 0) static_cast<void>(cudaSetDevice(previous_));
    }

    CurrentDevice(const CurrentDevice&) = delete;
    CurrentDevice& operator=(const CurrentDevice&) = delete;

private:
    int previous_ = -1;
};

}  // namespace fa4j::cuda
