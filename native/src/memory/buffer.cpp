#include "memory/buffer.hpp"

#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <unordered_set>

#include "core/error.hpp"

namespace fa4j {
namespace {

// Host buffers are aligned for the CPU kernels' vector loads.
constexpr size_t kHostAlignment = 64;
// From this size on, host buffers are mapped pages of their own: zero-filled lazily by the kernel and
// returned to it on release. (Through malloc, glibc raises its mmap threshold after the first large
// free, after which large blocks come from the heap, must be zeroed by hand, and stay resident.)
constexpr size_t kMapThreshold = size_t(1) << 20;

// Every live buffer, so that handles from callers are checked before use: a released or made-up handle
// gives INVALID_ARGUMENT instead of a use-after-free. Never destroyed (buffers may be released during
// static destruction).
std::mutex registry_mutex;
auto* const registry = new std::unordered_set<const Buffer*>();

void check_device(fa4j_device device, fa4j_stream stream) {
    if (device.device_type == FA4J_DEVICE_CPU) {
        FA4J_REQUIRE(device.device_id == 0, "CPU device id must be 0, got " + std::to_string(device.device_id));
        FA4J_REQUIRE(stream == nullptr, "a CPU buffer takes no stream");
        return;
    }
    FA4J_REQUIRE(device.device_type == FA4J_DEVICE_CUDA,
            "device type " + std::to_string(device.device_type) + " is neither CPU (1) nor CUDA (2)");
    FA4J_REQUIRE(device.device_id >= 0, "CUDA device id must be non-negative, got " + std::to_string(device.device_id));
}

}  // namespace

Buffer::Buffer(Kind kind, fa4j_device device, void* data, size_t bytes, void* allocation, ForeignRelease release)
    : kind_(kind), device_(device), data_(data), bytes_(bytes), allocation_(allocation),
      foreign_release_(std::move(release)) {
    std::lock_guard<std::mutex> lock(registry_mutex);
    registry->insert(this);
}

Buffer::~Buffer() {
    std::lock_guard<std::mutex> lock(registry_mutex);
    registry->erase(this);
}

Buffer* Buffer::allocate(fa4j_device device, size_t bytes, fa4j_stream stream) {
    check_device(device, stream);
    if (device.device_type == FA4J_DEVICE_CPU) {
        FA4J_REQUIRE(bytes <= SIZE_MAX / 2, "buffer of " + std::to_string(bytes) + " bytes is too large");
        const bool mapped = bytes >= kMapThreshold;
        void* allocation = nullptr;
        void* data = nullptr;
        if (mapped) {
            allocation = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (allocation == MAP_FAILED) allocation = nullptr;
            data = allocation;  // page-aligned
        } else {
            allocation = std::calloc(bytes + kHostAlignment, 1);
            const auto address = reinterpret_cast<uintptr_t>(allocation);
            data = reinterpret_cast<void*>((address + kHostAlignment - 1) / kHostAlignment * kHostAlignment);
        }
        if (allocation == nullptr)
            fail(FA4J_ERROR_OUT_OF_MEMORY, "cannot allocate " + std::to_string(bytes) + " bytes of host memory");
        try {
            return new Buffer(mapped ? Kind::HostMapped : Kind::Host, device, data, bytes, allocation, {});
        } catch (...) {
            if (mapped) munmap(allocation, bytes);
            else std::free(allocation);
            throw;
        }
    }
    void* data = cuda::pool_allocate(device.device_id, bytes, stream);
    try {
        return new Buffer(Kind::DevicePool, device, data, bytes, nullptr, {});
    } catch (...) {
        cuda::PendingUses none;
        none.free_after(device.device_id, data, &stream, 1);
        throw;
    }
}

Buffer* Buffer::adopt(fa4j_device device, void* data, size_t bytes, ForeignRelease release) {
    check_device(device, nullptr);
    return new Buffer(Kind::Foreign, device, data, bytes, nullptr, std::move(release));
}

Buffer* Buffer::from_handle(fa4j_buffer handle) {
    FA4J_REQUIRE(handle != nullptr, "buffer is null");
    const auto* buffer = reinterpret_cast<const Buffer*>(handle);
    std::lock_guard<std::mutex> lock(registry_mutex);
    FA4J_REQUIRE(registry->count(buffer) != 0, "not a live buffer (never allocated, or already released for the last time)");
    return const_cast<Buffer*>(buffer);
}

void Buffer::retain() {
    std::lock_guard<std::mutex> lock(mutex_);
    references_++;
}

void Buffer::release(const fa4j_stream* streams, int count) {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (references_ > 1) {
            references_--;
            // The last holder frees; until then, remember where this holder's work stands.
            if (on_cuda() && count > 0) pending_.record(device_.device_id, streams, count);
            return;
        }
        references_ = 0;
    }
    {
        // Unregister first: from here on the handle is dead, whatever happens while freeing.
        std::lock_guard<std::mutex> lock(registry_mutex);
        registry->erase(this);
    }
    struct Deleter {
        Buffer* buffer;
        ~Deleter() { delete buffer; }
    } deleter{this};
    free_memory(streams, count);
}

void Buffer::free_memory(const fa4j_stream* streams, int count) {
    switch (kind_) {
        case Kind::Host:
            std::free(allocation_);
            return;
        case Kind::HostMapped:
            munmap(allocation_, bytes_);
            return;
        case Kind::DevicePool:
            pending_.free_after(device_.device_id, data_, streams, count);
            return;
        case Kind::Foreign: {
            // Its owner gets it back whatever happens below (an error while waiting still reaches the caller,
            // but the memory is not leaked: this handle is gone either way).
            struct GiveBack {
                const ForeignRelease& release;
                ~GiveBack() {
                    if (release) release();
                }
            } give_back{foreign_release_};
            // Its owner knows nothing of our streams: our work on it must be over before it gets it back.
            if (on_cuda()) pending_.wait_host(device_.device_id, streams, count);
            return;
        }
    }
}

}  // namespace fa4j
