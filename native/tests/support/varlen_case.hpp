// Variable-length ("varlen") batches for the drivers, as fa4j_attention_args describes them: sequences of
// different lengths packed without padding into q/out/dout/dq [total_q, heads_q, D] and k/v/dk/dv [total_k,
// heads_kv, D], lse [heads_q, total_q], int32 offsets cu_seqlens_q/k [batch + 1], optional used key lengths
// seqused_k [batch], and max_seqlen_q/k. One case runs on the host or on a CUDA device and is judged against
// the float64 reference computed sequence by sequence (a dense batch-1 problem per sequence, with the case's
// score features, aligned per sequence: that is the definition of varlen attention). Rows after the last
// sequence belong to none: their outputs are unspecified and not checked, but may be written; gaps between
// strided elements must stay untouched. Keys past a sequence's used length must get zero gradients (the
// reference gives them 0).
#pragma once

#include <flashattn4j.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "support/attention_case.hpp"
#include "support/cuda_buffers.hpp"
#include "support/cuda_stream.hpp"
#include "support/reference_attention.hpp"
#include "support/strided_tensor.hpp"
#include "support/test_dtype.hpp"
#include "support/test_report.hpp"
#include "support/tolerance.hpp"
#include "support/untouched_gaps.hpp"

namespace fa4j_test {

// An int32 vector (cu_seqlens, seqused_k) on the host and, once uploaded, on a device.
class Int32Vector {
public:
    explicit Int32Vector(std::vector<int32_t> values) : values_(std::move(values)) {
        shape_[0] = static_cast<int64_t>(values_.size());
    }
    Int32Vector(const Int32Vector&) = delete;
    Int32Vector& operator=(const Int32Vector&) = delete;
    ~Int32Vector() {
        if (device_pointer_ != nullptr) fa4j_cuda_free(device_, device_pointer_);
    }

    const std::vector<int32_t>& values() const { return values_; }

    bool upload(Outcome& o, int32_t device = 0) {
        device_ = device;
        const size_t bytes = values_.size() * sizeof(int32_t);
        if (device_pointer_ == nullptr && !call_ok(o, fa4j_cuda_malloc(device, bytes, &device_pointer_), "fa4j_cuda_malloc"))
            return false;
        return bytes == 0 || call_ok(o, fa4j_cuda_memcpy(device, device_pointer_, values_.data(), bytes, FA4J_MEMCPY_HOST_TO_DEVICE,
                                                         nullptr),
                                     "fa4j_cuda_memcpy to the device");
    }

    const fa4j_tensor* host_tensor() { return describe(values_.data(), fa4j_device{FA4J_DEVICE_CPU, 0}); }
    const fa4j_tensor* cuda_tensor() { return describe(device_pointer_, fa4j_device{FA4J_DEVICE_CUDA, device_}); }

private:
    const fa4j_tensor* describe(void* data, fa4j_device device) {
        desc_.data = data;
        desc_.device = device;
        desc_.ndim = 1;
        desc_.dtype = fa4j_dtype{static_cast<uint8_t>(FA4J_DTYPE_CODE_INT), 32, 1};
        desc_.shape = shape_;
        desc_.strides = strides_;
        desc_.byte_offset = 0;
        return &desc_;
    }

    std::vector<int32_t> values_;
    int64_t shape_[1] = {0};
    int64_t strides_[1] = {1};
    fa4j_tensor desc_{};
    void* device_pointer_ = nullptr;
    int32_t device_ = 0;
};

struct VarlenCase {
    Dt dt;
    std::vector<int32_t> lens_q, lens_k;
    std::vector<int32_t> used_k;  // empty: every key used
    int64_t Hq, Hkv, D;
    bool causal = false;
    float softcap = 0;
    int64_t window_left = -1, window_right = -1;  // -1: unbounded
    Alibi alibi = Alibi::None;
    int64_t pad_q = 0, pad_k = 0;        // rows after the last sequence
    int64_t extra_max = 0;               // max_seqlen_q/k given as the longest length plus this
    Layout layout = Layout::Contiguous;  // of q, k, v (and dq, dk, dv): Contiguous, HeadMajor or Padded
    bool own_stream = false;             // CUDA: a stream of its own instead of the legacy default stream

