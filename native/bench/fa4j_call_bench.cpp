// Times one tiny fa4j_attention call through the C ABI, CPU only: the floor a caller of the library can reach
// for a call whose kernel work is about a microsecond, so that the Java API's per-call cost
// (benchmarks/CallOverheadBenchmark) can be read as "Java time minus this". Two calls, each with every argument
// prepared once:
//   forward: q [1, 1, H, d], k and v [1, keys, H, d], out and lse;
//   decode:  q [1, 1, H, d] against a dense cache [1, keys, H, d] holding `keys` tokens, out and lse.
// float32, num_threads as given (default 1, so no thread pool is involved; 0 is the library's default: all
// hardware threads).
//
// Timing: after warm-up, `rounds` samples each time `calls` back-to-back calls; the per-call time of each sample
// is its wall time / calls. Prints the median, p10 and p90 over samples, and a machine-readable line per call
// starting "fa4j_call_bench,".
//
// Usage: fa4j_call_bench [--keys 8] [--dim 8] [--heads 1] [--threads 1] [--rounds 30] [--calls 20000] [--warmup 20000]
#include <flashattn4j.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

struct Options {
    int64_t keys = 8, dim = 8, heads = 1;
    int32_t threads = 1;
    int rounds = 30, calls = 20000, warmup = 20000;
};

[[noreturn]] void usage(const std::string& why) {
    std::fprintf(stderr,
                 "fa4j_call_bench: %s\nusage: fa4j_call_bench [--keys K] [--dim D] [--heads H] [--threads T] [--rounds R] "
                 "[--calls N] [--warmup W]\n",
                 why.c_str());
    std::exit(2);
}

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (i + 1 >= argc) usage("missing value after " + arg);
        const long long v = std::atoll(argv[++i]);
        if (v < (arg == "--threads" ? 0 : 1)) usage("not a positive number after " + arg);  // threads 0: the default
        if (arg == "--keys") o.keys = v;
        else if (arg == "--dim") o.dim = v;
        else if (arg == "--heads") o.heads = v;
        else if (arg == "--threads") o.threads = static_cast<int32_t>(v);
        else if (arg == "--rounds") o.rounds = static_cast<int>(v);
        else if (arg == "--calls") o.calls = static_cast<int>(v);
        else if (arg == "--warmup") o.warmup = static_cast<int>(v);
        else usage("unknown option " + arg);
    }
    return o;
}

void check(fa4j_status status, const char* what) {
    if (status == FA4J_OK) return;
    const char* message = nullptr;
    fa4j_last_error_message(&message);
    std::fprintf(stderr, "%s failed: %s\n", what, message != nullptr ? message : "(no message)");
    std::exit(1);
}

// A contiguous host tensor in a vector of its own (float32 or int32: 4 bytes an element).
struct HostTensor {
    std::vector<int64_t> shape, strides;
    std::vector<float> data;
    fa4j_tensor t{};

    HostTensor(std::vector<int64_t> dims, fa4j_dtype dtype) : shape(std::move(dims)), strides(shape.size(), 1) {
        for (int d = static_cast<int>(shape.size()) - 2; d >= 0; --d)
            strides[static_cast<size_t>(d)] = strides[static_cast<size_t>(d) + 1] * shape[static_cast<size_t>(d) + 1];
        int64_t count = 1;
        for (int64_t s : shape) count *= s;
        data.resize(static_cast<size_t>(count));
        for (size_t i = 0; i < data.size(); ++i) data[i] = std::sin(static_cast<float>(i) * 0.37f);
        t = fa4j_tensor{data.data(), fa4j_device{FA4J_DEVICE_CPU, 0}, static_cast<int32_t>(shape.size()), dtype,
                        shape.data(), strides.data(), 0};
    }
    HostTensor(const HostTensor&) = delete;
    HostTensor& operator=(const HostTensor&) = delete;
};

// Per-call nanoseconds of `rounds` samples of `calls` calls each, sorted.
std::vector<double> time_calls(const Options& o, const fa4j_attention_args& args, const char* what) {
    for (int i = 0; i < o.warmup; ++i) check(fa4j_attention(&args, nullptr), what);
    std::vector<double> ns;
    for (int r = 0; r < o.rounds; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < o.calls; ++i) check(fa4j_attention(&args, nullptr), what);
        ns.push_back(std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() / o.calls);
    }
    std::sort(ns.begin(), ns.end());
    return ns;
}

void report(const char* name, const Options& o, const std::vector<double>& ns) {
    const double median = ns[ns.size() / 2], p10 = ns[ns.size() / 10], p90 = ns[ns.size() * 9 / 10];
    std::printf("%-8s per call: median %.3f us, p10 %.3f, p90 %.3f (%d samples of %d calls)\n", name, median / 1e3, p10 / 1e3,
                p90 / 1e3, o.rounds, o.calls);
    std::printf("fa4j_call_bench,%s,%lld,%lld,%lld,%d,%.1f,%.1f,%.1f\n", name, static_cast<long long>(o.keys),
                static_cast<long long>(o.dim), static_cast<long long>(o.heads), o.threads, median, p10, p90);
}

}  // namespace

int main(int argc, char** argv) {
    const Options o = parse(argc, argv);
    const fa4j_dtype f32{FA4J_DTYPE_CODE_FLOAT, 32, 1}, i32{FA4J_DTYPE_CODE_INT, 32, 1};
    std::printf("fa4j_call_bench: cpu float32, 1 query, %lld keys, %lld heads, d%lld, num_threads %d\n",
                static_cast<long long>(o.keys), static_cast<long long>(o.heads), static_cast<long long>(o.dim), o.threads);

    HostTensor q({1, 1, o.heads, o.dim}, f32), k({1, o.keys, o.heads, o.dim}, f32), v({1, o.keys, o.heads, o.dim}, f32);
    HostTensor out({1, 1, o.heads, o.dim}, f32), lse({1, o.heads, 1}, f32);
    HostTensor lengths({1}, i32);
    const int32_t filled = static_cast<int32_t>(o.keys);
    static_assert(sizeof(float) == sizeof(int32_t));
    std::memcpy(lengths.data.data(), &filled, sizeof filled);

    fa4j_attention_args common{};
    common.struct_size = sizeof common;
    common.q = &q.t;
    common.out = &out.t;
    common.lse = &lse.t;
    common.softmax_scale = 1.0f / std::sqrt(static_cast<float>(o.dim));
    common.window_left = common.window_right = FA4J_WINDOW_UNBOUNDED;
    common.num_threads = o.threads;

    fa4j_attention_args forward = common;
    forward.direction = FA4J_ATTENTION_FORWARD;
    forward.k = &k.t;
    forward.v = &v.t;

    fa4j_attention_args decode = common;
    decode.direction = FA4J_ATTENTION_DECODE;
    decode.k_cache = &k.t;
    decode.v_cache = &v.t;
    decode.cache_seqlens = &lengths.t;

    report("forward", o, time_calls(o, forward, "fa4j_attention (forward)"));
    report("decode", o, time_calls(o, decode, "fa4j_attention (decode)"));
    return 0;
}
