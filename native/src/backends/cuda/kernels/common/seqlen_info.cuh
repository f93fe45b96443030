// Where one sequence of a call lives and how long it is: dense batches (every sequence seqlen_q x
// seqlen_k at batch_stride apart) and variable-length ones (cu_seqlens_q/k, seqused_k), written once for
// every kernel. Varlen metadata is device memory the host never read: whatever it says, the result
// stays inside the packed tensors and within the maximum lengths that sized the grid, and a sequence
// whose metadata had to be clamped raises the call's metadata_error flag.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backends/cuda/kernels/common/attention_params.hpp"

namespace fa4j::cuda::kernels {

struct SeqlenInfo {
    int64_t q_row0 = 0;  // first packed row of the sequence (0 for dense batches)
    int64_t k_row0 = 0;
    int seqlen_q = 0;
    int seqlen_k = 0;   // keys used (seqused_k when given)
    bool clamped = false;

    // Row r of this sequence's query rows: element offset of (batch b, row r, head h) is
    // b·batch_stride + (q_row0 + r)·row_stride + h·head_stride for every RowTensor of queries.
    __device__ __forceinline__ static SeqlenInfo of(const AttentionParams& p, int b) {
        SeqlenInfo s;
        if (!p.seqlens.varlen()) {
            s.seqlen_q = p.seqlen_q;
            s.seqlen_k = p.seqlen_k;
            return s;
        }
        s.q_row0 = packed_range(p.seqlens.cu_seqlens_q, b, p.seqlens.total_q, p.seqlen_q, s.seqlen_q, s.clamped);
        s.k_row0 = packed_range(p.seqlens.cu_seqlens_k, b, p.seqlens.total_k, p.seqlen_k, s.seqlen_k, s.clamped);
        if (p.seqlens.seqused_k != nullptr) {
            const int used = p.seqlens.seqused_k[b];
            if (used < 0 || used > s.seqlen_k) s.clamped = true;
            s.seqlen_k = used < 0 ? 0 : used < s.seqlen_k ? used : s.seqlen_k;
        }
        return s;
    }

    // The window of this sequence (bottom-right aligned per sequence, as flash_attn_varlen_func).
    __device__ __forceinline__ ScoreWindow window(const ScoreParams& score) const {
        return {seqlen_q, seqlen_k, score.window_left, score.window_right};
    }

    // Raises the call's flag when this sequence's metadata was clamped; one thread per CTA calls it.
    __device__ __forceinline__ void report(const AttentionParams& p) const {
        // A plain store: the flag is mapped host memory (metadata_errors.hpp), and every writer writes 1.
        if (clamped && p.seqlens.metadata_error != nullptr) *static_cast<volatile int*>(p.seqlens.metadata_error) = 1;
    }

private:
    // Rows [cu[b], cu[b+1]) clamped to [0, total) and to at most max_len rows; `clamped` when that changed them.
    __device__ __forceinline__ static int64_t packed_range(const int32_t* cu, int b, int64_t total, int max_len, int& len,
                                                           bool& clamped) {
        const int64_t lo = cu[b], hi = cu[b + 1];
        const int64_t begin = lo < 0 ? 0 : lo > total ? total : lo;
        int64_t end = hi < begin ? begin : hi > total ? total : hi;
        if (end - begin > max_len) end = begin + max_len;
        if (begin != lo || end != hi) clamped = true;
        len = static_cast<int>(end - begin);
        return begin;
    }
};

}  // namespace fa4j::cuda::kernels