    int64_t batch() const { return static_cast<int64_t>(lens_q.size()); }
    int64_t longest() const {
        int64_t m = 0;
        for (int32_t x : lens_q) m = std::max<int64_t>(m, x);
        for (int32_t x : lens_k) m = std::max<int64_t>(m, x);
        return m;
    }
};

inline std::string describe(const VarlenCase& c) {
    const auto list = [](const std::vector<int32_t>& v) {
        std::string s = "[";
        for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
        return s + "]";
    };
    std::string d = std::string("varlen ") + dt_name(c.dt) + " q" + list(c.lens_q) + " k" + list(c.lens_k);
    if (!c.used_k.empty()) d += " used" + list(c.used_k);
    d += " Hq=" + std::to_string(c.Hq) + " Hkv=" + std::to_string(c.Hkv) + " d=" + std::to_string(c.D) +
         (c.causal ? " causal " : " full ") + layout_name(c.layout);
    char text[64];
    if (c.softcap != 0.0f) {
        std::snprintf(text, sizeof text, " softcap=%g", static_cast<double>(c.softcap));
        d += text;
    }
    if (c.window_left >= 0 || c.window_right >= 0) {
        const auto bound = [](int64_t w) { return w < 0 ? std::string("inf") : std::to_string(w); };
        d += " window=(" + bound(c.window_left) + "," + bound(c.window_right) + ")";
    }
    if (c.alibi != Alibi::None) d += c.alibi == Alibi::PerHead ? " alibi=[Hq]" : " alibi=[B,Hq]";
    if (c.pad_q + c.pad_k > 0) d += " padded-rows";
    if (c.extra_max > 0) d += " max+" + std::to_string(c.extra_max);
    if (c.own_stream) d += " stream";
    return d;
}

// The varlen cases every driver runs (dtype set by the driver): ragged lengths, empty sequences of queries
// and of keys, Nq != Nk within a sequence both ways (causal rows with no key), used key lengths (0, some,
// all), rows after the last sequence, GQA, sequences longer than one tile, head dims from 32 to 256, the
// score features per sequence, maximum lengths above the longest, strided layouts.
inline std::vector<VarlenCase> varlen_cases() {
    std::vector<VarlenCase> cases;
    const auto add = [&](std::vector<int32_t> q, std::vector<int32_t> k, int64_t hq, int64_t hkv, int64_t d, bool causal) -> VarlenCase& {
        VarlenCase c{Dt::BF16, std::move(q), std::move(k), {}, hq, hkv, d};
        c.causal = causal;
        cases.push_back(c);
        return cases.back();
    };
    add({5, 17, 1, 33}, {5, 17, 1, 33}, 4, 2, 64, false);
    add({3, 40, 0, 12, 9}, {10, 20, 7, 12, 0}, 8, 2, 64, true).own_stream = true;
    add({6, 20, 4}, {10, 20, 7}, 4, 2, 64, true).used_k = {4, 20, 0};
    {
        VarlenCase& c = add({7, 30}, {12, 25}, 4, 2, 128, true);
        c.pad_q = 3;
        c.pad_k = 5;
        c.layout = Layout::Padded;
    }
    add({65}, {130}, 2, 1, 64, true).layout = Layout::HeadMajor;
    add({9, 33, 2, 20}, {14, 33, 5, 11}, 4, 2, 32, false).softcap = 1.5f;
    {
        VarlenCase& c = add({9, 33, 2, 20}, {14, 33, 5, 11}, 4, 2, 96, true);
        c.window_left = 6;
        c.own_stream = true;
    }
    {
        VarlenCase& c = add({9, 33, 2, 20}, {14, 33, 5, 11}, 4, 1, 40, false);
        c.window_left = 4;
        c.window_right = 2;
        c.layout = Layout::HeadMajor;
    }
    add({9, 33, 2}, {14, 33, 5}, 4, 2, 64, true).alibi = Alibi::PerBatchHead;
    {
        VarlenCase& c = add({9, 33, 2}, {14, 33, 5}, 4, 2, 64, false);
        c.used_k = {7, 30, 5};
        c.softcap = 3;
        c.window_left = 10;
        c.window_right = 5;
        c.alibi = Alibi::PerHead;
        c.pad_q = 2;
        c.pad_k = 1;
        c.extra_max = 5;
    }
    add({150, 0, 61}, {140, 7, 200}, 8, 1, 128, true).layout = Layout::Padded;
    {
        VarlenCase& c = add({70, 33}, {50, 140}, 4, 2, 160, true);
        c.softcap = 20;
        c.window_left = 32;
        c.alibi = Alibi::PerBatchHead;
    }
    {
        VarlenCase& c = add({19, 130, 3}, {19, 130, 40}, 4, 1, 256, false);
        c.used_k = {19, 77, 40};
        c.window_left = 20;
        c.window_right = 20;
        c.own_stream = true;
    }
    return cases;
}

inline std::vector<int32_t> offsets_of(const std::vector<int32_t>& lengths) {
    std::vector<int32_t> cu(lengths.size() + 1, 0);
    for (size_t b = 0; b < lengths.size(); ++b) cu[b + 1] = cu[b] + lengths[b];
    return cu;
}

// A packed [rows, H, D] tensor: contiguous, head-major storage ([H, rows, D]), or rows padded by 8
// elements at an offset of 8 (16-byte aligned for 16-bit dtypes).
inline View make_rows(Dt dt, Layout layout, int64_t rows, int64_t H, int64_t D) {
    View v;
    v.ndim = 3;
    v.shape[0] = rows;
    v.shape[1] = H;
    v.shape[2] = D;
    v.strides[2] = 1;
    if (layout == Layout::HeadMajor) {
        v.buffer = new_buffer(dt, H * rows * D);
        v.strides[0] = D;
        v.strides[1] = rows * D;
    } else if (layout == Layout::Padded) {
        const int64_t row = H * D + 8;
        v.buffer = new_buffer(dt, rows * row + 8);
        v.strides[0] = row;
        v.strides[1] = D;
        v.offset = 8;
    } else {
        v.buffer = new_buffer(dt, rows * H * D);
        v.strides[0] = H * D;
        v.strides[1] = D;
    }
    return v;
}

// The float32 lse [H, rows]: contiguous, stored [rows, H] (head-major layouts), or with rows padded by 3.
inline View make_packed_lse(Layout layout, int64_t H, int64_t rows) {
    View v;
    v.ndim = 2;
    v.shape[0] = H;
    v.shape[1] = rows;
    if (layout == Layout::HeadMajor) {
        v.buffer = new_buffer(Dt::F32, H * rows);
        v.strides[0] = 1;
        v.strides[1] = H;
    } else if (layout == Layout::Padded) {
        v.buffer = new_buffer(Dt::F32, H * (rows + 3));
        v.strides[0] = rows + 3;
        v.strides[1] = 1;
    } else {
        v.buffer = new_buffer(Dt::F32, H * rows);
        v.strides[0] = rows;
        v.strides[1] = 1;
    }
    return v;
}

// `v` cut to its first n indices along dimension `dim` (the rows that belong to a sequence).
inline View first_along(const View& v, int dim, int64_t n) {
    View c = v;
    c.shape[dim] = n;
    return c;
}

struct VarlenTensors {
    View q, k, v, dout, out, lse, dq, dk, dv, alibi;
};

// Every tensor of a varlen forward and backward; outputs in another layout than the inputs.
inline VarlenTensors make_varlen_tensors(const VarlenCase& c, int64_t total_q, int64_t total_k) {
    VarlenTensors t;
    const Layout outputs = c.layout == Layout::Contiguous ? Layout::HeadMajor
                           : c.layout == Layout::HeadMajor ? Layout::Contiguous
                                                           : Layout::Padded;
    t.q = make_rows(c.dt, c.layout, total_q, c.Hq, c.D);
    t.k = make_rows(c.dt, c.layout, total_k, c.Hkv, c.D);
    t.v = make_rows(c.dt, c.layout, total_k, c.Hkv, c.D);
    t.dout = make_rows(c.dt, Layout::Contiguous, total_q, c.Hq, c.D);
    t.out = make_rows(c.dt, outputs, total_q, c.Hq, c.D);
    t.lse = make_packed_lse(outputs, c.Hq, total_q);
    t.dq = make_rows(c.dt, outputs, total_q, c.Hq, c.D);
    t.dk = make_rows(c.dt, outputs, total_k, c.Hkv, c.D);
    t.dv = make_rows(c.dt, c.layout, total_k, c.Hkv, c.D);
    for (View* v : {&t.out, &t.lse, &t.dq, &t.dk, &t.dv}) v->mark_covered();
    t.alibi = make_alibi(c.alibi, c.batch(), c.Hq);
    return t;
}

// Reference results of a varlen case over the rows that belong to a sequence: out, dq [covered_q, Hq, D],
// lse [Hq, covered_q], dk, dv [covered_k, Hkv, D].
template <class T>
Results<T> varlen_attention(const VarlenCase& c, const std::vector<int32_t>& cu_q, const std::vector<int32_t>& cu_k,
                            const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
                            const std::vector<float>& dout, const std::vector<float>& slopes, float scale, bool emulate,
                            Pass pass) {
    const int64_t B = c.batch(), Hq = c.Hq, Hkv = c.Hkv, D = c.D;
    const int64_t cq = cu_q[static_cast<size_t>(B)], ck = cu_k[static_cast<size_t>(B)];
    Results<T> r;
    r.out.assign(static_cast<size_t>(cq * Hq * D), T(0));
    r.lse.assign(static_cast<size_t>(Hq * cq), -std::numeric_limits<T>::infinity());
    if (pass == Pass::ForwardAndBackward) {
        r.dq.assign(r.out.size(), T(0));
        r.dk.assign(static_cast<size_t>(ck * Hkv * D), T(0));
        r.dv.assign(r.dk.size(), T(0));
    }
    for (int64_t b = 0; b < B; ++b) {
        const int64_t q0 = cu_q[static_cast<size_t>(b)], k0 = cu_k[static_cast<size_t>(b)];
        const int64_t nq = cu_q[static_cast<size_t>(b) + 1] - q0;
        const int64_t nk = c.used_k.empty() ? cu_k[static_cast<size_t>(b) + 1] - k0 : c.used_k[static_cast<size_t>(b)];
        Inputs in{};
        in.s = Shape{1, nq, nk, Hq, Hkv, D};
        in.scale = scale;
        in.causal = c.causal;
        const auto rows = [](const std::vector<float>& packed, int64_t first, int64_t count, int64_t row) {
            return std::vector<float>(packed.begin() + first * row, packed.begin() + (first + count) * row);
        };
        in.q = rows(q, q0, nq, Hq * D);
        in.k = rows(k, k0, nk, Hkv * D);
        in.v = rows(v, k0, nk, Hkv * D);
        if (pass == Pass::ForwardAndBackward) in.dout = rows(dout, q0, nq, Hq * D);
        in.softcap = c.softcap;
        in.window_left = c.window_left;
        in.window_right = c.window_right;
        if (c.alibi != Alibi::None) {
            const int64_t first = c.alibi == Alibi::PerBatchHead ? b * Hq : 0;
            in.alibi.assign(slopes.begin() + first, slopes.begin() + first + Hq);
            in.alibi_batch_stride = 0;
        }
        const Results<T> s = naive_attention<T>(in, c.dt, emulate, pass);
        std::copy(s.out.begin(), s.out.end(), r.out.begin() + q0 * Hq * D);
        for (int64_t h = 0; h < Hq; ++h)
            for (int64_t i = 0; i < nq; ++i) r.lse[static_cast<size_t>(h * cq + q0 + i)] = s.lse[static_cast<size_t>(h * nq + i)];
        if (pass == Pass::ForwardAndBackward) {
            std::copy(s.dq.begin(), s.dq.end(), r.dq.begin() + q0 * Hq * D);
            std::copy(s.dk.begin(), s.dk.end(), r.dk.begin() + k0 * Hkv * D);
            std::copy(s.dv.begin(), s.dv.end(), r.dv.begin() + k0 * Hkv * D);
        }
    }
    return r;
}

// Where a varlen case runs, and which passes are checked: the forward (out, lse), the backward (dq, dk, dv,
// given out and lse of the host backend's forward), or both (the backward given this backend's forward).
enum class Where { Host, Cuda };
enum class Checked { Forward, Backward, Both };

namespace detail {

struct VarlenCall {
    const VarlenCase& c;
    VarlenTensors& t;
    Int32Vector &cu_q, &cu_k, &used;
    int64_t max_q, max_k;
    float scale;

