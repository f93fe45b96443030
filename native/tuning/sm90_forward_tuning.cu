// Measurement tool for the Hopper forward's schedulers (target sm90_forward_tuning, not built by default:
// cmake/Fa4jSm90Tuning.cmake). The release library runs one work tile per CTA (SingleTileScheduler); this
// tool times, in one process and on the same inputs, that kernel against
//   order    the single-tile scheduler with the other tile order (heads fastest <-> m_block fastest),
//   lpt      the persistent scheduler (one CTA per SM), longest-first within L2 sections of (batch, head)
//            pairs whose K and V fit in about half the L2,
//   lpt-all  the persistent scheduler with one section of every pair,
// and checks that every variant writes the release kernel's out and lse bit for bit (the per-tile
// arithmetic is the same; only which CTA runs a tile differs), also on a varlen call with a window and
// softcap (tiles past their sequence, tiles without keys, several tiles per CTA).
//
//   sm90_forward_tuning [--dims 64,96,128,192,256] [--causal 0,1] [--batch 2] [--seqlen 8192] [--heads 16]
//                       [--reps 20]
// Prints one line per (d, causal, variant): ms and TFLOP/s (4·B·H·N²·d, halved for causal), and
// "identical" or the number of differing elements; exits 1 if any variant differs.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backends/cuda/kernels/sm90/forward_launch.cuh"

namespace {

using namespace fa4j::cuda;
using fa4j::ScoreWindow;

#define CHECK(call)                                                                                       \
    do {                                                                                                  \
        const cudaError_t e_ = (call);                                                                    \
        if (e_ != cudaSuccess) {                                                                          \
            std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_));    \
            std::exit(2);                                                                                 \
        }                                                                                                 \
    } while (0)

__global__ void fill_random(__nv_bfloat16* x, int64_t n, uint32_t seed) {
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
        h ^= h >> 15;
        h *= 2246822519u;
        h ^= h >> 13;
        x[i] = __float2bfloat16(static_cast<float>(h & 0xffff) / 32768.0f - 1.0f);
    }
}

std::vector<int> parse_list(const char* s) {
    std::vector<int> v;
    for (const char* p = s; *p;) {
        v.push_back(std::atoi(p));
        while (*p && *p != ',') ++p;
        if (*p == ',') ++p;
    }
    return v;
}

enum class Variant { kRelease, kOtherOrder, kLpt, kLptAll };
const char* variant_name(Variant v) {
    return v == Variant::kRelease ? "release" : v == Variant::kOtherOrder ? "order" : v == Variant::kLpt ? "lpt" : "lpt-all";
}

struct Device {
    int sm_count = 0;
    int l2_bytes = 0;
};

template <int kHeadDim>
void launch(Variant variant, const kernels::ForwardParams& p, const Device& device) {
    using Tile = sm90::ForwardTileOf<kHeadDim>;
    using T = __nv_bfloat16;
    sm90::TileSchedulerParams s = sm90::single_tile_schedule(p, Tile::kBlockM);
    bool ok = true;
    if (variant == Variant::kRelease) {
        ok = sm90::launch_forward<Tile, T, sm90::SingleTileScheduler>(p, s, device.sm_count, nullptr);
    } else if (variant == Variant::kOtherOrder) {
        s.heads_fastest ^= 1;
        ok = sm90::launch_forward<Tile, T, sm90::SingleTileScheduler>(p, s, device.sm_count, nullptr);
    } else {
        // L2 sections: (batch, head) pairs whose K and V (seqlen_k x head_dim x 2 tensors x 2 bytes, shared by
        // a GQA group) fit in half the L2.
        const int64_t kv_bytes = static_cast<int64_t>(p.seqlen_k) * p.head_dim * 2 * 2;
        const int64_t fit = kv_bytes > 0 ? (device.l2_bytes / 2) / kv_bytes * p.group_size : s.heads;
        s.hb_per_section = static_cast<int>(fit < 1 ? 1 : fit > INT32_MAX ? INT32_MAX : fit);
        if (variant == Variant::kLptAll) s.hb_per_section = static_cast<int>(static_cast<int64_t>(s.heads) * s.batch);
        ok = sm90::launch_forward<Tile, T, sm90::PersistentTileScheduler>(p, s, device.sm_count, nullptr);
    }
    if (!ok) {
        std::fprintf(stderr, "TMA cannot describe the tensors\n");
        std::exit(2);
    }
}

void launch_dim(int d, Variant variant, const kernels::ForwardParams& p, const Device& device) {
    switch (d) {
        case 64: launch<64>(variant, p, device); break;
        case 96: launch<96>(variant, p, device); break;
        case 128: launch<128>(variant, p, device); break;
        case 192: launch<192>(variant, p, device); break;
        case 256: launch<256>(variant, p, device); break;
        default: std::fprintf(stderr, "no instantiation for d=%d\n", d); std::exit(2);
    }
}

// Dense [B, N, H, d] tensors, lse [B, H, N]; or varlen: packed [total, H, d], lse [H, total].
struct Problem {
    kernels::ForwardParams p{};
    __nv_bfloat16 *q = nullptr, *k = nullptr, *v = nullptr, *out = nullptr;
    float* lse = nullptr;
    int64_t out_elems = 0, lse_elems = 0;
    int32_t *cu_q = nullptr, *cu_k = nullptr;
};

