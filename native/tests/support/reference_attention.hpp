// Untiled attention, forward and gradients, straight from the definitions:
//   S = f(scale · Q·Kᵀ), P = softmax(S, masked), out = P·V, lse = log Σ exp(S)
//   dV = Pᵀ·dO, dP = dO·Vᵀ, dS = P ∘ (dP − rowsum(dO ∘ out)) ∘ f', dQ = scale · dS·K, dK = scale · dSᵀ·Q
// where f is the score transform of flashattn4j.h's fa4j_attention_args, in its order: the softcap
// c·tanh(x/c), then the ALiBi bias −slope·|i' − j|; f' is the softcap's derivative 1 − tanh²(x/c).
// Instantiated in double it is the reference. Instantiated in float with `emulate` it is the "plain"
// implementation of the tolerance rule: it rounds to the dtype exactly where any half-precision
// implementation must (P before P·V and dV, dS before dQ and dK, every 16-bit output), so its error
// measures what the dtype allows, and a kernel may lose at most twice that.
//
// Masks are bottom-right aligned (flash-attn >= 2.1): with i' = i + Nk - Nq, query i sees key j iff
// j <= i' (causal), i' - window_left <= j (window_left >= 0) and j <= i' + window_right (window_right
// >= 0). A row that sees no key gets out = 0, lse = -inf and no gradient.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <vector>

#include "support/parallel_for.hpp"
#include "support/test_dtype.hpp"

namespace fa4j_test {

struct Shape {
    int64_t B, Nq, Nk, Hq, Hkv, D;
};

// Dense [b][s][h][c] values (already representable in the dtype); dout is only read with gradients.
struct Inputs {
    Shape s;
    float scale;
    bool causal;
    std::vector<float> q, k, v, dout;
    float softcap = 0;                            // > 0: scores capped
    int64_t window_left = -1, window_right = -1;  // negative: unbounded
    std::vector<float> alibi;                     // slope of (b, h): alibi[b * alibi_batch_stride + h]; empty: none
    int64_t alibi_batch_stride = 0;
};

// Dense, in the logical order of the views: out/dq [B, Nq, Hq, D], lse [B, Hq, Nq], dk/dv [B, Nk, Hkv, D].
template <class T>
struct Results {
    std::vector<T> out, lse, dq, dk, dv;
};

enum class Pass { Forward, ForwardAndBackward };

inline bool key_visible(const Inputs& in, int64_t i, int64_t j) {
    const int64_t aligned = i + in.s.Nk - in.s.Nq;
    if (in.causal && j > aligned) return false;
    if (in.window_left >= 0 && j < aligned - in.window_left) return false;
    if (in.window_right >= 0 && j > aligned + in.window_right) return false;
    return true;
}

namespace detail {

template <class T>
class NaiveAttention {
public:
    NaiveAttention(const Inputs& in, Dt dt, bool emulate) : in_(in), s_(in.s), dt_(dt), emulate_(emulate) {}

    Results<T> run(Pass pass) {
        const Shape& s = s_;
        r_.out.assign(static_cast<size_t>(s.B * s.Nq * s.Hq * s.D), T(0));
        r_.lse.assign(static_cast<size_t>(s.B * s.Hq * s.Nq), -std::numeric_limits<T>::infinity());
        if (pass == Pass::ForwardAndBackward) {
            r_.dq.assign(r_.out.size(), T(0));
            r_.dk.assign(static_cast<size_t>(s.B * s.Nk * s.Hkv * s.D), T(0));
            r_.dv.assign(r_.dk.size(), T(0));
            // dK and dV of a kv head collect every query head of its group: one task per (batch, kv head)
            // keeps each output element in one task and its summation order fixed.
            const int64_t group = s.Hkv > 0 ? s.Hq / s.Hkv : 0;
            parallel_for(s.B * s.Hkv, [&](int64_t task) {
                std::vector<T> p(static_cast<size_t>(s.Nk)), cap(p.size());
                const int64_t b = task / s.Hkv, hk = task % s.Hkv;
                for (int64_t h = hk * group; h < (hk + 1) * group; ++h)
                    for (int64_t i = 0; i < s.Nq; ++i) row(b, h, i, p, cap, true);
            });
            for (T& x : r_.dq) x = rnd(x);
            for (T& x : r_.dk) x = rnd(x);
            for (T& x : r_.dv) x = rnd(x);
        } else {
            parallel_for(s.B * s.Hq * s.Nq, [&](int64_t task) {
                std::vector<T> p(static_cast<size_t>(s.Nk)), cap(p.size());
                row(task / (s.Hq * s.Nq), task / s.Nq % s.Hq, task % s.Nq, p, cap, false);
            });
        }
        return std::move(r_);
    }

private:
    // Saturating, as the library stores results (a plain implementation that overflowed to infinity
    // would leave no error to measure).
    T rnd(T x) const { return emulate_ ? static_cast<T>(round_to_saturating(dt_, static_cast<double>(x))) : x; }

