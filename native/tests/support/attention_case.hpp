// One attention test case (shape, dtype, mask, layout, scale, score features) and what every driver does
// with it: build its tensors, fill the inputs, describe it in one line and make its call parameters.
#pragma once

#include <flashattn4j.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <string>

#include "support/reference_attention.hpp"
#include "support/strided_tensor.hpp"
#include "support/tensor_layouts.hpp"
#include "support/test_dtype.hpp"

namespace fa4j_test {

// What the input values look like: standard normal, or one of the extreme regimes of issue 6 (finite
// inputs that once gave non-finite or wrong results). Every value is rounded to the dtype, saturating.
enum class Values {
    Normal,      // q, k, v, dout ~ N(0, 1)
    Times1e4,    // q, k, v, dout ~ 1e4 · N(0, 1): one-hot rows, scores and lse near 1e8
    NearF16Max,  // ±[0.5, 1] · 65504, random signs: the edge of the range flashattn4j.h guarantees
    // q ~ 1e4·[0.5, 1]; the first half of the keys ~ 1e4·[0.5, 1], the rest ~ 1e-3·N(0, 1), v and dout
    // ~ N(0, 1): scores near 1e8 for the first half, moderate for the rest. A kernel walking the keys
    // from last to first (the CUDA forward) sees its running maximum jump from moderate to huge; with
    // HugeNegativeFirst (huge negative scores) one walking first to last (the CPU) sees it climb from
    // hugely negative to moderate.
    HugeFirst,
    HugeNegativeFirst,
};

inline const char* values_name(Values v) {
    switch (v) {
        case Values::Normal: return "normal";
        case Values::Times1e4: return "1e4*normal";
        case Values::NearF16Max: return "near-fp16-max";
        case Values::HugeFirst: return "huge-keys-first";
        case Values::HugeNegativeFirst: return "huge-negative-keys-first";
    }
    return "?";
}

// The largest softmax scale flashattn4j.h accepts for head_dim d: |scale| · d · 65504² <= 2^126.
inline float largest_scale(int64_t d) {
    return std::nextafter(static_cast<float>(8.507059173023462e37 / (static_cast<double>(d) * 65504.0 * 65504.0)), 0.0f);
}

// One extreme-input case of the drivers: a shape, a scale (NaN: the default 1/sqrt(d)), the values.
struct Extreme {
    Shape s;
    float scale;
    Values values;
    bool causal;
};

// ALiBi slopes (float32): none, one per query head ([heads_q], stride 2 so that a read of the gaps
// shows as NaN), or one per batch and query head ([batch, heads_q], rows padded by 3).
enum class Alibi { None, PerHead, PerBatchHead };

struct Case {
    Shape s;
    Dt dt;
    bool causal;
    Layout layout;
    bool own_stream = false;        // CUDA: run on a created stream instead of the legacy default stream
    float scale_multiplier = 1.0f;  // softmax_scale = scale_multiplier / sqrt(head_dim) ...
    float scale = std::numeric_limits<float>::quiet_NaN();  // ... unless this is set
    Values values = Values::Normal;
    // Score features of fa4j_attention_args (none by default).
    float softcap = 0.0f;
    int64_t window_left = -1, window_right = -1;  // -1: unbounded
    Alibi alibi = Alibi::None;

    bool has_features() const { return softcap != 0.0f || window_left >= 0 || window_right >= 0 || alibi != Alibi::None; }
};

inline std::string describe(const Case& c) {
    char text[200];
    std::snprintf(text, sizeof text, "%s B=%lld Nq=%lld Nk=%lld Hq=%lld Hkv=%lld d=%lld %s %s", dt_name(c.dt),
                  static_cast<long long>(c.s.B), static_cast<long long>(c.s.Nq), static_cast<long long>(c.s.Nk),
                  static_cast<long long>(c.s.Hq), static_cast<long long>(c.s.Hkv), static_cast<long long>(c.s.D),
                  c.causal ? "causal" : "full", layout_name(c.layout));
    std::string d = text;
    if (!std::isnan(c.scale)) {
        std::snprintf(text, sizeof text, " scale=%g", static_cast<double>(c.scale));
        d += text;
    } else if (c.scale_multiplier != 1.0f) {
        std::snprintf(text, sizeof text, " scale=%g/sqrt(d)", static_cast<double>(c.scale_multiplier));
        d += text;
    }
    if (c.values != Values::Normal) d += std::string(" ") + values_name(c.values);
    if (c.softcap != 0.0f) {
        std::snprintf(text, sizeof text, " softcap=%g", static_cast<double>(c.softcap));
        d += text;
    }
    if (c.window_left >= 0 || c.window_right >= 0) {
        const auto bound = [](int64_t w) { return w < 0 ? std::string("inf") : std::to_string(w); };
        d += " window=(" + bound(c.window_left) + "," + bound(c.window_right) + ")";
    }
    if (c.alibi != Alibi::None) d += c.alibi == Alibi::PerHead ? " alibi=[Hq]" : " alibi=[B,Hq]";
    if (c.own_stream) d += " stream";
    return d;
}

inline fa4j_attention_params params_for(const Case& c, int32_t threads = 0) {
    fa4j_attention_params p{};
    p.struct_size = sizeof p;
    p.softmax_scale = !std::isnan(c.scale)
                          ? c.scale
                          : static_cast<float>(static_cast<double>(c.scale_multiplier) / std::sqrt(static_cast<double>(c.s.D)));
    p.causal = c.causal ? 1 : 0;
    p.num_threads = threads;
    return p;
}

// Standard normal values, rounded to the dtype so that the reference sees exactly what the kernel sees.
inline void fill_random(View& view, std::mt19937& rng, Dt dt) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (int64_t n = 0; n < view.count(); ++n) view.set(n, round_to(dt, normal(rng)));
}

