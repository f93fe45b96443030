// KV-cache attention on CUDA (FA4J_ATTENTION_DECODE; flashattn4j.h states the contract, core/kv_cache.hpp
// where a position lives, core/decode_split.hpp how keys are split). Two kernels, queued in this order:
//  - append: k_new, v_new into the caches at positions L_b + t, one block per (sequence, token, kv head);
//  - attention: one block per (state, kv head and row chunk, sequence). A state is a split of the shared
//    prefix's keys or of the sequence's own keys (Flash-Decoding); a block computes the rows of up to
//    kDecodeRows queries of one kv head's group (GQA packing: the group's query heads share each key and
//    value row it loads) over its keys, with the online softmax, into a float32 partial result, or straight
//    into out and lse when there is one state. The merge kernel (merge_kernel.cuh) combines partial results.
// Decode is memory-bound (a few query rows per key): scores and P·V run on CUDA cores in float32, from
// key and value tiles staged in shared memory as float.
//
// Metadata is on the device and never read on the host: cache lengths outside [0, capacity], appends past
// the capacity and block-table entries outside [0, num_pages) are clamped or skipped, never followed, and
// raise the device's metadata-error flag (reported by the next synchronising call).
#pragma once

#include <cstdint>

#include "backends/cuda/kernels/common/attention_params.hpp"
#include "backends/cuda/kernels/common/score_transform.cuh"
#include "backends/cuda/kernels/decode/float_values.cuh"
#include "core/decode_split.hpp"
#include "core/kv_cache.hpp"
#include "core/score_mask.hpp"

namespace fa4j::cuda::kernels::decode {

constexpr int kDecodeRows = 16;     // query rows (query x head of a group) per block
constexpr int kDecodeKeys = 16;     // keys per shared-memory tile
constexpr int kDecodeThreads = 128;
constexpr int64_t kSplitGranularity = 64;  // keys: a split's length is a multiple of this

// A [batch, seq, head, head_dim] tensor (prefix: [prefix_len, head, head_dim] as batch stride 0).
struct DecodeTensor {
    const void* data;
    int64_t batch, seq, head;  // strides in elements; head_dim contiguous
};

struct DecodeParams {
    FloatDtype dtype;  // q, the caches, k_new, v_new, the prefix
    int batch, seqlen_q, heads_q, heads_kv, group_size, head_dim;
    DecodeTensor q;
    KvCacheLayout cache;  // block_table on the device
    CacheTensor k_cache, v_cache;
    const int32_t* cache_seqlens;  // [batch], on the device
    DecodeTensor k_new, v_new;     // data null: no append
    int seqlen_new;
    DecodeTensor prefix_k, prefix_v;  // data null: no prefix
    int64_t prefix_len;
    float softmax_scale;
    ScoreParams score;  // window (causal folded in), softcap, ALiBi
    int prefix_splits, own_splits;   // states: prefix splits first, then own splits
    int row_chunks;                  // ceil(seqlen_q * group_size / kDecodeRows)
    // One state: out and lse directly. Several: float32 partial results, state-major:
    // part_out [state][batch][heads_q][seqlen_q][head_dim], part_lse [state][batch][heads_q][seqlen_q].
    float* part_out;
    float* part_lse;
    void* out;
    FloatDtype out_dtype;
    int64_t out_batch, out_seq, out_head;
    float* lse;  // null: not written
    int64_t lse_batch, lse_head, lse_seq;
    int* metadata_error;

