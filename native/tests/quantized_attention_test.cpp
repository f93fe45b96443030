// Quantized dtypes and quantized attention through the C ABI: the quantizers' rules (rounding to e4m3
// against a brute-force nearest search over all 256 codes, integer scales, the key mean's chunked sum,
// int4 nibble order, NaN and zero groups), pre-quantized inputs giving bit for bit what the call's own
// quantization gives, every mode's output near a float64 reference, DLPack exchange of the new dtypes,
// and the refusals (plain attention on quantized dtypes, the backward, softcap, varlen, bad scales,
// bad int4 layouts, CUDA).
#include <flashattn4j.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "support/abi_values.hpp"
#include "support/half_codec.hpp"
#include "support/test_report.hpp"

namespace {

using namespace fa4j_test;

int bits_of_dtype(fa4j_dtype d) { return d.bits; }

// A contiguous host tensor owning its bytes.
struct Host {
    fa4j_dtype dtype{};
    std::vector<int64_t> shape, strides;
    std::vector<unsigned char> bytes;
    fa4j_tensor t{};

    Host(fa4j_dtype dt, std::vector<int64_t> dims) : dtype(dt), shape(std::move(dims)), strides(shape.size()) {
        int64_t stride = 1, count = 1;
        for (size_t i = shape.size(); i-- > 0;) {
            strides[i] = stride;
            stride *= shape[i];
        }
        for (int64_t s : shape) count *= s;
        bytes.assign(static_cast<size_t>((count * bits_of_dtype(dt) + 7) / 8) + 1, 0);
        t = fa4j_tensor{bytes.data(), kCpu, static_cast<int32_t>(shape.size()), dt, shape.data(), strides.data(), 0};
    }
    Host(const Host&) = delete;
    Host& operator=(const Host&) = delete;
    int64_t count() const {
        int64_t n = 1;
        for (int64_t s : shape) n *= s;
        return n;
    }
    float* f32() { return reinterpret_cast<float*>(bytes.data()); }
    uint16_t* u16() { return reinterpret_cast<uint16_t*>(bytes.data()); }
    int8_t* i8() { return reinterpret_cast<int8_t*>(bytes.data()); }
    uint8_t* u8() { return bytes.data(); }
};

// e4m3fn decoded from the format's definition (bias 7, 3 mantissa bits, S.1111.111 NaN).
double e4m3_value(int code) {
    const int sign = code & 0x80 ? -1 : 1, e = (code >> 3) & 15, m = code & 7;
    if ((code & 0x7f) == 0x7f) return NAN;
    if (e == 0) return sign * m * std::ldexp(1.0, -9);
    return sign * (1 + m / 8.0) * std::ldexp(1.0, e - 7);
}

// Round to nearest e4m3, ties to the even code, saturated: a brute-force search over the 256 codes.
int e4m3_nearest(double x) {
    if (std::isnan(x)) return 0x7f;
    int best = -1;
    double best_error = INFINITY;
    for (int code = 0; code < 256; ++code) {
        const double v = e4m3_value(code);
        if (std::isnan(v) || code >= 0x80) continue;  // magnitudes; the sign is x's
        const double error = std::fabs(v - std::fabs(x));
        if (error < best_error || (error == best_error && (code & 1) == 0)) {
            best_error = error;
            best = code;
        }
    }
    return std::signbit(x) ? best | 0x80 : best;
}

// ---- cases ---------------------------------------------------------------------------------------

fa4j_quantize_args quantize_args(int mode, int operand, const Host& in, const Host& out, const Host& scale, const Host* mean,
                                 uint32_t flags = 0) {
    fa4j_quantize_args a{};
    a.struct_size = sizeof a;
    a.mode = mode;
    a.operand = operand;
    a.flags = flags;
    a.input = &in.t;
    a.output = &out.t;
    a.scale = &scale.t;
    a.mean = mean != nullptr ? &mean->t : nullptr;
    return a;
}

Outcome e4m3_rounding() {
    Outcome o;
    // One (batch, head) of 2048 values whose amax is exactly 448: scale 1 and factor 1, so the codes are
    // e4m3(x) itself, for midpoints between neighbouring codes (ties), points beside them, subnormals and
    // tiny values.
    std::vector<float> values{448.0f, -448.0f, 0.0f, -0.0f, 1e-30f, -1e-30f};
    for (int code = 0; code < 0x7e; ++code) {
        const double a = e4m3_value(code), b = e4m3_value(code + 1);
        const float mid = static_cast<float>((a + b) / 2);
        for (float x : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1000.0f), static_cast<float>(a)}) {
            values.push_back(x);
            values.push_back(-x);
        }
    }
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> uniform(-450.0f, 450.0f);
    while (values.size() < 2048) values.push_back(uniform(rng) * (values.size() % 3 == 0 ? 1e-3f : 1.0f));
    for (float& v : values) v = std::fmax(std::fmin(v, 448.0f), -448.0f);  // amax exactly 448
    const int64_t d = 64, n = static_cast<int64_t>(values.size()) / d;
    Host in(kF32, {1, n, 1, d}), out(kE4M3, {1, n, 1, d}), scale(kF32, {1, 1});
    std::memcpy(in.f32(), values.data(), values.size() * sizeof(float));
    fa4j_quantize_args a = quantize_args(FA4J_QUANT_FP8, FA4J_QUANT_OPERAND_V, in, out, scale, nullptr);
    if (!call_ok(o, fa4j_quantize(&a, nullptr), "fa4j_quantize")) return o;
    if (scale.f32()[0] != 1.0f) fail(o, "scale of an amax of 448 is " + std::to_string(scale.f32()[0]));
    int wrong = 0;
    for (size_t i = 0; i < values.size(); ++i) {
        const int want = e4m3_nearest(values[i]);
        if (out.u8()[i] != want) {
            if (wrong++ < 3) fail(o, "e4m3(" + std::to_string(values[i]) + ") = " + std::to_string(out.u8()[i]) + ", want " + std::to_string(want));
        }
    }
    o.detail += " " + std::to_string(values.size()) + " values, " + std::to_string(wrong) + " wrong";
    return o;
}

