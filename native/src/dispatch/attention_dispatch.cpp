#include "dispatch/attention_dispatch.hpp"

#include "backends/cpu/cpu_attention.hpp"
#include "backends/cuda/cuda_backend.hpp"

namespace fa4j {

void dispatch_forward(const ValidatedForward& call, fa4j_stream stream) {
    if (call.device.device_type == FA4J_DEVICE_CUDA) cuda::attention_forward(call.device.device_id, call.problem, stream);
    else cpu::attention_forward(call.problem);
}

void dispatch_backward(const ValidatedBackward& call, fa4j_stream stream) {
    if (call.device.device_type == FA4J_DEVICE_CUDA) cuda::attention_backward(call.device.device_id, call.problem, stream);
    else cpu::attention_backward(call.problem);
}

}  // namespace fa4j
