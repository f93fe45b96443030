// Checks the CPU backend through the C ABI against a float64 reference of softmax(scale·QKᵀ)V and its
// analytic gradients. Tolerance: max|kernel - ref| <= 2 * max|plain - ref| + eps, where "plain" is a
// naive untiled float32 implementation that sees the same dtype-rounded inputs and rounds where a
// half-precision implementation must (P before P·V, dS before dS·K and dSᵀ·Q, every output), so the
// budget scales with what the dtype allows and nothing more. Output buffers start as NaN, gaps between
// strided output elements must stay untouched, and NaN never passes.
#include <flashattn4j.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
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

// Independent of the library's converters on purpose: round-to-nearest-even via nearbyint.
uint16_t encode_f16(float f) {
    const uint16_t sign = (bits_of(f) >> 16) & 0x8000u;
    const double a = std::fabs(static_cast<double>(f));
    if (std::isnan(f)) return static_cast<uint16_t>(sign | 0x7e00u);
    if (a >= 65520.0) return static_cast<uint16_t>(sign | 0x7c00u);
    if (a < std::ldexp(1.0, -14)) return static_cast<uint16_t>(sign | static_cast<uint16_t>(std::nearbyint(std::ldexp(a, 24))));
    int exponent;
    std::frexp(a, &exponent);  // a = m * 2^exponent, m in [0.5, 1)
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

// ---- strided host tensors -------------------------------------------------------------------------

struct Buffer {
    Dt dt;
    std::vector<unsigned char> bytes;
    std::vector<char> covered;  // element belongs to some view (outputs: must be written)
};
using BufferPtr = std::shared_ptr<Buffer>;

BufferPtr new_buffer(Dt dt, int64_t elements) {
    auto b = std::make_shared<Buffer>();
    b->dt = dt;
    b->bytes.assign(static_cast<size_t>(elements) * dt_size(dt), 0);
    b->covered.assign(static_cast<size_t>(elements), 0);
    return b;
}

// The NaN every output element starts as; elements outside the views must still hold it afterwards.
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
    // Element of logical (row-major) index n.
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
    const fa4j_tensor* tensor() {
        desc.data = buffer->bytes.empty() ? nullptr : buffer->bytes.data();
        desc.device = fa4j_device{FA4J_DEVICE_CPU, 0};
        desc.ndim = ndim;
        const Dt dt = buffer->dt;
        desc.dtype = fa4j_dtype{static_cast<uint8_t>(dt == Dt::BF16 ? FA4J_DTYPE_CODE_BFLOAT : FA4J_DTYPE_CODE_FLOAT),
                                static_cast<uint8_t>(dt_size(dt) * 8), 1};
        desc.shape = shape;
        desc.strides = strides;
        desc.byte_offset = static_cast<uint64_t>(offset) * dt_size(dt);
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

// A [B, S, H, D] tensor in its own buffer with the given layout (Packed is handled by the caller).
View make_seq(Dt dt, Layout layout, int64_t B, int64_t S, int64_t H, int64_t D) {
    switch (layout) {
        case Layout::HeadMajor:
            return seq_view(new_buffer(dt, B * H * S * D), B, S, H, D, {H * S * D, D, S * D, 1}, 0);
        case Layout::Padded: {
            const int64_t row = D + 8, batch = S * H * row + 24;
            return seq_view(new_buffer(dt, B * batch + 5), B, S, H, D, {batch, H * row, row, 1}, 5);
        }
        case Layout::BroadcastKv:  // one batch's worth of storage seen by every batch
            return seq_view(new_buffer(dt, S * H * D), B, S, H, D, {0, H * D, D, 1}, 0);
        default:
            return seq_view(new_buffer(dt, B * S * H * D), B, S, H, D, {S * H * D, H * D, D, 1}, 0);
    }
}

// q/k/v (or dq/dk/dv) as views into one [B, S, Hq + 2 Hkv, D] buffer, as a fused projection makes them.
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
    if (layout == Layout::HeadMajor) {  // stored [B, N, H]
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

// ---- reference implementations --------------------------------------------------------------------

struct Shape {
    int64_t B, Nq, Nk, Hq, Hkv, D;
};

struct Inputs {  // dense [b][s][h][c], values exactly representable in the dtype
    Shape s;
    float scale;
    bool causal;
    std::vector<float> q, k, v, dout;
};

template <class T>
struct Results {  // dense, same order as the views' logical index
    std::vector<T> out, lse, dq, dk, dv;
};

// Naive attention in arithmetic T. With `emulate` it rounds what a half-precision implementation
// rounds (P before P·V and dSᵀ/dS before the gradient products, and every output) to dtype `dt`.
template <class T>
Results<T> naive_attention(const Inputs& in, Dt dt, bool emulate) {
    const Shape& s = in.s;
    const auto rnd = [&](T x) { return emulate ? static_cast<T>(round_to(dt, static_cast<float>(x))) : x; };
    const auto qi = [&](int64_t b, int64_t i, int64_t h) { return &in.q[static_cast<size_t>(((b * s.Nq + i) * s.Hq + h) * s.D)]; };
    const auto kj = [&](const std::vector<float>& t, int64_t b, int64_t j, int64_t h) {
        return &t[static_cast<size_t>(((b * s.Nk + j) * s.Hkv + h) * s.D)];
    };
    Results<T> r;
    r.out.assign(static_cast<size_t>(s.B * s.Nq * s.Hq * s.D), T(0));
    r.dq.assign(r.out.size(), T(0));
    r.lse.assign(static_cast<size_t>(s.B * s.Hq * s.Nq), -std::numeric_limits<T>::infinity());
    r.dk.assign(static_cast<size_t>(s.B * s.Nk * s.Hkv * s.D), T(0));
    r.dv.assign(r.dk.size(), T(0));
    const T scale = static_cast<T>(in.scale);
    std::vector<T> p(static_cast<size_t>(s.Nk)), dp(static_cast<size_t>(s.Nk));
    for (int64_t b = 0; b < s.B; ++b) {
        for (int64_t h = 0; h < s.Hq; ++h) {
            const int64_t hk = h / (s.Hq / s.Hkv);
            for (int64_t i = 0; i < s.Nq; ++i) {
                const int64_t visible = in.causal ? std::min(s.Nk, std::max<int64_t>(0, i + s.Nk - s.Nq + 1)) : s.Nk;
                if (visible == 0) continue;  // out 0, lse -inf, no gradient
                const float* q = qi(b, i, h);
                T m = -std::numeric_limits<T>::infinity();
                for (int64_t j = 0; j < visible; ++j) {
                    const float* k = kj(in.k, b, j, hk);
                    T dot = 0;
                    for (int64_t c = 0; c < s.D; ++c) dot += static_cast<T>(q[c]) * static_cast<T>(k[c]);
                    p[j] = scale * dot;
                    m = std::max(m, p[j]);
                }
                T sum = 0;
                for (int64_t j = 0; j < visible; ++j) sum += (p[j] = std::exp(p[j] - m));
                r.lse[static_cast<size_t>((b * s.Hq + h) * s.Nq + i)] = m + std::log(sum);
                for (int64_t j = 0; j < visible; ++j) p[j] /= sum;
                T* out = &r.out[static_cast<size_t>(((b * s.Nq + i) * s.Hq + h) * s.D)];
                for (int64_t j = 0; j < visible; ++j) {
                    const float* v = kj(in.v, b, j, hk);
                    const T pj = rnd(p[j]);
                    for (int64_t c = 0; c < s.D; ++c) out[c] += pj * static_cast<T>(v[c]);
                }
                for (int64_t c = 0; c < s.D; ++c) out[c] = rnd(out[c]);

                const float* dout = &in.dout[static_cast<size_t>(((b * s.Nq + i) * s.Hq + h) * s.D)];
                T delta = 0;
                for (int64_t c = 0; c < s.D; ++c) delta += static_cast<T>(dout[c]) * out[c];
                T* dq = &r.dq[static_cast<size_t>(((b * s.Nq + i) * s.Hq + h) * s.D)];
                for (int64_t j = 0; j < visible; ++j) {
                    const float* v = kj(in.v, b, j, hk);
                    const float* k = kj(in.k, b, j, hk);
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
};

struct Outcome {
    std::string detail;
    bool ok = true;
};

void fail(Outcome& o, const std::string& why) {
    o.ok = false;
    o.detail += " FAIL(" + why + ")";
}

void compare(Outcome& o, const char* name, const View& kernel, const std::vector<double>& ref,
             const std::vector<float>& plain, double eps) {
    double err_kernel = 0, err_plain = 0;
    bool bad = false;
    for (int64_t n = 0; n < kernel.count(); ++n) {
        const double x = kernel.get(n), r = ref[static_cast<size_t>(n)], pl = plain[static_cast<size_t>(n)];
        if (std::isinf(r)) {  // a row that attends nothing: lse must be exactly -inf
            if (x != r) bad = true;
            continue;
        }
        if (!std::isfinite(x)) bad = true;  // NaN, or an inf the reference does not have
        else err_kernel = std::max(err_kernel, std::fabs(x - r));
        err_plain = std::max(err_plain, std::fabs(pl - r));
    }
    const double tol = 2 * err_plain + eps;
    char text[96];
    std::snprintf(text, sizeof text, " %s %.1e/%.1e", name, err_kernel, tol);
    o.detail += text;
    if (bad) fail(o, std::string(name) + " not finite or -inf mismatch");
    else if (err_kernel > tol) fail(o, std::string(name) + " error above tolerance");
}

// Output elements the views do not cover must still hold the poison NaN.
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

// With broadcast k/v every batch reads batch 0's storage; the reference must see the same values.
std::vector<float> logical_values(const View& view) {
    std::vector<float> values(static_cast<size_t>(view.count()));
    for (int64_t n = 0; n < view.count(); ++n) values[static_cast<size_t>(n)] = view.get(n);
    return values;
}

fa4j_attention_params params_for(const Case& c, int threads) {
    fa4j_attention_params p{};
    p.struct_size = sizeof p;
    p.softmax_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.s.D)));
    p.causal = c.causal ? 1 : 0;
    p.num_threads = threads;
    return p;
}

bool call_ok(Outcome& o, fa4j_status status, const char* what) {
    if (status == FA4J_OK) return true;
    const char* message = "";
    fa4j_last_error_message(&message);
    fail(o, std::string(what) + " returned " + std::to_string(status) + ": " + message);
    return false;
}

Outcome run_case(const Case& c, uint32_t seed) {
    Outcome o;
    std::mt19937 rng(seed);
    Tensors t = make_tensors(c);
    Inputs in{c.s, 0.0f, c.causal, {}, {}, {}, {}};
    fill_random(t.q, rng, c.dt);
    fill_random(t.k, rng, c.dt);
    fill_random(t.v, rng, c.dt);
    fill_random(t.dout, rng, c.dt);
    in.q = logical_values(t.q);
    in.k = logical_values(t.k);
    in.v = logical_values(t.v);
    in.dout = logical_values(t.dout);
    const fa4j_attention_params params = params_for(c, 0);
    in.scale = params.softmax_scale;

    for (View* v : {&t.out, &t.lse}) poison(*v->buffer);
    if (!call_ok(o, fa4j_attention_forward(&params, t.q.tensor(), t.k.tensor(), t.v.tensor(), t.out.tensor(),
                                           t.lse.tensor(), nullptr),
                 "forward"))
        return o;
    for (View* v : {&t.dq, &t.dk, &t.dv}) poison(*v->buffer);
    if (!call_ok(o, fa4j_attention_backward(&params, t.dout.tensor(), t.q.tensor(), t.k.tensor(), t.v.tensor(),
                                            t.out.tensor(), t.lse.tensor(), t.dq.tensor(), t.dk.tensor(),
                                            t.dv.tensor(), nullptr),
                 "backward"))
        return o;

    const Results<double> ref = naive_attention<double>(in, c.dt, false);
    const Results<float> plain = naive_attention<float>(in, c.dt, true);
    const double eps = dt_eps(c.dt);
    compare(o, "out", t.out, ref.out, plain.out, eps);
    compare(o, "lse", t.lse, ref.lse, plain.lse, eps);
    compare(o, "dq", t.dq, ref.dq, plain.dq, eps);
    compare(o, "dk", t.dk, ref.dk, plain.dk, eps);
    compare(o, "dv", t.dv, ref.dv, plain.dv, eps);
    check_gaps(o, "out", t.out);
    check_gaps(o, "lse", t.lse);
    check_gaps(o, "dq/dk/dv", t.dq);
    check_gaps(o, "dk", t.dk);
    check_gaps(o, "dv", t.dv);
    return o;
}

// Every output element is owned by one task and summed in a fixed order, so the thread count must not
// change a single bit.
Outcome run_determinism(const Case& c, uint32_t seed) {
    Outcome o;
    std::vector<std::vector<unsigned char>> first;
    for (int threads : {1, 3}) {
        std::mt19937 rng(seed);
        Tensors t = make_tensors(c);
        for (View* v : {&t.q, &t.k, &t.v, &t.dout}) fill_random(*v, rng, c.dt);
        const fa4j_attention_params params = params_for(c, threads);
        if (!call_ok(o, fa4j_attention_forward(&params, t.q.tensor(), t.k.tensor(), t.v.tensor(), t.out.tensor(),
                                               t.lse.tensor(), nullptr),
                     "forward") ||
            !call_ok(o, fa4j_attention_backward(&params, t.dout.tensor(), t.q.tensor(), t.k.tensor(), t.v.tensor(),
                                                t.out.tensor(), t.lse.tensor(), t.dq.tensor(), t.dk.tensor(),
                                                t.dv.tensor(), nullptr),
                     "backward"))
            return o;
        std::vector<std::vector<unsigned char>> results;
        for (View* v : {&t.out, &t.lse, &t.dq, &t.dk, &t.dv}) results.push_back(v->buffer->bytes);
        if (first.empty()) first = results;
        else if (first != results) fail(o, "1 and 3 threads differ");
    }
    o.detail = " bitwise identical with 1 and 3 threads";
    return o;
}

// Two identical keys give P = 1/2 exactly, so with v = (x, 0) out must be the dtype's rounding of x/2:
// with x running over every 16-bit pattern this checks the kernels' dtype conversions, both ways, on
// every value, subnormals, infinities and NaN included (halving keeps an infinity from hiding as the
// largest finite value, which rounds back to infinity).
Outcome run_round_trip(Dt dt) {
    Outcome o;
    const int64_t B = 256, D = 256;
    const Case c{{B, 1, 2, 1, 1, D}, dt, false, Layout::Contiguous};
    Tensors t = make_tensors(c);
    std::mt19937 rng(99);
    fill_random(t.q, rng, dt);
    for (int64_t b = 0; b < B; ++b)
        for (int64_t e = 0; e < D; ++e) {
            const float key = round_to(dt, std::normal_distribution<float>(0.0f, 1.0f)(rng));
            t.k.set((b * 2 + 0) * D + e, key);
            t.k.set((b * 2 + 1) * D + e, key);
            const uint16_t bits = static_cast<uint16_t>(b * D + e);
            std::memcpy(&t.v.buffer->bytes[t.v.element((b * 2 + 0) * D + e) * 2], &bits, 2);
            t.v.set((b * 2 + 1) * D + e, 0.0f);
        }
    poison(*t.out.buffer);
    poison(*t.lse.buffer);
    const fa4j_attention_params params = params_for(c, 0);
    if (!call_ok(o, fa4j_attention_forward(&params, t.q.tensor(), t.k.tensor(), t.v.tensor(), t.out.tensor(),
                                           t.lse.tensor(), nullptr),
                 "forward"))
        return o;
    int64_t wrong = 0;
    for (int64_t b = 0; b < B; ++b)
        for (int64_t e = 0; e < D; ++e) {
            const float want = round_to(dt, 0.5f * t.v.get((b * 2 + 0) * D + e)), got = t.out.get(b * D + e);
            if (!(want == got || (std::isnan(want) && std::isnan(got)))) ++wrong;
        }
    o.detail = " " + std::to_string(wrong) + " of 65536 values wrong";
    if (wrong != 0) fail(o, "conversion not exact");
    return o;
}

std::string describe(const Case& c, const char* isa) {
    char text[200];
    std::snprintf(text, sizeof text, "%s B=%lld Nq=%lld Nk=%lld Hq=%lld Hkv=%lld d=%lld %s %s isa=%s", dt_name(c.dt),
                  static_cast<long long>(c.s.B), static_cast<long long>(c.s.Nq), static_cast<long long>(c.s.Nk),
                  static_cast<long long>(c.s.Hq), static_cast<long long>(c.s.Hkv), static_cast<long long>(c.s.D),
                  c.causal ? "causal" : "full", layout_name(c.layout), isa);
    return text;
}

}  // namespace

int main() {
    const auto start = std::chrono::steady_clock::now();
    struct ShapeLayout {
        Shape s;
        Layout layout;
    };
    // Ragged lengths around the 64-row tiles, Nq != Nk both ways (causal rows that see nothing when
    // Nq > Nk), head dims 32/64/128 plus an odd 40 and the maximum 256, GQA groups 1/2/8, views into a
    // packed qkv buffer, head-major and padded strides, broadcast k/v, and empty problems.
    const std::vector<ShapeLayout> shapes = {
        {{1, 1, 1, 1, 1, 32}, Layout::Contiguous},     {{2, 17, 17, 2, 2, 64}, Layout::Packed},
        {{1, 128, 128, 8, 1, 64}, Layout::Contiguous}, {{1, 333, 333, 4, 2, 32}, Layout::Packed},
        {{1, 17, 128, 2, 1, 128}, Layout::HeadMajor},  {{1, 128, 17, 2, 2, 64}, Layout::Padded},
        {{1, 333, 128, 2, 1, 64}, Layout::HeadMajor},  {{2, 1, 333, 4, 4, 128}, Layout::Contiguous},
        {{1, 333, 1, 2, 2, 32}, Layout::Padded},       {{1, 128, 333, 8, 4, 128}, Layout::HeadMajor},
        {{1, 70, 70, 2, 1, 40}, Layout::Packed},       {{1, 33, 65, 1, 1, 256}, Layout::Contiguous},
        {{2, 65, 130, 4, 2, 64}, Layout::BroadcastKv}, {{0, 17, 17, 2, 2, 32}, Layout::Contiguous},
        {{1, 0, 17, 2, 1, 32}, Layout::Padded},        {{1, 17, 0, 2, 2, 32}, Layout::HeadMajor},
    };
    int passed = 0, failed = 0;
    uint32_t seed = 1;
    const auto report = [&](const std::string& what, const Outcome& o) {
        std::printf("%s %s:%s\n", o.ok ? "PASS" : "FAIL", what.c_str(), o.detail.c_str());
        (o.ok ? passed : failed)++;
    };
    for (Dt dt : {Dt::F32, Dt::F16, Dt::BF16})
        for (const ShapeLayout& sl : shapes)
            for (bool causal : {false, true}) {
                const Case c{sl.s, dt, causal, sl.layout};
                report(describe(c, "best"), run_case(c, seed++));
            }
    // The narrower instruction-set paths (chosen at run time) on a few shapes each.
    for (const char* isa : {"avx2", "generic"}) {
        setenv("FA4J_CPU_ISA", isa, 1);
        for (Dt dt : {Dt::F32, Dt::BF16})
            for (size_t i : {1u, 5u, 10u, 11u}) {
                const Case c{shapes[i].s, dt, true, shapes[i].layout};
                report(describe(c, isa), run_case(c, seed++));
            }
        unsetenv("FA4J_CPU_ISA");
    }
    for (Dt dt : {Dt::F16, Dt::BF16}) report(std::string("round trip of every ") + dt_name(dt) + " value", run_round_trip(dt));
    for (size_t i : {3u, 9u}) {
        const Case c{shapes[i].s, Dt::BF16, true, shapes[i].layout};
        report("determinism " + describe(c, "best"), run_determinism(c, seed++));
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("(%.1f s)\n%d passed, %d failed\n", seconds, passed, failed);
    return failed == 0 ? 0 : 1;
}
