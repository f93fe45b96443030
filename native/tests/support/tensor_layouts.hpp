// The memory layouts the tests put attention tensors in. Kernels tend to be written for contiguous
// [batch, seq, heads, dim] tensors; each layout here breaks one assumption a kernel could silently make:
//   Contiguous       the baseline
//   HeadMajor        [batch, heads, seq, dim] storage: the sequence stride is smaller than the head stride
//   Padded           rows padded by 8 elements and batches by 24, still 16-byte aligned (the CUDA fast path)
//   PaddedUnaligned  as Padded at an odd element offset: no view is 16-byte aligned (kernels' fallbacks)
//   Packed           q, k, v as interleaved views into one [batch, seq, heads_q + 2 heads_kv, dim] buffer,
//                    as a fused qkv projection makes them ([batch, seq, 3, heads, dim] when heads_q = heads_kv)
//   BroadcastKv      k and v with batch stride 0: every batch reads the same storage
#pragma once

#include <cstdint>
#include <utility>

#include "support/strided_tensor.hpp"
#include "support/test_dtype.hpp"

namespace fa4j_test {

enum class Layout { Contiguous, HeadMajor, Padded, PaddedUnaligned, Packed, BroadcastKv };

inline const char* layout_name(Layout l) {
    switch (l) {
        case Layout::Contiguous: return "contiguous";
        case Layout::HeadMajor: return "head-major";
        case Layout::Padded: return "padded";
        case Layout::PaddedUnaligned: return "padded-unaligned";
        case Layout::Packed: return "packed";
        case Layout::BroadcastKv: return "broadcast-kv";
    }
    return "?";
}

inline View seq_view(BufferPtr buffer, int64_t B, int64_t S, int64_t H, int64_t D, const int64_t (&strides)[4],
                     int64_t offset) {
    View v;
    v.buffer = std::move(buffer);
    const int64_t shape[4] = {B, S, H, D};
    for (int i = 0; i < 4; ++i) {
        v.shape[i] = shape[i];
        v.strides[i] = strides[i];
    }
    v.offset = offset;
    return v;
}

// A [B, S, H, D] tensor in a buffer of its own (Packed is make_packed's; here it means Contiguous).
inline View make_seq(Dt dt, Layout layout, int64_t B, int64_t S, int64_t H, int64_t D) {
    switch (layout) {
        case Layout::HeadMajor:
            return seq_view(new_buffer(dt, B * H * S * D), B, S, H, D, {H * S * D, D, S * D, 1}, 0);
        case Layout::Padded:
        case Layout::PaddedUnaligned: {
            // Offsets of 8 and 5 elements: the first keeps 16-byte alignment for 16-bit types, the second
            // breaks it (element alignment, which the ABI requires, holds in both).
            const int64_t row = D + 8, batch = S * H * row + 24;
            const int64_t offset = layout == Layout::Padded ? 8 : 5;
            return seq_view(new_buffer(dt, B * batch + offset), B, S, H, D, {batch, H * row, row, 1}, offset);
        }
        case Layout::BroadcastKv:
            return seq_view(new_buffer(dt, S * H * D), B, S, H, D, {0, H * D, D, 1}, 0);
        default:
            return seq_view(new_buffer(dt, B * S * H * D), B, S, H, D, {S * H * D, H * D, D, 1}, 0);
    }
}

// q, k and v (or dq, dk and dv) as views into one [B, S, Hq + 2 Hkv, D] buffer; needs Nq == Nk.
inline void make_packed(Dt dt, int64_t B, int64_t S, int64_t Hq, int64_t Hkv, int64_t D, View& q, View& k, View& v) {
    const int64_t Ht = Hq + 2 * Hkv;
    const BufferPtr buffer = new_buffer(dt, B * S * Ht * D);
    const int64_t strides[4] = {S * Ht * D, Ht * D, D, 1};
    q = seq_view(buffer, B, S, Hq, D, strides, 0);
    k = seq_view(buffer, B, S, Hkv, D, strides, Hq * D);
    v = seq_view(buffer, B, S, Hkv, D, strides, (Hq + Hkv) * D);
}

// lse [B, H, N] (float32) in the layout that goes with the case's: stored [B, N, H] for HeadMajor,
// with padded rows and batches for Padded, PaddedUnaligned and Packed.
inline View make_lse(Layout layout, int64_t B, int64_t H, int64_t N) {
    View v;
    v.ndim = 3;
    v.shape[0] = B;
    v.shape[1] = H;
    v.shape[2] = N;
    if (layout == Layout::HeadMajor) {
        v.buffer = new_buffer(Dt::F32, B * N * H);
        v.strides[0] = N * H;
        v.strides[1] = 1;
        v.strides[2] = H;
    } else if (layout == Layout::Padded || layout == Layout::PaddedUnaligned || layout == Layout::Packed) {
        v.buffer = new_buffer(Dt::F32, B * (H * (N + 3) + 5));
        v.strides[0] = H * (N + 3) + 5;
        v.strides[1] = N + 3;
        v.strides[2] = 1;
    } else {
        v.buffer = new_buffer(Dt::F32, B * H * N);
        v.strides[0] = H * N;
        v.strides[1] = N;
        v.strides[2] = 1;
    }
    return v;
}

}  // namespace fa4j_test
