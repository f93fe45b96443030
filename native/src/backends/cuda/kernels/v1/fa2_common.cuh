// Primitives shared by the FlashAttention-2 kernels (forward now; backward may reuse them): the
// 16-byte vector that every copy and every shared-memory access is made of, the XOR swizzle of
// shared-memory tiles, thin wrappers over the sm_80 instructions the kernels are built from (cp.async,
// ldmatrix, mma.sync m16n8k16, ex2.approx), float → 16-bit packing, and quad reductions for the
// online softmax. Everything here runs unchanged on sm_80 and sm_90a.
//
// Fragment layouts, in the PTX ISA's terms, for mma.sync.m16n8k16 with lane = 4·g + t (g = lane/4,
// t = lane%4):
//   A (16×16, row-major)  a0: (g, 2t..2t+1)  a1: (g+8, 2t..)  a2: (g, 2t+8..)  a3: (g+8, 2t+8..)
//   B (16×8, k×n)         b0: (k = 2t..2t+1, n = g)           b1: (k = 2t+8.., n = g)
//   C (16×8, fp32)        c0,c1: (g, 2t..2t+1)                c2,c3: (g+8, 2t..2t+1)
// so the C fragments of two neighbouring n8 tiles are exactly the A fragment of one k16 step: that is
// what lets P stay in registers between the two matrix products of attention.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "core/softmax_scale.hpp"

namespace fa4j::cuda::v1::fa2 {

constexpr int kWarpSize = 32;
// Every global↔shared copy moves 16 bytes (cp.async's widest), every ldmatrix row is 16 bytes, and the
// swizzle permutes 16-byte chunks: 8 elements of a 16-bit type.
constexpr int kChunkBytes = 16;
constexpr int kChunkElems = 8;
// The swizzle permutes chunks within groups of 8 (128 bytes = all 32 banks), so a tile row must hold
// at least 8 chunks: head dims below 64 run on the 64-wide kernels with the extra columns zero-filled.
constexpr int kSwizzleChunks = 8;

__host__ __device__ constexpr int ceil_div(int a, int b) { return (a + b - 1) / b; }

// ---- shared-memory tiles --------------------------------------------------------------------------
//
// A tile of kRows × kCols 16-bit elements is stored row-major, but chunk c of row r sits at chunk
// position c ^ (r % 8). ldmatrix reads 8 consecutive rows at one logical chunk per phase and cp.async
// writes 8 consecutive chunks of one row per phase; with the XOR both land on 8 distinct 16-byte bank
// groups, so neither the loads nor the stores conflict. Rows are 128 or 256 bytes, so without the
// XOR every row of an ldmatrix phase would hit the same four banks (an 8-way conflict).

template <int kCols>
struct SwizzledTile {
    static_assert(kCols % (kChunkElems * kSwizzleChunks) == 0, "tile rows must hold a multiple of 8 chunks");
    static constexpr int kChunksPerRow = kCols / kChunkElems;

    // Byte offset of logical chunk `chunk` of row `row`.
    __device__ __forceinline__ static uint32_t offset(int row, int chunk) {
        return static_cast<uint32_t>((row * kChunksPerRow + (chunk ^ (row % kSwizzleChunks))) * kChunkBytes);
    }
};

// The byte offsets at which one lane points ldmatrix into a swizzled tile, for the pairs of chunks
// (2j, 2j+1) of its row, j = 0, 1, ...: the lane addresses chunk 2j + bit, where bit picks the matrix.
// Because the XOR only touches the low three chunk bits, only four distinct lane offsets exist (j % 4);
// the rest is a compile-time immediate, and so is moving by a multiple of 8 rows. Keeping the four in
// registers, instead of recomputing the XOR for each of the dozens of ldmatrix per tile, keeps the
// address arithmetic out of the inner loops and off the register budget.
template <int kCols>
struct LdmatrixLane {
    static constexpr int kRowBytes = kCols * 2;
    uint32_t offset[4];

    __device__ __forceinline__ LdmatrixLane(int row, int bit) {
#pragma unroll
        for (int j = 0; j < 4; ++j)
            offset[j] = static_cast<uint32_t>(row * kRowBytes + ((2 * j + bit) ^ (row % kSwizzleChunks)) * kChunkBytes);
    }
    // Offset of chunk pair j (a compile-time constant after unrolling), `rows` rows further down
    // (a multiple of 8, so the swizzle pattern is the same).
    __device__ __forceinline__ uint32_t at(int j, int rows = 0) const {
        return offset[j % 4] + static_cast<uint32_t>((j / 4) * kSwizzleChunks * kChunkBytes + rows * kRowBytes);
    }
};

__device__ __forceinline__ uint32_t smem_address(const void* pointer) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(pointer));
}

// ---- asynchronous copies --------------------------------------------------------------------------

