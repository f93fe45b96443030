// Checks the backend-independent score features (core/score_mask.hpp) and the CPU's vectorisable tanh
// (backends/cpu/fast_tanh.hpp) directly, below the C ABI: every window range and tile predicate against
// brute force over many shapes, and tanh and its derivative against double precision. The attention
// tests see these only through whole results, within tolerances that a tanh several ulp off, or a tile
// predicate no CPU kernel uses, would pass.
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>

#include "backends/cpu/fast_tanh.hpp"
#include "core/score_mask.hpp"
#include "support/test_report.hpp"

namespace {

using fa4j::IndexRange;
using fa4j::ScoreWindow;
using namespace fa4j_test;

std::string window_text(const ScoreWindow& w) {
    const auto bound = [](int64_t b) { return b == ScoreWindow::kNoBound ? std::string("inf") : std::to_string(b); };
    return "Nq=" + std::to_string(w.seqlen_q) + " Nk=" + std::to_string(w.seqlen_k) + " left=" + bound(w.left) +
           " right=" + bound(w.right);
}

// The reference predicate, written from the header's sentence rather than from ScoreWindow.
bool sees(int64_t nq, int64_t nk, int64_t left, int64_t right, int64_t i, int64_t j) {
    const int64_t aligned = i + nk - nq;
    return j >= 0 && j < nk && (left < 0 || j >= aligned - left) && (right < 0 || j <= aligned + right);
}

// Whether `range` is exactly the set of the n indices x with member(x) (which must then be contiguous).
template <class Member>
bool is_exactly(IndexRange range, int64_t n, Member member) {
    if (range.begin > range.end) return false;
    for (int64_t x = 0; x < n; ++x)
        if (member(x) != (x >= range.begin && x < range.end)) return false;
    return true;
}

// Whether `range` holds every index of [0, n) with member(x), and member holds at both its ends, so that
// a loop over it does all the work and none in vain.
template <class Member>
bool is_tight(IndexRange range, int64_t n, Member member) {
    if (range.begin > range.end) return false;
    for (int64_t x = 0; x < n; ++x)
        if (member(x) && (x < range.begin || x >= range.end)) return false;
    return range.empty() || (member(range.begin) && member(range.end - 1));
}

// The first disagreement of ScoreWindow with brute force for one window, or "".
std::string check_window(const ScoreWindow& w, int64_t nq, int64_t nk, int64_t left, int64_t right, std::mt19937& rng) {
    const auto visible = [&](int64_t i, int64_t j) { return sees(nq, nk, left, right, i, j); };
    for (int64_t i = 0; i < nq; ++i) {
        for (int64_t j = 0; j < nk; ++j)
            if (w.visible(i, j) != visible(i, j)) return "visible";
        if (!is_exactly(w.keys_of(i), nk, [&](int64_t j) { return visible(i, j); })) return "keys_of";
    }
    for (int64_t j = 0; j < nk; ++j)
        if (!is_exactly(w.queries_of(j), nq, [&](int64_t i) { return visible(i, j); })) return "queries_of";
    // Runs of rows and of keys, as the tiles of every size and offset that the kernels walk.
    for (int64_t i0 = 0; i0 < nq; ++i0)
        for (int64_t rows = 1; i0 + rows <= nq; rows += 1 + static_cast<int64_t>(rng() % 9)) {
            const auto some_row_sees = [&](int64_t j) {
                for (int64_t i = i0; i < i0 + rows; ++i)
                    if (visible(i, j)) return true;
                return false;
            };
            if (!is_tight(w.keys_of_rows(i0, rows), nk, some_row_sees)) return "keys_of_rows";
            for (int64_t j0 = 0; j0 < nk; j0 += 1 + static_cast<int64_t>(rng() % 7))
                for (int64_t keys = 1; j0 + keys <= nk; keys += 1 + static_cast<int64_t>(rng() % 11)) {
                    bool all = true;
                    for (int64_t i = i0; i < i0 + rows; ++i)
                        for (int64_t j = j0; j < j0 + keys; ++j) all = all && visible(i, j);
                    if (w.tile_unmasked(i0, rows, j0, keys) != all) return "tile_unmasked";
                }
        }
    for (int64_t j0 = 0; j0 < nk; ++j0)
        for (int64_t keys = 1; j0 + keys <= nk; keys += 1 + static_cast<int64_t>(rng() % 9)) {
            const auto seen_by_some_key = [&](int64_t i) {
                for (int64_t j = j0; j < j0 + keys; ++j)
                    if (visible(i, j)) return true;
                return false;
            };
            if (!is_tight(w.queries_of_keys(j0, keys), nq, seen_by_some_key)) return "queries_of_keys";
        }
    return "";
}

Outcome window_geometry() {
    Outcome o;
    std::mt19937 rng(11);
    int windows = 0;
    for (int trial = 0; trial < 1000; ++trial) {
        const int64_t nq = rng() % 70, nk = rng() % 70;
        const int64_t left = static_cast<int64_t>(rng() % 24) - 4, right = static_cast<int64_t>(rng() % 24) - 4;
        const bool causal = rng() % 3 == 0;
        fa4j::AttentionConfig config{};
        config.shape = {1, nq, nk, 1, 1, 8};
        config.causal = causal;
        config.features.window_left = left;  // negative: unbounded
        config.features.window_right = right;
        const ScoreWindow w = fa4j::score_window(config);
        // causal is right = 0 whatever right says.
        const std::string wrong = check_window(w, nq, nk, left, causal ? 0 : right, rng);
        ++windows;
        if (!wrong.empty()) {
            fail(o, wrong + " for " + window_text(w) + (causal ? " (causal)" : ""));
            return o;
        }
    }
    // local_range: the part of a range inside a tile, tile-relative, never inverted.
    for (int64_t begin = -3; begin < 12; ++begin)
        for (int64_t end = begin; end < 14; ++end)
            for (int64_t base = -2; base < 10; ++base)
                for (int64_t count = 0; count < 6; ++count) {
                    const IndexRange local = fa4j::local_range({begin, end}, base, count);
                    if (!is_exactly(local, count, [&](int64_t x) { return base + x >= begin && base + x < end; })) {
                        fail(o, "local_range");
                        return o;
                    }
                }
    o.detail = " " + std::to_string(windows) + " windows against brute force";
    return o;
}

// ulps of `got` from the double `want`, in units of float's spacing at want.
double ulps(double got, double want) {
    const float w = std::fabs(static_cast<float>(want));
    const double spacing = static_cast<double>(std::nextafter(w, std::numeric_limits<float>::infinity()) - w);
    return std::fabs(got - want) / spacing;
}

struct TanhErrors {
    double tanh_ulps = 0, derivative_ulps = 0;
    float tanh_at = 0, derivative_at = 0;
    bool specials_ok = true;
};

template <class Isa>
FA4J_INLINE void check_tanh(TanhErrors& e, uint32_t step) {
    for (uint64_t bits = 0; bits < 0x7f800000u; bits += step) {
        const uint32_t b = static_cast<uint32_t>(bits);
        float x;
        std::memcpy(&x, &b, sizeof x);
        for (const float s : {x, -x}) {
            float derivative;
            const double t = fa4j::cpu::tanh_vectorizable<Isa>(s, derivative);
            const double want = std::tanh(static_cast<double>(s));
            const double want_derivative = 1.0 / (std::cosh(static_cast<double>(s)) * std::cosh(static_cast<double>(s)));
            const double te = ulps(t, want);
            if (te > e.tanh_ulps) e.tanh_ulps = te, e.tanh_at = s;
            // Below float's normal range the derivative may flush to 0.
            const double de = want_derivative > 1e-37 ? ulps(derivative, want_derivative) : (derivative <= 1e-37 ? 0 : 1e9);
            if (de > e.derivative_ulps) e.derivative_ulps = de, e.derivative_at = s;
        }
    }
    float d = -1;
    const float inf = std::numeric_limits<float>::infinity();
    e.specials_ok = e.specials_ok && fa4j::cpu::tanh_vectorizable<Isa>(inf, d) == 1.0f && d == 0.0f;
    e.specials_ok = e.specials_ok && fa4j::cpu::tanh_vectorizable<Isa>(-inf, d) == -1.0f && d == 0.0f;
    e.specials_ok = e.specials_ok && std::isnan(fa4j::cpu::tanh_vectorizable<Isa>(std::nanf(""), d)) && std::isnan(d);
    const float minus_zero = fa4j::cpu::tanh_vectorizable<Isa>(-0.0f, d);
    e.specials_ok = e.specials_ok && minus_zero == 0.0f && std::signbit(minus_zero) && d == 1.0f;
}

void check_tanh_generic(TanhErrors& e, uint32_t step) { check_tanh<fa4j::cpu::IsaGeneric>(e, step); }
#if FA4J_X86_DISPATCH
FA4J_TARGET_AVX2 void check_tanh_fma(TanhErrors& e, uint32_t step) { check_tanh<fa4j::cpu::IsaAvx2>(e, step); }
#endif

// The bounds fast_tanh.hpp states (3.4 ulp, 64 ulp), on every 127th float of either sign and the
// special values. 127 is odd and prime, so every exponent and low mantissa pattern is visited.
Outcome tanh_accuracy(bool fma) {
    Outcome o;
    TanhErrors e;
#if FA4J_X86_DISPATCH
    if (fma) check_tanh_fma(e, 127);
    else check_tanh_generic(e, 127);
#else
    (void)fma;
    check_tanh_generic(e, 127);
#endif
    char text[160];
    std::snprintf(text, sizeof text, " tanh %.2f ulp (at %.9g), 1 - tanh² %.2f ulp (at %.9g)", e.tanh_ulps,
                  static_cast<double>(e.tanh_at), e.derivative_ulps, static_cast<double>(e.derivative_at));
    o.detail = text;
    if (e.tanh_ulps > 3.4) fail(o, "tanh beyond 3.4 ulp");
    if (e.derivative_ulps > 64) fail(o, "derivative beyond 64 ulp");
    if (!e.specials_ok) fail(o, "±inf, NaN or -0");
    return o;
}

// ALiBi's distance is the same float from any integer type, and the biased score saturates.
Outcome alibi_pieces() {
    Outcome o;
    for (int64_t d : {int64_t{0}, int64_t{1}, int64_t{-1}, int64_t{16777217}, int64_t{-16777219}, int64_t{1} << 30})
        if (fa4j::alibi_distance(static_cast<int32_t>(d)) != fa4j::alibi_distance(d)) fail(o, "distance of " + std::to_string(d));
    const float max = std::numeric_limits<float>::max();
    if (fa4j::alibi_biased(3.0f, 1e38f, 1e9f) != -max) fail(o, "bias overflow does not saturate at -FLT_MAX");
    if (fa4j::alibi_biased(3.0f, -1e38f, 1e9f) != max) fail(o, "bias overflow does not saturate at FLT_MAX");
    if (!std::isnan(fa4j::alibi_biased(std::nanf(""), 0.5f, 3.0f))) fail(o, "NaN score does not stay NaN");
    if (fa4j::alibi_biased(2.0f, 0.25f, 3.0f) != 1.25f) fail(o, "2 - 0.25·3");
    return o;
}

}  // namespace

int main() {
    const auto start = std::chrono::steady_clock::now();
    Tally tally;
    tally.report("window geometry", window_geometry());
    tally.report("tanh and its derivative, generic", tanh_accuracy(false));
#if FA4J_X86_DISPATCH
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        tally.report("tanh and its derivative, fma", tanh_accuracy(true));
#endif
    tally.report("ALiBi distance and saturation", alibi_pieces());
    return tally.finish(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}
