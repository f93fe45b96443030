// TMA descriptors of the forward's q, k and v (host side, tensor_map.cu). Dense tensors are described as
// 4-D (head_dim, seqlen, heads, batch); varlen ones, packed [tokens, heads, head_dim], as one batch entry
// of all tokens (batch multiplier 0): a sequence's tiles are addressed by offsetting the row coordinate
// by its first packed row, and rows past the end of the packed tensor read as zeros.
#pragma once

#include <cuda.h>

#include "backends/cuda/kernels/common/attention_params.hpp"

namespace fa4j::cuda::sm90 {

// The descriptors and, per tensor, the factor its head and batch coordinates are multiplied by: 0 where
// a dimension is broadcast (stride 0, described as extent 1) or, for the batch of varlen tensors, packed.
struct ForwardTensorMaps {
    CUtensorMap q, k, v;
    int q_head_mul, q_batch_mul;
    int k_head_mul, k_batch_mul;
    int v_head_mul, v_batch_mul;
};

// Describes q in boxes of box_m rows and k, v in boxes of box_n rows (64 columns each, 128-byte swizzle).
// False when TMA cannot describe the tensors (strides not multiples of 16 bytes, or beyond 2^40 bytes).
bool describe_forward_tensors(const kernels::ForwardParams& p, int box_m, int box_n, ForwardTensorMaps& maps);

// Whether describe_forward_tensors succeeds for these tensors (for any tile shape).
bool tma_describable(const kernels::ForwardParams& p);

// Rows of the tensors the descriptors cover: the sequence length (dense) or the packed total (varlen).
inline int64_t described_rows_q(const kernels::AttentionParams& p) {
    return p.seqlens.varlen() ? p.seqlens.total_q : p.seqlen_q;
}
inline int64_t described_rows_k(const kernels::AttentionParams& p) {
    return p.seqlens.varlen() ? p.seqlens.total_k : p.seqlen_k;
}

}  // namespace fa4j::cuda::sm90
