// Turns fa4j_quantize's arguments into a validated QuantizeProblem, or throws an fa4j::Error naming the
// argument at fault.
#pragma once

#include "core/quantization.hpp"
#include "flashattn4j.h"

namespace fa4j {

struct ValidatedQuantize {
    quant::QuantizeProblem problem;
    fa4j_device device;
};

ValidatedQuantize validate_quantize(const fa4j_quantize_args* args);

}  // namespace fa4j
