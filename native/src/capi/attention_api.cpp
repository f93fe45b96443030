// C ABI of attention: validate everything, then dispatch to the backend of the tensors' device.
#include "capi/boundary.hpp"
#include "core/attention_validation.hpp"
#include "dispatch/attention_dispatch.hpp"
#include "flashattn4j.h"

extern "C" fa4j_status fa4j_attention_forward(const fa4j_attention_params* params, const fa4j_tensor* q,
                                              const fa4j_tensor* k, const fa4j_tensor* v, const fa4j_tensor* out,
                                              const fa4j_tensor* lse, fa4j_stream stream) {
    return fa4j::capi::guarded(__func__, [&] {
        fa4j::dispatch_forward(fa4j::validate_forward(params, q, k, v, out, lse), stream);
    });
}

extern "C" fa4j_status fa4j_attention_backward(const fa4j_attention_params* params, const fa4j_tensor* dout,
                                               const fa4j_tensor* q, const fa4j_tensor* k, const fa4j_tensor* v,
                                               const fa4j_tensor* out, const fa4j_tensor* lse, const fa4j_tensor* dq,
                                               const fa4j_tensor* dk, const fa4j_tensor* dv, fa4j_stream stream) {
    return fa4j::capi::guarded(__func__, [&] {
        fa4j::dispatch_backward(fa4j::validate_backward(params, dout, q, k, v, out, lse, dq, dk, dv), stream);
    });
}
