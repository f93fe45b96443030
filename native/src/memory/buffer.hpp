// Reference-counted memory behind fa4j_buffer: host memory, device memory from the library's pool, or
// a foreign owner's memory imported through DLPack. See the header's "Buffers" section for the rules.
#pragma once

#include <atomic>
#include <cstddef>
#include <functional>
#include <mutex>

#include "backends/cuda/cuda_backend.hpp"
#include "flashattn4j.h"

namespace fa4j {

class Buffer {
public:
    // Hands the memory back to whoever it came from; called once, after the last release.
    using ForeignRelease = std::function<void()>;

    static Buffer* allocate(fa4j_device device, size_t bytes, fa4j_stream stream);
    // Memory the library does not own: `release` (may be empty) runs after the last reference is dropped
    // and, for device memory, after the work the releases named has finished.
    static Buffer* adopt(fa4j_device device, void* data, size_t bytes, ForeignRelease release);

    // The live buffer behind a handle; INVALID_ARGUMENT for a handle that is not one (never was, or has
    // been released for the last time), so a stale handle is an error, not a crash.
    static Buffer* from_handle(fa4j_buffer handle);
    fa4j_buffer handle() { return reinterpret_cast<fa4j_buffer>(this); }

    void retain();
    // Drops one reference; frees with the last (see the header). Throws on a CUDA error, after the
    // reference has been dropped regardless.
    void release(const fa4j_stream* streams, int count);

    void* data() const { return data_; }
    size_t bytes() const { return bytes_; }
    fa4j_device device() const { return device_; }

    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;

private:
    enum class Kind { Host, HostMapped, DevicePool, Foreign };
    Buffer(Kind kind, fa4j_device device, void* data, size_t bytes, void* allocation, ForeignRelease release);
    ~Buffer();
    bool on_cuda() const { return device_.device_type == FA4J_DEVICE_CUDA; }
    void free_memory(const fa4j_stream* streams, int count);

    const Kind kind_;
    const fa4j_device device_;
    void* const data_;
    const size_t bytes_;
    void* const allocation_;  // what to free (Host) or unmap (HostMapped); data_ is aligned inside it
    ForeignRelease foreign_release_;
    std::mutex mutex_;          // guards references_ and pending_
    long long references_ = 1;
    cuda::PendingUses pending_;  // work of holders that let go before the last one
};

}  // namespace fa4j