    // fa4j_attention's arguments on the host or device copies of `out`... (views of t or of another set).
    fa4j_attention_args args(fa4j_attention_direction direction, Where where, View& out, View& lse, View* dq, View* dk, View* dv,
                             int32_t family) {
        const bool cuda = where == Where::Cuda;
        const auto d = [cuda](View& v) { return cuda ? v.cuda_tensor() : v.host_tensor(); };
        fa4j_attention_args a{};
        a.struct_size = sizeof a;
        a.direction = direction;
        a.kernel_family = family;
        a.q = d(t.q);
        a.k = d(t.k);
        a.v = d(t.v);
        a.out = d(out);
        a.lse = d(lse);
        if (direction == FA4J_ATTENTION_BACKWARD) {
            a.dout = d(t.dout);
            a.dq = d(*dq);
            a.dk = d(*dk);
            a.dv = d(*dv);
        }
        a.cu_seqlens_q = cuda ? cu_q.cuda_tensor() : cu_q.host_tensor();
        a.cu_seqlens_k = cuda ? cu_k.cuda_tensor() : cu_k.host_tensor();
        if (!c.used_k.empty()) a.seqused_k = cuda ? used.cuda_tensor() : used.host_tensor();
        if (c.alibi != Alibi::None) a.alibi_slopes = d(t.alibi);
        a.max_seqlen_q = max_q;
        a.max_seqlen_k = max_k;
        a.softmax_scale = scale;
        a.softcap = c.softcap;
        a.causal = c.causal ? 1 : 0;
        a.window_left = static_cast<int32_t>(c.window_left);
        a.window_right = static_cast<int32_t>(c.window_right);
        return a;
    }
};

}  // namespace detail

// Runs varlen case `c` on `where` and checks the passes `checked` says against the reference. On CUDA the
// kernel family is `family`, every checked result is also compared with the host backend's (within the sum
// of both tolerances), and with `may_refuse` a call refused as FA4J_ERROR_UNSUPPORTED (with a message, writing
// nothing) passes: the backward above head dim 128 or of the SM90 family, which the specification lets a
// backend refuse.
inline Outcome run_varlen_case(const VarlenCase& c, uint32_t seed, Where where, Checked checked,
                               int32_t family = FA4J_KERNEL_AUTO, bool may_refuse = false) {
    Outcome o;
    const std::vector<int32_t> cu_q_values = offsets_of(c.lens_q), cu_k_values = offsets_of(c.lens_k);
    const int64_t B = c.batch();
    const int64_t cq = cu_q_values[static_cast<size_t>(B)], ck = cu_k_values[static_cast<size_t>(B)];
    const int64_t total_q = cq + c.pad_q, total_k = ck + c.pad_k;
    VarlenTensors t = make_varlen_tensors(c, total_q, total_k);
    std::mt19937 rng(seed);
    for (View* v : {&t.q, &t.k, &t.v, &t.dout}) fill_random(*v, rng, c.dt);
    if (c.alibi != Alibi::None) {
        std::uniform_real_distribution<float> slope(-0.25f, 1.0f);
        for (int64_t n = 0; n < t.alibi.count(); ++n) t.alibi.set(n, slope(rng));
    }
    const std::vector<float> slopes = c.alibi != Alibi::None ? t.alibi.values() : std::vector<float>();
    Int32Vector cu_q(cu_q_values), cu_k(cu_k_values), used(c.used_k);
    int64_t max_q = 0, max_k = 0;
    for (int32_t x : c.lens_q) max_q = std::max<int64_t>(max_q, x);
    for (int32_t x : c.lens_k) max_k = std::max<int64_t>(max_k, x);
    max_q += c.extra_max;
    max_k += c.extra_max;
    const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.D)));
    detail::VarlenCall call{c, t, cu_q, cu_k, used, max_q, max_k, scale};

    const Pass pass = checked == Checked::Forward ? Pass::Forward : Pass::ForwardAndBackward;
    const std::vector<float> q = t.q.values(), k = t.k.values(), v = t.v.values(), dout = t.dout.values();
    const Results<double> ref = varlen_attention<double>(c, cu_q_values, cu_k_values, q, k, v, dout, slopes, scale, false, pass);
    const Results<float> plain = varlen_attention<float>(c, cu_q_values, cu_k_values, q, k, v, dout, slopes, scale, true, pass);

    const bool cuda = where == Where::Cuda;
    const int32_t used_family = cuda ? family : FA4J_KERNEL_AUTO;
    DeviceMirror mirror;
    ScopedStream stream;
    if (cuda) {
        std::vector<View*> views = {&t.q, &t.k, &t.v, &t.dout, &t.out, &t.lse, &t.dq, &t.dk, &t.dv};
        if (c.alibi != Alibi::None) views.push_back(&t.alibi);
        for (View* view : views)
            if (!mirror.upload(o, {view})) return o;
        if (!cu_q.upload(o) || !cu_k.upload(o) || (!c.used_k.empty() && !used.upload(o))) return o;
        if (!stream.open(o, c.own_stream)) return o;
    }
    // Runs `a` where the case runs; true when it ran (false: failed, or refused as allowed with `refused` set).
    const auto run = [&](const fa4j_attention_args& a, const char* what, std::initializer_list<View*> outputs, bool& refused) {
        refused = false;
        const fa4j_status status = fa4j_attention(&a, cuda ? stream.get() : nullptr);
        if (may_refuse && status == FA4J_ERROR_UNSUPPORTED) {
            expect_refusal(o, status, FA4J_ERROR_UNSUPPORTED);
            refused = true;
            if (cuda && !stream.synchronize(o)) return false;
            for (View* out : outputs) {
                if (cuda && !mirror.download(o, *out)) return false;
                check_all_poison(o, what, *out);
            }
            return false;
        }
        if (!call_ok(o, status, what) || (cuda && !stream.synchronize(o))) return false;
        for (View* out : outputs)
            if (cuda && !mirror.download(o, *out)) return false;
        return true;
    };
    bool refused = false;
    char text[96];

    // Forward: out and lse.
    if (checked == Checked::Backward) {
        // The backward's out and lse from the host backend (its forward is checked by cpu_attention_test).
        const fa4j_attention_args a = call.args(FA4J_ATTENTION_FORWARD, Where::Host, t.out, t.lse, nullptr, nullptr, nullptr,
                                                FA4J_KERNEL_AUTO);
        if (!call_ok(o, fa4j_attention(&a, nullptr), "host forward")) return o;
        if (cuda && !mirror.upload(o, {&t.out}) ) return o;
        if (cuda && !mirror.upload(o, {&t.lse})) return o;
    } else {
        const fa4j_attention_args a = call.args(FA4J_ATTENTION_FORWARD, where, t.out, t.lse, nullptr, nullptr, nullptr, used_family);
        if (!run(a, "forward", {&t.out, &t.lse}, refused)) return o;
        View out = first_along(t.out, 0, cq), lse = first_along(t.lse, 1, cq);
        const double tol_out = check_tolerance(o, "out", out, ref.out, plain.out, c.dt);
        const double tol_lse = check_tolerance(o, "lse", lse, ref.lse, plain.lse, c.dt);
        check_untouched_gaps(o, "out", t.out);
        check_untouched_gaps(o, "lse", t.lse);
        if (cuda) {
            VarlenTensors host = make_varlen_tensors(c, total_q, total_k);
            const fa4j_attention_args h = call.args(FA4J_ATTENTION_FORWARD, Where::Host, host.out, host.lse, nullptr, nullptr,
                                                    nullptr, FA4J_KERNEL_AUTO);
            if (!call_ok(o, fa4j_attention(&h, nullptr), "host forward")) return o;
            const double d_out = max_difference(out, first_along(host.out, 0, cq));
            const double d_lse = max_difference(lse, first_along(host.lse, 1, cq));
            std::snprintf(text, sizeof text, " |gpu-cpu| out %.1e lse %.1e", d_out, d_lse);
            o.detail += text;
            if (!(d_out <= 2 * tol_out && d_lse <= 2 * tol_lse)) fail(o, "GPU and CPU backends differ by more than both tolerances");
        }
    }
    if (checked == Checked::Forward) return o;

    // Backward: dq, dk, dv.
    const fa4j_attention_args a = call.args(FA4J_ATTENTION_BACKWARD, where, t.out, t.lse, &t.dq, &t.dk, &t.dv, used_family);
    if (!run(a, "backward", {&t.dq, &t.dk, &t.dv}, refused)) return o;
    View dq = first_along(t.dq, 0, cq), dk = first_along(t.dk, 0, ck), dv = first_along(t.dv, 0, ck);
    const double tol_dq = check_tolerance(o, "dq", dq, ref.dq, plain.dq, c.dt);
    const double tol_dk = check_tolerance(o, "dk", dk, ref.dk, plain.dk, c.dt);
    const double tol_dv = check_tolerance(o, "dv", dv, ref.dv, plain.dv, c.dt);
    check_untouched_gaps(o, "dq", t.dq);
    check_untouched_gaps(o, "dk", t.dk);
    check_untouched_gaps(o, "dv", t.dv);
    if (cuda) {
        VarlenTensors host = make_varlen_tensors(c, total_q, total_k);
        const fa4j_attention_args h = call.args(FA4J_ATTENTION_BACKWARD, Where::Host, t.out, t.lse, &host.dq, &host.dk, &host.dv,
                                                FA4J_KERNEL_AUTO);
        if (!call_ok(o, fa4j_attention(&h, nullptr), "host backward")) return o;
        double worst = 0;
        worst = std::max(worst, max_difference(dq, first_along(host.dq, 0, cq)) / (2 * tol_dq));
        worst = std::max(worst, max_difference(dk, first_along(host.dk, 0, ck)) / (2 * tol_dk));
        worst = std::max(worst, max_difference(dv, first_along(host.dv, 0, ck)) / (2 * tol_dv));
        std::snprintf(text, sizeof text, " |gpu-cpu|/bound %.2f", worst);
        o.detail += text;
        if (!(worst <= 1.0)) fail(o, "GPU and CPU backends differ by more than both tolerances");
    }
    return o;
}

}  // namespace fa4j_test
