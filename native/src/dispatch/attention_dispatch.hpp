// The one place that decides which backend and kernel family run a validated attention call, and
// whether they can: check_support answers the capability query with the same message the call itself
// would fail with, because run() performs exactly those checks before launching anything.
#pragma once

#include "core/attention_validation.hpp"
#include "core/quantize_validation.hpp"

namespace fa4j {

// Throws FA4J_ERROR_UNSUPPORTED (or NO_DEVICE) with the reason if `call` cannot run; launches nothing.
void check_support(const ValidatedCall& call);

void run(const ValidatedCall& call, fa4j_stream stream);

// fa4j_quantize: the CPU backend's quantizers; CUDA tensors are refused (no kernels yet).
void run(const ValidatedQuantize& call, fa4j_stream stream);

}  // namespace fa4j
