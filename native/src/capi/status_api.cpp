#include <string>

#include "capi/boundary.hpp"
#include "flashattn4j.h"

namespace fa4j::capi {
namespace {
// Thread-local because callers (JVM threads) may fail concurrently; a failing call and the read of its
// message always happen on the same thread.
thread_local std::string last_error;
}  // namespace

void set_last_error(const std::string& message) noexcept {
    try {
        last_error = message;
    } catch (...) {
        // Out of memory while recording an error: keep the previous message rather than throw.
    }
}

}  // namespace fa4j::capi

extern "C" fa4j_status fa4j_last_error_message(const char** message) {
    if (message == nullptr) return FA4J_ERROR_INVALID_ARGUMENT;
    *message = fa4j::capi::last_error.c_str();
    return FA4J_OK;
}

extern "C" fa4j_status fa4j_get_version(int32_t* abi_version, int32_t* major, int32_t* minor, int32_t* patch) {
    return fa4j::capi::guarded(__func__, [&] {
        FA4J_REQUIRE(abi_version && major && minor && patch, "all output pointers must be non-null");
        *abi_version = FA4J_ABI_VERSION;
        *major = FA4J_VERSION_MAJOR;
        *minor = FA4J_VERSION_MINOR;
        *patch = FA4J_VERSION_PATCH;
    });
}
