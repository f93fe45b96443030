// The CUDA backend as the rest of the library sees it. Implemented in cuda_*.cu when the library is
// built with CUDA, and by cuda_unavailable.cpp otherwise, so callers never need #ifdefs.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/attention_problem.hpp"
#include "flashattn4j.h"

namespace fa4j::cuda {

bool compiled();
int device_count();  // 0 when no driver or device is usable
void get_device_properties(int device, fa4j_device_properties* properties);

void* malloc_device(int device, size_t bytes);
void free_device(int device, void* pointer);
void memcpy_sync(int device, void* destination, const void* source, size_t bytes, fa4j_memcpy_kind kind,
                 fa4j_stream stream);
void memset_async(int device, void* pointer, int value, size_t bytes, fa4j_stream stream);
fa4j_stream stream_create(int device);
void stream_destroy(int device, fa4j_stream stream);
void stream_synchronize(int device, fa4j_stream stream);
void device_synchronize(int device);

void attention_forward(int device, const ForwardProblem& problem, fa4j_stream stream);
void attention_backward(int device, const BackwardProblem& problem, fa4j_stream stream);
// Frees the backward workspace cached for `stream` (ordered on it); called before the stream is destroyed.
void release_workspace(int device, fa4j_stream stream);
void mem_get_info(int device, size_t* free_bytes, size_t* total_bytes);

}  // namespace fa4j::cuda