Outcome integer_rules() {
    Outcome o;
    // q rows of SAGE_INT8 (per-token scales): random, all zero, tiny, NaN, infinite; and int4 likewise.
    const int64_t d = 16, n = 5;
    for (int mode : {FA4J_QUANT_SAGE_INT8_FP8, FA4J_QUANT_SAGE_INT4_FP16}) {
        const bool int4 = mode == FA4J_QUANT_SAGE_INT4_FP16;
        const int qmax = int4 ? 7 : 127;
        Host in(kF32, {1, n, 1, d}), out(int4 ? kI4 : kI8, {1, n, 1, d}), scale(kF32, {1, 1, n});
        std::mt19937 rng(11);
        std::normal_distribution<float> normal(0.0f, 3.0f);
        for (int64_t i = 0; i < n * d; ++i) in.f32()[i] = normal(rng);
        for (int64_t c = 0; c < d; ++c) {
            in.f32()[1 * d + c] = 0.0f;
            in.f32()[2 * d + c] = c == 3 ? 0x1p-101f : 0.0f;
        }
        in.f32()[3 * d + 5] = NAN;
        in.f32()[4 * d + 7] = -INFINITY;
        fa4j_quantize_args a = quantize_args(mode, FA4J_QUANT_OPERAND_Q, in, out, scale, nullptr);
        if (!call_ok(o, fa4j_quantize(&a, nullptr), "fa4j_quantize")) return o;
        auto value = [&](int64_t e) {
            if (!int4) return static_cast<int>(out.i8()[e]);
            const int nibble = (e & 1) ? out.u8()[e / 2] >> 4 : out.u8()[e / 2] & 15;
            return nibble >= 8 ? nibble - 16 : nibble;
        };
        // Row 0: the rule, in float arithmetic.
        float amax = 0.0f;
        for (int64_t c = 0; c < d; ++c) amax = std::fmax(amax, std::fabs(in.f32()[c]));
        const float want_scale = amax / static_cast<float>(qmax), factor = static_cast<float>(qmax) / amax;
        if (scale.f32()[0] != want_scale) fail(o, "row 0 scale");
        for (int64_t c = 0; c < d; ++c) {
            const float want = std::fmax(std::fmin(std::nearbyint(in.f32()[c] * factor), static_cast<float>(qmax)),
                                         static_cast<float>(-qmax));
            if (value(c) != static_cast<int>(want)) fail(o, "row 0 value " + std::to_string(c));
        }
        for (int64_t r = 1; r <= 4; ++r) {
            bool zero = true;
            for (int64_t c = 0; c < d; ++c) zero &= value(r * d + c) == 0;
            if (!zero) fail(o, "row " + std::to_string(r) + " is not all 0");
        }
        if (scale.f32()[1] != 0.0f || scale.f32()[2] != 0.0f) fail(o, "zero or tiny rows must have scale 0");
        if (!std::isnan(scale.f32()[3]) || !std::isnan(scale.f32()[4])) fail(o, "NaN / infinite rows must have scale NaN");
        if (int4 && (out.u8()[0] & 15) != (value(0) & 15)) fail(o, "int4: element 0 is not the low nibble");
    }
    return o;
}

