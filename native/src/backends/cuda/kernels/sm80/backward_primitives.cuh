// What the SM80 backward kernels are built from beyond the shared sm_80 primitives (kernels/fa2_common.cuh:
// cp.async, ldmatrix, mma.sync, ex2): saturating conversion to the dtype, the sm_90 stores and reductions
// the kernels use where the hardware has them (stmatrix, vector atomics, bulk reduction), the swizzled
// shared-memory tiles and the warp-level product over them, and the dQ workspace's chunk permutation.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "backends/cuda/kernels/common/attention_params.hpp"
#include "backends/cuda/kernels/fa2_common.cuh"
#include "backends/cuda/kernels/sm80/backward_tiles.hpp"

// The backward's device code lives in sm80::bwd, apart from the names other sm80 kernels may define.
namespace fa4j::cuda::kernels::sm80::bwd {

// The shared sm_80 primitives (cp.async, ldmatrix, mma.sync, ex2), named in one place.
namespace prim = ::fa4j::cuda::fa2;

// ---- element types -------------------------------------------------------------------------------------
//
// pack rounds two floats to the dtype with .satfinite: a value beyond the dtype's range (infinities
// included) becomes its largest finite value, NaN stays NaN. Everything the backward rounds is a result
// whose exact value is finite: dS of float16 inputs can pass 65504 (float16 inputs of ~100 already give
// |dO·Vᵀ| beyond it), and so can dq, dk and dv; an infinity there turns into NaN in the next product. P is
// in [0, 1] and unaffected. Same cost as the plain conversion (fa2_common.cuh's Mma::pack, which the
// forward uses for P alone).

template <typename T>
struct Elem;

template <>
struct Elem<__nv_bfloat16> {
    static __device__ __forceinline__ float to_float(uint16_t u) { return __uint_as_float(uint32_t(u) << 16); }
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        uint32_t r;
        asm("cvt.rn.satfinite.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
        return r;
    }
};

template <>
struct Elem<__half> {
    static __device__ __forceinline__ float to_float(uint16_t u) { return __half2float(__ushort_as_half(u)); }
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        uint32_t r;
        asm("cvt.rn.satfinite.f16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
        return r;
    }
};

// The 16-bit element type of an ElemType (the generated translation units name the dtype).
template <ElemType kElem>
struct ElemOf;
template <>
struct ElemOf<ElemType::F16> {
    using type = __half;
};
template <>
struct ElemOf<ElemType::BF16> {
    using type = __nv_bfloat16;
};

// ---- PTX wrappers the shared primitives do not have ---------------------------------------------------

// Four 8x8 matrices of 16-bit elements to shared memory (sm_90): lanes 8i..8i+7 give the row addresses of
// matrix i, and r[i] of lane 4g+t holds (row g, columns 2t, 2t+1) of matrix i — the mma accumulator layout.
__device__ __forceinline__ void stmatrix_x4(uint32_t addr, uint32_t r0, uint32_t r1, uint32_t r2, uint32_t r3) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1,%2,%3,%4};\n" ::"r"(addr), "r"(r0), "r"(r1),
                 "r"(r2), "r"(r3)
                 : "memory");
#endif
}

__device__ __forceinline__ void st_shared_u32(uint32_t addr, uint32_t v) {
    asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(addr), "r"(v) : "memory");
}
__device__ __forceinline__ void st_shared_v4(uint32_t addr, uint4 v) {
    asm volatile("st.shared.v4.u32 [%0], {%1,%2,%3,%4};\n" ::"r"(addr), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w) : "memory");
}
__device__ __forceinline__ uint4 ld_shared_v4(uint32_t addr) {
    uint4 v;
    asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(addr) : "memory");
    return v;
}

// Returns x through an opaque move, so the compiler cannot hoist what is computed from the result out of
// the loop that calls this: the main loop recomputes its copy addresses each step (a few integer
// instructions) instead of holding two dozen loop-invariant offsets in registers across the matrix
// products, which would push the dK/dV accumulators into local memory.
__device__ __forceinline__ int opaque(int x) {
    int y;
    asm volatile("mov.b32 %0, %1;\n" : "=r"(y) : "r"(x));
    return y;
}

// dst[0..1] += (a, b) in global memory, as one vector atomic where the hardware has it (sm_90).
__device__ __forceinline__ void atomic_add2(float* dst, float a, float b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    atomicAdd(reinterpret_cast<float2*>(dst), make_float2(a, b));
#else
    atomicAdd(dst, a);
    atomicAdd(dst + 1, b);
#endif
}

// Bulk (copy-engine) reduction of `bytes` of fp32 from shared to global memory: global[i] += shared[i].
// Both addresses 16-byte aligned, bytes a multiple of 16. Completion is tracked per thread in bulk groups.
__device__ __forceinline__ void bulk_reduce_add_f32(float* gmem, uint32_t smem, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;\n" ::"l"(gmem),
                 "r"(smem), "r"(bytes)
                 : "memory");
    asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
