// Times a decode loop through the C ABI (FA4J_ATTENTION_DECODE): `batch` sequences whose caches hold a prompt,
// then `steps` steps that each append one token per sequence and attend the whole cache (causal, GQA), with the
// cache lengths written before every call as a server must. The same loop as the Java DecodeLoopBench
// (benchmarks/), so the two medians give the Java overhead per step.
//
// Shared prefix (cascade attention): --prefix P gives every sequence the same P-token prefix before its own
// prompt; stored once and passed as prefix_k/prefix_v, or with --unshared copied into every sequence's own
// pages (the same attention without sharing: the comparison, 64 sequences, 16k prefix, 512 suffix).
//
// Usage: fa4j_decode_bench [--device cpu|cuda:N] [--dtype bf16|fp16|fp32] [--batch 32] [--prompt 4096]
//                          [--steps 256] [--heads 32] [--kv-heads 8] [--dim 128] [--page 16] [--splits 0]
//                          [--threads 0] [--warmup 3] [--prefix 0] [--unshared]
// Prints the per-step latency (median, p10, p90), the rate of K and V bytes read, and a machine-readable line
// starting "decode_loop,native,".
#include <flashattn4j.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

struct Options {
    fa4j_device device{FA4J_DEVICE_CPU, 0};
    std::string dtype = "bf16";
    int64_t batch = 32, prompt = 4096, steps = 256, heads = 32, kv_heads = 8, dim = 128, page = 16, prefix = 0;
    int32_t splits = 0, threads = 0;
    int warmup = 3;
    bool unshared = false;
};

[[noreturn]] void usage(const std::string& why) {
    std::fprintf(stderr,
                 "fa4j_decode_bench: %s\nusage: fa4j_decode_bench [--device cpu|cuda:N] [--dtype bf16|fp16|fp32] [--batch B] "
                 "[--prompt N] [--steps S] [--heads H] [--kv-heads Hkv] [--dim D] [--page P] [--splits N] [--threads T] "
                 "[--warmup W] [--prefix P] [--unshared]\n",
                 why.c_str());
    std::exit(2);
}

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--unshared") {
            o.unshared = true;
            continue;
        }
        if (i + 1 >= argc) usage("missing value after " + arg);
        const std::string v = argv[++i];
        if (arg == "--device") {
            if (v == "cpu") o.device = fa4j_device{FA4J_DEVICE_CPU, 0};
            else if (v.rfind("cuda:", 0) == 0) o.device = fa4j_device{FA4J_DEVICE_CUDA, std::atoi(v.c_str() + 5)};
            else usage("unknown device " + v);
        } else if (arg == "--dtype") o.dtype = v;
        else if (arg == "--batch") o.batch = std::atoll(v.c_str());
        else if (arg == "--prompt") o.prompt = std::atoll(v.c_str());
        else if (arg == "--steps") o.steps = std::atoll(v.c_str());
        else if (arg == "--heads") o.heads = std::atoll(v.c_str());
        else if (arg == "--kv-heads") o.kv_heads = std::atoll(v.c_str());
        else if (arg == "--dim") o.dim = std::atoll(v.c_str());
        else if (arg == "--page") o.page = std::atoll(v.c_str());
        else if (arg == "--prefix") o.prefix = std::atoll(v.c_str());
        else if (arg == "--splits") o.splits = std::atoi(v.c_str());
        else if (arg == "--threads") o.threads = std::atoi(v.c_str());
        else if (arg == "--warmup") o.warmup = std::atoi(v.c_str());
        else usage("unknown option " + arg);
    }
    if (o.dtype != "bf16" && o.dtype != "fp16" && o.dtype != "fp32") usage("unknown dtype " + o.dtype);
    if (o.batch < 1 || o.steps < 1 || o.page < 8) usage("batch and steps must be >= 1, page >= 8");
    return o;
}

void check(fa4j_status status, const char* what) {
    if (status == FA4J_OK) return;
    const char* message = "";
    fa4j_last_error_message(&message);
    std::fprintf(stderr, "fa4j_decode_bench: %s failed (%d): %s\n", what, static_cast<int>(status), message);
    std::exit(1);
}

// A buffer of the library's on the benchmark's device, with a descriptor of a contiguous tensor over it.
struct DeviceTensor {
    fa4j_buffer buffer = nullptr;
    void* data = nullptr;
    std::vector<int64_t> shape, strides;
    fa4j_tensor t{};

