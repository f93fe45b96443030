// C ABI of buffers, the device memory pool and DLPack: argument checks, then memory/.
#include <string>

#include "backends/cuda/cuda_backend.hpp"
#include "capi/boundary.hpp"
#include "flashattn4j.h"
#include "memory/buffer.hpp"
#include "memory/dlpack.hpp"

using fa4j::Buffer;
using fa4j::capi::guarded;

namespace {
constexpr int32_t kMaxReleaseStreams = 1024;
}  // namespace

extern "C" fa4j_status fa4j_buffer_allocate(fa4j_device device, size_t bytes, fa4j_stream stream, fa4j_buffer* buffer) {
    return guarded(__func__, [&] {
        FA4J_REQUIRE(buffer != nullptr, "buffer is null");
        *buffer = nullptr;
        *buffer = Buffer::allocate(device, bytes, stream)->handle();
    });
}

extern "C" fa4j_status fa4j_buffer_info(fa4j_buffer buffer, void** data, size_t* bytes, fa4j_device* device) {
    return guarded(__func__, [&] {
        const Buffer* b = Buffer::from_handle(buffer);
        if (data != nullptr) *data = b->data();
        if (bytes != nullptr) *bytes = b->bytes();
        if (device != nullptr) *device = b->device();
    });
}

extern "C" fa4j_status fa4j_buffer_retain(fa4j_buffer buffer) {
    return guarded(__func__, [&] { Buffer::from_handle(buffer)->retain(); });
}

extern "C" fa4j_status fa4j_buffer_release(fa4j_buffer buffer, const fa4j_stream* streams, int32_t stream_count) {
    return guarded(__func__, [&] {
        FA4J_REQUIRE(stream_count >= 0 && stream_count <= kMaxReleaseStreams,
                "stream_count must be 0.." + std::to_string(kMaxReleaseStreams) + ", got " + std::to_string(stream_count));
        FA4J_REQUIRE(stream_count == 0 || streams != nullptr, "streams is null but stream_count is " + std::to_string(stream_count));
        Buffer::from_handle(buffer)->release(streams, stream_count);
    });
}

extern "C" fa4j_status fa4j_cuda_pool_get_info(int32_t device, uint64_t* used_bytes, uint64_t* reserved_bytes) {
    return guarded(__func__, [&] {
        FA4J_REQUIRE(used_bytes != nullptr && reserved_bytes != nullptr, "used_bytes and reserved_bytes must be non-null");
        fa4j::cuda::pool_get_info(device, used_bytes, reserved_bytes);
    });
}

extern "C" fa4j_status fa4j_cuda_pool_trim(int32_t device, uint64_t keep_bytes) {
    return guarded(__func__, [&] { fa4j::cuda::pool_trim(device, keep_bytes); });
}

extern "C" fa4j_status fa4j_cuda_stream_wait(int32_t device, fa4j_stream waiting, fa4j_stream waited) {
    return guarded(__func__, [&] { fa4j::cuda::stream_wait(device, waiting, waited); });
}

extern "C" fa4j_status fa4j_dlpack_export(fa4j_buffer owner, const fa4j_tensor* tensor, int32_t versioned,
                                          uint64_t flags, void** managed) {
    return guarded(__func__, [&] {
        FA4J_REQUIRE(tensor != nullptr && managed != nullptr, "tensor and managed must be non-null");
        FA4J_REQUIRE(versioned == 0 || versioned == 1, "versioned must be 0 or 1");
        *managed = nullptr;
        Buffer* owning = owner == nullptr ? nullptr : Buffer::from_handle(owner);
        *managed = fa4j::dlpack::export_tensor(owning, *tensor, versioned == 1, flags);
    });
}

extern "C" fa4j_status fa4j_dlpack_import(void* managed, int32_t versioned, const fa4j_tensor** tensor,
                                          uint64_t* flags, fa4j_buffer* owner) {
    return guarded(__func__, [&] {
        FA4J_REQUIRE(tensor != nullptr && flags != nullptr && owner != nullptr, "tensor, flags and owner must be non-null");
        FA4J_REQUIRE(versioned == 0 || versioned == 1, "versioned must be 0 or 1");
        *owner = nullptr;
        *owner = fa4j::dlpack::import_tensor(managed, versioned == 1, tensor, flags)->handle();
    });
}
