#include "dispatch/attention_dispatch.hpp"

#include <string>

#include "backends/cpu/cpu_attention.hpp"
#include "backends/cpu/varlen_split.hpp"
#include "backends/cuda/cuda_backend.hpp"
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

}  // namespace

void check_support(const ValidatedCall& call) {
    if (call.direction == FA4J_ATTENTION_FORWARD) {
        const ValidatedForward& f = call.forward;
        check_family(f.device, f.family);
        if (f.device.device_type == FA4J_DEVICE_CUDA) cuda::check_forward(f.device.device_id, f.problem, f.family);
        return;
    }
    const ValidatedBackward& b = call.backward;
    check_family(b.device, b.family);
    if (b.device.device_type == FA4J_DEVICE_CUDA) cuda::check_backward(b.device.device_id, b.problem, b.family);
}

void run(const ValidatedCall& call, fa4j_stream stream) {
    if (call.direction == FA4J_ATTENTION_FORWARD) {
        const ValidatedForward& f = call.forward;
        check_family(f.device, f.family);
        if (f.device.device_type == FA4J_DEVICE_CUDA) cuda::attention_forward(f.device.device_id, f.problem, f.family, stream);
        else if (f.problem.config.varlen.enabled()) cpu::for_each_sequence(f.problem, cpu::attention_forward);
        else cpu::attention_forward(f.problem);
        return;
    }
    const ValidatedBackward& b = call.backward;
    check_family(b.device, b.family);
    if (b.device.device_type == FA4J_DEVICE_CUDA) cuda::attention_backward(b.device.device_id, b.problem, b.family, stream);
    else if (b.problem.config.varlen.enabled()) cpu::for_each_sequence(b.problem, cpu::attention_backward);
    else cpu::attention_backward(b.problem);
}

}  // namespace fa4j
