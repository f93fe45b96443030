// How far a correct float32-accumulating kernel may stray from the float64 reference because of the
// order in which it sums products and because it recomputes P from a float32 lse, beyond what the plain
// implementation's error already covers.
//
// The plain implementation (reference_attention.hpp) sums every dot product sequentially, never
// recomputes P, and sums D = rowsum(dO ∘ out) and dP = dO·vᵀ in the same order: where a row's softmax is
// one-hot, out is that key's v exactly and dS = P·(dP − D) comes out exactly 0, as in exact arithmetic.
// A tensor-core kernel sums S, dP and D in orders of its own and recomputes P = exp(fl(scale·s) − lse)
// in the backward, so there dP − D is the rounding difference of two sums of size Σ|dO·v|, which
// dq = scale·dS·k multiplies by the scale (with inputs of 1e4, or a scale of 1e10, far above the exact
// gradient, 0), and once |lse|·2^-24 exceeds the gaps between a row's top scores, their probabilities
// are only known to that factor. Bounded with the float32 summation error γ·Σ|terms|, γ = 2·d·2^-24
// (d·u for any order of round-to-nearest additions, doubled for accumulators that truncate), and the
// rounding of scale·s and lse, carried to each output:
//   score  δs_j = |scale|·(γ·Σ_c |q_c k_jc| + 2^-23·|s_j|)      lse   δl = max_j δs_j + 2^-23·|lse|
//   P      δP_j = min(1, P_j·(e^(δs_j + δl) − 1))               out   Σ_j δP_j·|v_jc|
//   D      δD = Σ_c |dO_c|·δout_c                                dv    Σ_i δP_ij·|dO_ic|
//   dS     δdS_j = P_j·(γ·(Σ_c |dO_c v_jc| + Σ_c |dO_c out_c|) + δD) + δP_j·|dP_j − D|
//   dq     |scale|·Σ_j δdS_j·|k_jc|                              dk    |scale|·Σ_i δdS_ij·|q_ic|
// Used only where such a kernel is checked in those regimes (the CUDA tests of extreme inputs); the
// CPU backend sums D in dP's order, reruns the softmax statistics where lse is large, and meets the
// plain rule without it. Masks are the reference's (key_visible); softcap and ALiBi are not modelled.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "support/parallel_for.hpp"
#include "support/reference_attention.hpp"