Outcome key_mean_and_blocks() {
    Outcome o;
    // k of 300 keys: mean by the chunked rule, scales per 128-key block (3 blocks), written mean.
    const int64_t n = 300, d = 8;
    Host in(kBF16, {1, n, 1, d}), out(kI8, {1, n, 1, d}), scale(kF32, {1, 1, 3}), mean(kF32, {1, 1, d});
    std::mt19937 rng(3);
    std::normal_distribution<float> normal(5.0f, 2.0f);
    std::vector<float> k(static_cast<size_t>(n * d));
    for (int64_t i = 0; i < n * d; ++i) {
        in.u16()[i] = encode_bf16(normal(rng));
        k[static_cast<size_t>(i)] = decode_bf16(in.u16()[i]);
    }
    fa4j_quantize_args a = quantize_args(FA4J_QUANT_SAGE_INT8_FP8, FA4J_QUANT_OPERAND_K, in, out, scale, &mean);
    if (!call_ok(o, fa4j_quantize(&a, nullptr), "fa4j_quantize")) return o;
    for (int64_t c = 0; c < d; ++c) {
        float total = 0.0f;
        for (int64_t j0 = 0; j0 < n; j0 += 128) {
            float chunk = 0.0f;
            for (int64_t j = j0; j < std::min<int64_t>(j0 + 128, n); ++j) chunk += k[static_cast<size_t>(j * d + c)];
            total += chunk;
        }
        if (mean.f32()[c] != total / static_cast<float>(n)) fail(o, "mean of channel " + std::to_string(c));
    }
    for (int t = 0; t < 3; ++t) {
        float amax = 0.0f;
        for (int64_t j = t * 128; j < std::min<int64_t>(t * 128 + 128, n); ++j)
            for (int64_t c = 0; c < d; ++c) amax = std::fmax(amax, std::fabs(k[static_cast<size_t>(j * d + c)] - mean.f32()[c]));
        if (scale.f32()[t] != amax / 127.0f) fail(o, "scale of block " + std::to_string(t));
    }
    o.detail += " mean[0] " + std::to_string(mean.f32()[0]);
    return o;
}

// ---- attention -----------------------------------------------------------------------------------

struct Problem {
    int64_t b = 1, nq = 100, nk = 300, hq = 4, hkv = 2, d = 64;
    bool causal = true;
};