void init_common(kernels::ForwardParams& p, int heads, int d, float scale) {
    p.elem = kernels::ElemType::BF16;
    p.heads_q = p.heads_kv = heads;
    p.group_size = 1;
    p.head_dim = d;
    p.softmax_scale = scale;
    p.score = kernels::ScoreParams{};
    p.seqlens = kernels::SeqlenParams{};
}

void set_scale(kernels::ForwardParams& p) {
    if (p.score.transforms()) {
        p.scale_log2 = fa4j::kLog2e;
        p.flip_sign = 0;
        p.abs_scale = 1.0f;
    } else {
        p.scale_log2 = p.softmax_scale * fa4j::kLog2e;
        p.flip_sign = p.scale_log2 < 0 ? 1 : 0;
        p.abs_scale = std::fabs(p.softmax_scale);
    }
}

Problem dense(int batch, int seqlen, int heads, int d, bool causal) {
    Problem pr;
    kernels::ForwardParams& p = pr.p;
    init_common(p, heads, d, 1.0f / std::sqrt(static_cast<float>(d)));
    p.batch = batch;
    p.seqlen_q = p.seqlen_k = seqlen;
    const int64_t elems = static_cast<int64_t>(batch) * seqlen * heads * d;
    CHECK(cudaMalloc(&pr.q, elems * 2));
    CHECK(cudaMalloc(&pr.k, elems * 2));
    CHECK(cudaMalloc(&pr.v, elems * 2));
    CHECK(cudaMalloc(&pr.out, elems * 2));
    pr.lse_elems = static_cast<int64_t>(batch) * heads * seqlen;
    CHECK(cudaMalloc(&pr.lse, pr.lse_elems * 4));
    pr.out_elems = elems;
    fill_random<<<1024, 256>>>(pr.q, elems, 1);
    fill_random<<<1024, 256>>>(pr.k, elems, 2);
    fill_random<<<1024, 256>>>(pr.v, elems, 3);
    const int64_t row = static_cast<int64_t>(heads) * d, bstride = row * seqlen;
    p.q = {pr.q, bstride, row, d};
    p.k = {pr.k, bstride, row, d};
    p.v = {pr.v, bstride, row, d};
    p.out = {pr.out, bstride, row, d};
    p.lse = {pr.lse, static_cast<int64_t>(heads) * seqlen, seqlen, 1};
    if (causal) p.score.window_right = 0;
    set_scale(p);
    return pr;
}

