// The stream a CUDA case runs on: a stream created through the C ABI (destroyed with the case, which
// also releases the backward workspace cached for it) or the legacy default stream. Cases alternate
// between the two because the library keys per-stream state on the stream.
#pragma once

#include <flashattn4j.h>

#include <cstdint>

#include "support/test_report.hpp"

namespace fa4j_test {

class ScopedStream {
public:
    explicit ScopedStream(int32_t device = 0) : device_(device) {}
    ScopedStream(const ScopedStream&) = delete;
    ScopedStream& operator=(const ScopedStream&) = delete;
    ~ScopedStream() {
        if (stream_ != nullptr) fa4j_cuda_stream_destroy(device_, stream_);
    }

    // Creates a stream when `own`, else keeps the default stream; false (and a failed case) on error.
    bool open(Outcome& o, bool own) { return !own || call_ok(o, fa4j_cuda_stream_create(device_, &stream_), "stream create"); }

    bool synchronize(Outcome& o) { return call_ok(o, fa4j_cuda_stream_synchronize(device_, stream_), "stream synchronize"); }

    fa4j_stream get() const { return stream_; }

private:
    int32_t device_;
    fa4j_stream stream_ = nullptr;
};

}  // namespace fa4j_test
