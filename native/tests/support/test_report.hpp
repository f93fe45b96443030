// How a test driver records and reports its cases. Each case yields an Outcome (pass/fail and a
// one-line detail); a Tally prints one line per case and the closing summary line
// "N passed, M failed, K skipped" that scripts grep for, and gives the process exit status.
#pragma once

#include <flashattn4j.h>

#include <cstdio>
#include <string>

namespace fa4j_test {

struct Outcome {
    std::string detail;
    bool ok = true;
};

inline void fail(Outcome& o, const std::string& why) {
    o.ok = false;
    o.detail += " FAIL(" + why + ")";
}

inline std::string last_error_message() {
    const char* message = nullptr;
    if (fa4j_last_error_message(&message) != FA4J_OK || message == nullptr) return "";
    return message;
}

// True when `status` is FA4J_OK; otherwise fails the case with the library's message.
inline bool call_ok(Outcome& o, fa4j_status status, const char* what) {
    if (status == FA4J_OK) return true;
    fail(o, std::string(what) + " returned " + std::to_string(status) + ": " + last_error_message());
    return false;
}

// A call the library must refuse: it has to return an error (`expected`, unless that is FA4J_OK, which
// stands for "any error") together with a message that says why.
inline void expect_refusal(Outcome& o, fa4j_status status, fa4j_status expected) {
    const std::string message = status == FA4J_OK ? "" : last_error_message();
    o.detail += " -> " + std::to_string(status) + ": " + message;
    if (status == FA4J_OK) fail(o, "the call was accepted");
    else if (expected != FA4J_OK && status != expected) fail(o, "expected status " + std::to_string(expected));
    else if (message.empty()) fail(o, "no error message");
}

class Tally {
public:
    void report(const std::string& what, const Outcome& o) {
        std::printf("%s %s:%s\n", o.ok ? "PASS" : "FAIL", what.c_str(), o.detail.c_str());
        std::fflush(stdout);  // a crash under compute-sanitizer must not lose the lines before it
        (o.ok ? passed_ : failed_)++;
    }

    // Prints the summary; returns the exit status (nonzero when any case failed).
    int finish(double seconds) const {
        std::printf("(%.1f s)\n%d passed, %d failed, 0 skipped\n", seconds, passed_, failed_);
        return failed_ == 0 ? 0 : 1;
    }

private:
    int passed_ = 0;
    int failed_ = 0;
};

// What a driver prints, before exiting 0, when it cannot run at all here (e.g. no CUDA device).
inline int report_skipped(const std::string& reason) {
    std::printf("skipped: %s\n0 passed, 0 failed, 1 skipped\n", reason.c_str());
    return 0;
}

}  // namespace fa4j_test
