// Times fa4j_attention_forward (and fa4j_attention_backward, where the CUDA backend implements it) on
// CUDA tensors through the C ABI, and reports milliseconds and TFLOP/s with FlashAttention's FLOP
// convention: forward 4·B·H·Nq·Nk·d, halved when causal; backward 2.5 × forward.
//
// Timing: after warm-up, each sample queues `batch` calls back to back on one stream and waits for
// them (fa4j_cuda_stream_synchronize), so the host clock measures device time plus one launch latency
// spread over `batch` calls; the median of the samples is reported. Inputs are random (never zeros)
// and far larger than L2 at the default shapes, so no sample runs out of cache.
//
// Usage: fa4j_bench [--batch B] [--seqlen N] [--heads H] [--kv-heads Hkv] [--dims 64,128]
//                   [--dtypes bf16,fp16] [--causal 0,1] [--reps 30] [--warmup 5] [--no-backward] [--device 0]
// Besides the table it prints one machine-readable line per configuration, starting "fa4j_bench,"
// (benchmarks/peer_sdpa.py reads those).
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
    int64_t batch = 2, seqlen = 8192, heads = 16, kv_heads = 0;  // kv_heads 0: same as heads
    std::vector<int64_t> dims = {128, 64};
    std::vector<std::string> dtypes = {"bf16", "fp16"};
    std::vector<int> causal = {0, 1};
    int reps = 30, warmup = 5, device = 0;
    bool backward = true;
};

std::vector<std::string> split(const std::string& text) {
    std::vector<std::string> parts;
    size_t start = 0;
    while (start <= text.size()) {
        const size_t comma = text.find(',', start);
        const size_t end = comma == std::string::npos ? text.size() : comma;
        if (end > start) parts.push_back(text.substr(start, end - start));
        start = end + 1;
    }
    return parts;
}

[[noreturn]] void usage(const char* why) {
    std::fprintf(stderr,
                 "fa4j_bench: %s\nusage: fa4j_bench [--batch B] [--seqlen N] [--heads H] [--kv-heads Hkv] "
                 "[--dims 64,128] [--dtypes bf16,fp16] [--causal 0,1] [--reps R] [--warmup W] [--no-backward] "
                 "[--device D]\n",
                 why);
    std::exit(2);
}

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        const auto value = [&]() -> std::string {
            if (i + 1 >= argc) usage(("missing value after " + arg).c_str());
            return argv[++i];
        };
        if (arg == "--batch") o.batch = std::atoll(value().c_str());
        else if (arg == "--seqlen") o.seqlen = std::atoll(value().c_str());
        else if (arg == "--heads") o.heads = std::atoll(value().c_str());
        else if (arg == "--kv-heads") o.kv_heads = std::atoll(value().c_str());
        else if (arg == "--reps") o.reps = std::atoi(value().c_str());
        else if (arg == "--warmup") o.warmup = std::atoi(value().c_str());
        else if (arg == "--device") o.device = std::atoi(value().c_str());
        else if (arg == "--no-backward") o.backward = false;
        else if (arg == "--dims") {
            o.dims.clear();
            for (const std::string& d : split(value())) o.dims.push_back(std::atoll(d.c_str()));
        } else if (arg == "--dtypes") o.dtypes = split(value());
        else if (arg == "--causal") {
            o.causal.clear();
            for (const std::string& c : split(value())) o.causal.push_back(std::atoi(c.c_str()));
        } else usage(("unknown argument " + arg).c_str());
    }
    if (o.kv_heads == 0) o.kv_heads = o.heads;
    if (o.batch < 1 || o.seqlen < 1 || o.heads < 1 || o.kv_heads < 1 || o.heads % o.kv_heads != 0 || o.reps < 1 ||
        o.warmup < 0)
        usage("bad sizes");
    for (const std::string& dt : o.dtypes)
        if (dt != "bf16" && dt != "fp16") usage("dtypes are bf16 and fp16");
    return o;
}

std::string last_error() {
    const char* message = "";
    fa4j_last_error_message(&message);
    return message;
}

void check(fa4j_status status, const char* what) {
    if (status == FA4J_OK) return;
    std::fprintf(stderr, "fa4j_bench: %s failed (%d): %s\n", what, static_cast<int>(status), last_error().c_str());
    std::exit(1);
}

