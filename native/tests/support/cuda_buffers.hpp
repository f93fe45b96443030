// Device copies of the host buffers behind views, made, refreshed and read back through the C ABI
// only, so the drivers link nothing but the library. One device allocation per distinct host buffer:
// views that share a buffer (packed qkv) share its copy at the same offsets, so the device sees
// exactly the host layout, poisoned gaps included.
#pragma once

#include <flashattn4j.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "support/strided_tensor.hpp"
#include "support/test_report.hpp"

namespace fa4j_test {

// Why CUDA tests cannot run here, or "" when device 0 is usable.
inline std::string cuda_unavailable_reason() {
    int32_t compiled = 0, devices = 0;
    if (fa4j_cuda_compiled(&compiled) != FA4J_OK || compiled == 0) return "the library was built without CUDA";
    if (fa4j_cuda_device_count(&devices) != FA4J_OK || devices == 0) return "no CUDA device is usable";
    return "";
}

class DeviceMirror {
public:
    explicit DeviceMirror(int32_t device = 0) : device_(device) {}
    DeviceMirror(const DeviceMirror&) = delete;
    DeviceMirror& operator=(const DeviceMirror&) = delete;
    ~DeviceMirror() {
        for (const BufferPtr& b : buffers_) {
            fa4j_cuda_free(device_, b->device);
            b->device = nullptr;
        }
    }

    // Copies the views' buffers to the device, allocating on first sight and overwriting afterwards
    // (which is how a test re-poisons outputs between runs).
    bool upload(Outcome& o, std::initializer_list<View*> views) {
        for (View* v : views) {
            const BufferPtr& b = v->buffer;
            if (std::find(buffers_.begin(), buffers_.end(), b) == buffers_.end()) {
                if (!call_ok(o, fa4j_cuda_malloc(device_, b->bytes.size(), &b->device), "fa4j_cuda_malloc")) return false;
                buffers_.push_back(b);
            }
            if (b->bytes.empty()) continue;
            if (!call_ok(o, fa4j_cuda_memcpy(device_, b->device, b->bytes.data(), b->bytes.size(),
                                             FA4J_MEMCPY_HOST_TO_DEVICE, nullptr),
                         "fa4j_cuda_memcpy to the device"))
                return false;
        }
        return true;
    }

    // Copies a view's whole buffer back (gaps included, for check_untouched_gaps).
    bool download(Outcome& o, View& view) {
        Buffer& b = *view.buffer;
        if (b.bytes.empty()) return true;
        return call_ok(o, fa4j_cuda_memcpy(device_, b.bytes.data(), b.device, b.bytes.size(), FA4J_MEMCPY_DEVICE_TO_HOST,
                                           nullptr),
                       "fa4j_cuda_memcpy to the host");
    }

    // Poisons the views' buffers on the host and on the device.
    bool poison(Outcome& o, std::initializer_list<View*> views) {
        for (View* v : views) {
            v->buffer->poison();
            if (!upload(o, {v})) return false;
        }
        return true;
    }

private:
    int32_t device_;
    std::vector<BufferPtr> buffers_;
};

}  // namespace fa4j_test