    size_t q_index(int64_t b, int64_t i, int64_t h) const {
        return static_cast<size_t>(((b * s_.Nq + i) * s_.Hq + h) * s_.D);
    }
    size_t k_index(int64_t b, int64_t j, int64_t hk) const {
        return static_cast<size_t>(((b * s_.Nk + j) * s_.Hkv + hk) * s_.D);
    }

    // Query row i of head h: out, lse and, with `grads`, dq (whole) and its share of dk and dv. p and cap
    // are the row's scratch: probabilities, and the softcap's derivative.
    void row(int64_t b, int64_t h, int64_t i, std::vector<T>& p, std::vector<T>& cap, bool grads) {
        const Shape& s = s_;
        const int64_t hk = h / (s.Hq / s.Hkv);
        const T scale = static_cast<T>(in_.scale);
        const T softcap = static_cast<T>(in_.softcap);
        const T slope = in_.alibi.empty() ? T(0) : static_cast<T>(in_.alibi[static_cast<size_t>(b * in_.alibi_batch_stride + h)]);
        const float* q = &in_.q[q_index(b, i, h)];
        T m = -std::numeric_limits<T>::infinity();
        bool sees_a_key = false;
        for (int64_t j = 0; j < s.Nk; ++j) {
            if (!key_visible(in_, i, j)) continue;
            sees_a_key = true;
            const float* k = &in_.k[k_index(b, j, hk)];
            T dot = 0;
            for (int64_t c = 0; c < s.D; ++c) dot += static_cast<T>(q[c]) * static_cast<T>(k[c]);
            T x = scale * dot;
            cap[j] = 1;
            if (in_.softcap > 0) {
                const T t = std::tanh(x / softcap);
                cap[j] = (1 - t) * (1 + t);
                x = softcap * t;
            }
            p[j] = x - slope * static_cast<T>(std::abs(i + s.Nk - s.Nq - j));
            m = std::max(m, p[j]);
        }
        if (!sees_a_key) return;  // out 0, lse -inf, no gradient
        T sum = 0;
        for (int64_t j = 0; j < s.Nk; ++j)
            if (key_visible(in_, i, j)) sum += (p[j] = std::exp(p[j] - m));
        r_.lse[static_cast<size_t>((b * s.Hq + h) * s.Nq + i)] = m + std::log(sum);
        for (int64_t j = 0; j < s.Nk; ++j) p[j] = key_visible(in_, i, j) ? p[j] / sum : T(0);
        T* out = &r_.out[q_index(b, i, h)];
        for (int64_t j = 0; j < s.Nk; ++j) {
            if (!key_visible(in_, i, j)) continue;
            const float* v = &in_.v[k_index(b, j, hk)];
            const T pj = rnd(p[j]);
            for (int64_t c = 0; c < s.D; ++c) out[c] += pj * static_cast<T>(v[c]);
        }
        for (int64_t c = 0; c < s.D; ++c) out[c] = rnd(out[c]);
        if (!grads) return;

        const float* dout = &in_.dout[q_index(b, i, h)];
        T delta = 0;
        for (int64_t c = 0; c < s.D; ++c) delta += static_cast<T>(dout[c]) * out[c];
        T* dq = &r_.dq[q_index(b, i, h)];
        for (int64_t j = 0; j < s.Nk; ++j) {
            if (!key_visible(in_, i, j)) continue;
            const float* v = &in_.v[k_index(b, j, hk)];
            const float* k = &in_.k[k_index(b, j, hk)];
            T dpj = 0;
            for (int64_t c = 0; c < s.D; ++c) dpj += static_cast<T>(dout[c]) * static_cast<T>(v[c]);
            const T ds = rnd(p[j] * (dpj - delta) * cap[j]);
            const T pj = rnd(p[j]);
            T* dk = &r_.dk[k_index(b, j, hk)];
            T* dv = &r_.dv[k_index(b, j, hk)];
            for (int64_t c = 0; c < s.D; ++c) {
                dq[c] += scale * ds * static_cast<T>(k[c]);
                dk[c] += scale * ds * static_cast<T>(q[c]);
                dv[c] += pj * static_cast<T>(dout[c]);
            }
        }
    }

    const Inputs& in_;
    const Shape& s_;
    const Dt dt_;
    const bool emulate_;
    Results<T> r_;
};

}  // namespace detail

// Attention of `in` in arithmetic T (out and lse, and dq, dk, dv for Pass::ForwardAndBackward). With
// `emulate`, rounds to `dt` where a half-precision implementation must (see the top of this file).
template <class T>
Results<T> naive_attention(const Inputs& in, Dt dt, bool emulate, Pass pass) {
    return detail::NaiveAttention<T>(in, dt, emulate).run(pass);
}

}  // namespace fa4j_test
