// Checks the CUDA attention backward through the C ABI: dq, dk and dv against the float64 reference
// under the FlashAttention tolerance rule (support/tolerance.hpp). Its inputs out and lse come from the
// CPU backend's forward on the host (the CUDA forward has its own test). dq/dk/dv start as NaN on the
// device, gaps between strided output elements must stay untouched, and NaN never passes. Each case
// also runs the CPU backend's backward on the same inputs and reports the largest GPU-vs-CPU
// difference, relative to the bound both tolerances imply (2 x tolerance). Head dims up to 128, the score
// features of fa4j_attention (softcap, ALiBi, sliding windows) and variable-length batches (cu_seqlens,
// seqused_k), as attention v2 specifies them, must run; above head dim 128 (and with --kernel sm90) the
// backward is computed correctly or refused as unsupported, writing nothing. Calls the CUDA backward does
// not implement (float32, head dims the ABI excludes), or that mix host and device tensors, must be refused
// with a message and write nothing.
//
// Usage: cuda_attention_backward_test [--small | --max-rows N] [--kernel auto|sm80|sm90]   (or FA4J_TEST_SMALL=1, the same as --small: fewer,
// smaller shapes for compute-sanitizer; see support/test_options.hpp). Without a CUDA device it reports
// "0 passed, 0 failed, 1 skipped" and exits 0.
// Timing lives in native/bench/fa4j_bench.cpp.
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
#include "support/tensor_layouts.hpp"
#include "support/test_dtype.hpp"
#include "support/test_options.hpp"
#include "support/test_report.hpp"
#include "support/tolerance.hpp"
#include "support/untouched_gaps.hpp"
#include "support/varlen_case.hpp"