fa4j_attention_args attention_args(const Problem& p, const Host& q, const Host& k, const Host& v, const Host& out,
                                   const Host& lse, int mode, uint32_t flags) {
    fa4j_attention_args a{};
    a.struct_size = sizeof a;
    a.direction = FA4J_ATTENTION_FORWARD;
    a.q = &q.t;
    a.k = &k.t;
    a.v = &v.t;
    a.out = &out.t;
    a.lse = &lse.t;
    a.softmax_scale = 1.0f / std::sqrt(static_cast<float>(p.d));
    a.causal = p.causal;
    a.window_left = a.window_right = FA4J_WINDOW_UNBOUNDED;
    a.quant_mode = mode;
    a.quant_flags = flags;
    return a;
}

// Gaussian bf16 inputs with a per-channel offset on k.
struct Inputs {
    Host q, k, v;
    explicit Inputs(const Problem& p, unsigned seed)
        : q(kBF16, {p.b, p.nq, p.hq, p.d}), k(kBF16, {p.b, p.nk, p.hkv, p.d}), v(kBF16, {p.b, p.nk, p.hkv, p.d}) {
        std::mt19937 rng(seed);
        std::normal_distribution<float> normal(0.0f, 1.0f);
        for (int64_t i = 0; i < q.count(); ++i) q.u16()[i] = encode_bf16(normal(rng));
        for (int64_t i = 0; i < k.count(); ++i) k.u16()[i] = encode_bf16(normal(rng) + static_cast<float>(i % p.d % 7) - 3.0f);
        for (int64_t i = 0; i < v.count(); ++i) v.u16()[i] = encode_bf16(normal(rng));
    }
};

// out of float64 attention of the bf16 values, [b, nq, hq, d].
std::vector<double> reference(const Problem& p, Inputs& in) {
    std::vector<double> out(static_cast<size_t>(p.b * p.nq * p.hq * p.d));
    const double scale = 1.0 / std::sqrt(static_cast<double>(p.d));
    std::vector<double> s(static_cast<size_t>(p.nk));
    for (int64_t b = 0; b < p.b; ++b)
        for (int64_t h = 0; h < p.hq; ++h) {
            const int64_t hk = h / (p.hq / p.hkv);
            for (int64_t i = 0; i < p.nq; ++i) {
                double m = -INFINITY;
                const int64_t last = p.causal ? std::min(p.nk - 1, i + p.nk - p.nq) : p.nk - 1;
                for (int64_t j = 0; j <= last; ++j) {
                    double dot = 0;
                    for (int64_t c = 0; c < p.d; ++c)
                        dot += decode_bf16(in.q.u16()[((b * p.nq + i) * p.hq + h) * p.d + c]) *
                               decode_bf16(in.k.u16()[((b * p.nk + j) * p.hkv + hk) * p.d + c]);
                    s[static_cast<size_t>(j)] = dot * scale;
                    m = std::max(m, s[static_cast<size_t>(j)]);
                }
                double l = 0;
                for (int64_t j = 0; j <= last; ++j) l += std::exp(s[static_cast<size_t>(j)] - m);
                for (int64_t c = 0; c < p.d; ++c) {
                    double acc = 0;
                    for (int64_t j = 0; j <= last; ++j)
                        acc += std::exp(s[static_cast<size_t>(j)] - m) *
                               decode_bf16(in.v.u16()[((b * p.nk + j) * p.hkv + hk) * p.d + c]);
                    out[static_cast<size_t>(((b * p.nq + i) * p.hq + h) * p.d + c)] = acc / l;
                }
            }
        }
    return out;
}

const char* mode_label(int mode) {
    switch (mode) {
        case FA4J_QUANT_SAGE_INT8_FP8: return "SAGE_INT8_FP8";
        case FA4J_QUANT_SAGE_INT8_FP16: return "SAGE_INT8_FP16";
        case FA4J_QUANT_SAGE_INT4_FP8: return "SAGE_INT4_FP8";
        case FA4J_QUANT_SAGE_INT4_FP16: return "SAGE_INT4_FP16";
        default: return "FP8";
    }
}

