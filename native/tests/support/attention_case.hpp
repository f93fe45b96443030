// One attention test case (shape, dtype, mask, layout, scale) and what every driver does with it:
// build its tensors, fill the inputs, describe it in one line and make its call parameters.
#pragma once

#include <flashattn4j.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>

#include "support/reference_attention.hpp"
#include "support/strided_tensor.hpp"
#include "support/tensor_layouts.hpp"
#include "support/test_dtype.hpp"

namespace fa4j_test {

struct Case {
    Shape s;
    Dt dt;
    bool causal;
    Layout layout;
    bool own_stream = false;        // CUDA: run on a created stream instead of the legacy default stream
    float scale_multiplier = 1.0f;  // softmax_scale = scale_multiplier / sqrt(head_dim)
};

inline std::string describe(const Case& c) {
    char text[200];
    std::snprintf(text, sizeof text, "%s B=%lld Nq=%lld Nk=%lld Hq=%lld Hkv=%lld d=%lld %s %s", dt_name(c.dt),
                  static_cast<long long>(c.s.B), static_cast<long long>(c.s.Nq), static_cast<long long>(c.s.Nk),
                  static_cast<long long>(c.s.Hq), static_cast<long long>(c.s.Hkv), static_cast<long long>(c.s.D),
                  c.causal ? "causal" : "full", layout_name(c.layout));
    std::string d = text;
    if (c.scale_multiplier != 1.0f) {
        std::snprintf(text, sizeof text, " scale=%g/sqrt(d)", static_cast<double>(c.scale_multiplier));
        d += text;
    }
    if (c.own_stream) d += " stream";
    return d;
}

inline fa4j_attention_params params_for(const Case& c, int32_t threads = 0) {
    fa4j_attention_params p{};
    p.struct_size = sizeof p;
    p.softmax_scale = static_cast<float>(static_cast<double>(c.scale_multiplier) / std::sqrt(static_cast<double>(c.s.D)));
    p.causal = c.causal ? 1 : 0;
    p.num_threads = threads;
    return p;
}

// Standard normal values, rounded to the dtype so that the reference sees exactly what the kernel sees.
inline void fill_random(View& view, std::mt19937& rng, Dt dt) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (int64_t n = 0; n < view.count(); ++n) view.set(n, round_to(dt, normal(rng)));
}

// Every tensor of a forward and backward call.
struct TrainingTensors {
    View q, k, v, dout, out, lse, dq, dk, dv;
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
    return t;
}

// Fresh random q, k, v and (when given) dout, and the reference's dense copy of them.
inline Inputs fill_inputs(const Case& c, std::mt19937& rng, View& q, View& k, View& v, View* dout) {
    for (View* x : {&q, &k, &v}) fill_random(*x, rng, c.dt);
    if (dout != nullptr) fill_random(*dout, rng, c.dt);
    Inputs in{c.s, params_for(c).softmax_scale, c.causal, q.values(), k.values(), v.values(), {}};
    if (dout != nullptr) in.dout = dout->values();
    return in;
}

}  // namespace fa4j_test
