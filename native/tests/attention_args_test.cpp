// Checks fa4j_attention and fa4j_attention_support through the C ABI on the CPU: the arguments struct
// (struct_size versioning, refusals), the capability query's answers and their agreement with the
// call itself, the older entry points giving the same results, and variable-length batches (cu_seqlens,
// seqused_k) against a float64 reference computed per sequence.
#include <flashattn4j.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "support/abi_values.hpp"
#include "support/test_report.hpp"

namespace {

using namespace fa4j_test;


// A host tensor that owns its values, shape and strides (contiguous).
struct Host {
    std::vector<float> f;
    std::vector<int32_t> i;
    std::vector<int64_t> shape, strides;
    fa4j_tensor t{};

    // Standard-normal values from rng.
    static Host floats(std::vector<int64_t> shape, std::mt19937& rng) {
        Host h = filled(std::move(shape), 0);
        std::normal_distribution<float> normal;
        for (float& x : h.f) x = normal(rng);
        return h;
    }
    // Every element `value` (NaN: poisoned, so that unwritten elements show).
    static Host filled(std::vector<int64_t> shape, float value) {
        Host h;
        h.shape = std::move(shape);
        int64_t n = 1;
        for (int64_t s : h.shape) n *= s;
        h.f.assign(static_cast<size_t>(n), value);
        h.finish(h.f.data(), kF32);
        return h;
    }
    static Host ints(std::vector<int32_t> values) {
        Host h;
        h.i = std::move(values);
        h.shape = {static_cast<int64_t>(h.i.size())};
        h.finish(h.i.data(), kI32);
        return h;
    }
    void finish(void* data, fa4j_dtype dtype) {
        strides.assign(shape.size(), 1);
        for (int d = static_cast<int>(shape.size()) - 2; d >= 0; d--) strides[d] = strides[d + 1] * shape[d + 1];
        t = fa4j_tensor{data, kCpu, static_cast<int32_t>(shape.size()), dtype, shape.data(), strides.data(), 0};
    }
    Host(const Host&) = delete;
    Host& operator=(const Host&) = delete;
    Host(Host&& o) noexcept { *this = std::move(o); }
    Host& operator=(Host&& o) noexcept {
        f = std::move(o.f);
        i = std::move(o.i);
        shape = std::move(o.shape);
        strides = std::move(o.strides);
        t = o.t;
        t.shape = shape.data();
        t.strides = strides.data();
        t.data = f.empty() ? static_cast<void*>(i.data()) : static_cast<void*>(f.data());
        return *this;
    }
    Host() = default;
};

fa4j_attention_args forward_args(const Host& q, const Host& k, const Host& v, const Host& out, const Host& lse) {
    fa4j_attention_args a{};
    a.struct_size = sizeof a;
    a.direction = FA4J_ATTENTION_FORWARD;
    a.q = &q.t;
    a.k = &k.t;
    a.v = &v.t;
    a.out = &out.t;
    a.lse = &lse.t;
    a.softmax_scale = 0.125f;
    a.window_left = a.window_right = FA4J_WINDOW_UNBOUNDED;
    return a;
}

// The query's reason; *supported = 1 when its status is FA4J_OK, else 0, and *status_out its status.
std::string support(const fa4j_attention_args& a, int32_t* supported, int32_t* status_out = nullptr) {
    char reason[512];
    int32_t status = -1;
    if (fa4j_attention_support(&a, &status, reason, sizeof reason) != FA4J_OK) return "support query failed: " + last_error_message();
    *supported = status == FA4J_OK ? 1 : 0;
    if (status_out != nullptr) *status_out = status;
    return reason;
}

Outcome capability_query() {
    Outcome o;
    std::mt19937 rng(1);
    Host q = Host::floats({1, 8, 2, 64}, rng), k = Host::floats({1, 8, 2, 64}, rng), v = Host::floats({1, 8, 2, 64}, rng);
    Host out = Host::filled({1, 8, 2, 64}, 0), lse = Host::filled({1, 2, 8}, 0);
    fa4j_attention_args a = forward_args(q, k, v, out, lse);
    int32_t supported = -1;
    std::string why = support(a, &supported);
    if (supported != 1 || !why.empty()) fail(o, "a plain CPU call is not supported: " + why);

    a.kernel_family = FA4J_KERNEL_SM80;
    int32_t answered = -1;
    why = support(a, &supported, &answered);
    o.detail += " SM80 on CPU tensors: " + why;
    if (supported != 0 || why.find("CUDA tensors") == std::string::npos) fail(o, "SM80 family accepted CPU tensors");
    const fa4j_status status = fa4j_attention(&a, nullptr);
    if (status != FA4J_ERROR_UNSUPPORTED || answered != status || why != last_error_message())
        fail(o, "the call's error differs from the query's answer: " + last_error_message());

    a.kernel_family = FA4J_KERNEL_AUTO;
    a.direction = 7;
    why = support(a, &supported, &answered);
    if (supported != 0 || answered != FA4J_ERROR_INVALID_ARGUMENT || why.find("direction") == std::string::npos)
        fail(o, "direction 7 not refused as an invalid argument: " + why);
    a.direction = FA4J_ATTENTION_FORWARD;

    char tiny[8];
    a.softcap = -1;
    int32_t refused = FA4J_OK;
    if (fa4j_attention_support(&a, &refused, tiny, sizeof tiny) != FA4J_OK || refused == FA4J_OK || std::strlen(tiny) != 7)
        fail(o, "reason not truncated to the capacity");
    a.softcap = 0;
    o.detail += " null supported";
    expect_refusal(o, fa4j_attention_support(&a, nullptr, nullptr, 0), FA4J_ERROR_INVALID_ARGUMENT);
    Host slopes = Host::filled({2}, 0.5f);
    slopes.f[1] = INFINITY;
    a.alibi_slopes = &slopes.t;
    o.detail += " infinite ALiBi slope";
    expect_refusal(o, fa4j_attention(&a, nullptr), FA4J_ERROR_INVALID_ARGUMENT);
    a.alibi_slopes = nullptr;
    // A backward's gradient tensor given to a forward: the caller meant another call.
    a.dq = &q.t;
    why = support(a, &supported, &answered);
    if (supported != 0 || answered != FA4J_ERROR_INVALID_ARGUMENT || why.find("dq must be NULL") == std::string::npos)
        fail(o, "a forward given dq was not refused: " + why);
    a.dq = nullptr;
    a.struct_size = 16;
    o.detail += " struct_size 16";
    expect_refusal(o, fa4j_attention(&a, nullptr), FA4J_ERROR_INVALID_ARGUMENT);
    return o;
}

// An older caller's struct (struct_size up to num_threads) reads the later fields as zero, and the new
// entry point gives bit for bit the results of fa4j_attention_forward/backward.
Outcome entry_points_agree() {
    Outcome o;
    std::mt19937 rng(2);
    Host q = Host::floats({2, 33, 4, 32}, rng), k = Host::floats({2, 40, 2, 32}, rng), v = Host::floats({2, 40, 2, 32}, rng);
    Host dout = Host::floats({2, 33, 4, 32}, rng);
    Host out1 = Host::filled({2, 33, 4, 32}, NAN), lse1 = Host::filled({2, 4, 33}, NAN);
    Host out2 = Host::filled({2, 33, 4, 32}, NAN), lse2 = Host::filled({2, 4, 33}, NAN);
    fa4j_attention_params params{sizeof params, 0.2f, 1, 0, 0};
    if (!call_ok(o, fa4j_attention_forward(&params, &q.t, &k.t, &v.t, &out1.t, &lse1.t, nullptr), "old forward")) return o;
    fa4j_attention_args a = forward_args(q, k, v, out2, lse2);
    a.softmax_scale = 0.2f;
    a.causal = 1;
    a.struct_size = offsetof(fa4j_attention_args, num_threads) + sizeof(int32_t);
    if (!call_ok(o, fa4j_attention(&a, nullptr), "new forward")) return o;
    if (std::memcmp(out1.f.data(), out2.f.data(), out1.f.size() * 4) != 0 ||
        std::memcmp(lse1.f.data(), lse2.f.data(), lse1.f.size() * 4) != 0)
        fail(o, "forward results differ between the entry points");
    // The window [unbounded, 0] is the causal mask however it is said.
    Host out3 = Host::filled({2, 33, 4, 32}, NAN), lse3 = Host::filled({2, 4, 33}, NAN);
    fa4j_attention_args w = forward_args(q, k, v, out3, lse3);
    w.softmax_scale = 0.2f;
    w.window_right = 0;
    if (!call_ok(o, fa4j_attention(&w, nullptr), "window [-1, 0] forward")) return o;
    if (std::memcmp(out1.f.data(), out3.f.data(), out1.f.size() * 4) != 0) fail(o, "window [-1, 0] differs from causal");
    Host dq1 = Host::filled({2, 33, 4, 32}, NAN), dk1 = Host::filled({2, 40, 2, 32}, NAN), dv1 = Host::filled({2, 40, 2, 32}, NAN);
    Host dq2 = Host::filled({2, 33, 4, 32}, NAN), dk2 = Host::filled({2, 40, 2, 32}, NAN), dv2 = Host::filled({2, 40, 2, 32}, NAN);
    if (!call_ok(o, fa4j_attention_backward(&params, &dout.t, &q.t, &k.t, &v.t, &out1.t, &lse1.t, &dq1.t, &dk1.t, &dv1.t, nullptr),
                 "old backward"))
        return o;
    fa4j_attention_args b{};
    b.struct_size = sizeof b;
    b.direction = FA4J_ATTENTION_BACKWARD;
    b.dout = &dout.t;
    b.q = &q.t;
    b.k = &k.t;
    b.v = &v.t;
    b.out = &out1.t;
    b.lse = &lse1.t;
    b.dq = &dq2.t;
    b.dk = &dk2.t;
    b.dv = &dv2.t;
    b.softmax_scale = 0.2f;
    b.causal = 1;
    b.window_left = b.window_right = FA4J_WINDOW_UNBOUNDED;
    if (!call_ok(o, fa4j_attention(&b, nullptr), "new backward")) return o;
    const Host* pairs[3][2] = {{&dq1, &dq2}, {&dk1, &dk2}, {&dv1, &dv2}};
    const char* names[3] = {"dq", "dk", "dv"};
    for (int i = 0; i < 3; i++)
        if (std::memcmp(pairs[i][0]->f.data(), pairs[i][1]->f.data(), pairs[i][0]->f.size() * 4) != 0)
            fail(o, std::string(names[i]) + " differs between the entry points");
    return o;
}

// out and lse of one sequence in float64: [nq, H, d] against [nk, Hkv, d], causal bottom-right.
void reference(const float* q, const float* k, const float* v, int64_t nq, int64_t nk, int64_t h, int64_t hkv, int64_t d,
               double scale, bool causal, std::vector<double>& out, std::vector<double>& lse) {
    out.assign(static_cast<size_t>(nq * h * d), 0.0);
    lse.assign(static_cast<size_t>(nq * h), -INFINITY);
    for (int64_t i = 0; i < nq; i++)
        for (int64_t hh = 0; hh < h; hh++) {
            const int64_t kh = hh / (h / hkv);
            std::vector<double> s(static_cast<size_t>(nk), -INFINITY);
            double m = -INFINITY;
            for (int64_t j = 0; j < nk; j++) {
                if (causal && j > i + nk - nq) continue;
                double dot = 0;
                for (int64_t x = 0; x < d; x++) dot += double(q[(i * h + hh) * d + x]) * k[(j * hkv + kh) * d + x];
                s[j] = dot * scale;
                m = std::max(m, s[j]);
            }
            if (m == -INFINITY) continue;
            double sum = 0;
            for (int64_t j = 0; j < nk; j++) sum += s[j] == -INFINITY ? 0 : std::exp(s[j] - m);
            lse[i * h + hh] = m + std::log(sum);
            for (int64_t j = 0; j < nk; j++) {
                if (s[j] == -INFINITY) continue;
                const double p = std::exp(s[j] - m) / sum;
                for (int64_t x = 0; x < d; x++) out[(i * h + hh) * d + x] += p * v[(j * hkv + kh) * d + x];
            }
        }
}

Outcome varlen(bool causal) {
    Outcome o;
    std::mt19937 rng(3);
    const int64_t h = 4, hkv = 2, d = 16;
    const std::vector<int32_t> cu_q{0, 5, 5, 22, 23}, cu_k{0, 9, 12, 29, 29}, used{9, 2, 10, 0};
    const int64_t total_q = 25, total_k = 31;  // two unused rows at the end of each: left untouched
    Host q = Host::floats({total_q, h, d}, rng), k = Host::floats({total_k, hkv, d}, rng), v = Host::floats({total_k, hkv, d}, rng);
    Host dout = Host::floats({total_q, h, d}, rng);
    Host out = Host::filled({total_q, h, d}, NAN), lse = Host::filled({h, total_q}, NAN);
    Host cq = Host::ints(cu_q), ck = Host::ints(cu_k), su = Host::ints(used);
    fa4j_attention_args a = forward_args(q, k, v, out, lse);
    a.causal = causal;
    a.cu_seqlens_q = &cq.t;
    a.cu_seqlens_k = &ck.t;
    a.seqused_k = &su.t;
    if (!call_ok(o, fa4j_attention(&a, nullptr), "varlen forward")) return o;
    double worst = 0;
    for (size_t b = 0; b + 1 < cu_q.size(); b++) {
        const int64_t q0 = cu_q[b], nq = cu_q[b + 1] - q0, k0 = cu_k[b], nk = used[b];
        std::vector<double> ro, rl;
        reference(&q.f[q0 * h * d], &k.f[k0 * hkv * d], &v.f[k0 * hkv * d], nq, nk, h, hkv, d, a.softmax_scale, causal, ro, rl);
        for (int64_t i = 0; i < nq * h * d; i++) worst = std::max(worst, std::fabs(out.f[q0 * h * d + i] - ro[i]));
        for (int64_t i = 0; i < nq; i++)
            for (int64_t hh = 0; hh < h; hh++) {
                const double got = lse.f[hh * total_q + q0 + i], want = rl[i * h + hh];
                if (!(got == want || std::fabs(got - want) < 1e-4)) fail(o, "lse of sequence " + std::to_string(b) + " differs");
            }
    }
    o.detail += " out max error " + std::to_string(worst);
    if (!(worst < 1e-5)) fail(o, "out differs from the float64 reference");
    for (int64_t r = 23; r < total_q; r++)
        if (!std::isnan(out.f[r * h * d])) fail(o, "a row outside every sequence was written");

    Host dq = Host::filled({total_q, h, d}, NAN), dk = Host::filled({total_k, hkv, d}, NAN), dv = Host::filled({total_k, hkv, d}, NAN);
    fa4j_attention_args g = a;
    g.direction = FA4J_ATTENTION_BACKWARD;
    g.dout = &dout.t;
    g.dq = &dq.t;
    g.dk = &dk.t;
    g.dv = &dv.t;
    if (!call_ok(o, fa4j_attention(&g, nullptr), "varlen backward")) return o;
    // Sequence 2 through a dense call on copies: the same gradients (the varlen path runs the dense kernels).
    const int64_t q0 = cu_q[2], nq = cu_q[3] - q0, k0 = cu_k[2], nk = used[2];
    auto copy = [&](const Host& from, int64_t row0, int64_t rows, int64_t heads) {
        Host t = Host::filled({1, rows, heads, d}, 0);
        std::memcpy(t.f.data(), &from.f[row0 * heads * d], static_cast<size_t>(rows * heads * d) * 4);
        return t;
    };
    Host sq = copy(q, q0, nq, h), sk = copy(k, k0, nk, hkv), sv = copy(v, k0, nk, hkv), sdo = copy(dout, q0, nq, h);
    Host so = copy(out, q0, nq, h), sl = Host::filled({1, h, nq}, 0);
    for (int64_t hh = 0; hh < h; hh++)
        for (int64_t i = 0; i < nq; i++) sl.f[hh * nq + i] = lse.f[hh * total_q + q0 + i];
    Host sdq = Host::filled({1, nq, h, d}, NAN), sdk = Host::filled({1, nk, hkv, d}, NAN), sdv = Host::filled({1, nk, hkv, d}, NAN);
    fa4j_attention_params params{sizeof params, a.softmax_scale, causal ? 1 : 0, 0, 0};
    if (!call_ok(o, fa4j_attention_backward(&params, &sdo.t, &sq.t, &sk.t, &sv.t, &so.t, &sl.t, &sdq.t, &sdk.t, &sdv.t, nullptr),
                 "dense backward of sequence 2"))
        return o;
    double gap = 0;
    for (int64_t i = 0; i < nq * h * d; i++) gap = std::max(gap, double(std::fabs(dq.f[q0 * h * d + i] - sdq.f[i])));
    for (int64_t i = 0; i < nk * hkv * d; i++) gap = std::max(gap, double(std::fabs(dk.f[k0 * hkv * d + i] - sdk.f[i])));
    if (!(gap <= 1e-6)) fail(o, "varlen gradients of sequence 2 differ from its dense call by " + std::to_string(gap));
    // Keys the sequence owns but does not use get zero gradients; rows outside every sequence stay untouched.
    for (int64_t r = k0 + nk; r < cu_k[3]; r++)
        if (dk.f[r * hkv * d] != 0 || dv.f[r * hkv * d] != 0) fail(o, "unused key rows of sequence 2 are not zero");
    if (!std::isnan(dk.f[30 * hkv * d])) fail(o, "a key row outside every sequence was written");
    return o;
}

Outcome varlen_refusals() {
    Outcome o;
    std::mt19937 rng(4);
    Host q = Host::floats({10, 2, 8}, rng), k = Host::floats({10, 2, 8}, rng), v = Host::floats({10, 2, 8}, rng);
    Host out = Host::filled({10, 2, 8}, 0), lse = Host::filled({2, 10}, 0);
    auto refuse = [&](const char* what, std::vector<int32_t> cq, std::vector<int32_t> ck, int64_t max_q) {
        Host a_q = Host::ints(std::move(cq)), a_k = Host::ints(std::move(ck));
        fa4j_attention_args a = forward_args(q, k, v, out, lse);
        a.cu_seqlens_q = &a_q.t;
        a.cu_seqlens_k = &a_k.t;
        a.max_seqlen_q = max_q;
        o.detail += std::string(" ") + what;
        expect_refusal(o, fa4j_attention(&a, nullptr), FA4J_ERROR_INVALID_ARGUMENT);
    };
    refuse("decreasing", {0, 6, 4}, {0, 5, 10}, 0);
    refuse("past the rows", {0, 6, 11}, {0, 5, 10}, 0);
    refuse("not from 0", {1, 6, 10}, {0, 5, 10}, 0);
    refuse("lengths differ in count", {0, 6, 10}, {0, 10}, 0);
    refuse("max_seqlen_q too small", {0, 6, 10}, {0, 5, 10}, 3);
    return o;
}

}  // namespace

int main() {
    const auto start = std::chrono::steady_clock::now();
    Tally tally;
    tally.report("capability query", capability_query());
    tally.report("entry points agree", entry_points_agree());
    tally.report("varlen", varlen(false));
    tally.report("varlen causal", varlen(true));
    tally.report("varlen refusals", varlen_refusals());
    return tally.finish(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}