Outcome accuracy(int mode) {
    Outcome o;
    const Problem p;
    Inputs in(p, 42);
    Host out(kBF16, {p.b, p.nq, p.hq, p.d}), lse(kF32, {p.b, p.hq, p.nq});
    fa4j_attention_args a = attention_args(p, in.q, in.k, in.v, out, lse, mode, 0);
    if (!call_ok(o, fa4j_attention(&a, nullptr), "fa4j_attention")) return o;
    const std::vector<double> ref = reference(p, in);
    double dot = 0, nr = 0, no = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
        const double x = decode_bf16(out.u16()[i]);
        dot += x * ref[i];
        nr += ref[i] * ref[i];
        no += x * x;
    }
    const double cosine = dot / std::sqrt(nr * no);
    const bool int4 = mode == FA4J_QUANT_SAGE_INT4_FP8 || mode == FA4J_QUANT_SAGE_INT4_FP16;
    const double bound = int4 ? 0.97 : 0.998;
    o.detail += " cos " + std::to_string(cosine) + " (bound " + std::to_string(bound) + ")";
    if (!(cosine >= bound)) fail(o, "cosine similarity below the bound");
    return o;
}

Outcome prequantized_matches(int mode) {
    Outcome o;
    const Problem p;
    Inputs in(p, 5);
    const bool int4 = mode == FA4J_QUANT_SAGE_INT4_FP8 || mode == FA4J_QUANT_SAGE_INT4_FP16;
    const bool fp16_pv = mode == FA4J_QUANT_SAGE_INT8_FP16 || mode == FA4J_QUANT_SAGE_INT4_FP16;
    const bool fp8 = mode == FA4J_QUANT_FP8;
    const uint32_t flags = FA4J_QUANT_NO_SMOOTH_Q;  // fa4j_quantize never smooths q
    Host out1(kBF16, {p.b, p.nq, p.hq, p.d}), lse1(kF32, {p.b, p.hq, p.nq});
    fa4j_attention_args a1 = attention_args(p, in.q, in.k, in.v, out1, lse1, mode, flags);
    if (!call_ok(o, fa4j_attention(&a1, nullptr), "library-quantized call")) return o;

    const fa4j_dtype qk = fp8 ? kE4M3 : int4 ? kI4 : kI8;
    Host q8(qk, {p.b, p.nq, p.hq, p.d}), k8(qk, {p.b, p.nk, p.hkv, p.d}), v8(kE4M3, {p.b, p.nk, p.hkv, p.d});
    Host qs(kF32, fp8 ? std::vector<int64_t>{p.b, p.hq} : std::vector<int64_t>{p.b, p.hq, p.nq});
    Host ks(kF32, fp8 ? std::vector<int64_t>{p.b, p.hkv} : std::vector<int64_t>{p.b, p.hkv, (p.nk + 127) / 128});
    Host vs(kF32, fp8 ? std::vector<int64_t>{p.b, p.hkv} : std::vector<int64_t>{p.b, p.hkv, p.d});
    Host km(kF32, {p.b, p.hkv, p.d});
    fa4j_quantize_args qa = quantize_args(mode, FA4J_QUANT_OPERAND_Q, in.q, q8, qs, nullptr);
    fa4j_quantize_args ka = quantize_args(mode, FA4J_QUANT_OPERAND_K, in.k, k8, ks, &km);
    if (!call_ok(o, fa4j_quantize(&qa, nullptr), "quantize q") || !call_ok(o, fa4j_quantize(&ka, nullptr), "quantize k"))
        return o;
    if (!fp16_pv) {
        fa4j_quantize_args va = quantize_args(mode, FA4J_QUANT_OPERAND_V, in.v, v8, vs, nullptr);
        if (!call_ok(o, fa4j_quantize(&va, nullptr), "quantize v")) return o;
    }
    Host out2(kBF16, {p.b, p.nq, p.hq, p.d}), lse2(kF32, {p.b, p.hq, p.nq});
    fa4j_attention_args a2 = attention_args(p, q8, k8, fp16_pv ? in.v : v8, out2, lse2, mode, 0);
    a2.q_scale = &qs.t;
    a2.k_scale = &ks.t;
    a2.v_scale = fp16_pv ? nullptr : &vs.t;
    a2.k_mean = &km.t;
    if (!call_ok(o, fa4j_attention(&a2, nullptr), "pre-quantized call")) return o;
    if (std::memcmp(out1.u8(), out2.u8(), out1.bytes.size()) != 0) fail(o, "out differs");
    // lse: the K smoothing correction softmax_scale·q_i·mean uses q as given: bf16 there, dequantized here
    // (so the difference is that of q's quantization error, times the mean, here up to 3 per channel).
    double worst = 0;
    for (int64_t i = 0; i < lse1.count(); ++i) worst = std::max(worst, static_cast<double>(std::fabs(lse1.f32()[i] - lse2.f32()[i])));
    o.detail += " max |lse diff| " + std::to_string(worst);
    if (!(worst < (int4 ? 2.0 : 0.5))) fail(o, "lse differs too much");
    // Mixed: bf16 q with pre-quantized k and v (a quantized KV cache) gives the library-quantized result
    // too when q is quantized the same way.
    Host out3(kBF16, {p.b, p.nq, p.hq, p.d}), lse3(kF32, {p.b, p.hq, p.nq});
    fa4j_attention_args a3 = attention_args(p, in.q, k8, fp16_pv ? in.v : v8, out3, lse3, mode, flags);
    a3.k_scale = &ks.t;
    a3.v_scale = fp16_pv ? nullptr : &vs.t;
    a3.k_mean = &km.t;
    if (!call_ok(o, fa4j_attention(&a3, nullptr), "mixed call")) return o;
    if (std::memcmp(out1.u8(), out3.u8(), out1.bytes.size()) != 0) fail(o, "mixed call's out differs");
    if (std::memcmp(lse1.u8(), lse3.u8(), lse1.bytes.size()) != 0) fail(o, "mixed call's lse differs");
    return o;
}

