// Checks the CUDA attention backward through the C ABI against a float64 reference of the gradients of
// softmax(scale·QKᵀ)V, with the FlashAttention tolerance rule of cpu_attention_test.cpp:
// max|kernel - ref| <= 2 * max|plain - ref| + eps, where "plain" is a naive untiled float32
// implementation that rounds where a half-precision implementation must (P before dV, dS before dK and
// dQ, every output). The backward's inputs out and lse come from the CPU backend's forward on the host
// (the GPU forward is tested on its own). dq/dk/dv start as NaN on the device; gaps between strided
// output elements must stay untouched, and NaN never passes. Each case also runs the CPU backend's
// backward on the same inputs and reports the largest GPU-vs-CPU difference (bounded by both tolerances).
//
// Without a CUDA device the test reports "0 passed, 0 failed, 1 skipped" and succeeds (CI has no GPU).
// `--quick` skips the shapes over 333 rows (for compute-sanitizer). `--bench` instead times the backward on large problems (bf16, B=2, H=16, N=8192, d=64/128, causal or
// not) and prints TFLOP/s by FlashAttention's convention (backward = 2.5 x 4·B·H·Nq·Nk·d, halved causal).
//
// The helpers below (dtype codecs, strided views, the reference) are a minimal copy of the ones in
// cpu_attention_test.cpp, kept here until shared test-support headers exist.
#include <flashattn4j.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace {

// ---- dtypes ---------------------------------------------------------------------------------------

enum class Dt { F32, F16, BF16 };

const char* dt_name(Dt dt) { return dt == Dt::F32 ? "fp32" : dt == Dt::F16 ? "fp16" : "bf16"; }
size_t dt_size(Dt dt) { return dt == Dt::F32 ? 4 : 2; }
double dt_eps(Dt dt) { return dt == Dt::F32 ? 1e-5 : dt == Dt::F16 ? 1e-4 : 1e-3; }

uint32_t bits_of(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}

