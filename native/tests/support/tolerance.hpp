// The FlashAttention tolerance rule: a kernel's result passes when
//     max |kernel - ref| <= 2 · max |plain - ref| + eps
// where ref is the float64 reference and plain the float32 implementation that rounds where the dtype
// forces it (reference_attention.hpp). The budget therefore follows what the dtype allows and no
// more; eps (1e-5 fp32, 1e-4 fp16, 1e-3 bf16) only covers outputs whose plain error happens to be ~0.
// NaN never passes; where the reference is infinite (lse of a row that sees no key) the kernel must
// give exactly the same infinity. Where the reference is finite but beyond the output dtype's range,
// the expected value is the dtype's largest finite one (results saturate; the plain implementation
// saturates too).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "support/strided_tensor.hpp"
#include "support/test_dtype.hpp"
#include "support/test_report.hpp"

namespace fa4j_test {

inline double tolerance_eps(Dt dt) { return dt == Dt::F32 ? 1e-5 : dt == Dt::F16 ? 1e-4 : 1e-3; }

// Checks `kernel` against the rule, appends "name error/tolerance" to the case's detail and returns
// the tolerance (so that two implementations can be compared with each other afterwards).
inline double check_tolerance(Outcome& o, const char* name, const View& kernel, const std::vector<double>& ref,
                              const std::vector<float>& plain, Dt dt) {
    double err_kernel = 0, err_plain = 0;
    bool bad = false;
    const Dt stored = kernel.buffer->dt;
    for (int64_t n = 0; n < kernel.count(); ++n) {
        const double x = kernel.get(n), r = saturate(stored, ref[static_cast<size_t>(n)]);
        const double pl = plain[static_cast<size_t>(n)];
        if (std::isinf(r)) {
            if (x != r) bad = true;
            continue;
        }
        if (!std::isfinite(x)) bad = true;  // NaN, or an infinity the reference does not have
        else err_kernel = std::max(err_kernel, std::fabs(x - r));
        err_plain = std::max(err_plain, std::fabs(pl - r));
    }
    const double tol = 2 * err_plain + tolerance_eps(dt);
    char text[96];
    std::snprintf(text, sizeof text, " %s %.1e/%.1e", name, err_kernel, tol);
    o.detail += text;
    if (bad) fail(o, std::string(name) + " not finite or -inf mismatch");
    else if (err_kernel > tol) fail(o, std::string(name) + " error above tolerance");
    return tol;
}

// check_tolerance with a per-element allowance (accumulation_allowance.hpp) added to the bound:
// max_n (|kernel_n - ref_n| - allowance_n) <= 2 · max |plain - ref| + eps, NaN never passing.
inline double check_tolerance_with_allowance(Outcome& o, const char* name, const View& kernel,
                                             const std::vector<double>& ref, const std::vector<float>& plain, Dt dt,
                                             const std::vector<double>& allowance) {
    double excess = 0, err_plain = 0, widest = 0;
    bool bad = false;
    const Dt stored = kernel.buffer->dt;
    for (int64_t n = 0; n < kernel.count(); ++n) {
        const size_t i = static_cast<size_t>(n);
        const double x = kernel.get(n), r = saturate(stored, ref[i]);
        if (std::isinf(r)) {
            if (x != r) bad = true;
            continue;
        }
        if (!std::isfinite(x)) bad = true;
        else excess = std::max(excess, std::fabs(x - r) - allowance[i]);
        err_plain = std::max(err_plain, std::fabs(plain[i] - r));
        widest = std::max(widest, allowance[i]);
    }
    const double tol = 2 * err_plain + tolerance_eps(dt);
    char text[128];
    std::snprintf(text, sizeof text, " %s %.1e/%.1e(+<=%.1e)", name, std::max(excess, 0.0), tol, widest);
    o.detail += text;
    if (bad) fail(o, std::string(name) + " not finite or -inf mismatch");
    else if (excess > tol) fail(o, std::string(name) + " error above tolerance and allowance");
    return tol;
}

// Largest |a - b| over two views of one shape; equal infinities count as 0, anything else
// non-finite as infinity (so it can never pass a bound).
inline double max_difference(const View& a, const View& b) {
    double worst = 0;
    for (int64_t n = 0; n < a.count(); ++n) {
        const double x = a.get(n), y = b.get(n);
        if (std::isinf(x) && x == y) continue;
        const double d = std::fabs(x - y);
        worst = std::max(worst, std::isnan(d) ? std::numeric_limits<double>::infinity() : d);
    }
    return worst;
}

}  // namespace fa4j_test