Outcome refusals() {
    Outcome o;
    const Problem p;
    Inputs in(p, 1);
    Host out(kBF16, {p.b, p.nq, p.hq, p.d}), lse(kF32, {p.b, p.hq, p.nq});
    Host q8(kI8, {p.b, p.nq, p.hq, p.d}), k8(kI8, {p.b, p.nk, p.hkv, p.d}), v8(kE4M3, {p.b, p.nk, p.hkv, p.d});
    Host qs(kF32, {p.b, p.hq, p.nq}), bad_qs(kF32, {p.b, p.hq, p.nq + 1});
    {
        o.detail += " | plain int8";
        fa4j_attention_args a = attention_args(p, q8, k8, v8, out, lse, FA4J_QUANT_NONE, 0);
        expect_refusal(o, fa4j_attention(&a, nullptr), FA4J_ERROR_INVALID_ARGUMENT);
    }
    {
        o.detail += " | int8 without scale";
        fa4j_attention_args a = attention_args(p, q8, in.k, in.v, out, lse, FA4J_QUANT_SAGE_INT8_FP8, 0);
        expect_refusal(o, fa4j_attention(&a, nullptr), FA4J_ERROR_INVALID_ARGUMENT);
    }
    {
        o.detail += " | scale of the wrong shape";
        fa4j_attention_args a = attention_args(p, q8, in.k, in.v, out, lse, FA4J_QUANT_SAGE_INT8_FP8, 0);
        a.q_scale = &bad_qs.t;
        expect_refusal(o, fa4j_attention(&a, nullptr), FA4J_ERROR_INVALID_ARGUMENT);
    }
    {
        o.detail += " | v_scale in an FP16 P·v mode";
        fa4j_attention_args a = attention_args(p, in.q, in.k, v8, out, lse, FA4J_QUANT_SAGE_INT8_FP16, 0);
        a.v_scale = &qs.t;
        expect_refusal(o, fa4j_attention(&a, nullptr), FA4J_ERROR_INVALID_ARGUMENT);
    }
    {
        o.detail += " | e5m2 input";
        Host k5(kE5M2, {p.b, p.nk, p.hkv, p.d});
        fa4j_attention_args a = attention_args(p, in.q, k5, in.v, out, lse, FA4J_QUANT_FP8, 0);
        expect_refusal(o, fa4j_attention(&a, nullptr), FA4J_ERROR_INVALID_ARGUMENT);
    }
    {
        o.detail += " | softcap";
        fa4j_attention_args a = attention_args(p, in.q, in.k, in.v, out, lse, FA4J_QUANT_SAGE_INT8_FP8, 0);
        a.softcap = 30.0f;
        expect_refusal(o, fa4j_attention(&a, nullptr), FA4J_ERROR_UNSUPPORTED);
    }
    {
        o.detail += " | backward";
        fa4j_attention_args a = attention_args(p, in.q, in.k, in.v, out, lse, FA4J_QUANT_SAGE_INT8_FP8, 0);
        a.direction = FA4J_ATTENTION_BACKWARD;
        expect_refusal(o, fa4j_attention(&a, nullptr), FA4J_ERROR_UNSUPPORTED);
    }
    {
        o.detail += " | unknown mode";
        fa4j_attention_args a = attention_args(p, in.q, in.k, in.v, out, lse, 9, 0);
        expect_refusal(o, fa4j_attention(&a, nullptr), FA4J_ERROR_INVALID_ARGUMENT);
    }
    {
        o.detail += " | scales without a mode";
        fa4j_attention_args a = attention_args(p, in.q, in.k, in.v, out, lse, FA4J_QUANT_NONE, 0);
        a.q_scale = &qs.t;
        expect_refusal(o, fa4j_attention(&a, nullptr), FA4J_ERROR_INVALID_ARGUMENT);
    }
    {
        o.detail += " | int4 with an odd innermost size";
        Host odd(kI4, {1, 3, 1, 7});
        Host odd_out(kI4, {1, 3, 1, 7}), s(kF32, {1, 1, 3});
        Host src(kF32, {1, 3, 1, 7});
        fa4j_quantize_args a = quantize_args(FA4J_QUANT_SAGE_INT4_FP8, FA4J_QUANT_OPERAND_Q, src, odd_out, s, nullptr);
        expect_refusal(o, fa4j_quantize(&a, nullptr), FA4J_ERROR_INVALID_ARGUMENT);
    }
    {
        o.detail += " | quantize v for FP16 P·v";
        Host vs(kF32, {p.b, p.hkv, p.d});
        fa4j_quantize_args a = quantize_args(FA4J_QUANT_SAGE_INT8_FP16, FA4J_QUANT_OPERAND_V, in.v, v8, vs, nullptr);
        expect_refusal(o, fa4j_quantize(&a, nullptr), FA4J_ERROR_INVALID_ARGUMENT);
    }
    {
        o.detail += " | CUDA tensors";
        Host qs2(kF32, {p.b, p.hq, p.nq});
        fa4j_tensor q_gpu = in.q.t, q8_gpu = q8.t, s_gpu = qs2.t;
        q_gpu.device = q8_gpu.device = s_gpu.device = fa4j_device{FA4J_DEVICE_CUDA, 0};
        fa4j_quantize_args a{};
        a.struct_size = sizeof a;
        a.mode = FA4J_QUANT_SAGE_INT8_FP8;
        a.operand = FA4J_QUANT_OPERAND_Q;
        a.input = &q_gpu;
        a.output = &q8_gpu;
        a.scale = &s_gpu;
        expect_refusal(o, fa4j_quantize(&a, nullptr), FA4J_ERROR_UNSUPPORTED);
    }
    return o;
}

