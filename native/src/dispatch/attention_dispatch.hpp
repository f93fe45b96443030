// Chooses the backend for a validated attention call from the device its tensors live on.
#pragma once

#include "core/attention_validation.hpp"

namespace fa4j {

void dispatch_forward(const ValidatedForward& call, fa4j_stream stream);
void dispatch_backward(const ValidatedBackward& call, fa4j_stream stream);

}  // namespace fa4j
