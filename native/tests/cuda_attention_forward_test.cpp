// Checks the CUDA attention forward through the C ABI: out and lse of fa4j_attention_forward on device
// tensors against the float64 reference under the FlashAttention tolerance rule (support/tolerance.hpp).
// Inputs are fresh seeded normal values; outputs start as NaN on the device before every run, gaps
// between strided output elements must stay untouched, NaN never passes, and a causal row that sees
// no key (Nq > Nk, bottom-right aligned) must give out = 0 exactly and lse = -inf, as flashattn4j.h
// documents. Every case runs twice and must repeat bit for bit (the kernel has no atomics), and once
// on the CPU backend, whose largest difference from the GPU is reported and bounded by both
// tolerances. Head dims 8 to 256; the score features of fa4j_attention (softcap, ALiBi, sliding windows)
// and variable-length batches (cu_seqlens, seqused_k) as attention v2 specifies them, which must all run.
// Calls the CUDA forward does not implement (float32), malformed ones and ones that mix host and device
// tensors must be refused with a message and write nothing.
//
// Usage: cuda_attention_forward_test [--small | --max-rows N] [--kernel auto|sm80|sm90]   (or FA4J_TEST_SMALL=1, the same as --small: fewer,
// smaller shapes for compute-sanitizer; see support/test_options.hpp). Without a CUDA device it reports
// "0 passed, 0 failed, 1 skipped" and exits 0.
#include <flashattn4j.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "support/accumulation_allowance.hpp"
#include "support/attention_case.hpp"
#include "support/cuda_buffers.hpp"
#include "support/cuda_stream.hpp"
#include "support/feature_cases.hpp"
#include "support/reference_attention.hpp"
#include "support/strided_tensor.hpp"
#include "support/tensor_layouts.hpp"
#include "support/test_dtype.hpp"
#include "support/test_options.hpp"
#include "support/test_report.hpp"
#include "support/tolerance.hpp"
#include "support/untouched_gaps.hpp"
#include "support/varlen_case.hpp"

