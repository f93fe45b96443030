// C ABI of attention: validate everything, then the dispatch unit picks and runs the kernels. Every
// entry point goes through validate() and run(), so they accept and refuse exactly the same calls.
#include <algorithm>
#include <cstring>

#include "capi/boundary.hpp"
#include "core/attention_validation.hpp"
#include "dispatch/attention_dispatch.hpp"
#include "flashattn4j.h"

extern "C" fa4j_status fa4j_attention(const fa4j_attention_args* args, fa4j_stream stream) {
    return fa4j::capi::guarded(__func__, [&] { fa4j::run(fa4j::validate(args), stream); });
}

extern "C" fa4j_status fa4j_attention_support(const fa4j_attention_args* args, int32_t* status, char* reason,
                                              size_t reason_capacity) {
    return fa4j::capi::guarded(__func__, [&] {
        FA4J_REQUIRE(status != nullptr, "status is null");
        FA4J_REQUIRE(reason != nullptr || reason_capacity == 0, "reason is null but reason_capacity is not 0");
        *status = FA4J_OK;
        std::string why;
        try {
            fa4j::check_support(fa4j::validate(args));
        } catch (const fa4j::Error& e) {
            // The status and message fa4j_attention would report, under its name.
            *status = e.status();
            why = fa4j::capi::failure_message("fa4j_attention", e);
        }
        if (reason_capacity > 0) {
            const size_t n = std::min(why.size(), reason_capacity - 1);
            std::memcpy(reason, why.data(), n);
            reason[n] = '\0';
        }
    });
}

extern "C" fa4j_status fa4j_attention_forward(const fa4j_attention_params* params, const fa4j_tensor* q,
                                              const fa4j_tensor* k, const fa4j_tensor* v, const fa4j_tensor* out,
                                              const fa4j_tensor* lse, fa4j_stream stream) {
    return fa4j::capi::guarded(__func__, [&] {
        const fa4j_attention_args args = fa4j::forward_args(params, q, k, v, out, lse);
        fa4j::run(fa4j::validate(&args), stream);
    });
}

extern "C" fa4j_status fa4j_attention_backward(const fa4j_attention_params* params, const fa4j_tensor* dout,
                                               const fa4j_tensor* q, const fa4j_tensor* k, const fa4j_tensor* v,
                                               const fa4j_tensor* out, const fa4j_tensor* lse, const fa4j_tensor* dq,
                                               const fa4j_tensor* dk, const fa4j_tensor* dv, fa4j_stream stream) {
    return fa4j::capi::guarded(__func__, [&] {
        const fa4j_attention_args args = fa4j::backward_args(params, dout, q, k, v, out, lse, dq, dk, dv);
        fa4j::run(fa4j::validate(&args), stream);
    });
}
