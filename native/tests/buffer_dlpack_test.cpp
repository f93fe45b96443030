// Checks buffers and DLPack through the C ABI: reference counting, stale handles refused (never a
// crash), export and import in both DLPack struct versions with the deleter called exactly once, and the
// refusals of malformed managed tensors (which then stay the caller's). With a CUDA device, also the
// stream-ordered pool: allocations on streams, releases naming several streams, trim and statistics.
#include <flashattn4j.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "support/abi_values.hpp"
#include "support/dlpack_structs.hpp"
#include "support/test_report.hpp"

namespace {

using namespace fa4j_test;

std::atomic<int> deleter_calls{0};
void count_versioned(ManagedVersioned*) { deleter_calls++; }
void count_legacy(ManagedLegacy*) { deleter_calls++; }

Outcome buffer_lifecycle() {
    Outcome o;
    fa4j_buffer b = nullptr;
    if (!call_ok(o, fa4j_buffer_allocate(kCpu, 1000, nullptr, &b), "allocate")) return o;
    void* data = nullptr;
    size_t bytes = 0;
    fa4j_device device{};
    if (!call_ok(o, fa4j_buffer_info(b, &data, &bytes, &device), "info")) return o;
    if (bytes != 1000 || device.device_type != FA4J_DEVICE_CPU) fail(o, "info reports the wrong size or device");
    if (reinterpret_cast<uintptr_t>(data) % 64 != 0) fail(o, "host buffer not 64-byte aligned");
    const auto* bytes_in = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < bytes; i++)
        if (bytes_in[i] != 0) {
            fail(o, "host buffer not zeroed");
            break;
        }
    std::memset(data, 0xab, bytes);  // the whole block is ours to write
    call_ok(o, fa4j_buffer_retain(b), "retain");
    call_ok(o, fa4j_buffer_release(b, nullptr, 0), "first release");
    call_ok(o, fa4j_buffer_info(b, nullptr, nullptr, nullptr), "info after first release (one reference left)");
    call_ok(o, fa4j_buffer_release(b, nullptr, 0), "last release");
    o.detail += " stale info";
    expect_refusal(o, fa4j_buffer_info(b, &data, nullptr, nullptr), FA4J_ERROR_INVALID_ARGUMENT);
    o.detail += " double release";
    expect_refusal(o, fa4j_buffer_release(b, nullptr, 0), FA4J_ERROR_INVALID_ARGUMENT);
    int made_up = 0;
    o.detail += " made-up handle";
    expect_refusal(o, fa4j_buffer_retain(reinterpret_cast<fa4j_buffer>(&made_up)), FA4J_ERROR_INVALID_ARGUMENT);
    return o;
}

Outcome bad_allocations() {
    Outcome o;
    fa4j_buffer b = nullptr;
    o.detail += " huge host";
    expect_refusal(o, fa4j_buffer_allocate(kCpu, SIZE_MAX - 8, nullptr, &b), FA4J_OK);
    o.detail += " cpu with stream";
    expect_refusal(o, fa4j_buffer_allocate(kCpu, 8, reinterpret_cast<fa4j_stream>(&b), &b), FA4J_ERROR_INVALID_ARGUMENT);
    o.detail += " unknown device";
    expect_refusal(o, fa4j_buffer_allocate(fa4j_device{7, 0}, 8, nullptr, &b), FA4J_ERROR_INVALID_ARGUMENT);
    o.detail += " null out";
    expect_refusal(o, fa4j_buffer_allocate(kCpu, 8, nullptr, nullptr), FA4J_ERROR_INVALID_ARGUMENT);
    o.detail += " negative stream count";
    expect_refusal(o, fa4j_buffer_release(nullptr, nullptr, -1), FA4J_ERROR_INVALID_ARGUMENT);
    return o;
}