namespace {

// The kernel family of --kernel: AUTO runs through fa4j_attention_forward, the others through
// fa4j_attention with the family forced.
int g_kernel_family = FA4J_KERNEL_AUTO;

using namespace fa4j_test;

struct ForwardTensors {
    View q, k, v, out, lse, alibi;  // alibi only when the case has ALiBi
};

// The case's layout for q, k and v. out gets other strides than q wherever the padded gaps are not the
// point, so that a kernel cannot get away with addressing out with q's strides: contiguous and
// head-major swap, packed inputs write a padded out, broadcast k/v a head-major one.
Layout out_layout_for(Layout inputs) {
    switch (inputs) {
        case Layout::Contiguous: return Layout::HeadMajor;
        case Layout::HeadMajor: return Layout::Contiguous;
        case Layout::Packed: return Layout::Padded;
        case Layout::BroadcastKv: return Layout::HeadMajor;
        default: return inputs;
    }
}

ForwardTensors make_forward_tensors(const Case& c) {
    const Shape& s = c.s;
    ForwardTensors t;
    if (c.layout == Layout::Packed) {  // requires Nq == Nk
        make_packed(c.dt, s.B, s.Nq, s.Hq, s.Hkv, s.D, t.q, t.k, t.v);
    } else {
        t.q = make_seq(c.dt, c.layout == Layout::BroadcastKv ? Layout::Contiguous : c.layout, s.B, s.Nq, s.Hq, s.D);
        t.k = make_seq(c.dt, c.layout, s.B, s.Nk, s.Hkv, s.D);
        t.v = make_seq(c.dt, c.layout, s.B, s.Nk, s.Hkv, s.D);
    }
    const Layout out_layout = out_layout_for(c.layout);
    t.out = make_seq(c.dt, out_layout, s.B, s.Nq, s.Hq, s.D);
    t.lse = make_lse(c.layout, s.B, s.Hq, s.Nq);
    t.out.mark_covered();
    t.lse.mark_covered();
    t.alibi = make_alibi(c.alibi, s.B, s.Hq);
    return t;
}

// fa4j_attention's forward arguments for the case, on t's device copies (cuda) or host tensors, writing
// into `out` and `lse` (t's or another set's), with a kernel family.
fa4j_attention_args forward_args(const Case& c, ForwardTensors& t, View& out, View& lse, bool cuda, int32_t family) {
    const auto d = [cuda](View& v) { return cuda ? v.cuda_tensor() : v.host_tensor(); };
    CallTensors x;
    x.q = d(t.q);
    x.k = d(t.k);
    x.v = d(t.v);
    x.out = d(out);
    x.lse = d(lse);
    if (c.alibi != Alibi::None) x.alibi = d(t.alibi);
    return case_args(c, x, FA4J_ATTENTION_FORWARD, family);
}

// Rows whose reference lse is -inf see no key: their output must be exactly zero, not merely small.
void check_rows_without_keys(Outcome& o, const View& out, const std::vector<double>& ref_lse, const Shape& s) {
    for (int64_t n = 0; n < out.count(); ++n) {
        const int64_t h = n / s.D % s.Hq, i = n / (s.D * s.Hq) % s.Nq, b = n / (s.D * s.Hq * s.Nq);
        if (std::isinf(ref_lse[static_cast<size_t>((b * s.Hq + h) * s.Nq + i)]) && out.get(n) != 0.0f)
            return fail(o, "a row that sees no key has out != 0");
    }
}

bool same_bytes(const View& a, const std::vector<unsigned char>& bytes) { return a.buffer->bytes == bytes; }

// `may_refuse`: the case is one the CUDA backend is allowed not to implement (views that are not
// 16-byte aligned); refusing it with FA4J_ERROR_UNSUPPORTED and a message, writing nothing, passes.
Outcome run_case(const Case& c, uint32_t seed, bool may_refuse = false) {
    Outcome o;
    std::mt19937 rng(seed);
    ForwardTensors t = make_forward_tensors(c);
    const Inputs in = fill_inputs(c, rng, t.q, t.k, t.v, nullptr, &t.alibi);
    const fa4j_attention_params params = params_for(c);

    DeviceMirror mirror;
    if (!mirror.upload(o, {&t.q, &t.k, &t.v, &t.out, &t.lse})) return o;
    if (c.alibi != Alibi::None && !mirror.upload(o, {&t.alibi})) return o;
    ScopedStream stream;
    if (!stream.open(o, c.own_stream)) return o;
    // Plain calls through the first entry point; score features and forced families through fa4j_attention.
    const auto run_on_device = [&]() {
        if (g_kernel_family == FA4J_KERNEL_AUTO && !c.has_features())
            return fa4j_attention_forward(&params, t.q.cuda_tensor(), t.k.cuda_tensor(), t.v.cuda_tensor(),
                                          t.out.cuda_tensor(), t.lse.cuda_tensor(), stream.get());
        const fa4j_attention_args args = forward_args(c, t, t.out, t.lse, true, g_kernel_family);
        return fa4j_attention(&args, stream.get());
    };
    const fa4j_status status = run_on_device();
    if (may_refuse && status == FA4J_ERROR_UNSUPPORTED) {
        expect_refusal(o, status, FA4J_ERROR_UNSUPPORTED);
        if (!stream.synchronize(o) || !mirror.download(o, t.out) || !mirror.download(o, t.lse)) return o;
        check_all_poison(o, "out", t.out);
        check_all_poison(o, "lse", t.lse);
        return o;
    }
    if (!call_ok(o, status, "cuda forward") || !stream.synchronize(o)) return o;
    if (!mirror.download(o, t.out) || !mirror.download(o, t.lse)) return o;

    const Results<double> ref = naive_attention<double>(in, c.dt, false, Pass::Forward);
    const Results<float> plain = naive_attention<float>(in, c.dt, true, Pass::Forward);
    // Extreme inputs (issue 6) add the accumulation allowance: with scores near 1e8 the tensor cores'
    // summation order moves lse by more than the plain implementation's error (accumulation_allowance.hpp).
    const bool extreme = !std::isnan(c.scale) || c.values != Values::Normal;
    Results<double> allow;
    if (extreme) allow = accumulation_allowance(in);
    const double tol_out = extreme ? check_tolerance_with_allowance(o, "out", t.out, ref.out, plain.out, c.dt, allow.out)
                                   : check_tolerance(o, "out", t.out, ref.out, plain.out, c.dt);
    const double tol_lse = extreme ? check_tolerance_with_allowance(o, "lse", t.lse, ref.lse, plain.lse, c.dt, allow.lse)
                                   : check_tolerance(o, "lse", t.lse, ref.lse, plain.lse, c.dt);
    const auto largest = [](const std::vector<double>& v) { return v.empty() ? 0.0 : *std::max_element(v.begin(), v.end()); };
    const double slack_out = 2 * largest(allow.out), slack_lse = 2 * largest(allow.lse);
    check_rows_without_keys(o, t.out, ref.lse, c.s);
    check_untouched_gaps(o, "out", t.out);
    check_untouched_gaps(o, "lse", t.lse);

    // The same call again into freshly poisoned outputs must give the same bits.
    const std::vector<unsigned char> first_out = t.out.buffer->bytes, first_lse = t.lse.buffer->bytes;
    if (!mirror.poison(o, {&t.out, &t.lse})) return o;
    if (!call_ok(o, run_on_device(), "cuda forward (again)") || !stream.synchronize(o)) return o;
    if (!mirror.download(o, t.out) || !mirror.download(o, t.lse)) return o;
    if (!same_bytes(t.out, first_out) || !same_bytes(t.lse, first_lse)) fail(o, "a second run gave other bits");

    // The CPU backend on the same inputs: both within tolerance of the reference, so within the sum of
    // the tolerances of each other.
    ForwardTensors cpu = make_forward_tensors(c);
    const fa4j_attention_args cpu_args = forward_args(c, t, cpu.out, cpu.lse, false, FA4J_KERNEL_AUTO);
    if (!call_ok(o, fa4j_attention(&cpu_args, nullptr), "cpu forward")) return o;
    const double diff_out = max_difference(t.out, cpu.out), diff_lse = max_difference(t.lse, cpu.lse);
    char text[96];
    std::snprintf(text, sizeof text, " |gpu-cpu| out %.1e lse %.1e", diff_out, diff_lse);
    o.detail += text;
    if (!(diff_out <= 2 * tol_out + slack_out && diff_lse <= 2 * tol_lse + slack_lse))
        fail(o, "GPU and CPU backends differ by more than both tolerances");
    return o;
}

// How a refused call departs from a valid one.
enum class Misuse { None, KOnHost, OutOnHost, LseOnHost, LseHalf, NoSuchDevice };

const char* misuse_name(Misuse m) {
    switch (m) {
        case Misuse::None: return "";
        case Misuse::KOnHost: return " with k on the host";
        case Misuse::OutOnHost: return " with out on the host";
        case Misuse::LseOnHost: return " with lse on the host";
        case Misuse::LseHalf: return " with a float16 lse";
        case Misuse::NoSuchDevice: return " on a device index past the last device";
    }
    return "?";
}

// The call must fail with `expected` (FA4J_OK: any error) and a message, and write nothing.
Outcome run_refused(const Case& c, Misuse misuse, fa4j_status expected) {
    Outcome o;
    ForwardTensors t = make_forward_tensors(c);
    std::mt19937 rng(11);
    fill_inputs(c, rng, t.q, t.k, t.v, nullptr);
    if (misuse == Misuse::LseHalf) {
        t.lse.buffer = new_buffer(Dt::F16, static_cast<int64_t>(t.lse.buffer->elements()));
        t.lse.mark_covered();
    }
    DeviceMirror mirror;
    if (!mirror.upload(o, {&t.q, &t.k, &t.v, &t.out, &t.lse})) return o;
    int32_t devices = 0;
    fa4j_cuda_device_count(&devices);
    const int32_t device = misuse == Misuse::NoSuchDevice ? devices : 0;
    const fa4j_attention_params params = params_for(c);
    const fa4j_tensor* k = misuse == Misuse::KOnHost ? t.k.host_tensor() : t.k.cuda_tensor(device);
    const fa4j_tensor* out = misuse == Misuse::OutOnHost ? t.out.host_tensor() : t.out.cuda_tensor(device);
    const fa4j_tensor* lse = misuse == Misuse::LseOnHost ? t.lse.host_tensor() : t.lse.cuda_tensor(device);
    expect_refusal(o, fa4j_attention_forward(&params, t.q.cuda_tensor(device), k, t.v.cuda_tensor(device), out, lse, nullptr),
                   expected);
    if (!call_ok(o, fa4j_cuda_device_synchronize(0), "device synchronize")) return o;
    for (View* v : {&t.out, &t.lse}) {
        check_all_poison(o, "a host output", *v);  // the one passed as a host tensor, if any
        if (!mirror.download(o, *v)) return o;
        check_all_poison(o, "a device output", *v);
    }
    return o;
}

// `small`: under compute-sanitizer, which counts a failing CUDA API call as an error, so the call
// that makes cudaSetDevice fail on purpose is left out.
void run_refusals(Tally& tally, bool small) {
    const Shape tiny{1, 16, 16, 2, 1, 64};
    const auto refused = [&](const Case& c, Misuse misuse, fa4j_status expected) {
        tally.report("refused: " + describe(c) + misuse_name(misuse), run_refused(c, misuse, expected));
    };
    // A well-formed call the CUDA kernels do not implement (float32), and head dims the ABI itself excludes
    // (not a multiple of 8; above 256).
    refused({tiny, Dt::F32, false, Layout::Contiguous}, Misuse::None, FA4J_ERROR_UNSUPPORTED);
    refused({{1, 16, 16, 2, 1, 12}, Dt::BF16, false, Layout::Contiguous}, Misuse::None, FA4J_ERROR_UNSUPPORTED);
    refused({{1, 16, 16, 2, 1, 264}, Dt::F16, true, Layout::Contiguous}, Misuse::None, FA4J_ERROR_UNSUPPORTED);
    // Malformed calls.
    refused({tiny, Dt::BF16, false, Layout::Contiguous}, Misuse::KOnHost, FA4J_ERROR_INVALID_ARGUMENT);
    refused({tiny, Dt::F16, true, Layout::Contiguous}, Misuse::OutOnHost, FA4J_ERROR_INVALID_ARGUMENT);
    refused({tiny, Dt::BF16, true, Layout::Contiguous}, Misuse::LseOnHost, FA4J_ERROR_INVALID_ARGUMENT);
    refused({tiny, Dt::BF16, false, Layout::Contiguous}, Misuse::LseHalf, FA4J_ERROR_INVALID_ARGUMENT);
    if (!small) refused({tiny, Dt::F16, false, Layout::Contiguous}, Misuse::NoSuchDevice, FA4J_OK);
}

}  // namespace