// The ALiBi slopes (float32) of a case with `batch` entries (or sequences) and `heads_q` query heads: [heads_q]
// with stride 2 (a read of the gaps shows as NaN), or [batch, heads_q] with rows padded by 3; no buffer for
// Alibi::None.
inline View make_alibi(Alibi alibi, int64_t batch, int64_t heads_q) {
    View v;
    if (alibi == Alibi::PerHead) {
        v.buffer = new_buffer(Dt::F32, 2 * heads_q);
        v.ndim = 1;
        v.shape[0] = heads_q;
        v.strides[0] = 2;
    } else if (alibi == Alibi::PerBatchHead) {
        v.buffer = new_buffer(Dt::F32, batch * (heads_q + 3));
        v.ndim = 2;
        v.shape[0] = batch;
        v.shape[1] = heads_q;
        v.strides[0] = heads_q + 3;
        v.strides[1] = 1;
    }
    return v;
}

// Every tensor of a forward and backward call; alibi only when the case has ALiBi.
struct TrainingTensors {
    View q, k, v, dout, out, lse, dq, dk, dv, alibi;
};

// The case's layout applied to every tensor, varied so that inputs, outputs and gradients never all
// share one layout: with Packed the outputs are padded-unaligned (and dq/dk/dv packed when heads_q ==
// heads_kv), with BroadcastKv q and the outputs are contiguous, dout is head-major for the padded
// layouts and contiguous otherwise.
inline TrainingTensors make_training_tensors(const Case& c) {
    const Shape& s = c.s;
    TrainingTensors t;
    const bool packed = c.layout == Layout::Packed;  // requires Nq == Nk
    const bool padded = c.layout == Layout::Padded || c.layout == Layout::PaddedUnaligned;
    if (packed) {
        make_packed(c.dt, s.B, s.Nq, s.Hq, s.Hkv, s.D, t.q, t.k, t.v);
    } else {
        t.q = make_seq(c.dt, c.layout == Layout::BroadcastKv ? Layout::Contiguous : c.layout, s.B, s.Nq, s.Hq, s.D);
        t.k = make_seq(c.dt, c.layout, s.B, s.Nk, s.Hkv, s.D);
        t.v = make_seq(c.dt, c.layout, s.B, s.Nk, s.Hkv, s.D);
    }
    const Layout out_layout =
        packed ? Layout::PaddedUnaligned : c.layout == Layout::BroadcastKv ? Layout::Contiguous : c.layout;
    t.dout = make_seq(c.dt, padded ? Layout::HeadMajor : Layout::Contiguous, s.B, s.Nq, s.Hq, s.D);
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
    t.alibi = make_alibi(c.alibi, s.B, s.Hq);
    return t;
}

// Fresh random values of the case's kind for tensor `which`: 'q', 'k', 'v' or 'o' (dout).
inline void fill_values(View& view, std::mt19937& rng, const Case& c, char which) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::uniform_real_distribution<float> half_to_one(0.5f, 1.0f);
    const auto set = [&](int64_t n, double x) { view.set(n, round_to_saturating(c.dt, x)); };
    for (int64_t n = 0; n < view.count(); ++n) {
        switch (c.values) {
            case Values::Normal: set(n, normal(rng)); break;
            case Values::Times1e4: set(n, 1e4 * normal(rng)); break;
            case Values::NearF16Max: set(n, (rng() & 1u ? 65504.0 : -65504.0) * half_to_one(rng)); break;
            case Values::HugeFirst:
            case Values::HugeNegativeFirst: {
                if (which == 'q') {
                    set(n, 1e4 * half_to_one(rng));
                } else if (which == 'k') {
                    const int64_t key = n / (c.s.D * c.s.Hkv) % c.s.Nk;  // [B, Nk, Hkv, D]
                    const double sign = c.values == Values::HugeFirst ? 1.0 : -1.0;
                    set(n, key < c.s.Nk / 2 ? sign * 1e4 * half_to_one(rng) : 1e-3 * normal(rng));
                } else {
                    set(n, normal(rng));
                }
                break;
            }
        }
    }
}

