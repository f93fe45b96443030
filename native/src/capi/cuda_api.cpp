// C ABI of device management: argument checks, then the CUDA backend.
#include <cstring>
#include <string>

#include "backends/cuda/cuda_backend.hpp"
#include "capi/boundary.hpp"
#include "flashattn4j.h"

using fa4j::capi::guarded;

namespace {
// Smallest fa4j_device_properties a caller may pass: everything up to and including `name`.
constexpr size_t kMinPropertiesSize = offsetof(fa4j_device_properties, name) + sizeof(fa4j_device_properties::name);
}  // namespace

extern "C" fa4j_status fa4j_cuda_device_count(int32_t* count) {
    return guarded(__func__, [&] {
        FA4J_REQUIRE(count != nullptr, "count is null");
        *count = fa4j::cuda::device_count();
    });
}

extern "C" fa4j_status fa4j_cuda_compiled(int32_t* compiled) {
    return guarded(__func__, [&] {
        FA4J_REQUIRE(compiled != nullptr, "compiled is null");
        *compiled = fa4j::cuda::compiled() ? 1 : 0;
    });
}

extern "C" fa4j_status fa4j_cuda_get_device_properties(int32_t device, fa4j_device_properties* properties) {
    return guarded(__func__, [&] {
        FA4J_REQUIRE(properties != nullptr, "properties is null");
        FA4J_REQUIRE(properties->struct_size >= kMinPropertiesSize, "properties->struct_size must be set to sizeof(fa4j_device_properties)");
        fa4j_device_properties full{};
        full.struct_size = sizeof full;
        fa4j::cuda::get_device_properties(device, &full);
        // Copy only what the caller's (possibly older, smaller) struct has room for.
        const size_t size = properties->struct_size < sizeof full ? properties->struct_size : sizeof full;
        std::memcpy(properties, &full, size);
        properties->struct_size = size;
    });
}

extern "C" fa4j_status fa4j_cuda_mem_get_info(int32_t device, size_t* free_bytes, size_t* total_bytes) {
    return guarded(__func__, [&] {
        FA4J_REQUIRE(free_bytes != nullptr && total_bytes != nullptr, "free_bytes and total_bytes must be non-null");
        fa4j::cuda::mem_get_info(device, free_bytes, total_bytes);
    });
}

extern "C" fa4j_status fa4j_cuda_malloc(int32_t device, size_t bytes, void** pointer) {
    return guarded(__func__, [&] {
        FA4J_REQUIRE(pointer != nullptr, "pointer is null");
        *pointer = nullptr;
        *pointer = fa4j::cuda::malloc_device(device, bytes);
    });
}

extern "C" fa4j_status fa4j_cuda_free(int32_t device, void* pointer) {
    return guarded(__func__, [&] { fa4j::cuda::free_device(device, pointer); });
}

extern "C" fa4j_status fa4j_cuda_memcpy(int32_t device, void* destination, const void* source, size_t bytes,
                                        int32_t kind, fa4j_stream stream) {
    return guarded(__func__, [&] {
        FA4J_REQUIRE(bytes == 0 || (destination != nullptr && source != nullptr), "destination and source must be non-null");
        fa4j::cuda::memcpy_sync(device, destination, source, bytes, static_cast<fa4j_memcpy_kind>(kind), stream);
    });
}

extern "C" fa4j_status fa4j_cuda_memset(int32_t device, void* pointer, int32_t value, size_t bytes, fa4j_stream stream) {
    return guarded(__func__, [&] {
        FA4J_REQUIRE(bytes == 0 || pointer != nullptr, "pointer is null");
        fa4j::cuda::memset_async(device, pointer, value, bytes, stream);
    });
}

extern "C" fa4j_status fa4j_cuda_stream_create(int32_t device, fa4j_stream* stream) {
    return guarded(__func__, [&] {
        FA4J_REQUIRE(stream != nullptr, "stream is null");
        *stream = nullptr;
        *stream = fa4j::cuda::stream_create(device);
    });
}

extern "C" fa4j_status fa4j_cuda_stream_destroy(int32_t device, fa4j_stream stream) {
    return guarded(__func__, [&] { fa4j::cuda::stream_destroy(device, stream); });
}

extern "C" fa4j_status fa4j_cuda_stream_synchronize(int32_t device, fa4j_stream stream) {
    return guarded(__func__, [&] { fa4j::cuda::stream_synchronize(device, stream); });
}

extern "C" fa4j_status fa4j_cuda_device_synchronize(int32_t device) {
    return guarded(__func__, [&] { fa4j::cuda::device_synchronize(device); });
}