#endif
}
// Waits until this thread's bulk reductions have read their shared-memory source (it may be rewritten).
__device__ __forceinline__ void bulk_wait_read() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
#endif
}
// Waits until this thread's bulk reductions are complete (their global writes done).
__device__ __forceinline__ void bulk_wait_all() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory");
#endif
}
// Orders this thread's ordinary shared-memory stores before later accesses by the async proxy (the bulk
// copy engine); every writing thread runs it before the barrier that precedes the bulk operation.
__device__ __forceinline__ void fence_proxy_async_shared() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// ---- the dQ workspace's row layout ---------------------------------------------------------------------
//
// The dQ workspace keeps each row's 16-byte chunks (4 floats) permuted: logical chunk c of row r sits at
// chunk c ^ 2·(r mod 4). The bulk reduction copies a shared-memory image of whole rows, so the image must
// have the workspace's layout; with this permutation the 8-byte stores of an accumulator fragment (rows g,
// 4 lanes of 2 columns each) hit 8 distinct 16-byte bank groups per half warp instead of 4-way conflicting,
// and a chunk never leaves its 128-byte line. Both dQ paths (bulk, atomics) use the same layout, so the
// convert kernel reads it one way. `row` is the row within its sequence: query tiles start at multiples of
// 64 rows, so a tile's row r and its sequence row share r mod 4.
__device__ __forceinline__ int dq_accum_chunk(int row, int chunk) { return chunk ^ ((row & 3) << 1); }
// Float offset of logical element (row, col) within a row-major [rows][kD] fp32 tile in that layout.
template <int kD>
__device__ __forceinline__ int dq_accum_offset(int row, int col) {
    return row * kD + dq_accum_chunk(row, col >> 2) * 4 + (col & 3);
}

// ---- swizzled shared-memory tiles ----------------------------------------------------------------------
//
// Tiles are row-major with 16-byte chunks XOR-swizzled by (row mod 8): the 8 row addresses of an ldmatrix
// (and the 8 rows a warp stores an accumulator fragment to) then fall into 8 distinct bank groups, so
// neither the normal nor the transposed reads conflict.

// Byte offset of 16-byte chunk `chunk` of row `row` in a tile whose rows hold kRowChunks chunks.
template <int kRowChunks>
__device__ __forceinline__ uint32_t swz(int row, int chunk) {
    static_assert(kRowChunks >= 8, "the swizzle permutes 8 chunks, so rows must hold at least 8");
    return static_cast<uint32_t>((row * kRowChunks + (chunk ^ (row & 7))) * 16);
}
// Byte offset of 16-bit element (row, col).
template <int kRowChunks>
__device__ __forceinline__ uint32_t swz_elem(int row, int col) {
    return swz<kRowChunks>(row, col >> 3) + static_cast<uint32_t>((col & 7) * 2);
}

// Element pointer of (batch b, row `row`, head `head`) of a [batch, seq, heads, head_dim] tensor (varlen:
// batch_stride 0, row = the packed row).
__device__ __forceinline__ const uint16_t* row_ptr(const RowTensor& t, int b, int64_t row, int head) {
    return static_cast<const uint16_t*>(t.data) + b * t.batch_stride + row * t.row_stride + head * t.head_stride;
}

// Loads rows [0, kRows) of a [seq, head_dim] slice (row stride in elements) into a swizzled [kRows][kD]
// tile. Rows >= valid_rows and columns >= head_dim are zero-filled, so they add nothing to the products.
// Rows >= valid_rows are never read.
template <int kRows, int kD>
__device__ __forceinline__ void load_tile(uint32_t smem, const uint16_t* gmem, int64_t stride, int valid_rows,
                                          int head_dim, bool vec16, int tid) {
    constexpr int kChunks = kD / 8;
    static_assert(kRows * kChunks % kBwdThreads == 0, "whole chunks per thread");
#pragma unroll
    for (int it = 0; it < kRows * kChunks / kBwdThreads; ++it) {
        const int idx = it * kBwdThreads + tid;
        const int row = idx / kChunks, chunk = idx % kChunks;
        const bool pred = row < valid_rows && chunk * 8 < head_dim;
        const uint16_t* src = gmem + row * stride + chunk * 8;
        const uint32_t dst = smem + swz<kChunks>(row, chunk);
        if (vec16) {
            prim::cp_async_16(dst, pred ? src : gmem, pred);
        } else {  // unaligned views: 2-byte loads, synchronous
            uint32_t w[4] = {0, 0, 0, 0};
            if (pred) {
#pragma unroll
                for (int j = 0; j < 4; ++j) w[j] = uint32_t(src[2 * j]) | (uint32_t(src[2 * j + 1]) << 16);
            }
            st_shared_v4(dst, make_uint4(w[0], w[1], w[2], w[3]));
        }
    }
}

