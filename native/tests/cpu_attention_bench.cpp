// Throughput of the CPU backend, forward and backward, in the FlashAttention convention: forward FLOPs
// = 4·B·H·Nq·Nk·d (halved under the causal mask), backward = 2.5 × forward. Not a ctest test (no
// _test suffix); build by hand against the library, e.g.
//   g++ -O2 -std=c++17 -Inative/include native/tests/cpu_attention_bench.cpp -Lbuild -lflashattn4j
//       -Wl,-rpath,build -o /tmp/cpu_attention_bench
// Thread count: FA4J_NUM_THREADS; instruction set: FA4J_CPU_ISA (generic, avx2, avx512).
#include <flashattn4j.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

namespace {

struct Tensor {
    std::vector<unsigned char> bytes;
    int64_t shape[4];
    int64_t strides[4];
    fa4j_tensor desc;

    Tensor(int ndim, const int64_t* dims, bool bf16) : shape{}, strides{}, desc{} {
        int64_t count = 1;
        for (int i = ndim - 1; i >= 0; --i) {
            shape[i] = dims[i];
            strides[i] = count;
            count *= dims[i];
        }
        const size_t element = bf16 ? 2 : 4;
        bytes.assign(static_cast<size_t>(count) * element, 0);
        desc.data = bytes.data();
        desc.device = fa4j_device{FA4J_DEVICE_CPU, 0};
        desc.ndim = ndim;
        desc.dtype = fa4j_dtype{static_cast<uint8_t>(bf16 ? FA4J_DTYPE_CODE_BFLOAT : FA4J_DTYPE_CODE_FLOAT),
                                static_cast<uint8_t>(element * 8), 1};
        desc.shape = shape;
        desc.strides = strides;
    }

    void randomize(std::mt19937& rng) {
        std::normal_distribution<float> normal(0.0f, 1.0f);
        if (desc.dtype.bits == 32) {
            for (size_t i = 0; i < bytes.size(); i += 4) {
                const float x = normal(rng);
                std::memcpy(&bytes[i], &x, 4);
            }
        } else {
            for (size_t i = 0; i < bytes.size(); i += 2) {
                const float x = normal(rng);
                uint32_t u;
                std::memcpy(&u, &x, 4);
                const uint16_t h = static_cast<uint16_t>(u >> 16);  // truncation is fine for timing
                std::memcpy(&bytes[i], &h, 2);
            }
        }
    }
};

template <class F>
double best_seconds(F&& run) {
    run();  // warm-up: thread pool, page faults
    double best = 1e30, total = 0;
    for (int rep = 0; rep < 20 && (rep < 3 || total < 2.0); ++rep) {
        const auto t0 = std::chrono::steady_clock::now();
        run();
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        best = std::min(best, s);
        total += s;
    }
    return best;
}

void check(fa4j_status status) {
    if (status == FA4J_OK) return;
    const char* message = "";
    fa4j_last_error_message(&message);
    std::fprintf(stderr, "error %d: %s\n", status, message);
    std::exit(1);
}

}  // namespace

int main() {
    const int64_t B = 1, H = 8, N = 1024;
    std::printf("%-5s %4s %-7s %10s %10s %10s %10s\n", "dtype", "d", "mask", "fwd ms", "fwd GF/s", "bwd ms", "bwd GF/s");
    for (bool bf16 : {true, false})
        for (int64_t d : {64, 128})
            for (bool causal : {false, true}) {
                std::mt19937 rng(7);
                const int64_t seq_dims[4] = {B, N, H, d}, lse_dims[3] = {B, H, N};
                Tensor q(4, seq_dims, bf16), k(4, seq_dims, bf16), v(4, seq_dims, bf16), out(4, seq_dims, bf16),
                    dout(4, seq_dims, bf16), dq(4, seq_dims, bf16), dk(4, seq_dims, bf16), dv(4, seq_dims, bf16);
                Tensor lse(3, lse_dims, false);
                q.randomize(rng);
                k.randomize(rng);
                v.randomize(rng);
                dout.randomize(rng);
                fa4j_attention_params p{};
                p.struct_size = sizeof p;
                p.softmax_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
                p.causal = causal ? 1 : 0;
                const double fwd = best_seconds([&] {
                    check(fa4j_attention_forward(&p, &q.desc, &k.desc, &v.desc, &out.desc, &lse.desc, nullptr));
                });
                const double bwd = best_seconds([&] {
                    check(fa4j_attention_backward(&p, &dout.desc, &q.desc, &k.desc, &v.desc, &out.desc, &lse.desc,
                                                  &dq.desc, &dk.desc, &dv.desc, nullptr));
                });
                const double flops = 4.0 * B * H * N * N * static_cast<double>(d) * (causal ? 0.5 : 1.0);
                std::printf("%-5s %4lld %-7s %10.2f %10.1f %10.2f %10.1f\n", bf16 ? "bf16" : "fp32",
                            static_cast<long long>(d), causal ? "causal" : "full", fwd * 1e3, flops / fwd * 1e-9,
                            bwd * 1e3, 2.5 * flops / bwd * 1e-9);
            }
    return 0;
}