namespace {

// The kernel family of --kernel: AUTO runs plain calls through fa4j_attention_backward, the others (and
// every call with score features) go through fa4j_attention with the family forced.
int g_kernel_family = FA4J_KERNEL_AUTO;

using namespace fa4j_test;

// Whether the specification lets the CUDA backward refuse the case: head dims above 128, the SM90 family.
bool backward_may_refuse(int64_t head_dim) { return head_dim > 128 || g_kernel_family == FA4J_KERNEL_SM90; }

// `may_refuse`: refusing the case with FA4J_ERROR_UNSUPPORTED and a message, writing nothing, passes
// (backward_may_refuse); otherwise it must run and be right.
Outcome run_case(const Case& c, uint32_t seed, bool may_refuse = false) {
    Outcome o;
    std::mt19937 rng(seed);
    TrainingTensors t = make_training_tensors(c);
    const Inputs in = fill_inputs(c, rng, t.q, t.k, t.v, &t.dout, &t.alibi);
    const fa4j_attention_params params = params_for(c);

    const fa4j_attention_args cpu_forward = args_for(c, t, FA4J_ATTENTION_FORWARD);
    if (!call_ok(o, fa4j_attention(&cpu_forward, nullptr), "cpu forward")) return o;

    DeviceMirror mirror;
    if (!mirror.upload(o, {&t.q, &t.k, &t.v, &t.dout, &t.out, &t.lse, &t.dq, &t.dk, &t.dv})) return o;
    if (c.alibi != Alibi::None && !mirror.upload(o, {&t.alibi})) return o;
    ScopedStream stream;
    if (!stream.open(o, c.own_stream)) return o;
    fa4j_status status;
    if (g_kernel_family == FA4J_KERNEL_AUTO && !c.has_features()) {
        status = fa4j_attention_backward(&params, t.dout.cuda_tensor(), t.q.cuda_tensor(), t.k.cuda_tensor(),
                                         t.v.cuda_tensor(), t.out.cuda_tensor(), t.lse.cuda_tensor(), t.dq.cuda_tensor(),
                                         t.dk.cuda_tensor(), t.dv.cuda_tensor(), stream.get());
    } else {
        const fa4j_attention_args args =
            case_args(c, call_tensors(c, t, FA4J_ATTENTION_BACKWARD, true), FA4J_ATTENTION_BACKWARD, g_kernel_family);
        status = fa4j_attention(&args, stream.get());
    }
    if (may_refuse && status == FA4J_ERROR_UNSUPPORTED) {
        expect_refusal(o, status, FA4J_ERROR_UNSUPPORTED);
        if (!stream.synchronize(o)) return o;
        for (View* v : {&t.dq, &t.dk, &t.dv}) {
            if (!mirror.download(o, *v)) return o;
            check_all_poison(o, "a gradient", *v);
        }
        return o;
    }
    if (!call_ok(o, status, "cuda backward") || !stream.synchronize(o)) return o;
    for (View* v : {&t.dq, &t.dk, &t.dv})
        if (!mirror.download(o, *v)) return o;

    const Results<double> ref = naive_attention<double>(in, c.dt, false, Pass::ForwardAndBackward);
    const Results<float> plain = naive_attention<float>(in, c.dt, true, Pass::ForwardAndBackward);
    const double tol_dq = check_tolerance(o, "dq", t.dq, ref.dq, plain.dq, c.dt);
    const double tol_dk = check_tolerance(o, "dk", t.dk, ref.dk, plain.dk, c.dt);
    const double tol_dv = check_tolerance(o, "dv", t.dv, ref.dv, plain.dv, c.dt);
    check_untouched_gaps(o, "dq", t.dq);
    check_untouched_gaps(o, "dk", t.dk);
    check_untouched_gaps(o, "dv", t.dv);

    // The CPU backend on the same inputs: both within tolerance of the reference, so within the sum of
    // the tolerances of each other.
    TrainingTensors cpu = make_training_tensors(c);
    CallTensors host = call_tensors(c, t, FA4J_ATTENTION_BACKWARD);
    host.dq = cpu.dq.host_tensor();
    host.dk = cpu.dk.host_tensor();
    host.dv = cpu.dv.host_tensor();
    const fa4j_attention_args cpu_backward = case_args(c, host, FA4J_ATTENTION_BACKWARD);
    if (!call_ok(o, fa4j_attention(&cpu_backward, nullptr), "cpu backward")) return o;
    double worst = 0;
    const View* gpu_views[3] = {&t.dq, &t.dk, &t.dv};
    const View* cpu_views[3] = {&cpu.dq, &cpu.dk, &cpu.dv};
    const double tols[3] = {tol_dq, tol_dk, tol_dv};
    for (int i = 0; i < 3; ++i) worst = std::max(worst, max_difference(*gpu_views[i], *cpu_views[i]) / (2 * tols[i]));
    char text[64];
    std::snprintf(text, sizeof text, " |gpu-cpu|/bound %.2f", worst);
    o.detail += text;
    if (!(worst <= 1.0)) fail(o, "GPU and CPU backends differ by more than both tolerances");
    return o;
}

// Finite but extreme inputs (issue 6): forward and backward both on the GPU (the backward recomputes P
// from lse, and where scores are huge that takes the lse of the same arithmetic), every output finite
// and within the tolerance of the float64 reference, results beyond the dtype saturated. The bound
// adds the accumulation allowance (accumulation_allowance.hpp): in these regimes the tensor cores'
// summation order alone moves dq and dk further than the plain implementation's error.
Outcome run_extreme_case(const Case& c, uint32_t seed) {
    Outcome o;
    std::mt19937 rng(seed);
    TrainingTensors t = make_training_tensors(c);
    const Inputs in = fill_inputs(c, rng, t.q, t.k, t.v, &t.dout);
    const fa4j_attention_params params = params_for(c);
    DeviceMirror mirror;
    if (!mirror.upload(o, {&t.q, &t.k, &t.v, &t.dout, &t.out, &t.lse, &t.dq, &t.dk, &t.dv})) return o;
    if (!call_ok(o, fa4j_attention_forward(&params, t.q.cuda_tensor(), t.k.cuda_tensor(), t.v.cuda_tensor(),
                                           t.out.cuda_tensor(), t.lse.cuda_tensor(), nullptr),
                 "cuda forward") ||
        !call_ok(o, fa4j_attention_backward(&params, t.dout.cuda_tensor(), t.q.cuda_tensor(), t.k.cuda_tensor(),
                                            t.v.cuda_tensor(), t.out.cuda_tensor(), t.lse.cuda_tensor(),
                                            t.dq.cuda_tensor(), t.dk.cuda_tensor(), t.dv.cuda_tensor(), nullptr),
                 "cuda backward") ||
        !call_ok(o, fa4j_cuda_stream_synchronize(0, nullptr), "stream synchronize"))
        return o;
    for (View* v : {&t.out, &t.lse, &t.dq, &t.dk, &t.dv})
        if (!mirror.download(o, *v)) return o;
    const Results<double> ref = naive_attention<double>(in, c.dt, false, Pass::ForwardAndBackward);
    const Results<float> plain = naive_attention<float>(in, c.dt, true, Pass::ForwardAndBackward);
    const Results<double> allow = accumulation_allowance(in);
    check_tolerance_with_allowance(o, "out", t.out, ref.out, plain.out, c.dt, allow.out);
    check_tolerance_with_allowance(o, "lse", t.lse, ref.lse, plain.lse, c.dt, allow.lse);
    check_tolerance_with_allowance(o, "dq", t.dq, ref.dq, plain.dq, c.dt, allow.dq);
    check_tolerance_with_allowance(o, "dk", t.dk, ref.dk, plain.dk, c.dt, allow.dk);
    check_tolerance_with_allowance(o, "dv", t.dv, ref.dv, plain.dv, c.dt, allow.dv);
    for (View* v : {&t.out, &t.lse, &t.dq, &t.dk, &t.dv}) check_untouched_gaps(o, "an output", *v);
    return o;
}

// Which tensors of a refused call live on the host instead of the device.
enum class HostTensor { None, K, Dq };

// A call the CUDA backward must refuse (not implemented there, or mixing devices) has to fail with a
// message and leave dq, dk and dv untouched.
Outcome run_refused(const Case& c, HostTensor on_host, fa4j_status expected) {
    Outcome o;
    TrainingTensors t = make_training_tensors(c);
    std::mt19937 rng(7);
    fill_inputs(c, rng, t.q, t.k, t.v, &t.dout);
    fill_random(t.out, rng, c.dt);
    for (int64_t n = 0; n < t.lse.count(); ++n) t.lse.set(n, 1.0f);
    DeviceMirror mirror;
    if (!mirror.upload(o, {&t.q, &t.k, &t.v, &t.dout, &t.out, &t.lse, &t.dq, &t.dk, &t.dv})) return o;
    const fa4j_attention_params params = params_for(c);
    const fa4j_tensor* k = on_host == HostTensor::K ? t.k.host_tensor() : t.k.cuda_tensor();
    const fa4j_tensor* dq = on_host == HostTensor::Dq ? t.dq.host_tensor() : t.dq.cuda_tensor();
    expect_refusal(o,
                   fa4j_attention_backward(&params, t.dout.cuda_tensor(), t.q.cuda_tensor(), k, t.v.cuda_tensor(),
                                           t.out.cuda_tensor(), t.lse.cuda_tensor(), dq, t.dk.cuda_tensor(),
                                           t.dv.cuda_tensor(), nullptr),
                   expected);
    if (!call_ok(o, fa4j_cuda_device_synchronize(0), "device synchronize")) return o;
    for (View* v : {&t.dq, &t.dk, &t.dv}) {
        check_all_poison(o, "a host output", *v);  // the one passed as a host tensor, if any
        if (!mirror.download(o, *v)) return o;
        check_all_poison(o, "a device output", *v);
    }
    return o;
}

}  // namespace

