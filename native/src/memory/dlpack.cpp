#include "memory/dlpack.hpp"

#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "backends/cuda/cuda_backend.hpp"
#include "core/tensor_checks.hpp"

namespace fa4j::dlpack {
namespace {

// What an exported managed tensor points to: the struct itself, its own copy of shape and strides, and a
// reference on the memory's owner (null: memory the exporter vouches for).
template <typename Managed>
struct Exported {
    Managed managed{};
    std::vector<int64_t> shape;
    std::vector<int64_t> strides;
    Buffer* owner = nullptr;
};

template <typename Managed>
void delete_exported(Managed* self) noexcept {
    if (self == nullptr) return;
    auto* exported = static_cast<Exported<Managed>*>(self->manager_ctx);
    try {
        // The consumer is done with the memory when it calls the deleter; our own work was ordered by the
        // releases of the other holders.
        if (exported->owner != nullptr) exported->owner->release(nullptr, 0);
    } catch (...) {
        // Nowhere to report from a deleter; the reference is dropped regardless.
    }
    delete exported;
}

template <typename Managed>
Managed* make_exported(Buffer* owner, const fa4j_tensor& tensor) {
    auto exported = std::make_unique<Exported<Managed>>();
    exported->shape.assign(tensor.shape, tensor.shape + tensor.ndim);
    exported->strides.assign(tensor.strides, tensor.strides + tensor.ndim);
    Managed& m = exported->managed;
    m.dl_tensor = tensor;
    m.dl_tensor.shape = exported->shape.data();
    m.dl_tensor.strides = exported->strides.data();
    m.manager_ctx = exported.get();
    m.deleter = &delete_exported<Managed>;
    if (owner != nullptr) owner->retain();
    exported->owner = owner;
    return &exported.release()->managed;
}

// The dtypes tensors of this library hold (flashattn4j.h), and int32 (sequence offsets).
bool known_dtype(const fa4j_dtype& dtype) {
    DType ignored{};
    if (fa4j::known_dtype(dtype, ignored)) return true;
    return dtype.lanes == 1 && dtype.code == FA4J_DTYPE_CODE_INT && dtype.bits == 32;
}

// Shape, strides and dtype of a tensor crossing DLPack: checked so that every byte it addresses can be
// computed without overflow. Returns the bytes from data to one past the last addressed byte.
size_t check_tensor(const fa4j_tensor& t, bool strides_required) {
    FA4J_REQUIRE(t.ndim >= 0 && t.ndim <= kMaxDims,
            "ndim must be 0.." + std::to_string(kMaxDims) + ", got " + std::to_string(t.ndim));
    FA4J_REQUIRE(t.ndim == 0 || t.shape != nullptr, "shape is null");
    FA4J_REQUIRE(!strides_required || t.ndim == 0 || t.strides != nullptr, "strides is null");
    FA4J_REQUIRE(known_dtype(t.dtype), "dtype (code " + std::to_string(t.dtype.code) + ", bits " +
                                      std::to_string(t.dtype.bits) + ", lanes " + std::to_string(t.dtype.lanes) +
                                      ") is not float32, float16, bfloat16, float8_e4m3fn, float8_e5m2, int32, "
                                      "int8 or int4");
    constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
    int64_t elements = 1;
    int64_t last = 0;  // offset of the last element, in elements
    bool empty = false;
    for (int i = 0; i < t.ndim; i++) {
        const int64_t size = t.shape[i];
        FA4J_REQUIRE(size >= 0, "shape[" + std::to_string(i) + "] is negative: " + std::to_string(size));
        if (size == 0) empty = true;
        if (!empty) FA4J_REQUIRE(elements <= kMax / size, "element count overflows 63 bits");
        elements = empty ? 0 : elements * size;
        if (t.strides != nullptr) {
            const int64_t stride = t.strides[i];
            FA4J_REQUIRE(stride >= 0, "strides[" + std::to_string(i) + "] is negative: " + std::to_string(stride) +
                                     " (negative strides are not supported)");
            if (size > 1) {
                // last + 1 (the span in elements) must fit too.
                FA4J_REQUIRE(stride == 0 || size - 1 <= (kMax - 1 - last) / stride, "addressed span overflows 63 bits");
                last += (size - 1) * stride;
            }
        }
    }
    FA4J_REQUIRE(t.strides != nullptr || elements <= kMax / 8, "addressed span overflows 63 bits");
    if (t.dtype.bits < 8) {
        // Packed int4: compact row-major (no strides) needs the same even innermost size.
        std::vector<int64_t> compact;
        if (t.strides == nullptr) {
            compact.assign(static_cast<size_t>(t.ndim), 0);
            int64_t stride = 1;
            for (int i = t.ndim - 1; i >= 0; i--) {
                compact[static_cast<size_t>(i)] = stride;
                // Saturating: an empty tensor's other sizes may multiply past 63 bits, and its strides do not matter.
                const int64_t size = t.shape[i] > 0 ? t.shape[i] : 1;
                stride = stride > kMax / size ? kMax : stride * size;
            }
        }
        fa4j_tensor view = t;
        if (t.strides == nullptr) view.strides = compact.data();
        const std::string problem = packed_layout_problem(view);
        FA4J_REQUIRE(problem.empty(), problem);
    }
    const int64_t span_elements = t.strides != nullptr ? last + 1 : elements;
    const int64_t element_bytes = t.dtype.bits >= 8 ? t.dtype.bits / 8 : 1;  // int4: whole bytes of nibbles
    FA4J_REQUIRE(span_elements <= kMax / element_bytes &&
                t.byte_offset <= static_cast<uint64_t>(kMax - span_bytes(t.dtype, span_elements)),
            "addressed bytes overflow 63 bits");
    FA4J_REQUIRE(empty || elements == 0 || t.data != nullptr, "data is null for a non-empty tensor");
    FA4J_REQUIRE(t.byte_offset % static_cast<uint64_t>(element_bytes) == 0 &&
                reinterpret_cast<uintptr_t>(t.data) % static_cast<uintptr_t>(element_bytes) == 0,
            "data and byte_offset must be aligned to the element size (" + std::to_string(element_bytes) + " bytes)");
    return empty ? static_cast<size_t>(t.byte_offset)
                 : static_cast<size_t>(t.byte_offset + static_cast<uint64_t>(span_bytes(t.dtype, span_elements)));
}

// DLPACK_FLAG_BITMASK_IS_SUBBYTE_TYPE_PADDED: sub-byte elements one per byte instead of packed.
constexpr uint64_t kFlagSubbytePadded = uint64_t{1} << 2;

fa4j_device import_device(const fa4j_device& device) {
    if (device.device_type == FA4J_DEVICE_CPU || device.device_type == kDLCUDAHost) return {FA4J_DEVICE_CPU, 0};
    FA4J_REQUIRE(device.device_type == FA4J_DEVICE_CUDA,
            "device type " + std::to_string(device.device_type) + " is not CPU (1), CUDA (2) or CUDA host (3)");
    FA4J_REQUIRE(device.device_id >= 0, "negative CUDA device id " + std::to_string(device.device_id));
    // Memory of a device this process cannot use (or a build without CUDA) could never be used or synchronised
    // with here: refused, so the producer keeps it.
    const int count = cuda::device_count();
    if (device.device_id >= count)
        fail(FA4J_ERROR_NO_DEVICE, "the tensor is on cuda:" + std::to_string(device.device_id) + ", which this process " +
                                       (cuda::compiled() ? "does not have (" + std::to_string(count) + " CUDA devices)"
                                                         : std::string("cannot use: this build of flashattn4j has no CUDA support")));
    return device;
}

}  // namespace

void* export_tensor(Buffer* owner, const fa4j_tensor& tensor, bool versioned, uint64_t flags) {
    const size_t bytes = check_tensor(tensor, true);
    FA4J_REQUIRE(tensor.device.device_type == FA4J_DEVICE_CPU || tensor.device.device_type == FA4J_DEVICE_CUDA,
            "device type " + std::to_string(tensor.device.device_type) + " is neither CPU (1) nor CUDA (2)");
    if (owner != nullptr) {
        FA4J_REQUIRE(owner->device().device_type == tensor.device.device_type &&
                    owner->device().device_id == tensor.device.device_id,
                "the tensor's device is not its owner buffer's device");
        const auto first = reinterpret_cast<uintptr_t>(tensor.data);
        const auto begin = reinterpret_cast<uintptr_t>(owner->data());
        FA4J_REQUIRE(first >= begin && first - begin <= owner->bytes() && bytes <= owner->bytes() - (first - begin),
                "the tensor's bytes are not inside its owner buffer");
    }
    if (versioned) {
        auto* m = make_exported<ManagedVersioned>(owner, tensor);
        m->version = {FA4J_DLPACK_MAJOR_VERSION, FA4J_DLPACK_MINOR_VERSION};
        m->flags = flags;
        return m;
    }
    FA4J_REQUIRE(flags == 0, "legacy DLManagedTensor has no flags; pass 0");
    return make_exported<ManagedLegacy>(owner, tensor);
}

Buffer* import_tensor(void* managed, bool versioned, const fa4j_tensor** tensor, uint64_t* flags) {
    FA4J_REQUIRE(managed != nullptr, "managed tensor is null");
    if (versioned) {
        auto* m = static_cast<ManagedVersioned*>(managed);
        // DLPack: a consumer must refuse a major version it does not know; minor versions are compatible.
        FA4J_REQUIRE(m->version.major == FA4J_DLPACK_MAJOR_VERSION,
                "DLPack major version " + std::to_string(m->version.major) + " is not supported (this library reads " +
                    std::to_string(FA4J_DLPACK_MAJOR_VERSION) + ".x)");
        const size_t bytes = check_tensor(m->dl_tensor, false);
        FA4J_REQUIRE(m->dl_tensor.dtype.bits >= 8 || (m->flags & kFlagSubbytePadded) == 0,
                "int4 with DLPACK_FLAG_BITMASK_IS_SUBBYTE_TYPE_PADDED (one element per byte) is not supported: "
                "this library reads int4 packed, two elements per byte");
        const fa4j_device device = import_device(m->dl_tensor.device);
        Buffer* owner = Buffer::adopt(device, m->dl_tensor.data, bytes, [m] {
            if (m->deleter != nullptr) m->deleter(m);
        });
        *tensor = &m->dl_tensor;
        *flags = m->flags;
        return owner;
    }
    auto* m = static_cast<ManagedLegacy*>(managed);
    const size_t bytes = check_tensor(m->dl_tensor, false);
    const fa4j_device device = import_device(m->dl_tensor.device);
    Buffer* owner = Buffer::adopt(device, m->dl_tensor.data, bytes, [m] {
        if (m->deleter != nullptr) m->deleter(m);
    });
    *tensor = &m->dl_tensor;
    *flags = 0;
    return owner;
}

}  // namespace fa4j::dlpack
