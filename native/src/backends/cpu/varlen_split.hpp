// Variable-length batches on the CPU: the sequence lengths are host memory (validation has read and
// checked them), so a varlen call is a sequence of dense calls, one per sequence, on views of the packed
// tensors. The dense kernels parallelise inside each call.
#pragma once

#include <cstdint>
#include <cstring>

#include "core/attention_problem.hpp"

namespace fa4j::cpu {
namespace varlen_detail {

inline SeqTensor rows_from(const SeqTensor& t, int64_t first_row, DType dtype) {
    auto* base = static_cast<char*>(t.data) + first_row * t.seq_stride * dtype_size(dtype);
    return SeqTensor{base, 0, t.seq_stride, t.head_stride};
}

inline LseTensor rows_from(const LseTensor& t, int64_t first_row) {
    return LseTensor{t.data + first_row * t.seq_stride, 0, t.head_stride, t.seq_stride};
}

struct Sequence {
    int64_t q0, nq, k0, nk, k_len;  // first rows, used lengths; k_len: the keys the sequence owns
};

inline Sequence sequence(const VarlenInfo& v, int64_t b) {
    const int64_t q0 = v.cu_seqlens_q[b], k0 = v.cu_seqlens_k[b];
    const int64_t k_len = v.cu_seqlens_k[b + 1] - k0;
    return Sequence{q0, v.cu_seqlens_q[b + 1] - q0, k0, v.seqused_k != nullptr ? v.seqused_k[b] : k_len, k_len};
}

inline AttentionConfig dense_config(const AttentionConfig& config, const Sequence& s, int64_t b) {
    AttentionConfig dense = config;
    dense.shape.batch = 1;
    dense.shape.seqlen_q = s.nq;
    dense.shape.seqlen_k = s.nk;
    dense.varlen = VarlenInfo{};
    if (dense.features.alibi_slopes != nullptr) {
        dense.features.alibi_slopes += b * dense.features.alibi_batch_stride;
        dense.features.alibi_batch_stride = 0;
    }
    return dense;
}

// Keys a sequence owns but does not use (seqused_k) get zero gradients, as in flash-attn.
inline void zero_rows(const SeqTensor& t, int64_t first, int64_t count, int64_t heads, int64_t head_dim, DType dtype) {
    const int64_t bytes = head_dim * dtype_size(dtype);
    for (int64_t r = first; r < first + count; r++)
        for (int64_t h = 0; h < heads; h++)
            std::memset(static_cast<char*>(t.data) + (r * t.seq_stride + h * t.head_stride) * dtype_size(dtype), 0,
                        static_cast<size_t>(bytes));
}

}  // namespace varlen_detail

template <typename Dense>
void for_each_sequence(const ForwardProblem& p, Dense dense) {
    using namespace varlen_detail;
    const DType dt = p.config.dtype;
    for (int64_t b = 0; b < p.config.shape.batch; b++) {
        const Sequence s = sequence(p.config.varlen, b);
        dense(ForwardProblem{dense_config(p.config, s, b), rows_from(p.q, s.q0, dt), rows_from(p.k, s.k0, dt),
                             rows_from(p.v, s.k0, dt), rows_from(p.out, s.q0, dt), rows_from(p.lse, s.q0)});
    }
}

template <typename Dense>
void for_each_sequence(const BackwardProblem& p, Dense dense) {
    using namespace varlen_detail;
    const DType dt = p.config.dtype;
    const AttentionShape& shape = p.config.shape;
    for (int64_t b = 0; b < shape.batch; b++) {
        const Sequence s = sequence(p.config.varlen, b);
        dense(BackwardProblem{dense_config(p.config, s, b), rows_from(p.dout, s.q0, dt), rows_from(p.q, s.q0, dt),
                              rows_from(p.k, s.k0, dt), rows_from(p.v, s.k0, dt), rows_from(p.out, s.q0, dt),
                              rows_from(p.lse, s.q0), rows_from(p.dq, s.q0, dt), rows_from(p.dk, s.k0, dt),
                              rows_from(p.dv, s.k0, dt)});
        zero_rows(p.dk, s.k0 + s.nk, s.k_len - s.nk, shape.heads_kv, shape.head_dim, dt);
        zero_rows(p.dv, s.k0 + s.nk, s.k_len - s.nk, shape.heads_kv, shape.head_dim, dt);
    }
}

}  // namespace fa4j::cpu