// Exports a [3, 5] float32 view (row stride 8) of a buffer, checks the managed struct, lets the exporter
// drop its reference first and the consumer's deleter free the memory.
Outcome export_roundtrip(bool versioned) {
    Outcome o;
    fa4j_buffer b = nullptr;
    if (!call_ok(o, fa4j_buffer_allocate(kCpu, 3 * 8 * 4, nullptr, &b), "allocate")) return o;
    void* data = nullptr;
    fa4j_buffer_info(b, &data, nullptr, nullptr);
    int64_t shape[2] = {3, 5}, strides[2] = {8, 1};
    fa4j_tensor t{data, kCpu, 2, kF32, shape, strides, 0};
    void* managed = nullptr;
    if (!call_ok(o, fa4j_dlpack_export(b, &t, versioned ? 1 : 0, versioned ? 1 : 0, &managed), "export")) return o;
    shape[0] = 99;  // the export keeps its own copy
    call_ok(o, fa4j_buffer_release(b, nullptr, 0), "exporter's release");
    // The consumer's reference keeps the buffer alive.
    call_ok(o, fa4j_buffer_info(b, nullptr, nullptr, nullptr), "info while exported");
    const fa4j_tensor* seen = nullptr;
    if (versioned) {
        auto* m = static_cast<ManagedVersioned*>(managed);
        if (m->version.major != 1 || m->flags != 1) fail(o, "wrong version or flags");
        seen = &m->dl_tensor;
    } else {
        seen = &static_cast<ManagedLegacy*>(managed)->dl_tensor;
    }
    if (seen->data != data || seen->ndim != 2 || seen->shape[0] != 3 || seen->shape[1] != 5 || seen->strides[0] != 8)
        fail(o, "managed tensor does not describe the view");
    static_cast<float*>(seen->data)[2 * 8 + 4] = 1.0f;  // last element: inside the memory
    if (versioned) {
        auto* m = static_cast<ManagedVersioned*>(managed);
        m->deleter(m);
    } else {
        auto* m = static_cast<ManagedLegacy*>(managed);
        m->deleter(m);
    }
    o.detail += " after deleter";
    expect_refusal(o, fa4j_buffer_info(b, nullptr, nullptr, nullptr), FA4J_ERROR_INVALID_ARGUMENT);
    return o;
}

Outcome export_refusals() {
    Outcome o;
    fa4j_buffer b = nullptr;
    if (!call_ok(o, fa4j_buffer_allocate(kCpu, 64, nullptr, &b), "allocate")) return o;
    void* data = nullptr;
    fa4j_buffer_info(b, &data, nullptr, nullptr);
    void* managed = nullptr;
    int64_t shape[1] = {17}, strides[1] = {1};
    fa4j_tensor t{data, kCpu, 1, kF32, shape, strides, 0};
    o.detail += " beyond the buffer";
    expect_refusal(o, fa4j_dlpack_export(b, &t, 1, 0, &managed), FA4J_ERROR_INVALID_ARGUMENT);
    shape[0] = 4;
    strides[0] = -1;
    o.detail += " negative stride";
    expect_refusal(o, fa4j_dlpack_export(b, &t, 1, 0, &managed), FA4J_ERROR_INVALID_ARGUMENT);
    strides[0] = 1;
    o.detail += " legacy with flags";
    expect_refusal(o, fa4j_dlpack_export(b, &t, 0, 1, &managed), FA4J_ERROR_INVALID_ARGUMENT);
    o.detail += " versioned=2";
    expect_refusal(o, fa4j_dlpack_export(b, &t, 2, 0, &managed), FA4J_ERROR_INVALID_ARGUMENT);
    if (managed != nullptr) fail(o, "a refused export wrote a managed tensor");
    fa4j_buffer_release(b, nullptr, 0);
    return o;
}