int main(int argc, char** argv) {
    const TestOptions options = parse_test_options(argc, argv);
    g_kernel_family = options.kernel_family;
    const std::string unavailable = cuda_unavailable_reason();
    if (!unavailable.empty()) return report_skipped(unavailable);
    const auto start = std::chrono::steady_clock::now();
    // Ragged lengths around the 64/128-row tiles (1, 17, 128, 333, and 1100 x 1030), Nq < Nk and Nq > Nk
    // (causal rows that see no key), GQA groups 1/2/8, head dims 64, 96 and 128 plus 8, 40, 72, 104 and
    // 120 (padded),
    // packed qkv views, head-major and unaligned padded strides, broadcast k/v, and empty problems.
    const std::vector<ShapeLayout> shapes = {
        {{1, 1, 1, 1, 1, 64}, Layout::Contiguous},           {{2, 17, 17, 2, 2, 64}, Layout::Packed},
        {{1, 128, 128, 8, 1, 128}, Layout::Contiguous},      {{1, 333, 333, 4, 2, 64}, Layout::Packed},
        {{1, 17, 128, 2, 1, 128}, Layout::HeadMajor},        {{1, 128, 17, 2, 2, 64}, Layout::PaddedUnaligned},
        {{1, 333, 128, 2, 1, 64}, Layout::HeadMajor},        {{2, 1, 333, 4, 4, 128}, Layout::Contiguous},
        {{1, 333, 1, 2, 2, 128}, Layout::PaddedUnaligned},   {{1, 128, 333, 8, 4, 128}, Layout::HeadMajor},
        {{1, 70, 70, 2, 1, 40}, Layout::Packed},             {{1, 33, 65, 1, 1, 96}, Layout::Contiguous},
        {{2, 65, 130, 4, 2, 64}, Layout::BroadcastKv},       {{1, 1100, 1030, 2, 1, 128}, Layout::Contiguous},
        {{1, 1030, 1100, 1, 1, 64}, Layout::HeadMajor},      {{0, 17, 17, 2, 2, 64}, Layout::Contiguous},
        {{1, 0, 17, 2, 1, 64}, Layout::PaddedUnaligned},     {{1, 17, 0, 2, 2, 128}, Layout::HeadMajor},
        {{3, 17, 17, 16, 2, 8}, Layout::Contiguous},         {{1, 129, 129, 2, 2, 72}, Layout::Padded},
        {{1, 200, 70, 4, 1, 104}, Layout::HeadMajor},        {{2, 65, 130, 2, 2, 120}, Layout::Contiguous},
        {{1, 333, 333, 4, 2, 96}, Layout::Packed},
    };
    Tally tally;
    uint32_t seed = 1;
    for (Dt dt : {Dt::F16, Dt::BF16})
        for (const ShapeLayout& sl : shapes)
            for (bool causal : {false, true}) {
                if (std::max(sl.s.Nq, sl.s.Nk) > options.max_rows) continue;
                Case c{sl.s, dt, causal, sl.layout};
                c.own_stream = seed % 3 == 0;
                tally.report(describe(c), run_case(c, seed++, backward_may_refuse(c.s.D)));
            }
    // Softmax scales that are not 1/sqrt(d): negative, zero (uniform attention; masked keys must still
    // get nothing) and large (nearly one-hot rows, where P rounds hardest).
    for (float multiplier : {-1.0f, 0.0f, 8.0f})
        for (int64_t D : {64, 128}) {
            Case c{{2, 70, 130, 4, 2, D}, Dt::BF16, true, Layout::Contiguous};
            c.scale_multiplier = multiplier;
            tally.report(describe(c), run_case(c, seed++));
        }
    // Finite but extreme inputs (issue 6; the same regimes as cpu_attention_test.cpp): the fuzzer's
    // scale 1e10 on [1, 40, 1, 64], inputs times 1e4, values near the float16 maximum, the largest
    // accepted scale; moderate scores followed by huge ones and the reverse, and 64/sqrt(d) (large
    // scores on rows that are not one-hot).
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
        {{1, 97, 300, 2, 1, 128}, nan, Values::HugeNegativeFirst, true},
        {{2, 70, 130, 4, 2, 64}, 8.0f, Values::Normal, true},
    };
    for (Dt dt : {Dt::F16, Dt::BF16})
        for (const Extreme& e : extremes) {
            Case c{e.s, dt, e.causal, Layout::Contiguous};
            c.scale = e.scale;
            c.values = e.values;
            tally.report("extreme " + describe(c), run_extreme_case(c, seed++));
        }
    // Score features through fa4j_attention (support/feature_cases.hpp), the same at head dims above 128
    // (computed or refused), then variable-length batches (support/varlen_case.hpp). Under a sanitizer each
    // case runs in one dtype only.
    int n = 0;
    for (const ShapeLayout& sl : feature_shapes())
        for (const Features& f : feature_sets())
            for (Dt dt : {Dt::F16, Dt::BF16}) {
                if (std::max(sl.s.Nq, sl.s.Nk) > options.max_rows || (options.small && n++ % 2 != 0)) continue;
                const Case c = with_features(Case{sl.s, dt, false, sl.layout}, f);
                tally.report(describe(c), run_case(c, seed++, backward_may_refuse(c.s.D)));
            }
    for (int64_t D : {160, 192, 256})
        for (size_t i : {1u, 7u, 11u})
            for (Dt dt : {Dt::F16, Dt::BF16}) {
                if (options.small && n++ % 2 != 0) continue;
                const Case c = with_features(Case{{1, 70, 130, 4, 2, D}, dt, false, Layout::Contiguous}, feature_sets()[i]);
                tally.report(describe(c), run_case(c, seed++, true));
            }
    for (VarlenCase c : varlen_cases())
        for (Dt dt : {Dt::F16, Dt::BF16}) {
            if (c.longest() > options.max_rows || (options.small && n++ % 2 != 0)) continue;
            c.dt = dt;
            tally.report(describe(c), run_varlen_case(c, seed++, Where::Cuda, Checked::Backward, g_kernel_family,
                                                      backward_may_refuse(c.D)));
        }
    const Shape small{1, 16, 16, 1, 1, 64};
    tally.report("float32 is refused", run_refused({small, Dt::F32, false, Layout::Contiguous}, HostTensor::None,
                                                   FA4J_ERROR_UNSUPPORTED));
    tally.report("head_dim 264 is refused", run_refused({{1, 16, 16, 1, 1, 264}, Dt::BF16, false, Layout::Contiguous},
                                                        HostTensor::None, FA4J_ERROR_UNSUPPORTED));
    tally.report("k on the host is refused", run_refused({small, Dt::BF16, false, Layout::Contiguous}, HostTensor::K,
                                                         FA4J_ERROR_INVALID_ARGUMENT));
    tally.report("dq on the host is refused", run_refused({small, Dt::F16, true, Layout::Contiguous}, HostTensor::Dq,
                                                          FA4J_ERROR_INVALID_ARGUMENT));
    {
        Case c{{1, 4, 4, 1, 1, 64}, Dt::BF16, false, Layout::Contiguous};
        c.scale = 1e38f;
        tally.report("softmax scale 1e38 is refused", run_refused(c, HostTensor::None, FA4J_ERROR_INVALID_ARGUMENT));
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return tally.finish(seconds);
}