    DeviceTensor(const Options& o, fa4j_dtype dtype, std::vector<int64_t> dims) : shape(std::move(dims)) {
        strides.assign(shape.size(), 1);
        for (int d = static_cast<int>(shape.size()) - 2; d >= 0; --d) strides[static_cast<size_t>(d)] = strides[static_cast<size_t>(d) + 1] * shape[static_cast<size_t>(d) + 1];
        size_t bytes = static_cast<size_t>(dtype.bits / 8);
        for (int64_t s : shape) bytes *= static_cast<size_t>(s);
        check(fa4j_buffer_allocate(o.device, bytes, nullptr, &buffer), "fa4j_buffer_allocate");
        check(fa4j_buffer_info(buffer, &data, nullptr, nullptr), "fa4j_buffer_info");
        t = fa4j_tensor{data, o.device, static_cast<int32_t>(shape.size()), dtype, shape.data(), strides.data(), 0};
    }
    ~DeviceTensor() { fa4j_buffer_release(buffer, nullptr, 0); }
    DeviceTensor(const DeviceTensor&) = delete;
    DeviceTensor& operator=(const DeviceTensor&) = delete;

    size_t bytes() const { return static_cast<size_t>(t.dtype.bits / 8) * static_cast<size_t>(count()); }
    int64_t count() const {
        int64_t n = 1;
        for (int64_t s : shape) n *= s;
        return n;
    }

    // Copies `bytes` bytes from the host into the start of the tensor.
    void upload(const Options& o, const void* host, size_t n) {
        if (o.device.device_type == FA4J_DEVICE_CPU) std::memcpy(data, host, n);
        else check(fa4j_cuda_memcpy(o.device.device_id, data, host, n, FA4J_MEMCPY_HOST_TO_DEVICE, nullptr), "fa4j_cuda_memcpy");
    }

    // Random values of the element type (bit patterns of N(0,1)-ish numbers; a fixed seed).
    void randomize(const Options& o, uint32_t seed) {
        std::mt19937 rng(seed);
        std::normal_distribution<float> normal;
        const size_t chunk = size_t{1} << 22;
        std::vector<unsigned char> host(std::min(bytes(), chunk));
        const size_t size = static_cast<size_t>(t.dtype.bits / 8);
        for (size_t done = 0; done < bytes(); done += host.size()) {
            const size_t n = std::min(host.size(), bytes() - done);
            for (size_t i = 0; i < n; i += size) {
                float x = normal(rng);
                if (size == 4) {
                    std::memcpy(&host[i], &x, 4);
                } else {
                    uint32_t u;
                    std::memcpy(&u, &x, 4);
                    // bf16: the top half; fp16: a small exponent-limited approximation is fine for timing.
                    const uint16_t h = o.dtype == "bf16" ? static_cast<uint16_t>(u >> 16)
                                                         : static_cast<uint16_t>(((u >> 16) & 0x8000u) | 0x3800u | ((u >> 13) & 0x3ffu));
                    std::memcpy(&host[i], &h, 2);
                }
            }
            if (o.device.device_type == FA4J_DEVICE_CPU) std::memcpy(static_cast<char*>(data) + done, host.data(), n);
            else
                check(fa4j_cuda_memcpy(o.device.device_id, static_cast<char*>(data) + done, host.data(), n, FA4J_MEMCPY_HOST_TO_DEVICE, nullptr),
                      "fa4j_cuda_memcpy");
        }
    }
};

fa4j_dtype dtype_of(const std::string& name) {
    if (name == "fp32") return fa4j_dtype{FA4J_DTYPE_CODE_FLOAT, 32, 1};
    if (name == "fp16") return fa4j_dtype{FA4J_DTYPE_CODE_FLOAT, 16, 1};
    return fa4j_dtype{FA4J_DTYPE_CODE_BFLOAT, 16, 1};
}

}  // namespace