float float_of(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

uint16_t encode_f16(float f) {
    const uint16_t sign = (bits_of(f) >> 16) & 0x8000u;
    const double a = std::fabs(static_cast<double>(f));
    if (std::isnan(f)) return static_cast<uint16_t>(sign | 0x7e00u);
    if (a >= 65520.0) return static_cast<uint16_t>(sign | 0x7c00u);
    if (a < std::ldexp(1.0, -14)) return static_cast<uint16_t>(sign | static_cast<uint16_t>(std::nearbyint(std::ldexp(a, 24))));
    int exponent;
    std::frexp(a, &exponent);
    --exponent;
    double mantissa = std::nearbyint((std::ldexp(a, -exponent) - 1.0) * 1024.0);
    if (mantissa == 1024.0) {
        mantissa = 0.0;
        ++exponent;
    }
    if (exponent > 15) return static_cast<uint16_t>(sign | 0x7c00u);
    return static_cast<uint16_t>(sign | ((exponent + 15) << 10) | static_cast<int>(mantissa));
}

float decode_f16(uint16_t h) {
    const double sign = (h & 0x8000u) ? -1.0 : 1.0;
    const int exponent = (h >> 10) & 0x1f;
    const int mantissa = h & 0x3ff;
    if (exponent == 31) return mantissa ? std::numeric_limits<float>::quiet_NaN() : static_cast<float>(sign * INFINITY);
    if (exponent == 0) return static_cast<float>(sign * std::ldexp(mantissa, -24));
    return static_cast<float>(sign * std::ldexp(1024 + mantissa, exponent - 25));
}

uint16_t encode_bf16(float f) {
    if (std::isnan(f)) return 0x7fc0u;
    const uint32_t u = bits_of(f);
    return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

float decode_bf16(uint16_t h) { return float_of(static_cast<uint32_t>(h) << 16); }

float round_to(Dt dt, float x) {
    if (dt == Dt::F16) return decode_f16(encode_f16(x));
    if (dt == Dt::BF16) return decode_bf16(encode_bf16(x));
    return x;
}

fa4j_dtype dtype_of(Dt dt) {
    return fa4j_dtype{static_cast<uint8_t>(dt == Dt::BF16 ? FA4J_DTYPE_CODE_BFLOAT : FA4J_DTYPE_CODE_FLOAT),
                      static_cast<uint8_t>(dt_size(dt) * 8), 1};
}

// ---- strided host tensors, mirrored on the device -------------------------------------------------

struct Buffer {
    Dt dt;
    std::vector<unsigned char> bytes;
    std::vector<char> covered;  // element belongs to some view (outputs: must be written)
    void* device = nullptr;     // device copy, when uploaded
};
using BufferPtr = std::shared_ptr<Buffer>;

BufferPtr new_buffer(Dt dt, int64_t elements) {
    auto b = std::make_shared<Buffer>();
    b->dt = dt;
    b->bytes.assign(static_cast<size_t>(elements) * dt_size(dt), 0);
    b->covered.assign(static_cast<size_t>(elements), 0);
    return b;
}

void poison(Buffer& b) {
    if (b.dt == Dt::F32) {
        const uint32_t nan = 0x7fa5a5a5u;
        for (size_t i = 0; i < b.bytes.size(); i += 4) std::memcpy(&b.bytes[i], &nan, 4);
    } else {
        const uint16_t nan = b.dt == Dt::F16 ? 0x7e5au : 0x7fa5u;
        for (size_t i = 0; i < b.bytes.size(); i += 2) std::memcpy(&b.bytes[i], &nan, 2);
    }
}

bool is_poison(const Buffer& b, size_t element) {
    if (b.dt == Dt::F32) {
        uint32_t u;
        std::memcpy(&u, &b.bytes[element * 4], 4);
        return u == 0x7fa5a5a5u;
    }
    uint16_t u;
    std::memcpy(&u, &b.bytes[element * 2], 2);
    return u == (b.dt == Dt::F16 ? 0x7e5au : 0x7fa5u);
}

struct View {
    BufferPtr buffer;
    int ndim = 4;
    int64_t shape[4] = {0, 0, 0, 0};
    int64_t strides[4] = {0, 0, 0, 0};
    int64_t offset = 0;  // elements; passed as byte_offset
    fa4j_tensor desc{};

    int64_t count() const {
        int64_t n = 1;
        for (int i = 0; i < ndim; ++i) n *= shape[i];
        return n;
    }
    size_t element(int64_t n) const {
        int64_t e = offset;
        for (int i = ndim - 1; i >= 0; --i) {
            e += n % shape[i] * strides[i];
            n /= shape[i];
        }
        return static_cast<size_t>(e);
    }
    float get(int64_t n) const {
        const size_t e = element(n);
        const Buffer& b = *buffer;
        if (b.dt == Dt::F32) {
            float f;
            std::memcpy(&f, &b.bytes[e * 4], 4);
            return f;
        }
        uint16_t h;
        std::memcpy(&h, &b.bytes[e * 2], 2);
        return b.dt == Dt::F16 ? decode_f16(h) : decode_bf16(h);
    }
    void set(int64_t n, float value) {
        const size_t e = element(n);
        Buffer& b = *buffer;
        if (b.dt == Dt::F32) {
            std::memcpy(&b.bytes[e * 4], &value, 4);
        } else {
            const uint16_t h = b.dt == Dt::F16 ? encode_f16(value) : encode_bf16(value);
            std::memcpy(&b.bytes[e * 2], &h, 2);
        }
    }
    void mark_covered() {
        for (int64_t n = 0; n < count(); ++n) buffer->covered[element(n)] = 1;
    }
    // The descriptor of this view in host memory (cuda = false) or in the buffer's device copy.
    const fa4j_tensor* tensor(bool cuda) {
        desc.data = cuda ? buffer->device : (buffer->bytes.empty() ? nullptr : buffer->bytes.data());
        desc.device = cuda ? fa4j_device{FA4J_DEVICE_CUDA, 0} : fa4j_device{FA4J_DEVICE_CPU, 0};
        desc.ndim = ndim;
        desc.dtype = dtype_of(buffer->dt);
        desc.shape = shape;
        desc.strides = strides;
        desc.byte_offset = static_cast<uint64_t>(offset) * dt_size(buffer->dt);
        return &desc;
    }
};

enum class Layout { Contiguous, HeadMajor, Padded, Packed, BroadcastKv };

const char* layout_name(Layout l) {
    switch (l) {
        case Layout::Contiguous: return "contiguous";
        case Layout::HeadMajor: return "head-major";
        case Layout::Padded: return "padded";
        case Layout::Packed: return "packed";
        case Layout::BroadcastKv: return "broadcast-kv";
    }
    return "?";
}

View seq_view(BufferPtr buffer, int64_t B, int64_t S, int64_t H, int64_t D, const int64_t (&strides)[4], int64_t offset) {
    View v;
    v.buffer = std::move(buffer);
    const int64_t shape[4] = {B, S, H, D};
    for (int i = 0; i < 4; ++i) {
        v.shape[i] = shape[i];
        v.strides[i] = strides[i];
    }
    v.offset = offset;
    return v;
}

// Padded: rows padded by 8 elements and an odd 5-element offset, so the views are not 16-byte aligned
// (the kernels' 2-byte fallback path).
View make_seq(Dt dt, Layout layout, int64_t B, int64_t S, int64_t H, int64_t D) {
    switch (layout) {
        case Layout::HeadMajor:
            return seq_view(new_buffer(dt, B * H * S * D), B, S, H, D, {H * S * D, D, S * D, 1}, 0);
        case Layout::Padded: {
            const int64_t row = D + 8, batch = S * H * row + 24;
            return seq_view(new_buffer(dt, B * batch + 5), B, S, H, D, {batch, H * row, row, 1}, 5);
        }
        case Layout::BroadcastKv:
            return seq_view(new_buffer(dt, S * H * D), B, S, H, D, {0, H * D, D, 1}, 0);
        default:
            return seq_view(new_buffer(dt, B * S * H * D), B, S, H, D, {S * H * D, H * D, D, 1}, 0);
    }
}

void make_packed(Dt dt, int64_t B, int64_t S, int64_t Hq, int64_t Hkv, int64_t D, View& q, View& k, View& v) {
    const int64_t Ht = Hq + 2 * Hkv;
    const BufferPtr buffer = new_buffer(dt, B * S * Ht * D);
    const int64_t strides[4] = {S * Ht * D, Ht * D, D, 1};
    q = seq_view(buffer, B, S, Hq, D, strides, 0);
    k = seq_view(buffer, B, S, Hkv, D, strides, Hq * D);
    v = seq_view(buffer, B, S, Hkv, D, strides, (Hq + Hkv) * D);
}

View make_lse(Layout layout, int64_t B, int64_t H, int64_t N) {
    View v;
    v.ndim = 3;
    v.shape[0] = B;
    v.shape[1] = H;
    v.shape[2] = N;
    if (layout == Layout::HeadMajor) {
        v.buffer = new_buffer(Dt::F32, B * N * H);
        v.strides[0] = N * H;
        v.strides[1] = 1;
        v.strides[2] = H;
    } else if (layout == Layout::Padded || layout == Layout::Packed) {
        v.buffer = new_buffer(Dt::F32, B * (H * (N + 3) + 5));
        v.strides[0] = H * (N + 3) + 5;
        v.strides[1] = N + 3;
        v.strides[2] = 1;
    } else {
        v.buffer = new_buffer(Dt::F32, B * H * N);
        v.strides[0] = H * N;
        v.strides[1] = N;
        v.strides[2] = 1;
    }
    return v;
}

// ---- reference ------------------------------------------------------------------------------------

struct Shape {
    int64_t B, Nq, Nk, Hq, Hkv, D;
};

struct Inputs {
    Shape s;
    float scale;
    bool causal;
    std::vector<float> q, k, v, dout;
};

template <class T>
struct Grads {
    std::vector<T> dq, dk, dv;
};

// Naive attention backward in arithmetic T (recomputing the forward). With `emulate` it rounds what a
// half-precision implementation rounds (out, P before dV, dS before dK/dQ, every output) to `dt`.
template <class T>
Grads<T> naive_backward(const Inputs& in, Dt dt, bool emulate) {
    const Shape& s = in.s;
    const auto rnd = [&](T x) { return emulate ? static_cast<T>(round_to(dt, static_cast<float>(x))) : x; };
    const auto at = [&](const std::vector<float>& t, int64_t b, int64_t i, int64_t h, int64_t N, int64_t H) {
        return &t[static_cast<size_t>(((b * N + i) * H + h) * s.D)];
    };
    Grads<T> r;
    r.dq.assign(static_cast<size_t>(s.B * s.Nq * s.Hq * s.D), T(0));
    r.dk.assign(static_cast<size_t>(s.B * s.Nk * s.Hkv * s.D), T(0));
    r.dv.assign(r.dk.size(), T(0));
    const T scale = static_cast<T>(in.scale);
    std::vector<T> p(static_cast<size_t>(s.Nk)), out(static_cast<size_t>(s.D));
    for (int64_t b = 0; b < s.B; ++b)
        for (int64_t h = 0; h < s.Hq; ++h) {
            const int64_t hk = h / (s.Hq / s.Hkv);
            for (int64_t i = 0; i < s.Nq; ++i) {
                const int64_t visible = in.causal ? std::min(s.Nk, std::max<int64_t>(0, i + s.Nk - s.Nq + 1)) : s.Nk;
                if (visible == 0) continue;
                const float* q = at(in.q, b, i, h, s.Nq, s.Hq);
                T m = -std::numeric_limits<T>::infinity();
                for (int64_t j = 0; j < visible; ++j) {
                    const float* k = at(in.k, b, j, hk, s.Nk, s.Hkv);
                    T dot = 0;
                    for (int64_t c = 0; c < s.D; ++c) dot += static_cast<T>(q[c]) * static_cast<T>(k[c]);
                    p[j] = scale * dot;
                    m = std::max(m, p[j]);
                }
                T sum = 0;
                for (int64_t j = 0; j < visible; ++j) sum += (p[j] = std::exp(p[j] - m));
                for (int64_t j = 0; j < visible; ++j) p[j] /= sum;
                std::fill(out.begin(), out.end(), T(0));
                for (int64_t j = 0; j < visible; ++j) {
                    const float* v = at(in.v, b, j, hk, s.Nk, s.Hkv);
                    const T pj = rnd(p[j]);
                    for (int64_t c = 0; c < s.D; ++c) out[c] += pj * static_cast<T>(v[c]);
                }
                for (int64_t c = 0; c < s.D; ++c) out[c] = rnd(out[c]);
                const float* dout = at(in.dout, b, i, h, s.Nq, s.Hq);
                T delta = 0;
                for (int64_t c = 0; c < s.D; ++c) delta += static_cast<T>(dout[c]) * out[c];
                T* dq = &r.dq[static_cast<size_t>(((b * s.Nq + i) * s.Hq + h) * s.D)];
                for (int64_t j = 0; j < visible; ++j) {
                    const float* v = at(in.v, b, j, hk, s.Nk, s.Hkv);
                    const float* k = at(in.k, b, j, hk, s.Nk, s.Hkv);
                    T dpj = 0;
                    for (int64_t c = 0; c < s.D; ++c) dpj += static_cast<T>(dout[c]) * static_cast<T>(v[c]);
                    const T ds = rnd(p[j] * (dpj - delta));
                    const T pj = rnd(p[j]);
                    T* dk = &r.dk[static_cast<size_t>(((b * s.Nk + j) * s.Hkv + hk) * s.D)];
                    T* dv = &r.dv[static_cast<size_t>(((b * s.Nk + j) * s.Hkv + hk) * s.D)];
                    for (int64_t c = 0; c < s.D; ++c) {
                        dq[c] += scale * ds * static_cast<T>(k[c]);
                        dk[c] += scale * ds * static_cast<T>(q[c]);
                        dv[c] += pj * static_cast<T>(dout[c]);
                    }
                }
            }
        }
    for (T& x : r.dq) x = rnd(x);
    for (T& x : r.dk) x = rnd(x);
    for (T& x : r.dv) x = rnd(x);
    return r;
}

// ---- one case -------------------------------------------------------------------------------------

struct Case {
    Shape s;
    Dt dt;
    bool causal;
    Layout layout;
    bool own_stream;  // run on a created stream instead of the legacy default stream
};

struct Outcome {
    std::string detail;
    bool ok = true;
};

void fail(Outcome& o, const std::string& why) {
    o.ok = false;
    o.detail += " FAIL(" + why + ")";
}

bool call_ok(Outcome& o, fa4j_status status, const char* what) {
    if (status == FA4J_OK) return true;
    const char* message = "";
    fa4j_last_error_message(&message);
    fail(o, std::string(what) + " returned " + std::to_string(status) + ": " + message);
    return false;
}

// Compares a kernel's output with the fp64 reference; returns the tolerance used.
double compare(Outcome& o, const char* name, const View& kernel, const std::vector<double>& ref,
               const std::vector<float>& plain, double eps) {
    double err_kernel = 0, err_plain = 0;
    bool bad = false;
    for (int64_t n = 0; n < kernel.count(); ++n) {
        const double x = kernel.get(n), r = ref[static_cast<size_t>(n)], pl = plain[static_cast<size_t>(n)];
        if (!std::isfinite(x)) bad = true;
        else err_kernel = std::max(err_kernel, std::fabs(x - r));
        err_plain = std::max(err_plain, std::fabs(pl - r));
    }
    const double tol = 2 * err_plain + eps;
    char text[96];
    std::snprintf(text, sizeof text, " %s %.1e/%.1e", name, err_kernel, tol);
    o.detail += text;
    if (bad) fail(o, std::string(name) + " not finite");
    else if (err_kernel > tol) fail(o, std::string(name) + " error above tolerance");
    return tol;
}

void check_gaps(Outcome& o, const char* name, const View& view) {
    const Buffer& b = *view.buffer;
    for (size_t e = 0; e < b.covered.size(); ++e)
        if (!b.covered[e] && !is_poison(b, e)) return fail(o, std::string("wrote outside ") + name);
}

struct Tensors {
    View q, k, v, dout, out, lse, dq, dk, dv;
};

Tensors make_tensors(const Case& c) {
    const Shape& s = c.s;
    Tensors t;
    const bool packed = c.layout == Layout::Packed;  // requires Nq == Nk
    if (packed) {
        make_packed(c.dt, s.B, s.Nq, s.Hq, s.Hkv, s.D, t.q, t.k, t.v);
    } else {
        t.q = make_seq(c.dt, c.layout == Layout::BroadcastKv ? Layout::Contiguous : c.layout, s.B, s.Nq, s.Hq, s.D);
        t.k = make_seq(c.dt, c.layout, s.B, s.Nk, s.Hkv, s.D);
        t.v = make_seq(c.dt, c.layout, s.B, s.Nk, s.Hkv, s.D);
    }
    const Layout out_layout = packed ? Layout::Padded : c.layout == Layout::BroadcastKv ? Layout::Contiguous : c.layout;
    t.dout = make_seq(c.dt, c.layout == Layout::Padded ? Layout::HeadMajor : Layout::Contiguous, s.B, s.Nq, s.Hq, s.D);
    t.out = make_seq(c.dt, out_layout, s.B, s.Nq, s.Hq, s.D);
    t.lse = make_lse(c.layout, s.B, s.Hq, s.Nq);
    if (packed && s.Hq == s.Hkv) {
        make_packed(c.dt, s.B, s.Nq, s.Hq, s.Hkv, s.D, t.dq, t.dk, t.dv);
    } else {
        t.dq = make_seq(c.dt, out_layout, s.B, s.Nq, s.Hq, s.D);
        t.dk = make_seq(c.dt, out_layout, s.B, s.Nk, s.Hkv, s.D);
        t.dv = make_seq(c.dt, out_layout, s.B, s.Nk, s.Hkv, s.D);
    }
    for (View* v : {&t.out, &t.lse, &t.dq, &t.dk, &t.dv}) v->mark_covered();
    return t;
}

void fill_random(View& view, std::mt19937& rng, Dt dt) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (int64_t n = 0; n < view.count(); ++n) view.set(n, round_to(dt, normal(rng)));
}

std::vector<float> logical_values(const View& view) {
    std::vector<float> values(static_cast<size_t>(view.count()));
    for (int64_t n = 0; n < view.count(); ++n) values[static_cast<size_t>(n)] = view.get(n);
    return values;
}

fa4j_attention_params params_for(const Shape& s, bool causal) {
    fa4j_attention_params p{};
    p.struct_size = sizeof p;
    p.softmax_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(s.D)));
    p.causal = causal ? 1 : 0;
    return p;
}