// DLPack: the new dtypes cross with their codes; int4 layouts and the padded flag are checked.
struct Version {
    uint32_t major, minor;
};
struct ManagedVersioned {
    Version version;
    void* manager_ctx;
    void (*deleter)(ManagedVersioned*);
    uint64_t flags;
    fa4j_tensor dl_tensor;
};

Outcome dlpack_dtypes() {
    Outcome o;
    for (fa4j_dtype dt : {kE4M3, kE5M2, kI8, kI4}) {
        fa4j_buffer buffer = nullptr;
        if (!call_ok(o, fa4j_buffer_allocate(kCpu, 64, nullptr, &buffer), "allocate")) return o;
        void* data = nullptr;
        fa4j_buffer_info(buffer, &data, nullptr, nullptr);
        int64_t shape[2] = {4, 8}, strides[2] = {8, 1};
        fa4j_tensor t{data, kCpu, 2, dt, shape, strides, 0};
        void* managed = nullptr;
        if (call_ok(o, fa4j_dlpack_export(buffer, &t, 1, 0, &managed), "export")) {
            auto* m = static_cast<ManagedVersioned*>(managed);
            if (m->dl_tensor.dtype.code != dt.code || m->dl_tensor.dtype.bits != dt.bits) fail(o, "exported dtype changed");
            const fa4j_tensor* imported = nullptr;
            uint64_t flags = 0;
            fa4j_buffer owner = nullptr;
            if (call_ok(o, fa4j_dlpack_import(managed, 1, &imported, &flags, &owner), "import")) fa4j_buffer_release(owner, nullptr, 0);
        }
        if (dt.bits == 4) {
            int64_t odd_shape[2] = {4, 7};
            fa4j_tensor odd{data, kCpu, 2, dt, odd_shape, strides, 0};
            o.detail += " | int4 [4, 7] export";
            expect_refusal(o, fa4j_dlpack_export(buffer, &odd, 1, 0, &managed), FA4J_ERROR_INVALID_ARGUMENT);
            int64_t odd_strides[2] = {9, 1};
            fa4j_tensor odd_rows{data, kCpu, 2, dt, shape, odd_strides, 0};
            o.detail += " | int4 odd row stride export";
            expect_refusal(o, fa4j_dlpack_export(buffer, &odd_rows, 1, 0, &managed), FA4J_ERROR_INVALID_ARGUMENT);
            ManagedVersioned padded{{1, 1}, nullptr, nullptr, 4, t};
            const fa4j_tensor* imported = nullptr;
            uint64_t flags = 0;
            fa4j_buffer owner = nullptr;
            o.detail += " | int4 padded import";
            expect_refusal(o, fa4j_dlpack_import(&padded, 1, &imported, &flags, &owner), FA4J_ERROR_INVALID_ARGUMENT);
        }
        fa4j_buffer_release(buffer, nullptr, 0);
    }
    return o;
}

}  // namespace

int main() {
    const auto start = std::chrono::steady_clock::now();
    Tally tally;
    tally.report("e4m3 rounding", e4m3_rounding());
    tally.report("integer quantizer rules", integer_rules());
    tally.report("key mean and blocks", key_mean_and_blocks());
    for (int mode = FA4J_QUANT_SAGE_INT8_FP8; mode <= FA4J_QUANT_FP8; ++mode) {
        tally.report(std::string("accuracy ") + mode_label(mode), accuracy(mode));
        tally.report(std::string("pre-quantized ") + mode_label(mode), prequantized_matches(mode));
    }
    tally.report("refusals", refusals());
    tally.report("dlpack dtypes", dlpack_dtypes());
    return tally.finish(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}