int main(int argc, char** argv) {
    const Options o = parse(argc, argv);
    const fa4j_dtype dt = dtype_of(o.dtype);
    const fa4j_dtype i32{FA4J_DTYPE_CODE_INT, 32, 1};
    const bool shared = o.prefix > 0 && !o.unshared;
    // Own positions per sequence at the start: the prompt, and the prefix when it is not shared.
    const int64_t start = o.prompt + (shared ? 0 : o.prefix);
    const int64_t capacity = start + o.warmup + o.steps;
    const int64_t pages_per_sequence = (capacity + o.page - 1) / o.page;
    std::printf("fa4j_decode_bench: %s %s, batch %lld, prompt %lld, prefix %lld (%s), %lld steps, heads %lld/%lld, d%lld, page %lld\n",
                o.device.device_type == FA4J_DEVICE_CPU ? "cpu" : "cuda", o.dtype.c_str(), static_cast<long long>(o.batch),
                static_cast<long long>(o.prompt), static_cast<long long>(o.prefix), shared ? "shared" : "per sequence",
                static_cast<long long>(o.steps), static_cast<long long>(o.heads), static_cast<long long>(o.kv_heads),
                static_cast<long long>(o.dim), static_cast<long long>(o.page));

    DeviceTensor k_pages(o, dt, {o.batch * pages_per_sequence, o.page, o.kv_heads, o.dim});
    DeviceTensor v_pages(o, dt, {o.batch * pages_per_sequence, o.page, o.kv_heads, o.dim});
    k_pages.randomize(o, 1);
    v_pages.randomize(o, 2);
    DeviceTensor table(o, i32, {o.batch, pages_per_sequence});
    std::vector<int32_t> table_host(static_cast<size_t>(o.batch * pages_per_sequence));
    for (size_t i = 0; i < table_host.size(); ++i) table_host[i] = static_cast<int32_t>(i);  // sequence b: its own run of pages
    table.upload(o, table_host.data(), table.bytes());
    DeviceTensor lengths(o, i32, {o.batch});
    std::vector<int32_t> lengths_host(static_cast<size_t>(o.batch), static_cast<int32_t>(start));
    DeviceTensor q(o, dt, {o.batch, 1, o.heads, o.dim}), k_new(o, dt, {o.batch, 1, o.kv_heads, o.dim});
    DeviceTensor v_new(o, dt, {o.batch, 1, o.kv_heads, o.dim}), out(o, dt, {o.batch, 1, o.heads, o.dim});
    q.randomize(o, 3);
    k_new.randomize(o, 4);
    v_new.randomize(o, 5);
    DeviceTensor prefix_k(o, dt, {shared ? o.prefix : 0, o.kv_heads, o.dim}), prefix_v(o, dt, {shared ? o.prefix : 0, o.kv_heads, o.dim});
    if (shared) {
        prefix_k.randomize(o, 6);
        prefix_v.randomize(o, 7);
    }

    fa4j_attention_args a{};
    a.struct_size = sizeof a;
    a.direction = FA4J_ATTENTION_DECODE;
    a.q = &q.t;
    a.k_cache = &k_pages.t;
    a.v_cache = &v_pages.t;
    a.block_table = &table.t;
    a.cache_seqlens = &lengths.t;
    a.k_new = &k_new.t;
    a.v_new = &v_new.t;
    if (shared) {
        a.prefix_k = &prefix_k.t;
        a.prefix_v = &prefix_v.t;
    }
    a.out = &out.t;
    a.softmax_scale = 1.0f / std::sqrt(static_cast<float>(o.dim));
    a.causal = 1;
    a.window_left = a.window_right = FA4J_WINDOW_UNBOUNDED;
    a.num_threads = o.threads;
    a.num_splits = o.splits;

    auto step = [&] {
        lengths.upload(o, lengths_host.data(), lengths.bytes());
        check(fa4j_attention(&a, nullptr), "fa4j_attention (decode)");
        if (o.device.device_type == FA4J_DEVICE_CUDA) check(fa4j_cuda_stream_synchronize(o.device.device_id, nullptr), "synchronize");
        for (int32_t& l : lengths_host) ++l;
    };
    for (int i = 0; i < o.warmup; ++i) step();
    std::vector<double> ms;
    for (int64_t s = 0; s < o.steps; ++s) {
        const auto t0 = std::chrono::steady_clock::now();
        step();
        ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::vector<double> sorted = ms;
    std::sort(sorted.begin(), sorted.end());
    const double median = sorted[sorted.size() / 2];
    const double positions = static_cast<double>(o.prefix + o.prompt + o.warmup + o.steps / 2 + 1);
    // K and V bytes one step reads: the shared prefix once, otherwise every sequence's whole cache.
    const double kv_positions = shared ? static_cast<double>(o.prefix) + static_cast<double>(o.batch) * (positions - static_cast<double>(o.prefix))
                                       : static_cast<double>(o.batch) * positions;
    const double bytes = (2.0 * kv_positions * static_cast<double>(o.kv_heads * o.dim) + 2.0 * static_cast<double>(o.batch * o.heads * o.dim)) *
                         (dt.bits / 8);
    std::printf("per step: median %.3f ms, p10 %.3f, p90 %.3f; %.1f GB/s of K+V read (+q, out)\n", median, sorted[sorted.size() / 10],
                sorted[sorted.size() * 9 / 10], bytes / (median * 1e-3) / 1e9);
    std::printf("decode_loop,native,%s,%s,%lld,%lld,%lld,%lld,%lld,%lld,%lld,%lld,%s,%.6f\n",
                o.device.device_type == FA4J_DEVICE_CPU ? "cpu" : "cuda", o.dtype.c_str(), static_cast<long long>(o.batch),
                static_cast<long long>(o.prompt), static_cast<long long>(o.steps), static_cast<long long>(o.heads),
                static_cast<long long>(o.kv_heads), static_cast<long long>(o.dim), static_cast<long long>(o.page),
                static_cast<long long>(o.prefix), shared ? "shared" : "unshared", median);
    return 0;
}