// Device copies of every distinct buffer of a case; freed on destruction.
struct DeviceMirror {
    std::vector<BufferPtr> buffers;
    ~DeviceMirror() {
        for (const BufferPtr& b : buffers) fa4j_cuda_free(0, b->device);
    }
    bool upload(Outcome& o, const std::vector<View*>& views) {
        for (View* v : views) {
            const BufferPtr& b = v->buffer;
            if (std::find(buffers.begin(), buffers.end(), b) != buffers.end()) continue;
            buffers.push_back(b);
            if (!call_ok(o, fa4j_cuda_malloc(0, b->bytes.size(), &b->device), "fa4j_cuda_malloc")) return false;
            if (!call_ok(o, fa4j_cuda_memcpy(0, b->device, b->bytes.data(), b->bytes.size(), FA4J_MEMCPY_HOST_TO_DEVICE, nullptr),
                         "fa4j_cuda_memcpy"))
                return false;
        }
        return true;
    }
    static bool download(Outcome& o, Buffer& b) {
        return call_ok(o, fa4j_cuda_memcpy(0, b.bytes.data(), b.device, b.bytes.size(), FA4J_MEMCPY_DEVICE_TO_HOST, nullptr),
                       "fa4j_cuda_memcpy");
    }
};

Outcome run_case(const Case& c, uint32_t seed) {
    Outcome o;
    std::mt19937 rng(seed);
    Tensors t = make_tensors(c);
    Inputs in{c.s, 0.0f, c.causal, {}, {}, {}, {}};
    for (View* v : {&t.q, &t.k, &t.v, &t.dout}) fill_random(*v, rng, c.dt);
    in.q = logical_values(t.q);
    in.k = logical_values(t.k);
    in.v = logical_values(t.v);
    in.dout = logical_values(t.dout);
    const fa4j_attention_params params = params_for(c.s, c.causal);
    in.scale = params.softmax_scale;

    // out and lse from the CPU backend's forward.
    if (!call_ok(o, fa4j_attention_forward(&params, t.q.tensor(false), t.k.tensor(false), t.v.tensor(false),
                                           t.out.tensor(false), t.lse.tensor(false), nullptr),
                 "cpu forward"))
        return o;

    for (View* v : {&t.dq, &t.dk, &t.dv}) poison(*v->buffer);
    DeviceMirror mirror;
    if (!mirror.upload(o, {&t.q, &t.k, &t.v, &t.dout, &t.out, &t.lse, &t.dq, &t.dk, &t.dv})) return o;
    fa4j_stream stream = nullptr;
    if (c.own_stream && !call_ok(o, fa4j_cuda_stream_create(0, &stream), "stream create")) return o;
    const bool ran = call_ok(o, fa4j_attention_backward(&params, t.dout.tensor(true), t.q.tensor(true), t.k.tensor(true),
                                                        t.v.tensor(true), t.out.tensor(true), t.lse.tensor(true),
                                                        t.dq.tensor(true), t.dk.tensor(true), t.dv.tensor(true), stream),
                             "cuda backward") &&
                     call_ok(o, fa4j_cuda_stream_synchronize(0, stream), "stream synchronize");
    if (stream != nullptr) fa4j_cuda_stream_destroy(0, stream);
    if (!ran) return o;
    for (View* v : {&t.dq, &t.dk, &t.dv})
        if (!DeviceMirror::download(o, *v->buffer)) return o;

    const Grads<double> ref = naive_backward<double>(in, c.dt, false);
    const Grads<float> plain = naive_backward<float>(in, c.dt, true);
    const double eps = dt_eps(c.dt);
    const double tol_dq = compare(o, "dq", t.dq, ref.dq, plain.dq, eps);
    const double tol_dk = compare(o, "dk", t.dk, ref.dk, plain.dk, eps);
    const double tol_dv = compare(o, "dv", t.dv, ref.dv, plain.dv, eps);
    check_gaps(o, "dq", t.dq);
    check_gaps(o, "dk", t.dk);
    check_gaps(o, "dv", t.dv);

    // The CPU backend on the same inputs: both within tolerance of the reference, so within the sum of
    // the tolerances of each other.
    Tensors cpu = make_tensors(c);
    if (!call_ok(o, fa4j_attention_backward(&params, t.dout.tensor(false), t.q.tensor(false), t.k.tensor(false),
                                            t.v.tensor(false), t.out.tensor(false), t.lse.tensor(false),
                                            cpu.dq.tensor(false), cpu.dk.tensor(false), cpu.dv.tensor(false), nullptr),
                 "cpu backward"))
        return o;
    double worst = 0;
    bool within = true;
    const View* gpu_views[3] = {&t.dq, &t.dk, &t.dv};
    const View* cpu_views[3] = {&cpu.dq, &cpu.dk, &cpu.dv};
    const double tols[3] = {tol_dq, tol_dk, tol_dv};
    for (int i = 0; i < 3; ++i) {
        double diff = 0;
        for (int64_t n = 0; n < gpu_views[i]->count(); ++n)
            diff = std::max(diff, std::fabs(static_cast<double>(gpu_views[i]->get(n)) - cpu_views[i]->get(n)));
        within = within && diff <= 2 * tols[i];
        worst = std::max(worst, diff / (2 * tols[i]));
    }
    char text[64];
    std::snprintf(text, sizeof text, " |gpu-cpu|/bound %.2f", worst);
    o.detail += text;
    if (!within) fail(o, "GPU and CPU backends differ by more than both tolerances");
    return o;
}