// Cheap random 16-bit values, roughly N(0, 1) (sum of four uniforms), for fp16 or bf16.
std::vector<uint16_t> random_values(size_t count, uint64_t seed, bool bf16) {
    std::vector<uint16_t> values(count);
    uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < count; ++i) {
        float sum = 0;
        for (int j = 0; j < 4; ++j) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            sum += static_cast<float>(state >> 40) * (1.0f / 16777216.0f) - 0.5f;
        }
        const float x = sum * 1.7320508f;  // variance 4/12 -> 1
        uint32_t u;
        std::memcpy(&u, &x, 4);
        if (bf16) {
            values[i] = static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
        } else {  // |x| < 4 here: a normal half; round the 13 dropped mantissa bits to nearest even
            const uint32_t sign = (u >> 16) & 0x8000u, magnitude = u & 0x7fffffffu;
            if (magnitude < 0x38800000u) {
                values[i] = static_cast<uint16_t>(sign);  // below the smallest normal half: 0 is close enough
            } else {
                uint32_t rebased = magnitude - 0x38000000u;
                rebased += 0xfffu + ((rebased >> 13) & 1u);
                values[i] = static_cast<uint16_t>(sign | (rebased >> 13));
            }
        }
    }
    return values;
}

struct DeviceTensor {
    int device = 0;
    void* data = nullptr;
    int64_t shape[4] = {0, 0, 0, 0};
    int64_t strides[4] = {0, 0, 0, 0};
    fa4j_tensor desc{};

    DeviceTensor(int dev, fa4j_dtype dtype, std::initializer_list<int64_t> dims) : device(dev) {
        int ndim = 0;
        int64_t count = 1;
        for (int64_t d : dims) {
            shape[ndim++] = d;
            count *= d;
        }
        int64_t stride = 1;
        for (int i = ndim - 1; i >= 0; --i) {
            strides[i] = stride;
            stride *= shape[i];
        }
        check(fa4j_cuda_malloc(dev, static_cast<size_t>(count) * dtype.bits / 8, &data), "fa4j_cuda_malloc");
        desc.data = data;
        desc.device = fa4j_device{FA4J_DEVICE_CUDA, dev};
        desc.ndim = ndim;
        desc.dtype = dtype;
        desc.shape = shape;
        desc.strides = strides;
        desc.byte_offset = 0;
    }
    ~DeviceTensor() { fa4j_cuda_free(device, data); }
    DeviceTensor(const DeviceTensor&) = delete;
    DeviceTensor& operator=(const DeviceTensor&) = delete;
    size_t elements() const {
        size_t n = 1;
        for (int i = 0; i < desc.ndim; ++i) n *= static_cast<size_t>(shape[i]);
        return n;
    }
};