// Copies 16 bytes global → shared without passing through registers. When !valid nothing is read
// (src-size 0) and the destination is zero-filled: this is how ragged tile edges become zeros, so
// out-of-range keys give finite scores (masked afterwards) and out-of-range values contribute 0·0.
// .cg: cache in L2 only; K and V tiles are re-read by other CTAs through L2, never by this one.
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool valid) {
    const int src_bytes = valid ? kChunkBytes : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

// Waits until at most `kPending` committed groups of this thread are still in flight.
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// ---- shared → registers ---------------------------------------------------------------------------

// Four 8×8 matrices of 16-bit elements; lanes 8i..8i+7 give the row addresses of matrix i, and lane
// 4g+t receives (row g, columns 2t, 2t+1) of matrix i in r[i].
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t address) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address));
}

// As ldmatrix_x4, each matrix transposed: lane 4g+t receives (rows 2t, 2t+1, column g).
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t address) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address));
}

// ---- tensor-core matrix product, 16-bit inputs, fp32 accumulation -----------------------------------

template <class T>
struct Mma;

template <>
struct Mma<__half> {
    // c += a·b for one m16n8k16 tile.
    __device__ __forceinline__ static void run(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
            "{%0, %1, %2, %3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    // Two floats → one register of two halves, round to nearest even (lo in the low 16 bits).
    __device__ __forceinline__ static uint32_t pack(float lo, float hi) {
        uint32_t r;
        asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
        return r;
    }
};

template <>
struct Mma<__nv_bfloat16> {
    __device__ __forceinline__ static void run(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
            "{%0, %1, %2, %3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    __device__ __forceinline__ static uint32_t pack(float lo, float hi) {
        uint32_t r;
        asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
        return r;
    }
};

// ---- softmax arithmetic ---------------------------------------------------------------------------

// 2^x on the special-function unit (one MUFU.EX2; relative error ~2^-22). exp2(-inf) = 0.
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

// The four lanes 4g..4g+3 of a quad hold the columns of the same two accumulator rows; these reduce
// across them, leaving the result in all four.
__device__ __forceinline__ float quad_max(float x) {
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
    return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}

__device__ __forceinline__ float quad_sum(float x) {
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// ---- online softmax of the forward kernels ---------------------------------------------------------
//
// Each query row keeps its running maximum as a raw score r = ±s (the sign of the scale, so that the
// largest r carries the most weight) and exponentiates 2^((s - s_max)·scale_log2): the maximum gets
// exactly 1 and nothing exceeds it, whatever the scale. FlashAttention's 2^(fma(s, scale_log2, -m)),
// m = fl(r·|scale_log2|), saves the FADD but is exact only relative to the rounded m: once |m| passes
// about 2^24 (a scale of 1e10, inputs of 1e4) every probability of a row carries a factor 2^(r·c - m)
// that overflows or flushes to 0, and out came out as NaN. Measured on an H200 against the fused form:
// the Hopper kernel 1-3% slower (about the noise of the measurement: its softmax waits on the exp
// unit), the FlashAttention-2 kernel 3% faster at d = 64 and 5-9% slower at d = 128.

// What a tile subtracts from s: the score of the row maximum, or 0 for a row that has seen only masked
// keys (its scores are all masked: exp2(-inf) = 0, while subtracting -inf would give NaN).
__device__ __forceinline__ float softmax_reference(float r, bool flip) { return r == -INFINITY ? 0.f : (flip ? -r : r); }

__device__ __forceinline__ float softmax_probability(float s, float scale_log2, float reference) {
    return fast_exp2(__fmul_rn(s - reference, scale_log2));
}

// The factor that moves a row's accumulators from maximum r_old to r_new (c = |scale_log2|).
__device__ __forceinline__ float softmax_rescale(float r_old, float r_new, float c) {
    return r_old == -INFINITY ? 0.f : fast_exp2(__fmul_rn(r_old - r_new, c));  // nothing accumulated yet
}

// The row's logsumexp from its maximum r and probability sum l: r·|scale| rounded on its own, as the
// backward rounds scale·s when it recomputes P = exp(scale·s - lse), so that the row maximum gets
// exactly exp(-ln l) there (fa2_backward_kernel.cuh). -inf for a row that attends nothing (l = 0);
// saturated at ±FLT_MAX (reachable only beyond the documented input range).
__device__ __forceinline__ float row_logsumexp(float r, float l, float abs_scale) {
    if (!(l > 0.f)) return -INFINITY;
    const float lse = __fmul_rn(r, abs_scale) + log2f(l) * kLn2;
    constexpr float kMax = 3.402823466e38f;
    return lse > kMax ? kMax : lse < -kMax ? -kMax : lse;  // NaN (from NaN inputs) stays NaN
}

}  // namespace fa4j::cuda::v1::fa2
