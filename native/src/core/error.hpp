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

inline void require(bool condition, const std::string& message) {
    if (!condition) fail(FA4J_ERROR_INVALID_ARGUMENT, message);
}

}  // namespace fa4j
