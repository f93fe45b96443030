// Internal error handling: library code throws fa4j::Error; the C ABI boundary (capi/) turns it into an
// fa4j_status and a thread-local message, so no C++ exception ever crosses into the caller.
#pragma once

#include <stdexcept>
#include <string>

#include "flashattn4j.h"

namespace fa4j {

class Error : public std::runtime_error {
public:
    Error(fa4j_status status, const std::string& message) : std::runtime_error(message), status_(status) {}
    fa4j_status status() const noexcept { return status_; }

private:
    fa4j_status status_;
};

[[noreturn]] inline void fail(fa4j_status status, const std::string& message) { throw Error(status, message); }

}  // namespace fa4j

// Fails with FA4J_ERROR_INVALID_ARGUMENT and `message` unless `condition` holds. A macro so that the message
// (often concatenated from names, shapes and numbers) is built only when the check fails: validation runs on
// every call, and building its messages eagerly cost several microseconds per call, most of a small call.
#define FA4J_REQUIRE(condition, message)                                              \
    do {                                                                              \
        if (__builtin_expect(!(condition), 0))                                        \
            ::fa4j::fail(FA4J_ERROR_INVALID_ARGUMENT, (message));                     \
    } while (false)