Outcome import_and_release(bool versioned) {
    Outcome o;
    std::vector<float> memory(24, 2.0f);
    int64_t shape[3] = {2, 3, 4};
    ManagedVersioned mv{{1, 3}, nullptr, count_versioned, 0, {memory.data(), kCpu, 3, kF32, shape, nullptr, 0}};
    ManagedLegacy ml{{memory.data(), kCpu, 3, kF32, shape, nullptr, 0}, nullptr, count_legacy};
    void* managed = versioned ? static_cast<void*>(&mv) : static_cast<void*>(&ml);
    const fa4j_tensor* t = nullptr;
    uint64_t flags = 7;
    fa4j_buffer owner = nullptr;
    deleter_calls = 0;
    if (!call_ok(o, fa4j_dlpack_import(managed, versioned ? 1 : 0, &t, &flags, &owner), "import")) return o;
    if (t == nullptr || t->data != memory.data() || t->strides != nullptr || flags != 0) fail(o, "import reports the wrong tensor");
    // Re-exporting an imported tensor shares its owner: the producer's deleter runs after both let go.
    void* again = nullptr;
    int64_t strides[3] = {12, 4, 1};
    fa4j_tensor view = *t;
    view.strides = strides;
    call_ok(o, fa4j_dlpack_export(owner, &view, 1, 0, &again), "re-export");
    call_ok(o, fa4j_buffer_release(owner, nullptr, 0), "release");
    if (deleter_calls != 0) fail(o, "producer's deleter ran while the re-export holds the memory");
    if (again != nullptr) static_cast<ManagedVersioned*>(again)->deleter(static_cast<ManagedVersioned*>(again));
    if (deleter_calls != 1) fail(o, "producer's deleter ran " + std::to_string(deleter_calls.load()) + " times, not once");
    return o;
}

Outcome import_refusals() {
    Outcome o;
    std::vector<float> memory(8);
    int64_t shape[1] = {8};
    const fa4j_tensor good{memory.data(), kCpu, 1, kF32, shape, nullptr, 0};
    const fa4j_tensor* t = nullptr;
    uint64_t flags = 0;
    fa4j_buffer owner = nullptr;
    deleter_calls = 0;
    auto refuse = [&](const char* what, ManagedVersioned m) {
        o.detail += std::string(" ") + what;
        expect_refusal(o, fa4j_dlpack_import(&m, 1, &t, &flags, &owner), FA4J_ERROR_INVALID_ARGUMENT);
    };
    refuse("major version 2", {{2, 0}, nullptr, count_versioned, 0, good});
    fa4j_tensor bad = good;
    bad.ndim = 33;
    refuse("ndim 33", {{1, 0}, nullptr, count_versioned, 0, bad});
    bad = good;
    bad.dtype = fa4j_dtype{FA4J_DTYPE_CODE_FLOAT, 64, 1};
    refuse("float64", {{1, 0}, nullptr, count_versioned, 0, bad});
    bad.dtype = fa4j_dtype{FA4J_DTYPE_CODE_INT, 64, 1};
    refuse("int64", {{1, 0}, nullptr, count_versioned, 0, bad});
    bad = good;
    bad.device = fa4j_device{10, 0};
    refuse("ROCm device", {{1, 0}, nullptr, count_versioned, 0, bad});
    int64_t huge[2] = {int64_t(1) << 40, int64_t(1) << 40};
    bad = good;
    bad.ndim = 2;
    bad.shape = huge;
    refuse("2^80 elements", {{1, 0}, nullptr, count_versioned, 0, bad});
    int64_t negative[1] = {-3};
    bad = good;
    bad.shape = negative;
    refuse("negative size", {{1, 0}, nullptr, count_versioned, 0, bad});
    bad = good;
    bad.data = nullptr;
    refuse("null data", {{1, 0}, nullptr, count_versioned, 0, bad});
    o.detail += " null managed";
    expect_refusal(o, fa4j_dlpack_import(nullptr, 1, &t, &flags, &owner), FA4J_ERROR_INVALID_ARGUMENT);
    if (deleter_calls != 0) fail(o, "a refused import called the deleter");
    return o;
}

bool have_cuda() {
    int32_t count = 0;
    return fa4j_cuda_device_count(&count) == FA4J_OK && count > 0;
}

