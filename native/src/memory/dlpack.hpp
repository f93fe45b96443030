// DLPack's managed-tensor structs, as the DLPack specification lays them out (fa4j_tensor is DLTensor),
// and the export/import of tensors through them.
#pragma once

#include <cstdint>

#include "flashattn4j.h"
#include "memory/buffer.hpp"

namespace fa4j::dlpack {

struct Version {
    uint32_t major;
    uint32_t minor;
};

// DLManagedTensorVersioned (DLPack >= 1.0).
struct ManagedVersioned {
    Version version;
    void* manager_ctx;
    void (*deleter)(ManagedVersioned* self);
    uint64_t flags;
    fa4j_tensor dl_tensor;
};

// DLManagedTensor (DLPack < 1.0, still the most widely exchanged).
struct ManagedLegacy {
    fa4j_tensor dl_tensor;
    void* manager_ctx;
    void (*deleter)(ManagedLegacy* self);
};

// DLPack's device types beyond fa4j_device_type that import accepts.
constexpr int32_t kDLCUDAHost = 3;  // pinned host memory: host-accessible, imported as CPU memory

constexpr int kMaxDims = 32;

void* export_tensor(Buffer* owner, const fa4j_tensor& tensor, bool versioned, uint64_t flags);
// Returns the buffer that now owns `managed`; *tensor points into it.
Buffer* import_tensor(void* managed, bool versioned, const fa4j_tensor** tensor, uint64_t* flags);

}  // namespace fa4j::dlpack