int main(int argc, char** argv) {
    const TestOptions options = parse_test_options(argc, argv);
    g_kernel_family = options.kernel_family;
    const std::string unavailable = cuda_unavailable_reason();
    if (!unavailable.empty()) return report_skipped(unavailable);
    const auto start = std::chrono::steady_clock::now();
    Tally tally;
    // First, so that an error state a refusal might leave behind shows up in the cases after it.
    run_refusals(tally, options.small);

    // Lengths 1, 17, 128, 333 and 1000 (ragged against the 128-row query and 64-row key tiles, plus
    // 129, one past a tile), Nq < Nk and Nq > Nk (causal rows that see no key), GQA groups 1, 2 and 8
    // and MQA, every head dim instantiation (64, 96, 128, 192, 256) and dims that run on the next one up
    // zero-padded (8, 40, 72, 136, 160, 200, 224),
    // packed qkv ([B, N, 3, H, d] when Hq = Hkv), head-major and padded strides, broadcast k/v,
    // batches of 1 to 3, and empty problems (no batch, no query, no key: out 0 and lse -inf).
    const std::vector<ShapeLayout> shapes = {
        {{1, 1, 1, 1, 1, 64}, Layout::Contiguous},         {{2, 17, 17, 2, 2, 64}, Layout::Packed},
        {{1, 128, 128, 8, 1, 128}, Layout::Contiguous},    {{1, 333, 333, 4, 2, 64}, Layout::Packed},
        {{2, 1000, 1000, 4, 4, 128}, Layout::HeadMajor},   {{1, 1000, 1000, 8, 8, 64}, Layout::Packed},
        {{1, 17, 128, 2, 1, 128}, Layout::HeadMajor},      {{1, 128, 17, 2, 2, 64}, Layout::Padded},
        {{1, 333, 128, 16, 2, 64}, Layout::HeadMajor},     {{2, 1, 333, 4, 4, 128}, Layout::Contiguous},
        {{1, 333, 1, 2, 2, 128}, Layout::Padded},          {{1, 128, 333, 8, 4, 128}, Layout::HeadMajor},
        {{2, 1000, 333, 4, 1, 64}, Layout::Contiguous},    {{1, 333, 1000, 8, 1, 128}, Layout::Padded},
        {{3, 17, 1000, 2, 2, 64}, Layout::BroadcastKv},    {{2, 65, 130, 4, 2, 64}, Layout::BroadcastKv},
        {{1, 70, 70, 2, 1, 40}, Layout::Packed},           {{1, 33, 65, 1, 1, 96}, Layout::Contiguous},
        {{3, 17, 17, 16, 2, 8}, Layout::Contiguous},       {{1, 129, 129, 2, 2, 72}, Layout::Padded},
        {{0, 17, 17, 2, 2, 64}, Layout::Contiguous},       {{1, 0, 17, 2, 1, 64}, Layout::Padded},
        {{1, 17, 0, 2, 2, 128}, Layout::HeadMajor},        {{1, 129, 129, 2, 1, 136}, Layout::Contiguous},
        {{1, 70, 130, 4, 2, 160}, Layout::Padded},         {{2, 333, 333, 4, 2, 192}, Layout::HeadMajor},
        {{1, 128, 333, 2, 2, 200}, Layout::BroadcastKv},   {{1, 200, 200, 4, 4, 224}, Layout::Packed},
        {{1, 1000, 1000, 2, 1, 256}, Layout::Contiguous},  {{2, 17, 333, 8, 2, 256}, Layout::HeadMajor},
        {{1, 333, 17, 2, 2, 256}, Layout::Padded},         {{1, 17, 0, 2, 2, 192}, Layout::Contiguous},
    };
    uint32_t seed = 1;
    for (Dt dt : {Dt::F16, Dt::BF16})
        for (const ShapeLayout& sl : shapes)
            for (bool causal : {false, true}) {
                if (std::max(sl.s.Nq, sl.s.Nk) > options.max_rows) continue;
                Case c{sl.s, dt, causal, sl.layout};
                c.own_stream = seed % 3 == 0;
                tally.report(describe(c), run_case(c, seed++));
            }
    // Softmax scales that are not 1/sqrt(d): negative (the kernel flips the row maximum into the
    // minimum), zero (uniform attention; the kernel substitutes a tiny scale so masked keys stay
    // masked) and large (nearly one-hot rows, where P rounds hardest).
    for (float multiplier : {-1.0f, 0.0f, 8.0f})
        for (int64_t D : {64, 128}) {
            Case c{{2, 70, 130, 4, 2, D}, Dt::BF16, true, Layout::Contiguous};
            c.scale_multiplier = multiplier;
            tally.report(describe(c), run_case(c, seed++));
        }
    // Finite but extreme inputs (issue 6; the same regimes as cpu_attention_test.cpp): the fuzzer's
    // scale 1e10 on [1, 40, 1, 64], inputs times 1e4, values near the float16 maximum, the largest
    // accepted scale, and moderate scores followed by huge ones and the reverse (both kernels walk the
    // keys from the last tile to the first), where the running maximum jumps by orders of magnitude.
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const float largest_scale_d64 = largest_scale(64);
    const std::vector<Extreme> extremes = {
        {{1, 40, 40, 1, 1, 64}, 1e10f, Values::Normal, false},
        {{1, 4, 4, 1, 1, 64}, largest_scale_d64, Values::Normal, false},
        {{1, 4, 4, 1, 1, 64}, -largest_scale_d64, Values::Normal, true},
        {{2, 70, 130, 4, 2, 64}, nan, Values::Times1e4, true},
        {{1, 40, 40, 1, 1, 128}, nan, Values::Times1e4, false},
        {{1, 65, 65, 2, 1, 64}, nan, Values::NearF16Max, false},
        {{1, 70, 130, 2, 2, 128}, nan, Values::NearF16Max, true},
        {{1, 97, 300, 2, 1, 64}, nan, Values::HugeFirst, false},
        {{1, 333, 1000, 2, 1, 128}, nan, Values::HugeFirst, true},
        {{1, 97, 300, 2, 1, 64}, nan, Values::HugeNegativeFirst, true},
        {{1, 333, 1000, 2, 1, 128}, nan, Values::HugeNegativeFirst, false},
    };
    for (Dt dt : {Dt::F16, Dt::BF16})
        for (const Extreme& e : extremes) {
            if (options.small && std::max(e.s.Nq, e.s.Nk) > kSmallMaxRows) continue;
            Case c{e.s, dt, e.causal, Layout::Contiguous};
            c.scale = e.scale;
            c.values = e.values;
            tally.report(describe(c), run_case(c, seed++));
        }
    {
        Case c{{1, 4, 4, 1, 1, 64}, Dt::F16, false, Layout::Contiguous};
        c.scale = 1e38f;
        tally.report("refused: " + describe(c), run_refused(c, Misuse::None, FA4J_ERROR_INVALID_ARGUMENT));
    }
    // Views that are not 16-byte aligned: computed correctly, or refused as unsupported.
    for (Dt dt : {Dt::F16, Dt::BF16})
        for (bool causal : {false, true}) {
            const Case c{{1, 128, 17, 2, 2, 64}, dt, causal, Layout::PaddedUnaligned};
            tally.report(describe(c), run_case(c, seed++, true));
        }
    // Score features through fa4j_attention (support/feature_cases.hpp: softcap, ALiBi [Hq] and [B, Hq],
    // windows left/right/both/diagonal/causal-sliding, everything together), then the same at head dims above
    // 128, then variable-length batches (support/varlen_case.hpp). Under a sanitizer each case runs in one
    // dtype only.
    int n = 0;
    for (const ShapeLayout& sl : feature_shapes())
        for (const Features& f : feature_sets())
            for (Dt dt : {Dt::F16, Dt::BF16}) {
                if (std::max(sl.s.Nq, sl.s.Nk) > options.max_rows || (options.small && n++ % 2 != 0)) continue;
                const Case c = with_features(Case{sl.s, dt, false, sl.layout}, f);
                tally.report(describe(c), run_case(c, seed++, sl.layout == Layout::PaddedUnaligned));
            }
    for (int64_t D : {160, 192, 256})
        for (size_t i : {1u, 7u, 11u})
            for (Dt dt : {Dt::F16, Dt::BF16}) {
                if (options.small && n++ % 2 != 0) continue;
                const Case c = with_features(Case{{1, 70, 130, 4, 2, D}, dt, false, Layout::Contiguous}, feature_sets()[i]);
                tally.report(describe(c), run_case(c, seed++));
            }
    for (VarlenCase c : varlen_cases())
        for (Dt dt : {Dt::F16, Dt::BF16}) {
            if (c.longest() > options.max_rows || (options.small && n++ % 2 != 0)) continue;
            c.dt = dt;
            tally.report(describe(c), run_varlen_case(c, seed++, Where::Cuda, Checked::Forward, g_kernel_family));
        }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return tally.finish(seconds);
}