// Median milliseconds per call of `call`, or a negative value if the first call fails (message in *why).
template <class Call>
double time_ms(const Options& o, fa4j_stream stream, Call call, std::string* why) {
    const fa4j_status first = call();
    if (first != FA4J_OK) {
        *why = last_error();
        return -1;
    }
    check(fa4j_cuda_stream_synchronize(o.device, stream), "warm-up");
    // Calibrate how many calls one sample holds: at least ~2 ms of work, so that one launch latency and
    // the synchronization stay under a percent of it.
    const auto c0 = std::chrono::steady_clock::now();
    check(call(), "calibration call");
    check(fa4j_cuda_stream_synchronize(o.device, stream), "calibration");
    const double once = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - c0).count();
    const int batch = std::max(1, std::min(50, static_cast<int>(std::ceil(2.0 / std::max(once, 1e-3)))));
    for (int i = 0; i < o.warmup; ++i) check(call(), "warm-up call");
    check(fa4j_cuda_stream_synchronize(o.device, stream), "warm-up");
    std::vector<double> samples;
    for (int r = 0; r < o.reps; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < batch; ++i) check(call(), "timed call");
        check(fa4j_cuda_stream_synchronize(o.device, stream), "timed synchronize");
        samples.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / batch);
    }
    std::sort(samples.begin(), samples.end());
    return samples[samples.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
    const Options o = parse(argc, argv);
    int32_t devices = 0;
    check(fa4j_cuda_device_count(&devices), "fa4j_cuda_device_count");
    if (devices == 0) {
        std::printf("fa4j_bench: no CUDA device; nothing to time\n");
        return 0;
    }
    fa4j_device_properties props{};
    props.struct_size = sizeof props;
    check(fa4j_cuda_get_device_properties(o.device, &props), "fa4j_cuda_get_device_properties");
    std::printf("device: %s (sm_%d%d, %d SMs)\n", props.name, props.compute_capability_major,
                props.compute_capability_minor, props.multiprocessor_count);
    std::printf("%-5s %4s %-6s %2s %6s %4s %4s | %9s %9s | %9s %9s\n", "dtype", "d", "mask", "B", "N", "H", "Hkv",
                "fwd ms", "fwd TF/s", "bwd ms", "bwd TF/s");
    fa4j_stream stream = nullptr;
    check(fa4j_cuda_stream_create(o.device, &stream), "fa4j_cuda_stream_create");

    for (const std::string& dt : o.dtypes) {
        const bool bf16 = dt == "bf16";
        const fa4j_dtype dtype{static_cast<uint8_t>(bf16 ? FA4J_DTYPE_CODE_BFLOAT : FA4J_DTYPE_CODE_FLOAT), 16, 1};
        const fa4j_dtype f32{FA4J_DTYPE_CODE_FLOAT, 32, 1};
        for (int64_t d : o.dims) {
            const int64_t B = o.batch, N = o.seqlen, H = o.heads, Hkv = o.kv_heads;
            DeviceTensor q(o.device, dtype, {B, N, H, d}), k(o.device, dtype, {B, N, Hkv, d}),
                v(o.device, dtype, {B, N, Hkv, d}), out(o.device, dtype, {B, N, H, d}), dout(o.device, dtype, {B, N, H, d}),
                dq(o.device, dtype, {B, N, H, d}), dk(o.device, dtype, {B, N, Hkv, d}), dv(o.device, dtype, {B, N, Hkv, d}),
                lse(o.device, f32, {B, H, N});
            uint64_t seed = 1;
            for (DeviceTensor* t : {&q, &k, &v, &dout}) {
                const std::vector<uint16_t> host = random_values(t->elements(), seed++, bf16);
                check(fa4j_cuda_memcpy(o.device, t->data, host.data(), host.size() * 2, FA4J_MEMCPY_HOST_TO_DEVICE, stream),
                      "fa4j_cuda_memcpy");
            }
            for (int causal : o.causal) {
                fa4j_attention_params params{};
                params.struct_size = sizeof params;
                params.softmax_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
                params.causal = causal;
                std::string why;
                const double fwd_ms = time_ms(o, stream, [&] {
                    return fa4j_attention_forward(&params, &q.desc, &k.desc, &v.desc, &out.desc, &lse.desc, stream);
                }, &why);
                if (fwd_ms < 0) {
                    std::printf("%-5s %4lld %-6s: forward not available: %s\n", dt.c_str(), static_cast<long long>(d),
                                causal ? "causal" : "full", why.c_str());
                    continue;
                }
                // A finite lse everywhere says the timed kernel computed something (every row sees a key).
                std::vector<float> lse_host(lse.elements());
                check(fa4j_cuda_memcpy(o.device, lse_host.data(), lse.data, lse_host.size() * 4, FA4J_MEMCPY_DEVICE_TO_HOST,
                                       stream),
                      "fa4j_cuda_memcpy");
                const bool finite = std::all_of(lse_host.begin(), lse_host.end(), [](float x) { return std::isfinite(x); });
                double bwd_ms = -1;
                std::string bwd_why = "skipped";
                if (o.backward)
                    bwd_ms = time_ms(o, stream, [&] {
                        return fa4j_attention_backward(&params, &dout.desc, &q.desc, &k.desc, &v.desc, &out.desc, &lse.desc,
                                                       &dq.desc, &dk.desc, &dv.desc, stream);
                    }, &bwd_why);
                const double flops = 4.0 * static_cast<double>(B * H) * static_cast<double>(N) * static_cast<double>(N) *
                                     static_cast<double>(d) * (causal ? 0.5 : 1.0);
                const double fwd_tflops = flops / (fwd_ms * 1e-3) / 1e12;
                const double bwd_tflops = bwd_ms > 0 ? 2.5 * flops / (bwd_ms * 1e-3) / 1e12 : -1;
                char bwd_text[64] = "      n/a       n/a";
                if (bwd_ms > 0) std::snprintf(bwd_text, sizeof bwd_text, "%9.3f %9.1f", bwd_ms, bwd_tflops);
                std::printf("%-5s %4lld %-6s %2lld %6lld %4lld %4lld | %9.3f %9.1f | %s%s\n", dt.c_str(),
                            static_cast<long long>(d), causal ? "causal" : "full", static_cast<long long>(B),
                            static_cast<long long>(N), static_cast<long long>(H), static_cast<long long>(Hkv), fwd_ms,
                            fwd_tflops, bwd_text, finite ? "" : "  (lse not finite!)");
                if (bwd_ms < 0 && o.backward) std::printf("      backward n/a: %s\n", bwd_why.c_str());
                std::printf("fa4j_bench,dtype=%s,d=%lld,causal=%d,B=%lld,N=%lld,H=%lld,Hkv=%lld,fwd_ms=%.4f,fwd_tflops=%.2f,"
                            "bwd_ms=%.4f,bwd_tflops=%.2f,lse_finite=%d\n",
                            dt.c_str(), static_cast<long long>(d), causal, static_cast<long long>(B),
                            static_cast<long long>(N), static_cast<long long>(H), static_cast<long long>(Hkv), fwd_ms,
                            fwd_tflops, bwd_ms, bwd_tflops, finite ? 1 : 0);
                std::fflush(stdout);
            }
        }
    }
    check(fa4j_cuda_stream_destroy(o.device, stream), "fa4j_cuda_stream_destroy");
    return 0;
}