// Allocations on two streams, a buffer used on both and released naming both, the pool's statistics and
// trim; a CUDA DLPack export whose deleter frees pool memory.
Outcome cuda_pool() {
    Outcome o;
    const fa4j_device gpu{FA4J_DEVICE_CUDA, 0};
    fa4j_stream s1 = nullptr, s2 = nullptr;
    if (!call_ok(o, fa4j_cuda_stream_create(0, &s1), "stream 1") || !call_ok(o, fa4j_cuda_stream_create(0, &s2), "stream 2"))
        return o;
    const size_t bytes = size_t(64) << 20;
    std::vector<unsigned char> host(bytes, 0x5a), back(bytes, 0);
    for (int round = 0; round < 3; round++) {
        fa4j_buffer b = nullptr;
        if (!call_ok(o, fa4j_buffer_allocate(gpu, bytes, s1, &b), "allocate")) break;
        void* data = nullptr;
        fa4j_buffer_info(b, &data, nullptr, nullptr);
        call_ok(o, fa4j_cuda_memset(0, data, round, bytes, s1), "memset on s1");
        call_ok(o, fa4j_cuda_stream_wait(0, s2, s1), "s2 waits for s1");
        call_ok(o, fa4j_cuda_memcpy(0, back.data(), data, bytes, FA4J_MEMCPY_DEVICE_TO_HOST, s2), "copy on s2");
        if (back[bytes - 1] != round) fail(o, "stream order lost: s2 read before s1 wrote");
        fa4j_stream both[2] = {s1, s2};
        call_ok(o, fa4j_buffer_release(b, both, 2), "release naming both streams");
    }
    uint64_t used = 0, reserved = 0;
    call_ok(o, fa4j_cuda_stream_synchronize(0, s1), "sync");
    call_ok(o, fa4j_cuda_pool_get_info(0, &used, &reserved), "pool info");
    o.detail += " used " + std::to_string(used) + " reserved " + std::to_string(reserved);
    if (reserved < used) fail(o, "reserved < used");
    call_ok(o, fa4j_cuda_pool_trim(0, 0), "trim");

    fa4j_buffer b = nullptr;
    if (call_ok(o, fa4j_buffer_allocate(gpu, 4096, s1, &b), "allocate for export")) {
        void* data = nullptr;
        fa4j_buffer_info(b, &data, nullptr, nullptr);
        int64_t shape[1] = {1024}, strides[1] = {1};
        fa4j_tensor t{data, gpu, 1, kF32, shape, strides, 0};
        void* managed = nullptr;
        if (call_ok(o, fa4j_dlpack_export(b, &t, 1, 0, &managed), "export")) {
            call_ok(o, fa4j_buffer_release(b, &s1, 1), "exporter's release on s1");
            call_ok(o, fa4j_cuda_stream_synchronize(0, s1), "sync before handing over");
            static_cast<ManagedVersioned*>(managed)->deleter(static_cast<ManagedVersioned*>(managed));
        }
    }
    call_ok(o, fa4j_cuda_stream_destroy(0, s1), "destroy s1");
    call_ok(o, fa4j_cuda_stream_destroy(0, s2), "destroy s2");
    return o;
}

}  // namespace

int main() {
    const auto start = std::chrono::steady_clock::now();
    Tally tally;
    tally.report("buffer lifecycle", buffer_lifecycle());
    tally.report("buffer refusals", bad_allocations());
    tally.report("export versioned", export_roundtrip(true));
    tally.report("export legacy", export_roundtrip(false));
    tally.report("export refusals", export_refusals());
    tally.report("import versioned", import_and_release(true));
    tally.report("import legacy", import_and_release(false));
    tally.report("import refusals", import_refusals());
    if (have_cuda()) tally.report("cuda pool", cuda_pool());
    else std::printf("SKIP cuda pool: no CUDA device\n");
    return tally.finish(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}