// Fresh random q, k, v, (when given) dout and (when the case has ALiBi) slopes, and the reference's dense
// copy of them with the case's score features. Slopes are drawn from [-0.25, 1]: from long-range
// attention through nearly one-hot rows around the diagonal to a bias that favours distant keys.
inline Inputs fill_inputs(const Case& c, std::mt19937& rng, View& q, View& k, View& v, View* dout,
                          View* alibi = nullptr) {
    fill_values(q, rng, c, 'q');
    fill_values(k, rng, c, 'k');
    fill_values(v, rng, c, 'v');
    if (dout != nullptr) fill_values(*dout, rng, c, 'o');
    Inputs in{};
    in.s = c.s;
    in.scale = params_for(c).softmax_scale;
    in.causal = c.causal;
    in.q = q.values();
    in.k = k.values();
    in.v = v.values();
    if (dout != nullptr) in.dout = dout->values();
    in.softcap = c.softcap;
    in.window_left = c.window_left;
    in.window_right = c.window_right;
    if (c.alibi != Alibi::None && alibi != nullptr) {
        std::uniform_real_distribution<float> slope(-0.25f, 1.0f);
        for (int64_t n = 0; n < alibi->count(); ++n) alibi->set(n, slope(rng));
        in.alibi = alibi->values();
        in.alibi_batch_stride = c.alibi == Alibi::PerBatchHead ? c.s.Hq : 0;
    }
    return in;
}

// The tensor descriptors of one fa4j_attention call (NULL where the call has none).
struct CallTensors {
    const fa4j_tensor *q = nullptr, *k = nullptr, *v = nullptr, *out = nullptr, *lse = nullptr;
    const fa4j_tensor *dout = nullptr, *dq = nullptr, *dk = nullptr, *dv = nullptr, *alibi = nullptr;
};

// The descriptors of t's tensors on the host or, with `cuda`, in their device copies (cuda_buffers.hpp).
// A view has one descriptor: those of an earlier call for the other side are overwritten.
inline CallTensors call_tensors(const Case& c, TrainingTensors& t, fa4j_attention_direction direction, bool cuda = false) {
    const auto d = [cuda](View& v) { return cuda ? v.cuda_tensor() : v.host_tensor(); };
    CallTensors x;
    x.q = d(t.q);
    x.k = d(t.k);
    x.v = d(t.v);
    x.out = d(t.out);
    x.lse = d(t.lse);
    if (direction == FA4J_ATTENTION_BACKWARD) {
        x.dout = d(t.dout);
        x.dq = d(t.dq);
        x.dk = d(t.dk);
        x.dv = d(t.dv);
    }
    if (c.alibi != Alibi::None) x.alibi = d(t.alibi);
    return x;
}

// fa4j_attention's arguments for the case on the tensors `x` (which must outlive them), with a kernel family.
inline fa4j_attention_args case_args(const Case& c, const CallTensors& x, fa4j_attention_direction direction,
                                     int32_t family = FA4J_KERNEL_AUTO, int32_t threads = 0) {
    const fa4j_attention_params p = params_for(c, threads);
    fa4j_attention_args a{};
    a.struct_size = sizeof a;
    a.direction = direction;
    a.kernel_family = family;
    a.q = x.q;
    a.k = x.k;
    a.v = x.v;
    a.out = x.out;
    a.lse = x.lse;
    a.dout = x.dout;
    a.dq = x.dq;
    a.dk = x.dk;
    a.dv = x.dv;
    a.alibi_slopes = x.alibi;
    a.softmax_scale = p.softmax_scale;
    a.softcap = c.softcap;
    a.causal = p.causal;
    a.window_left = static_cast<int32_t>(c.window_left);
    a.window_right = static_cast<int32_t>(c.window_right);
    a.num_threads = threads;
    return a;
}

// fa4j_attention's arguments for the case on t's host tensors (which must outlive them).
inline fa4j_attention_args args_for(const Case& c, TrainingTensors& t, fa4j_attention_direction direction,
                                     int32_t threads = 0) {
    return case_args(c, call_tensors(c, t, direction), direction, FA4J_KERNEL_AUTO, threads);
}

}  // namespace fa4j_test
