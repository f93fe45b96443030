// Host tensors with arbitrary strides over a shared buffer, as the C ABI sees them: a View is one
// fa4j_tensor descriptor (shape, element strides, element offset) into a Buffer that several views may
// share (q, k and v of a packed qkv projection). Values go in and out as float through the
// logical row-major index, so the reference never needs to know the layout.
//
// Every buffer is born filled with a signalling-pattern NaN ("poison"), so that any element no view
// covers is recognisable afterwards: an input gap a kernel reads turns its results into NaN, and an
// output gap a kernel writes no longer holds the pattern.
#pragma once

#include <flashattn4j.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "support/half_codec.hpp"
#include "support/test_dtype.hpp"

namespace fa4j_test {

struct Buffer {
    Dt dt = Dt::F32;
    std::vector<unsigned char> bytes;
    std::vector<char> covered;  // element belongs to some output view (so the kernel must write it)
    void* device = nullptr;     // device copy, while a DeviceMirror holds one

    size_t elements() const { return covered.size(); }

    // NaN payloads no arithmetic produces, so a kernel cannot write them by accident.
    void poison() {
        if (dt == Dt::F32) {
            for (size_t i = 0; i < bytes.size(); i += 4) std::memcpy(&bytes[i], &kPoison32, 4);
        } else {
            const uint16_t nan = dt == Dt::F16 ? kPoisonF16 : kPoisonBF16;
            for (size_t i = 0; i < bytes.size(); i += 2) std::memcpy(&bytes[i], &nan, 2);
        }
    }

    bool is_poison(size_t element) const {
        if (dt == Dt::F32) {
            uint32_t u;
            std::memcpy(&u, &bytes[element * 4], 4);
            return u == kPoison32;
        }
        uint16_t u;
        std::memcpy(&u, &bytes[element * 2], 2);
        return u == (dt == Dt::F16 ? kPoisonF16 : kPoisonBF16);
    }

    static constexpr uint32_t kPoison32 = 0x7fa5a5a5u;
    static constexpr uint16_t kPoisonF16 = 0x7e5au;
    static constexpr uint16_t kPoisonBF16 = 0x7fa5u;
};
using BufferPtr = std::shared_ptr<Buffer>;

inline BufferPtr new_buffer(Dt dt, int64_t elements) {
    auto b = std::make_shared<Buffer>();
    b->dt = dt;
    b->bytes.assign(static_cast<size_t>(elements) * dt_size(dt), 0);
    b->covered.assign(static_cast<size_t>(elements), 0);
    b->poison();
    return b;
}

struct View {
    BufferPtr buffer;
    int ndim = 4;
    int64_t shape[4] = {0, 0, 0, 0};
    int64_t strides[4] = {0, 0, 0, 0};
    int64_t offset = 0;  // elements; passed as byte_offset
    fa4j_tensor desc{};  // what tensor() hands out; lives as long as the view

    int64_t count() const {
        int64_t n = 1;
        for (int i = 0; i < ndim; ++i) n *= shape[i];
        return n;
    }

    // Buffer element of logical (row-major) index n.
    size_t element(int64_t n) const {
        int64_t e = offset;
        for (int i = ndim - 1; i >= 0; --i) {
            e += n % shape[i] * strides[i];
            n /= shape[i];
        }
        return static_cast<size_t>(e);
    }

    float get(int64_t n) const {
        const size_t e = element(n);
        const Buffer& b = *buffer;
        if (b.dt == Dt::F32) {
            float f;
            std::memcpy(&f, &b.bytes[e * 4], 4);
            return f;
        }
        uint16_t h;
        std::memcpy(&h, &b.bytes[e * 2], 2);
        return b.dt == Dt::F16 ? decode_f16(h) : decode_bf16(h);
    }

    void set(int64_t n, float value) {
        const size_t e = element(n);
        Buffer& b = *buffer;
        if (b.dt == Dt::F32) {
            std::memcpy(&b.bytes[e * 4], &value, 4);
        } else {
            const uint16_t h = b.dt == Dt::F16 ? encode_f16(value) : encode_bf16(value);
            std::memcpy(&b.bytes[e * 2], &h, 2);
        }
    }

    // The view's values in logical order (with broadcast strides, repeated as the kernel sees them).
    std::vector<float> values() const {
        std::vector<float> v(static_cast<size_t>(count()));
        for (int64_t n = 0; n < count(); ++n) v[static_cast<size_t>(n)] = get(n);
        return v;
    }

    void mark_covered() {
        for (int64_t n = 0; n < count(); ++n) buffer->covered[element(n)] = 1;
    }

    // Descriptor of this view in host memory.
    const fa4j_tensor* host_tensor() {
        return describe(buffer->bytes.empty() ? nullptr : buffer->bytes.data(), fa4j_device{FA4J_DEVICE_CPU, 0});
    }

    // Descriptor of this view in the buffer's device copy (see cuda_buffers.hpp).
    const fa4j_tensor* cuda_tensor(int32_t device_id = 0) {
        return describe(buffer->device, fa4j_device{FA4J_DEVICE_CUDA, device_id});
    }

private:
    const fa4j_tensor* describe(void* data, fa4j_device device) {
        desc.data = data;
        desc.device = device;
        desc.ndim = ndim;
        desc.dtype = dtype_descriptor(buffer->dt);
        desc.shape = shape;
        desc.strides = strides;
        desc.byte_offset = static_cast<uint64_t>(offset) * dt_size(buffer->dt);
        return &desc;
    }
};

}  // namespace fa4j_test