// Stores rows [0, valid_rows) and columns [0, head_dim) of a swizzled [kRows][kD] tile to global memory.
template <int kRows, int kD>
__device__ __forceinline__ void store_tile(uint16_t* gmem, int64_t stride, int valid_rows, int head_dim, uint32_t smem,
                                           bool vec16, int tid) {
    constexpr int kChunks = kD / 8;
#pragma unroll
    for (int it = 0; it < kRows * kChunks / kBwdThreads; ++it) {
        const int idx = it * kBwdThreads + tid;
        const int row = idx / kChunks, chunk = idx % kChunks;
        if (row < valid_rows && chunk * 8 < head_dim) {
            const uint4 v = ld_shared_v4(smem + swz<kChunks>(row, chunk));
            uint16_t* dst = gmem + row * stride + chunk * 8;
            if (vec16) {
                *reinterpret_cast<uint4*>(dst) = v;
            } else {
                const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    dst[2 * j] = static_cast<uint16_t>(w[j] & 0xffffu);
                    dst[2 * j + 1] = static_cast<uint16_t>(w[j] >> 16);
                }
            }
        }
    }
}

// ---- warp-level GEMM from shared memory ----------------------------------------------------------------

// acc[MT][NT] (m16n8 fp32 fragments) += A · B with a reduction length of kK, both operands read with
// ldmatrix from swizzled tiles. A is (MT·16) x kK, stored [m][k] (kATrans = false) or [k][m] (true: read
// with ldmatrix.trans); its warp rows start at m0. B is kK x (NT·8), stored [n][k] (kBTrans = false) or
// [k][n] (true); its warp columns start at n0. kAChunks/kBChunks: 16-byte chunks per stored row.
//
// Addressing: each lane computes one swizzled address per operand. Moving along the stored rows (by a
// multiple of 8 rows) adds a constant; moving along the chunks of a row XORs a constant, because the
// lane's own chunk bits and the step's never overlap and the swizzle is itself an XOR. So every ldmatrix
// costs one LOP3 and an immediate offset, and no table of addresses stays live in registers. This needs
// tile bases aligned to the row size (all tiles here are 1 KiB aligned).
template <typename T, int MT, int NT, int kK, bool kATrans, bool kBTrans, int kAChunks, int kBChunks>
__device__ __forceinline__ void warp_gemm(float (&acc)[MT][NT][4], uint32_t a_tile, int m0, uint32_t b_tile, int n0,
                                          int lane) {
    static_assert(NT % 2 == 0, "B fragments are loaded two n8 tiles at a time");
    constexpr uint32_t kARow = kAChunks * 16, kBRow = kBChunks * 16;  // bytes per stored row
    const int lr = lane & 7, mat = lane >> 3;  // ldmatrix: lane gives row lr of 8x8 matrix `mat`
    // A: matrices 0..3 = (rows m, k), (m+8, k), (m, k+8), (m+8, k+8), the a0..a3 registers of mma.
    // B: matrices 0..3 = (n, k), (n, k+8), (n+8, k), (n+8, k+8), b0 and b1 of two n8 tiles.
    const uint32_t a_lane = kATrans ? a_tile + swz<kAChunks>(lr + (mat >> 1) * 8, m0 / 8 + (mat & 1))
                                    : a_tile + swz<kAChunks>(m0 + lr + (mat & 1) * 8, mat >> 1);
    const uint32_t b_lane = kBTrans ? b_tile + swz<kBChunks>(lr + (mat & 1) * 8, n0 / 8 + (mat >> 1))
                                    : b_tile + swz<kBChunks>(n0 + lr + (mat >> 1) * 8, mat & 1);
#pragma unroll
    for (int k = 0; k < kK; k += 16) {
        uint32_t a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
            if constexpr (!kATrans) prim::ldmatrix_x4(a[mt], (a_lane ^ uint32_t(k / 8 * 16)) + uint32_t(mt * 16) * kARow);
            else prim::ldmatrix_x4_trans(a[mt], (a_lane ^ uint32_t(mt * 2 * 16)) + uint32_t(k) * kARow);
        }
        uint32_t b[NT][2];
#pragma unroll
        for (int nt = 0; nt < NT; nt += 2) {
            uint32_t r[4];
            if constexpr (!kBTrans) prim::ldmatrix_x4(r, (b_lane ^ uint32_t(k / 8 * 16)) + uint32_t(nt * 8) * kBRow);
            else prim::ldmatrix_x4_trans(r, (b_lane ^ uint32_t(nt * 16)) + uint32_t(k) * kBRow);
            b[nt][0] = r[0];
            b[nt][1] = r[1];
            b[nt + 1][0] = r[2];
            b[nt + 1][1] = r[3];
        }
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) prim::Mma<T>::run(acc[mt][nt], a[mt], b[nt][0], b[nt][1]);
    }
}

template <int MT, int NT>
__device__ __forceinline__ void clear(float (&acc)[MT][NT][4]) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[mt][nt][e] = 0.0f;
}

}  // namespace fa4j::cuda::kernels::sm80::bwd
