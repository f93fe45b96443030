// C ABI of fa4j_quantize: validate, then the dispatch unit runs (or refuses) it.
#include "capi/boundary.hpp"
#include "core/quantize_validation.hpp"
#include "dispatch/attention_dispatch.hpp"
#include "flashattn4j.h"

extern "C" fa4j_status fa4j_quantize(const fa4j_quantize_args* args, fa4j_stream stream) {
    return fa4j::capi::guarded(__func__, [&] { fa4j::run(fa4j::validate_quantize(args), stream); });
}