    FA4J_HOST_DEVICE int states() const { return prefix_splits + own_splits; }
    FA4J_HOST_DEVICE bool direct() const { return states() == 1; }
};

__device__ __forceinline__ void raise_metadata_error(int* flag) {
    if (flag != nullptr) atomicExch(flag, 1);
}

// Sequence b's cached positions before the call, clamped to [0, capacity - seqlen_new] (flagged if not).
__device__ __forceinline__ int64_t cached_length(const DecodeParams& p, int64_t b) {
    const int64_t length = p.cache_seqlens[b];
    const int64_t most = p.cache.capacity - p.seqlen_new;
    if (length < 0 || length > most) {
        raise_metadata_error(p.metadata_error);
        return length < 0 ? 0 : (most < 0 ? 0 : most);
    }
    return length;
}

// The cache page of (b, position), or -1 for a table entry outside [0, num_pages) (flagged).
__device__ __forceinline__ int64_t checked_page(const DecodeParams& p, int64_t b, int64_t position) {
    const int64_t page = p.cache.page_of(b, position);
    if (page < 0 || page >= p.cache.num_pages) {
        raise_metadata_error(p.metadata_error);
        return -1;
    }
    return page;
}

// ---- append ----------------------------------------------------------------------------------------

// Block (b·seqlen_new + t)·heads_kv + h writes k_new[b, t, h] and v_new[b, t, h] at position L_b + t.
__global__ void __launch_bounds__(kDecodeThreads) decode_append_kernel(const __grid_constant__ DecodeParams p) {
    const int64_t row = blockIdx.x;
    const int64_t h = row % p.heads_kv, t = row / p.heads_kv % p.seqlen_new, b = row / p.heads_kv / p.seqlen_new;
    const int64_t length = p.cache_seqlens[b];
    const int64_t position = length + t;
    // A length outside [0, capacity - seqlen_new]: the sequence's whole append is skipped (and reported), as
    // its attention clamps the length (cached_length).
    if (length < 0 || length > p.cache.capacity - p.seqlen_new) {
        if (threadIdx.x == 0 && t == 0) raise_metadata_error(p.metadata_error);
        return;
    }
    const int64_t page = p.cache.page_of(b, position);
    if (page < 0 || page >= p.cache.num_pages) {
        if (threadIdx.x == 0) raise_metadata_error(p.metadata_error);
        return;
    }
    const int64_t slot = position % p.cache.page_size;
    const int64_t k_to = page * p.k_cache.page_stride + slot * p.k_cache.slot_stride + h * p.k_cache.head_stride;
    const int64_t v_to = page * p.v_cache.page_stride + slot * p.v_cache.slot_stride + h * p.v_cache.head_stride;
    const int64_t k_from = b * p.k_new.batch + t * p.k_new.seq + h * p.k_new.head;
    const int64_t v_from = b * p.v_new.batch + t * p.v_new.seq + h * p.v_new.head;
    for (int c = threadIdx.x; c < p.head_dim; c += blockDim.x) {
        copy_element(p.k_cache.data, p.k_new.data, p.dtype, k_to + c, k_from + c);
        copy_element(p.v_cache.data, p.v_new.data, p.dtype, v_to + c, v_from + c);
    }
}

// ---- attention -------------------------------------------------------------------------------------

// Shared memory of the attention kernel for head dim d: q rows, key and value tiles, the output rows
// (all float), then the tile's scores and each row's rescale factor.
constexpr int64_t decode_smem_bytes(int64_t head_dim) {
    return 4 * (head_dim * (2 * kDecodeRows + 2 * kDecodeKeys) + kDecodeRows * kDecodeKeys + kDecodeRows);
}

// blockIdx.x: state; blockIdx.y: kv head x row chunk; blockIdx.z: sequence.
__global__ void __launch_bounds__(kDecodeThreads) decode_attention_kernel(const __grid_constant__ DecodeParams p) {
    extern __shared__ float smem[];
    const int d = p.head_dim;
    float* q_tile = smem;                        // [kDecodeRows][d]
    float* o_tile = q_tile + kDecodeRows * d;    // [kDecodeRows][d]
    float* k_tile = o_tile + kDecodeRows * d;    // [kDecodeKeys][d]
    float* v_tile = k_tile + kDecodeKeys * d;    // [kDecodeKeys][d]
    float* s_tile = v_tile + kDecodeKeys * d;    // [kDecodeRows][kDecodeKeys]
    float* rescale = s_tile + kDecodeRows * kDecodeKeys;  // [kDecodeRows]
    __shared__ float row_max[kDecodeRows], row_sum[kDecodeRows];
    __shared__ int64_t tile_page[kDecodeKeys];   // own keys: the page of each key of the tile, -1: skipped

    const int state = blockIdx.x;
    const int hk = blockIdx.y % p.heads_kv, chunk = blockIdx.y / p.heads_kv;
    const int64_t b = blockIdx.z;
    const bool prefix = state < p.prefix_splits;
    const int rows_total = p.seqlen_q * p.group_size;
    const int r0 = chunk * kDecodeRows;
    const int rows = rows_total - r0 < kDecodeRows ? rows_total - r0 : kDecodeRows;
    const int tid = threadIdx.x;

    const int64_t length = cached_length(p, b);
    const int64_t own_keys = length + p.seqlen_new;
    const ScoreWindow window{p.seqlen_q, own_keys, p.score.window_left, p.score.window_right};
    // This state's keys: a split of the prefix, or of the keys some row of the sequence may attend.
    const IndexRange all = prefix ? IndexRange{0, p.prefix_len} : window.keys_of_rows(0, p.seqlen_q);
    const IndexRange keys = split_keys(all, prefix ? p.prefix_splits : p.own_splits, prefix ? state : state - p.prefix_splits,
                                       kSplitGranularity);

    // Row r of the chunk: query i = (r0 + r) / group, query head hk·group + (r0 + r) % group.
    for (int e = tid; e < kDecodeRows * d; e += blockDim.x) {
        const int r = e / d, c = e % d;
        float x = 0.f;
        if (r < rows) {
            const int64_t i = (r0 + r) / p.group_size, h = int64_t{hk} * p.group_size + (r0 + r) % p.group_size;
            x = load_float(p.q.data, p.dtype, b * p.q.batch + i * p.q.seq + h * p.q.head + c);
        }
        q_tile[e] = x;
        o_tile[e] = 0.f;
    }
    if (tid < kDecodeRows) {
        row_max[tid] = -INFINITY;
        row_sum[tid] = 0.f;
    }
    // Prefix keys are never masked; own keys by the window (causal folded in).
    const float inv_softcap = p.score.softcap > 0.f ? 1.f / p.score.softcap : 0.f;
    __syncthreads();

    for (int64_t j0 = keys.begin; j0 < keys.end; j0 += kDecodeKeys) {
        const int count = keys.end - j0 < kDecodeKeys ? static_cast<int>(keys.end - j0) : kDecodeKeys;
        if (!prefix && tid < kDecodeKeys) tile_page[tid] = tid < count ? checked_page(p, b, j0 + tid) : -1;
        __syncthreads();
        // Key and value rows of the tile, as float (a skipped page's rows are zeros, and masked below).
        for (int e = tid; e < kDecodeKeys * d; e += blockDim.x) {
            const int j = e / d, c = e % d;
            float kx = 0.f, vx = 0.f;
            if (j < count) {
                const int64_t key = j0 + j;
                if (prefix) {
                    kx = load_float(p.prefix_k.data, p.dtype, key * p.prefix_k.seq + hk * p.prefix_k.head + c);
                    vx = load_float(p.prefix_v.data, p.dtype, key * p.prefix_v.seq + hk * p.prefix_v.head + c);
                } else if (tile_page[j] >= 0) {
                    const int64_t page = tile_page[j], slot = key % p.cache.page_size;
                    kx = load_float(p.k_cache.data, p.dtype,
                                    page * p.k_cache.page_stride + slot * p.k_cache.slot_stride + hk * p.k_cache.head_stride + c);
                    vx = load_float(p.v_cache.data, p.dtype,
                                    page * p.v_cache.page_stride + slot * p.v_cache.slot_stride + hk * p.v_cache.head_stride + c);
                }
            }
            k_tile[e] = kx;
            v_tile[e] = vx;
        }
        __syncthreads();
        // Scores: scale, softcap, ALiBi, then the window (flashattn4j.h's order); masked: -inf.
        for (int e = tid; e < kDecodeRows * kDecodeKeys; e += blockDim.x) {
            const int r = e / kDecodeKeys, j = e % kDecodeKeys;
            float s = -INFINITY;
            const int64_t key = j0 + j;
            const int64_t i = (r0 + r) / p.group_size;
            const bool visible = r < rows && j < count && (prefix || (tile_page[j] >= 0 && window.visible(i, key)));
            if (visible) {
                float dot = 0.f;
                for (int c = 0; c < d; ++c) dot = fmaf(q_tile[r * d + c], k_tile[j * d + c], dot);
                // The shared transform (common/score_transform.cuh); prefix keys carry no ALiBi (refused with
                // a prefix).
                const int64_t h = int64_t{hk} * p.group_size + (r0 + r) % p.group_size;
                const float slope = !prefix && p.score.alibi_slopes != nullptr
                                        ? p.score.alibi_slopes[b * p.score.alibi_batch_stride + h * p.score.alibi_head_stride]
                                        : 0.f;
                const ScoreTransform transform{p.softmax_scale, p.score.softcap, inv_softcap, slope, own_keys - p.seqlen_q};
                s = transform(dot, i, key);
            }
            s_tile[e] = s;
        }
        __syncthreads();
        // Online softmax, a thread per row: the new maximum, P of the tile, the running sum.
        if (tid < kDecodeRows) {
            float* srow = s_tile + tid * kDecodeKeys;
            float m = row_max[tid];
            for (int j = 0; j < kDecodeKeys; ++j) m = srow[j] > m ? srow[j] : m;
            float correction = 1.f, sum = 0.f;
            if (m == -INFINITY) {
                for (int j = 0; j < kDecodeKeys; ++j) srow[j] = 0.f;
            } else {
                correction = row_max[tid] == -INFINITY ? 0.f : expf(row_max[tid] - m);
                for (int j = 0; j < kDecodeKeys; ++j) {
                    srow[j] = expf(srow[j] - m);  // exp(-inf) = 0 for masked keys
                    sum += srow[j];
                }
            }
            row_sum[tid] = row_sum[tid] * correction + sum;
            row_max[tid] = m;
            rescale[tid] = correction;
        }
        __syncthreads();
        // O = O·correction + P·V.
        for (int e = tid; e < kDecodeRows * d; e += blockDim.x) {
            const int r = e / d, c = e % d;
            float acc = o_tile[e] * rescale[r];
            for (int j = 0; j < kDecodeKeys; ++j) acc = fmaf(s_tile[r * kDecodeKeys + j], v_tile[j * d + c], acc);
            o_tile[e] = acc;
        }
        __syncthreads();
    }

    // The rows' results: out = O / l, lse = m + ln l; a row that attended nothing: 0 and -inf.
    for (int e = tid; e < rows * d; e += blockDim.x) {
        const int r = e / d, c = e % d;
        const int64_t i = (r0 + r) / p.group_size, h = int64_t{hk} * p.group_size + (r0 + r) % p.group_size;
        const float l = row_sum[r];
        const float value = l > 0.f ? o_tile[e] / l : 0.f;
        if (p.direct()) {
            store_float(p.out, p.out_dtype, b * p.out_batch + i * p.out_seq + h * p.out_head + c, value);
        } else {
            const int64_t index = ((int64_t{state} * p.batch + b) * p.heads_q + h) * p.seqlen_q + i;
            p.part_out[index * d + c] = value;
        }
    }
    if (tid < rows) {
        const int r = tid;
        const int64_t i = (r0 + r) / p.group_size, h = int64_t{hk} * p.group_size + (r0 + r) % p.group_size;
        const float l = row_sum[r];
        float lse = l > 0.f ? row_max[r] + logf(l) : -INFINITY;
        lse = lse > 3.402823466e38f ? 3.402823466e38f : lse;
        if (p.direct()) {
            if (p.lse != nullptr) p.lse[b * p.lse_batch + h * p.lse_head + i * p.lse_seq] = lse;
        } else {
            p.part_lse[((int64_t{state} * p.batch + b) * p.heads_q + h) * p.seqlen_q + i] = lse;
        }
    }
}

}  // namespace fa4j::cuda::kernels::decode
