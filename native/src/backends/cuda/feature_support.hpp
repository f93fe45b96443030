// What the CUDA kernels of this version do not implement yet, refused with one message per feature so
// that the capability query and the failing call say the same thing.
#pragma once

#include <string>

#include "core/attention_problem.hpp"
#include "core/error.hpp"

namespace fa4j::cuda {

inline void require_plain_dense(const AttentionConfig& config, const char* direction) {
    auto refuse = [&](const char* feature) {
        fail(FA4J_ERROR_UNSUPPORTED, std::string("attention ") + direction + " on CUDA does not implement " + feature +
                                         " yet (the CPU backend does: use CPU tensors)");
    };
    if (config.varlen.enabled()) refuse("variable-length batches (cu_seqlens)");
    if (config.features.softcap != 0) refuse("softcap");
    if (config.features.alibi_slopes != nullptr) refuse("ALiBi");
    // The window [unbounded, 0] is the causal mask (validation sets `causal` for it), which the kernels implement.
    const bool causal_only = config.features.window_left == ScoreFeatures::kUnbounded && config.features.window_right == 0;
    if (config.features.has_window() && !causal_only) refuse("sliding windows");
}

}  // namespace fa4j::cuda
