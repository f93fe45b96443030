// What the FlashAttention-2 backward kernels receive: plain pointers and element strides (no CUDA types,
// so the entry point can fill it in without seeing device code), and the entry points of the kernel
// instantiations, one translation unit per head-dim group (fa2_backward_hdim*.cu).
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace fa4j::cuda::v1::fa2bwd {

// One [batch, seq, head, head_dim] tensor: data points at element (0,0,0,0); head_dim is contiguous.
struct SeqPtr {
    void* data;
    int64_t batch_stride;
    int64_t seq_stride;
    int64_t head_stride;
};

struct Params {
    SeqPtr q, k, v, out, dout;  // inputs (16-bit dtype)
    SeqPtr dq, dk, dv;          // outputs (same dtype), written, never read
    const float* lse;           // [batch, heads_q, seqlen_q], natural log
    int64_t lse_batch_stride, lse_head_stride, lse_seq_stride;

    // Workspace (see attention_backward_cuda.cu), all [batch, heads_q, seqlen_q_pad(, head_dim_pad)]:
    float* dq_accum;  // fp32 dQ / scale, accumulated by the main kernel, zeroed by the preprocessing kernel;
                      // its rows hold their 16-byte chunks permuted (see dq_accum_chunk in the kernels)
    float* lse_rows;  // lse; +inf for rows that attend nothing and for padding rows (so P = 0)
    float* delta;     // D = rowsum(dO ∘ O); 0 for padding rows

    int batch, seqlen_q, seqlen_k, heads_q, heads_kv, group, head_dim;
    int seqlen_q_pad;  // seqlen_q rounded up to the query tile (the workspace's row count)
    float scale;       // softmax scale
    // Every 16-bit tensor's base address is 16-byte aligned and its strides are multiples of 8 elements,
    // so tiles move as 16-byte vectors (cp.async); otherwise the kernels fall back to 2-byte accesses.
    bool vec16;
    // Each key tile's CTA starts its walk over the query tiles at a different tile (a rotation), so that
    // the CTAs of one head do not all add to the same dQ rows at once. Set by the launcher.
    bool stagger;
};

// The workspace's rows per (batch, head) are seqlen_q rounded up to this, a multiple of every query tile
// the main kernel uses, so the kernel reads and accumulates whole tiles without bounds checks.
constexpr int kRowPadding = 128;

// Runs the three kernels (preprocess, main, dQ conversion) on `stream` with the kernels for padded head
// dim kD (p.head_dim <= kD). Defined in fa2_backward_hdim{64,128}.cu, one translation unit per head dim
// (they compile in parallel), each of which picks its tile shape.
template <int kD>
void run_backward(const Params& p, bool bf16, bool causal, cudaStream_t stream);

template <>
void run_backward<64>(const Params&, bool, bool, cudaStream_t);
template <>
void run_backward<128>(const Params&, bool, bool, cudaStream_t);

}  // namespace fa4j::cuda::v1::fa2bwd
