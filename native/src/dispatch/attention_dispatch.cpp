#include "dispatch/attention_dispatch.hpp"

#include <string>

#include "backends/cpu/cpu_attention.hpp"
#include "backends/cpu/quantize_cpu.hpp"
#include "backends/cpu/varlen_split.hpp"
#include "backends/cuda/cuda_backend.hpp"
#include "dispatch/cuda_kernel_table.hpp"
#include "core/error.hpp"

namespace fa4j {
namespace {

const char* family_name(fa4j_kernel_family family) {
    switch (family) {
        case FA4J_KERNEL_AUTO: return "AUTO";
        case FA4J_KERNEL_CPU: return "CPU";
        case FA4J_KERNEL_SM80: return "SM80";
        case FA4J_KERNEL_SM90: return "SM90";
    }
    return "?";
}

// The device decides the backend; a forced family must belong to it.
void check_family(const fa4j_device& device, fa4j_kernel_family family) {
    const bool cuda = device.device_type == FA4J_DEVICE_CUDA;
    if (cuda && family == FA4J_KERNEL_CPU)
        fail(FA4J_ERROR_UNSUPPORTED, "kernel family CPU runs CPU tensors; these are on cuda:" + std::to_string(device.device_id));
    if (!cuda && family != FA4J_KERNEL_AUTO && family != FA4J_KERNEL_CPU)
        fail(FA4J_ERROR_UNSUPPORTED, std::string("kernel family ") + family_name(family) + " runs CUDA tensors; these are on the CPU");
}

// The first kernel of the family's candidates for `direction` (in preference order) that `refusal(kernel,
// arch)` accepts (the table's answer, then the backend's for the tensors), or FA4J_ERROR_UNSUPPORTED naming
// the call (`call`) with every candidate's reason; `what` names the direction's kernels.
template <class Refusal>
CudaKernel choose_cuda_kernel(fa4j_attention_direction direction, int device, fa4j_kernel_family family,
                              const std::string& call, const char* what, Refusal refusal) {
    const CudaArch arch = cuda::device_arch(device);
    CudaKernel candidates[kMaxCudaCandidates];
    const int count = cuda_kernel_candidates(direction, family, candidates);
    std::string reasons;
    for (int i = 0; i < count; ++i) {
        const std::string why = refusal(candidates[i], arch);
        if (why.empty()) return candidates[i];
        reasons += (reasons.empty() ? "" : "; ") + why;
    }
    if (count == 0)
        reasons = std::string("kernel family ") + family_name(family) + " has no " + what + " kernel (AUTO picks one)";
    fail(FA4J_ERROR_UNSUPPORTED, call + " on cuda:" + std::to_string(device) + ": " + reasons);
}

// An attention kernel (forward or backward) and its head-dim instantiation: the table's refusal for the
// config, then `tensors_refusal(kernel)`.
template <class TensorsRefusal>
CudaKernelChoice choose_attention_kernel(fa4j_attention_direction direction, int device, const AttentionConfig& config,
                                         fa4j_kernel_family family, TensorsRefusal tensors_refusal) {
    const char* what = direction == FA4J_ATTENTION_FORWARD ? "forward" : "backward";
    const CudaKernel kernel = choose_cuda_kernel(direction, device, family, std::string("attention ") + what, what,
                                                 [&](CudaKernel k, CudaArch arch) {
                                                     std::string why = cuda_kernel_refusal(k, config, arch);
                                                     return why.empty() ? tensors_refusal(k) : why;
                                                 });
    return {kernel, cuda_kernel_head_dim(kernel, config.shape.head_dim)};
}

CudaKernelChoice choose_forward(const ValidatedForward& f) {
    const int device = f.device.device_id;
    return choose_attention_kernel(FA4J_ATTENTION_FORWARD, device, f.problem.config, f.family,
                                   [&](CudaKernel k) { return cuda::forward_tensors_refusal(device, f.problem, k); });
}

CudaKernelChoice choose_backward(const ValidatedBackward& b) {
    const int device = b.device.device_id;
    return choose_attention_kernel(FA4J_ATTENTION_BACKWARD, device, b.problem.config, b.family,
                                   [&](CudaKernel k) { return cuda::backward_tensors_refusal(device, b.problem, k); });
}

constexpr const char* kDecodeName = "KV-cache attention (FA4J_ATTENTION_DECODE)";
constexpr const char* kMergeName = "attention merge (FA4J_ATTENTION_MERGE)";

// The decode or merge kernel for a call on CUDA tensors: the table's answer (is it offered, can this GPU run
// it), then the backend's (`tensors_refusal`).
template <class Validated, class TensorsRefusal>
void choose_kv_kernel(fa4j_attention_direction direction, const Validated& v, const char* call, const char* what,
                      TensorsRefusal tensors_refusal) {
    choose_cuda_kernel(direction, v.device.device_id, v.family, call, what, [&](CudaKernel k, CudaArch arch) {
        std::string why = cuda_kernel_availability(k, arch);
        return why.empty() ? tensors_refusal() : why;
    });
}

void check_decode(const ValidatedDecode& v) {
    check_family(v.device, v.family);
    if (v.device.device_type == FA4J_DEVICE_CUDA)
        choose_kv_kernel(FA4J_ATTENTION_DECODE, v, kDecodeName, "decode", [&] { return cuda::decode_tensors_refusal(v.problem); });
}

void check_merge(const ValidatedMerge& v) {
    check_family(v.device, v.family);
    if (v.device.device_type == FA4J_DEVICE_CUDA)
        choose_kv_kernel(FA4J_ATTENTION_MERGE, v, kMergeName, "merge", [&] { return cuda::merge_tensors_refusal(v.problem); });
}

}  // namespace

void check_support(const ValidatedCall& call) {
    if (call.direction == FA4J_ATTENTION_DECODE) {
        check_decode(call.decode);
        return;
    }
    if (call.direction == FA4J_ATTENTION_MERGE) {
        check_merge(call.merge);
        return;
    }
    if (call.direction == FA4J_ATTENTION_FORWARD) {
        const ValidatedForward& f = call.forward;
        check_family(f.device, f.family);
        if (f.device.device_type == FA4J_DEVICE_CUDA) choose_forward(f);
        return;
    }
    const ValidatedBackward& b = call.backward;
    check_family(b.device, b.family);
    if (b.device.device_type == FA4J_DEVICE_CUDA) choose_backward(b);
}

void run(const ValidatedCall& call, fa4j_stream stream) {
    if (call.direction == FA4J_ATTENTION_DECODE) {
        check_decode(call.decode);
        if (call.decode.device.device_type == FA4J_DEVICE_CUDA) cuda::attention_decode(call.decode.device.device_id, call.decode.problem, stream);
        else cpu::attention_decode(call.decode.problem);
        return;
    }
    if (call.direction == FA4J_ATTENTION_MERGE) {
        check_merge(call.merge);
        if (call.merge.device.device_type == FA4J_DEVICE_CUDA) cuda::attention_merge(call.merge.device.device_id, call.merge.problem, stream);
        else cpu::attention_merge(call.merge.problem);
        return;
    }
    if (call.direction == FA4J_ATTENTION_FORWARD) {
        const ValidatedForward& f = call.forward;
        check_family(f.device, f.family);
        if (f.device.device_type == FA4J_DEVICE_CUDA)
            cuda::attention_forward(f.device.device_id, f.problem, choose_forward(f), stream);
        else if (f.problem.config.quant.enabled()) cpu::quantized_attention_forward(f.problem);
        else if (f.problem.config.varlen.enabled()) cpu::for_each_sequence(f.problem, cpu::attention_forward);
        else cpu::attention_forward(f.problem);
        return;
    }
    const ValidatedBackward& b = call.backward;
    check_family(b.device, b.family);
    if (b.device.device_type == FA4J_DEVICE_CUDA)
        cuda::attention_backward(b.device.device_id, b.problem, choose_backward(b), stream);
    else if (b.problem.config.varlen.enabled()) cpu::for_each_sequence(b.problem, cpu::attention_backward);
    else cpu::attention_backward(b.problem);
}

void run(const ValidatedQuantize& call, fa4j_stream stream) {
    (void)stream;
    if (call.device.device_type == FA4J_DEVICE_CUDA)
        fail(FA4J_ERROR_UNSUPPORTED, std::string("fa4j_quantize (") + quant::mode_name(call.problem.mode) +
                                         ") has no CUDA kernel yet (CPU tensors run it)");
    cpu::quantize(call.problem);
}

}  // namespace fa4j
