// DLPack's managed structs, laid out as the specification says (fa4j_tensor is DLTensor): what a producer
// in another language hands to fa4j_dlpack_import, and what fa4j_dlpack_export returns.
#pragma once

#include <flashattn4j.h>

#include <cstdint>

namespace fa4j_test {

struct DLPackVersion {
    uint32_t major, minor;
};
struct ManagedVersioned {
    DLPackVersion version;
    void* manager_ctx;
    void (*deleter)(ManagedVersioned*);
    uint64_t flags;
    fa4j_tensor dl_tensor;
};
struct ManagedLegacy {
    fa4j_tensor dl_tensor;
    void* manager_ctx;
    void (*deleter)(ManagedLegacy*);
};

}  // namespace fa4j_test