namespace fa4j_test {

// Per-element allowances, laid out like Results: out/dq [B, Nq, Hq, D], lse [B, Hq, Nq], dk/dv [B, Nk, Hkv, D].
inline Results<double> accumulation_allowance(const Inputs& in) {
    const Shape& s = in.s;
    const double scale = std::fabs(static_cast<double>(in.scale));
    const double gamma = 2.0 * static_cast<double>(s.D) * std::ldexp(1.0, -24);
    const double kRound = std::ldexp(1.0, -23);  // two float32 roundings
    Results<double> a;
    a.out.assign(static_cast<size_t>(s.B * s.Nq * s.Hq * s.D), 0.0);
    a.lse.assign(static_cast<size_t>(s.B * s.Hq * s.Nq), 0.0);
    a.dq.assign(a.out.size(), 0.0);
    a.dk.assign(static_cast<size_t>(s.B * s.Nk * s.Hkv * s.D), 0.0);
    a.dv.assign(a.dk.size(), 0.0);
    if (s.Hkv == 0) return a;
    const int64_t group = s.Hq / s.Hkv;
    const auto q_at = [&](int64_t b, int64_t i, int64_t h) { return static_cast<size_t>(((b * s.Nq + i) * s.Hq + h) * s.D); };
    const auto k_at = [&](int64_t b, int64_t j, int64_t h) { return static_cast<size_t>(((b * s.Nk + j) * s.Hkv + h) * s.D); };
    // One task per (batch, kv head), as in the reference: dk and dv collect every query head of the group.
    parallel_for(s.B * s.Hkv, [&](int64_t task) {
        const int64_t b = task / s.Hkv, hk = task % s.Hkv;
        std::vector<double> score(static_cast<size_t>(s.Nk)), p(score.size()), scaled(score.size());
        std::vector<double> out(static_cast<size_t>(s.D));
        for (int64_t h = hk * group; h < (hk + 1) * group; ++h)
            for (int64_t i = 0; i < s.Nq; ++i) {
                std::vector<int64_t> seen;  // the keys query i sees
                for (int64_t j = 0; j < s.Nk; ++j)
                    if (key_visible(in, i, j)) seen.push_back(j);
                if (seen.empty()) continue;
                const float* q = &in.q[q_at(b, i, h)];
                const bool grads = !in.dout.empty();  // forward-only inputs have no dout
                const float* dout = grads ? &in.dout[q_at(b, i, h)] : nullptr;
                double m = -std::numeric_limits<double>::infinity();
                for (const int64_t j : seen) {
                    const float* k = &in.k[k_at(b, j, hk)];
                    double dot = 0, abs_sum = 0;
                    for (int64_t c = 0; c < s.D; ++c) {
                        dot += static_cast<double>(q[c]) * k[c];
                        abs_sum += std::fabs(static_cast<double>(q[c]) * k[c]);
                    }
                    scaled[static_cast<size_t>(j)] = p[static_cast<size_t>(j)] = static_cast<double>(in.scale) * dot;
                    score[static_cast<size_t>(j)] = scale * (gamma * abs_sum + kRound * std::fabs(dot));
                    m = std::max(m, p[static_cast<size_t>(j)]);
                }
                double sum = 0, max_score_error = 0;
                for (const int64_t j : seen) sum += (p[static_cast<size_t>(j)] = std::exp(p[static_cast<size_t>(j)] - m));
                for (const int64_t j : seen) {
                    p[static_cast<size_t>(j)] /= sum;
                    max_score_error = std::max(max_score_error, score[static_cast<size_t>(j)]);
                }
                const double lse_error = max_score_error + kRound * std::fabs(m + std::log(sum));
                a.lse[static_cast<size_t>((b * s.Hq + h) * s.Nq + i)] = lse_error;
                for (const int64_t j : seen) {
                    const size_t J = static_cast<size_t>(j);
                    const double log_p = scaled[J] - m - std::log(sum);  // also where P underflows
                    score[J] = std::min(1.0, std::exp(log_p + score[J] + lse_error) - p[J]);  // now δP_j
                }
                std::fill(out.begin(), out.end(), 0.0);
                double* out_allow = &a.out[q_at(b, i, h)];
                for (const int64_t j : seen) {
                    const float* v = &in.v[k_at(b, j, hk)];
                    for (int64_t c = 0; c < s.D; ++c) {
                        out[static_cast<size_t>(c)] += p[static_cast<size_t>(j)] * v[c];
                        out_allow[c] += score[static_cast<size_t>(j)] * std::fabs(v[c]);
                    }
                }
                if (!grads) continue;
                double delta = 0, delta_abs = 0, delta_error = 0;
                for (int64_t c = 0; c < s.D; ++c) {
                    delta += dout[c] * out[static_cast<size_t>(c)];
                    delta_abs += std::fabs(dout[c] * out[static_cast<size_t>(c)]);
                    delta_error += std::fabs(dout[c]) * out_allow[c];
                }
                double* dq_allow = &a.dq[q_at(b, i, h)];
                for (const int64_t j : seen) {
                    const size_t J = static_cast<size_t>(j);
                    const float* v = &in.v[k_at(b, j, hk)];
                    const float* k = &in.k[k_at(b, j, hk)];
                    double dpj = 0, dp_abs = 0;
                    for (int64_t c = 0; c < s.D; ++c) {
                        dpj += static_cast<double>(dout[c]) * v[c];
                        dp_abs += std::fabs(static_cast<double>(dout[c]) * v[c]);
                    }
                    const double dP = score[J];
                    const double dS = p[J] * (gamma * (dp_abs + delta_abs) + delta_error) + dP * std::fabs(dpj - delta);
                    double* dk_allow = &a.dk[k_at(b, j, hk)];
                    double* dv_allow = &a.dv[k_at(b, j, hk)];
                    for (int64_t c = 0; c < s.D; ++c) {
                        dq_allow[c] += scale * dS * std::fabs(k[c]);
                        dk_allow[c] += scale * dS * std::fabs(q[c]);
                        dv_allow[c] += dP * std::fabs(dout[c]);
                    }
                }
            }
    });
    return a;
}

}  // namespace fa4j_test
