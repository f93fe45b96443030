// The one place where C++ meets the C ABI: runs a body, converts whatever it throws into a status and
// remembers the message for fa4j_last_error_message().
#pragma once

#include <new>
#include <string>

#include "core/error.hpp"

namespace fa4j::capi {

void set_last_error(const std::string& message) noexcept;

// The message a failing C ABI function leaves: its name, then what went wrong.
inline std::string failure_message(const char* function, const Error& e) { return std::string(function) + ": " + e.what(); }

template <typename Body>
fa4j_status guarded(const char* function, Body&& body) noexcept {
    try {
        body();
        return FA4J_OK;
    } catch (const Error& e) {
        set_last_error(failure_message(function, e));
        return e.status();
    } catch (const std::bad_alloc&) {
        set_last_error(std::string(function) + ": out of host memory");
        return FA4J_ERROR_OUT_OF_MEMORY;
    } catch (const std::exception& e) {
        set_last_error(std::string(function) + ": internal error: " + e.what());
        return FA4J_ERROR_INTERNAL;
    } catch (...) {
        set_last_error(std::string(function) + ": internal error (unknown exception)");
        return FA4J_ERROR_INTERNAL;
    }
}

}  // namespace fa4j::capi