// A well-formed call the CUDA backward does not implement must say so, not compute garbage.
Outcome run_unsupported(Dt dt, int64_t D) {
    Outcome o;
    const Case c{{1, 16, 16, 1, 1, D}, dt, false, Layout::Contiguous, false};
    Tensors t = make_tensors(c);
    DeviceMirror mirror;
    if (!mirror.upload(o, {&t.q, &t.k, &t.v, &t.dout, &t.out, &t.lse, &t.dq, &t.dk, &t.dv})) return o;
    const fa4j_attention_params params = params_for(c.s, false);
    const fa4j_status status = fa4j_attention_backward(&params, t.dout.tensor(true), t.q.tensor(true), t.k.tensor(true),
                                                       t.v.tensor(true), t.out.tensor(true), t.lse.tensor(true),
                                                       t.dq.tensor(true), t.dk.tensor(true), t.dv.tensor(true), nullptr);
    const char* message = "";
    fa4j_last_error_message(&message);
    o.detail = std::string(" -> ") + std::to_string(status) + ": " + message;
    if (status != FA4J_ERROR_UNSUPPORTED) fail(o, "expected FA4J_ERROR_UNSUPPORTED");
    return o;
}

std::string describe(const Case& c) {
    char text[200];
    std::snprintf(text, sizeof text, "%s B=%lld Nq=%lld Nk=%lld Hq=%lld Hkv=%lld d=%lld %s %s%s", dt_name(c.dt),
                  static_cast<long long>(c.s.B), static_cast<long long>(c.s.Nq), static_cast<long long>(c.s.Nk),
                  static_cast<long long>(c.s.Hq), static_cast<long long>(c.s.Hkv), static_cast<long long>(c.s.D),
                  c.causal ? "causal" : "full", layout_name(c.layout), c.own_stream ? " stream" : "");
    return text;
}

