// Transitional: the v1 forward parameters, still read by the Hopper forward (fa3_*). The sm_80 forward
// reads kernels::ForwardParams (common/attention_params.hpp; launchers in sm80/forward.hpp). Remove this
// once the Hopper forward has moved to kernels::ForwardParams too.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace fa4j::cuda::fa2 {

// One forward call, in elements. Pointers are at element (0, 0, 0, 0); strides of batch, row (sequence)
// and head are free, head_dim is contiguous. q, k, v, o and the strides of their dimensions longer
// than 1 are 16-byte aligned (the entry point checks), so every copy is one 16-byte vector.
struct ForwardParams {
    const void* q;
    const void* k;
    const void* v;
    void* o;
    float* lse;
    int64_t q_batch_stride, q_row_stride, q_head_stride;
    int64_t k_batch_stride, k_row_stride, k_head_stride;
    int64_t v_batch_stride, v_row_stride, v_head_stride;
    int64_t o_batch_stride, o_row_stride, o_head_stride;
    int64_t lse_batch_stride, lse_head_stride, lse_row_stride;
    int batch;
    int seqlen_q;
    int seqlen_k;
    int heads_q;
    int group_size;     // query heads per key/value head (GQA): kv head = head / group_size
    int head_dim;       // the call's head dim, <= the kernel's: columns beyond it are zero-filled, never written
    int causal_offset;  // seqlen_k - seqlen_q: a causal query i attends key j iff j <= i + causal_offset
    // softmax_scale · log2(e), as scores go through exp2. Never 0: the entry point substitutes a tiny
    // positive scale, which gives the same uniform softmax, so that a masked score stays -inf.
    float scale_log2;
    // softmax_scale < 0: the row maximum of scale·s is then scale·min(s), and masked scores are +inf.
    int flip_sign;
    // |softmax_scale| itself (0 included): lse = max·|scale| + ln(sum), rounded as the backward rounds.
    float abs_scale;
};

enum class Elem { F16, BF16 };

}  // namespace fa4j::cuda::fa2