// Sequences of assorted lengths (empty ones among them), window 200 left / 30 right, softcap 20: every
// scheduler path (tiles past their sequence, tiles without keys).
Problem varlen(int heads, int d) {
    const std::vector<int> lens_q = {1000, 0, 37, 513, 128, 1, 700};
    const std::vector<int> lens_k = {900, 64, 0, 600, 128, 300, 1400};
    Problem pr;
    kernels::ForwardParams& p = pr.p;
    init_common(p, heads, d, 0.125f);
    p.batch = static_cast<int>(lens_q.size());
    std::vector<int32_t> cu_q(1, 0), cu_k(1, 0);
    for (size_t b = 0; b < lens_q.size(); ++b) {
        cu_q.push_back(cu_q.back() + lens_q[b]);
        cu_k.push_back(cu_k.back() + lens_k[b]);
        p.seqlen_q = std::max(p.seqlen_q, lens_q[b]);
        p.seqlen_k = std::max(p.seqlen_k, lens_k[b]);
    }
    const int64_t total_q = cu_q.back(), total_k = cu_k.back(), row = static_cast<int64_t>(heads) * d;
    CHECK(cudaMalloc(&pr.q, total_q * row * 2));
    CHECK(cudaMalloc(&pr.out, total_q * row * 2));
    CHECK(cudaMalloc(&pr.k, total_k * row * 2));
    CHECK(cudaMalloc(&pr.v, total_k * row * 2));
    pr.out_elems = total_q * row;
    pr.lse_elems = total_q * heads;
    CHECK(cudaMalloc(&pr.lse, pr.lse_elems * 4));
    fill_random<<<256, 256>>>(pr.q, total_q * row, 4);
    fill_random<<<256, 256>>>(pr.k, total_k * row, 5);
    fill_random<<<256, 256>>>(pr.v, total_k * row, 6);
    CHECK(cudaMalloc(&pr.cu_q, cu_q.size() * 4));
    CHECK(cudaMalloc(&pr.cu_k, cu_k.size() * 4));
    CHECK(cudaMemcpy(pr.cu_q, cu_q.data(), cu_q.size() * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(pr.cu_k, cu_k.data(), cu_k.size() * 4, cudaMemcpyHostToDevice));
    p.q = {pr.q, 0, row, d};
    p.k = {pr.k, 0, row, d};
    p.v = {pr.v, 0, row, d};
    p.out = {pr.out, 0, row, d};
    p.lse = {pr.lse, 0, total_q, 1};
    p.seqlens.cu_seqlens_q = pr.cu_q;
    p.seqlens.cu_seqlens_k = pr.cu_k;
    p.seqlens.total_q = total_q;
    p.seqlens.total_k = total_k;
    p.score.window_left = 200;
    p.score.window_right = 30;
    p.score.softcap = 20.0f;
    set_scale(p);
    return pr;
}

void release(Problem& pr) {
    cudaFree(pr.q), cudaFree(pr.k), cudaFree(pr.v), cudaFree(pr.out), cudaFree(pr.lse);
    cudaFree(pr.cu_q), cudaFree(pr.cu_k);
}

struct Snapshot {
    std::vector<uint16_t> out;
    std::vector<uint32_t> lse;
};

Snapshot snapshot(const Problem& pr) {
    Snapshot s;
    s.out.resize(pr.out_elems);
    s.lse.resize(pr.lse_elems);
    CHECK(cudaMemcpy(s.out.data(), pr.out, pr.out_elems * 2, cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(s.lse.data(), pr.lse, pr.lse_elems * 4, cudaMemcpyDeviceToHost));
    return s;
}

int64_t differences(const Snapshot& a, const Snapshot& b) {
    int64_t n = 0;
    for (size_t i = 0; i < a.out.size(); ++i) n += a.out[i] != b.out[i];
    for (size_t i = 0; i < a.lse.size(); ++i) n += a.lse[i] != b.lse[i];
    return n;
}

// Runs every variant once on fresh outputs (poisoned first), compares with the release variant; returns
// the number of variants that differ.
int check_variants(Problem& pr, int d, const Device& device, const char* what) {
    int failures = 0;
    Snapshot reference;
    for (Variant v : {Variant::kRelease, Variant::kOtherOrder, Variant::kLpt, Variant::kLptAll}) {
        CHECK(cudaMemset(pr.out, 0x7f, pr.out_elems * 2));
        CHECK(cudaMemset(pr.lse, 0x7f, pr.lse_elems * 4));
        launch_dim(d, v, pr.p, device);
        CHECK(cudaDeviceSynchronize());
        Snapshot s = snapshot(pr);
        if (v == Variant::kRelease) {
            reference = std::move(s);
            continue;
        }
        const int64_t diff = differences(reference, s);
        if (diff != 0) ++failures;
        std::printf("check %s d=%d %s: %s (%lld differing)\n", what, d, variant_name(v), diff == 0 ? "identical" : "DIFFERS",
                    static_cast<long long>(diff));
    }
    return failures;
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<int> dims = {64, 96, 128, 192, 256}, causals = {0, 1};
    int batch = 2, seqlen = 8192, heads = 16, reps = 20;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string a = argv[i];
        if (a == "--dims") dims = parse_list(argv[i + 1]);
        else if (a == "--causal") causals = parse_list(argv[i + 1]);
        else if (a == "--batch") batch = std::atoi(argv[i + 1]);
        else if (a == "--seqlen") seqlen = std::atoi(argv[i + 1]);
        else if (a == "--heads") heads = std::atoi(argv[i + 1]);
        else if (a == "--reps") reps = std::atoi(argv[i + 1]);
    }
    Device device;
    CHECK(cudaDeviceGetAttribute(&device.sm_count, cudaDevAttrMultiProcessorCount, 0));
    CHECK(cudaDeviceGetAttribute(&device.l2_bytes, cudaDevAttrL2CacheSize, 0));
    int failures = 0;
    for (int d : dims) {
        Problem vl = varlen(4, d);
        failures += check_variants(vl, d, device, "varlen+window+softcap");
        release(vl);
        for (int causal : causals) {
            Problem pr = dense(batch, seqlen, heads, d, causal != 0);
            failures += check_variants(pr, d, device, causal ? "causal" : "full");
            cudaEvent_t start, stop;
            CHECK(cudaEventCreate(&start));
            CHECK(cudaEventCreate(&stop));
            const double flops = 4.0 * batch * heads * static_cast<double>(seqlen) * seqlen * d / (causal ? 2 : 1);
            for (Variant v : {Variant::kRelease, Variant::kOtherOrder, Variant::kLpt, Variant::kLptAll}) {
                launch_dim(d, v, pr.p, device);  // warm-up
                CHECK(cudaEventRecord(start));
                for (int r = 0; r < reps; ++r) launch_dim(d, v, pr.p, device);
                CHECK(cudaEventRecord(stop));
                CHECK(cudaEventSynchronize(stop));
                float ms = 0;
                CHECK(cudaEventElapsedTime(&ms, start, stop));
                ms /= reps;
                std::printf("bf16 d=%d causal=%d B=%d N=%d H=%d %-8s %8.3f ms %7.1f TFLOP/s\n", d, causal, batch, seqlen,
                            heads, variant_name(v), ms, flops / (ms * 1e-3) / 1e12);
            }
            CHECK(cudaEventDestroy(start));
            CHECK(cudaEventDestroy(stop));
            release(pr);
        }
    }
    std::printf("%d variant(s) differ from the release kernel\n", failures);
    return failures == 0 ? 0 : 1;
}