// ---- --bench ---------------------------------------------------------------------------------------

struct BenchTensor {
    void* data = nullptr;
    int64_t shape[4] = {0, 0, 0, 0};
    int64_t strides[4] = {0, 0, 0, 0};
    fa4j_tensor desc{};
};

int bench(int argc, char** argv) {
    // Optional: --bench B N H D (defaults: the 2 8192 16 {128, 64}).
    int64_t B = 2, N = 8192, H = 16;
    std::vector<int64_t> dims = {128, 64};
    if (argc >= 6) {
        B = std::atoll(argv[2]);
        N = std::atoll(argv[3]);
        H = std::atoll(argv[4]);
        dims = {std::atoll(argv[5])};
    }
    int32_t devices = 0;
    fa4j_cuda_device_count(&devices);
    if (devices == 0) {
        std::printf("no CUDA device\n");
        return 0;
    }
    fa4j_device_properties props{};
    props.struct_size = sizeof props;
    fa4j_cuda_get_device_properties(0, &props);
    std::printf("device: %s (%d SMs)\n", props.name, props.multiprocessor_count);
    std::printf("%-6s %3s %6s %4s %5s %-7s %10s %10s\n", "dtype", "B", "N", "H", "d", "mask", "ms", "TFLOP/s");
    for (const int64_t D : dims)
        for (Dt dt : {Dt::BF16, Dt::F16})
            for (bool causal : {false, true}) {
                const int64_t elems = B * N * H * D;
                std::vector<uint16_t> host(static_cast<size_t>(elems));
                uint32_t state = 12345;
                const auto next = [&]() {
                    state = state * 1664525u + 1013904223u;
                    return (static_cast<float>(state >> 8) / 16777216.0f - 0.5f) * 3.4f;  // ~unit variance
                };
                BenchTensor t[8];  // q k v out dout dq dk dv
                bool ok = true;
                for (int i = 0; i < 8; ++i) {
                    const int64_t shape[4] = {B, N, H, D}, strides[4] = {N * H * D, H * D, D, 1};
                    std::memcpy(t[i].shape, shape, sizeof shape);
                    std::memcpy(t[i].strides, strides, sizeof strides);
                    ok = ok && fa4j_cuda_malloc(0, static_cast<size_t>(elems) * 2, &t[i].data) == FA4J_OK;
                    for (auto& h : host) {
                        const float x = next() * (i == 3 ? 0.3f : 1.0f);
                        h = dt == Dt::BF16 ? encode_bf16(x) : encode_f16(x);
                    }
                    if (ok && i < 5)
                        ok = fa4j_cuda_memcpy(0, t[i].data, host.data(), host.size() * 2, FA4J_MEMCPY_HOST_TO_DEVICE,
                                              nullptr) == FA4J_OK;
                    t[i].desc = fa4j_tensor{t[i].data, {FA4J_DEVICE_CUDA, 0}, 4, dtype_of(dt), t[i].shape, t[i].strides, 0};
                }
                // lse of a row with `visible` keys of unit-variance scores: about log(visible) + 1/2.
                std::vector<float> lse(static_cast<size_t>(B * H * N));
                for (int64_t r = 0; r < B * H * N; ++r)
                    lse[static_cast<size_t>(r)] = std::log(static_cast<float>(causal ? r % N + 1 : N)) + 0.5f;
                void* lse_data = nullptr;
                ok = ok && fa4j_cuda_malloc(0, lse.size() * 4, &lse_data) == FA4J_OK &&
                     fa4j_cuda_memcpy(0, lse_data, lse.data(), lse.size() * 4, FA4J_MEMCPY_HOST_TO_DEVICE, nullptr) == FA4J_OK;
                int64_t lse_shape[3] = {B, H, N}, lse_strides[3] = {H * N, N, 1};
                const fa4j_tensor lse_t{lse_data, {FA4J_DEVICE_CUDA, 0}, 3, dtype_of(Dt::F32), lse_shape, lse_strides, 0};
                const fa4j_attention_params params = params_for(Shape{B, N, N, H, H, D}, causal);
                const auto run = [&]() {
                    return fa4j_attention_backward(&params, &t[4].desc, &t[0].desc, &t[1].desc, &t[2].desc, &t[3].desc,
                                                   &lse_t, &t[5].desc, &t[6].desc, &t[7].desc, nullptr);
                };
                std::vector<double> ms;
                for (int it = 0; ok && it < 13; ++it) {
                    const auto start = std::chrono::steady_clock::now();
                    ok = run() == FA4J_OK && fa4j_cuda_stream_synchronize(0, nullptr) == FA4J_OK;
                    const double elapsed =
                        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
                    if (it >= 3) ms.push_back(elapsed);  // 3 warm-up runs
                }
                if (!ok) {
                    const char* message = "";
                    fa4j_last_error_message(&message);
                    std::printf("%s d=%lld %s: failed: %s\n", dt_name(dt), static_cast<long long>(D),
                                causal ? "causal" : "full", message);
                } else {
                    std::sort(ms.begin(), ms.end());
                    const double median = ms[ms.size() / 2];
                    const double flops = 2.5 * 4.0 * static_cast<double>(B * H) * static_cast<double>(N) *
                                         static_cast<double>(N) * static_cast<double>(D) * (causal ? 0.5 : 1.0);
                    std::printf("%-6s %3lld %6lld %4lld %5lld %-7s %10.3f %10.1f\n", dt_name(dt), static_cast<long long>(B),
                                static_cast<long long>(N), static_cast<long long>(H), static_cast<long long>(D),
                                causal ? "causal" : "full", median, flops / (median * 1e-3) / 1e12);
                }
                for (auto& x : t) fa4j_cuda_free(0, x.data);
                fa4j_cuda_free(0, lse_data);
            }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc >= 2 && std::strcmp(argv[1], "--bench") == 0) return bench(argc, argv);
    // --quick: only the shapes up to 333 rows (for compute-sanitizer, which runs kernels far slower).
    const bool quick = argc >= 2 && std::strcmp(argv[1], "--quick") == 0;
    int32_t devices = 0;
    if (fa4j_cuda_device_count(&devices) != FA4J_OK || devices == 0) {
        std::printf("no CUDA device: skipping\n0 passed, 0 failed, 1 skipped\n");
        return 0;
    }
    const auto start = std::chrono::steady_clock::now();
    struct ShapeLayout {
        Shape s;
        Layout layout;
    };
    // Ragged lengths around the 64/128-row tiles (1, 17, 128, 333, and 1100 x 1030), Nq < Nk and Nq > Nk
    // (causal rows that see no key), GQA groups 1/2/8, head dims 64 and 128 plus 40 and 96 (padded),
    // packed qkv views, head-major and unaligned padded strides, broadcast k/v, and empty problems.
    const std::vector<ShapeLayout> shapes = {
        {{1, 1, 1, 1, 1, 64}, Layout::Contiguous},       {{2, 17, 17, 2, 2, 64}, Layout::Packed},
        {{1, 128, 128, 8, 1, 128}, Layout::Contiguous},  {{1, 333, 333, 4, 2, 64}, Layout::Packed},
        {{1, 17, 128, 2, 1, 128}, Layout::HeadMajor},    {{1, 128, 17, 2, 2, 64}, Layout::Padded},
        {{1, 333, 128, 2, 1, 64}, Layout::HeadMajor},    {{2, 1, 333, 4, 4, 128}, Layout::Contiguous},
        {{1, 333, 1, 2, 2, 128}, Layout::Padded},        {{1, 128, 333, 8, 4, 128}, Layout::HeadMajor},
        {{1, 70, 70, 2, 1, 40}, Layout::Packed},         {{1, 33, 65, 1, 1, 96}, Layout::Contiguous},
        {{2, 65, 130, 4, 2, 64}, Layout::BroadcastKv},   {{1, 1100, 1030, 2, 1, 128}, Layout::Contiguous},
        {{1, 1030, 1100, 1, 1, 64}, Layout::HeadMajor},  {{0, 17, 17, 2, 2, 64}, Layout::Contiguous},
        {{1, 0, 17, 2, 1, 64}, Layout::Padded},          {{1, 17, 0, 2, 2, 128}, Layout::HeadMajor},
    };
    int passed = 0, failed = 0;
    uint32_t seed = 1;
    const auto report = [&](const std::string& what, const Outcome& o) {
        std::printf("%s %s:%s\n", o.ok ? "PASS" : "FAIL", what.c_str(), o.detail.c_str());
        std::fflush(stdout);
        (o.ok ? passed : failed)++;
    };
    for (Dt dt : {Dt::F16, Dt::BF16})
        for (const ShapeLayout& sl : shapes)
            for (bool causal : {false, true}) {
                if (quick && std::max(sl.s.Nq, sl.s.Nk) > 333) continue;
                const Case c{sl.s, dt, causal, sl.layout, seed % 3 == 0};
                report(describe(c), run_case(c, seed++));
            }
    report("float32 is refused", run_unsupported(Dt::F32, 64));
    report("head_dim 256 is refused", run_unsupported(Dt::BF16, 256));
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("(%.1f s)\n%d passed, %d failed, 0 skipped\n", seconds, passed, failed);
    return failed == 0 ? 0 : 1;
}
