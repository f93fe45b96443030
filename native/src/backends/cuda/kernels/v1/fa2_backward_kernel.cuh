// FlashAttention-2 backward on tensor cores (sm_80 mma.sync, which also runs on sm_90a), in three kernels:
//
//   1. preprocess:  D = rowsum(dO ∘ O) and lse per query row into the workspace, and the fp32 dQ
//                   accumulator zeroed.
//   2. main:        one CTA per (key tile of kBlockN rows, kv head, batch). K and V stay in shared memory;
//                   the CTA walks the query tiles (kBlockM rows) of every query head of its GQA group,
//                   recomputes S = Q·Kᵀ and P = exp(S·scale − lse) (capped at 1; see scores_to_p), and
//                   accumulates dV += Pᵀ·dO and dK += dSᵀ·Q in registers, dS = P ∘ (dO·Vᵀ − D). dQ += dS·K goes to the fp32
//                   workspace, since many key tiles add to one query row (DqWrite: vector atomics, or one
//                   bulk reduction per tile on sm_90). Looping the group's query heads inside the CTA makes
//                   dK/dV per kv head without atomics or a reduction pass.
//   3. convert:     dQ = scale · accumulator, rounded to the dtype and written through dq's strides.
//
// Shared-memory tiles are row-major with 16-byte chunks XOR-swizzled by (row mod 8): the 8 row addresses
// of an ldmatrix (and the 8 rows a warp stores an accumulator fragment to) then fall into 8 distinct
// bank groups, so neither the normal nor the transposed reads conflict.
//
// The tile shape (BwdTile: query and key tile sizes, how the 8 warps split each of the five products,
// how dQ reaches the workspace) is a template parameter; fa2_backward_hdim{64,128}.cu pick one per head
// dim. Per step of the main loop (one query tile):
//     barrier · [bulk-reduce the previous step's dQ tile] · prefetch the next Q/dO/lse/D (cp.async) ·
//     S = Q·Kᵀ → P → sP · dP = dO·Vᵀ → dS → sdS · barrier · dV += Pᵀ·dO · dK += dSᵀ·Q · dQ = dS·K → workspace
// Computing P before dP (rather than both products first, as FlashAttention-2 does) keeps one product's
// fragments live at a time next to the dK/dV accumulators, and measured faster at d=64. P and dS leave
// the registers through stmatrix on sm_90 (one instruction per 16x16 block): the kernel is throttled by
// its shared-memory instruction queue (ncu: mio_throttle, short_scoreboard), which a quarter of the
// store instructions relieves.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "backends/cuda/cuda_check.cuh"
#include "backends/cuda/kernels/v1/fa2_backward_params.cuh"
#include "core/softmax_scale.hpp"

namespace fa4j::cuda::v1::fa2bwd {

constexpr int kThreads = 256;  // 8 warps per CTA, one CTA per SM (dK/dV accumulators take most registers)
constexpr int kWarps = kThreads / 32;

// ---- tile shapes ---------------------------------------------------------------------------------------

// How a step's dQ tile reaches the fp32 workspace.
enum class DqWrite {
    kAtomic2,  // one red.global.add of 2 floats per accumulator pair, straight from the fragments
    kAtomic4,  // lane pairs swap halves (one shuffle per pair) so each lane adds 4 consecutive floats
    kBulk,     // fragments → shared memory, then one cp.reduce.async.bulk .add.f32 of the whole tile
               // (sm_90; an sm_80 build falls back to kAtomic2)
};

// kD: padded head dim (64 or 128). kBlockM query rows per step, kBlockN keys per CTA. The three warp
// grids split the 8 warps over [rows x columns] of each product: S/dP [kBlockM x kBlockN] as
// kSdpWarpsM x (8 / kSdpWarpsM), dK/dV [kBlockN x kD] as kKvWarpsN x (8 / kKvWarpsN), dQ [kBlockM x kD]
// as kDqWarpsM x (8 / kDqWarpsM). A warp tile of r x c reads (r + c)·16·2 bytes of shared memory per
// k16 step for r·c·32 FLOP: square warp tiles read the least.
template <int kD_, int kBlockM_, int kBlockN_, int kSdpWarpsM_, int kKvWarpsN_, int kDqWarpsM_, DqWrite kDqWrite_,
          int kDpSlices_ = 1, bool kSdpTogether_ = false, bool kStmatrix_ = true>
struct BwdTile {
    static constexpr int kD = kD_, kBlockM = kBlockM_, kBlockN = kBlockN_;
    static constexpr DqWrite kDqWrite = kDqWrite_;

    static constexpr int kSdpWarpsM = kSdpWarpsM_, kSdpWarpsN = kWarps / kSdpWarpsM_;
    static constexpr int kSdpRows = kBlockM / kSdpWarpsM, kSdpCols = kBlockN / kSdpWarpsN;  // per warp
    static constexpr int kSMT = kSdpRows / 16, kSNT = kSdpCols / 8;                           // m16 x n8 tiles
    // dP is computed in kDpSlices column slices of the warp tile, one after the other: only one slice's
    // fp32 accumulators live next to P and the dK/dV accumulators, at the price of re-reading the dO
    // fragments once per slice.
    static constexpr int kDpSlices = kDpSlices_, kDpSliceNT = kSNT / kDpSlices;
    // kSdpTogether: S and dP both computed before P and dS (the order of FlashAttention-2), both fp32 tiles
    // live at once; otherwise P is made between the two products (see the main loop). Needs kDpSlices 1.
    static constexpr bool kSdpTogether = kSdpTogether_;
    // kStmatrix: P and dS leave the registers through stmatrix (sm_90; 8 elements per lane and instruction)
    // instead of one 4-byte store per element pair: a quarter of the shared-memory instructions, which
    // matter because the MIO queue throttles this kernel (ncu: mio_throttle and short_scoreboard stalls).
    static constexpr bool kStmatrix = kStmatrix_;

    static constexpr int kKvWarpsN = kKvWarpsN_, kKvWarpsD = kWarps / kKvWarpsN_;
    static constexpr int kKvRows = kBlockN / kKvWarpsN, kKvCols = kD / kKvWarpsD;
    static constexpr int kKvMT = kKvRows / 16, kKvNT = kKvCols / 8;

    static constexpr int kDqWarpsM = kDqWarpsM_, kDqWarpsD = kWarps / kDqWarpsM_;
    static constexpr int kDqRows = kBlockM / kDqWarpsM, kDqCols = kD / kDqWarpsD;
    static constexpr int kQMT = kDqRows / 16, kQNT = kDqCols / 8;

    // Shared memory (bytes). Q and dO (and their lse/D rows) are double-buffered so the next query tile
    // streams in (cp.async) while this one is computed; P and dS go through shared memory because the
    // dV/dK products need them transposed; with kBulk the dQ tile is staged in fp32 for the bulk copy.
    static constexpr int kTileQ = kBlockM * kD * 2;
    static constexpr int kTileK = kBlockN * kD * 2;
    static constexpr int kTileP = kBlockM * kBlockN * 2;
    static constexpr int kTileDq = kDqWrite == DqWrite::kBulk ? kBlockM * kD * 4 : 0;
    static constexpr int kStages = 2;
    static constexpr int kOffK = 0;
    static constexpr int kOffV = kOffK + kTileK;
    static constexpr int kOffQ = kOffV + kTileK;
    static constexpr int kOffDO = kOffQ + kStages * kTileQ;
    static constexpr int kOffP = kOffDO + kStages * kTileQ;
    static constexpr int kOffDS = kOffP + kTileP;
    static constexpr int kOffDq = kOffDS + kTileP;
    static constexpr int kOffLse = kOffDq + kTileDq;                  // kStages x kBlockM floats
    static constexpr int kOffDelta = kOffLse + kStages * kBlockM * 4;  // kStages x kBlockM floats
    static constexpr int kSmemBytes = kOffDelta + kStages * kBlockM * 4;

    static_assert(kD == 64 || kD == 128, "head-dim instantiations are 64 and 128");
    static_assert(kBlockM % 64 == 0 && kBlockM <= kRowPadding && kRowPadding % kBlockM == 0,
                  "workspace rows must hold whole query tiles");
    static_assert(kBlockN % 64 == 0, "key tiles of whole swizzle groups");
    static_assert(kSdpRows * kSdpWarpsM == kBlockM && kSdpCols * kSdpWarpsN == kBlockN, "S/dP warp grid");
    static_assert(kKvRows * kKvWarpsN == kBlockN && kKvCols * kKvWarpsD == kD, "dK/dV warp grid");
    static_assert(kDqRows * kDqWarpsM == kBlockM && kDqCols * kDqWarpsD == kD, "dQ warp grid");
    // warp_gemm moves between fragments by XOR-ing chunk offsets into the lane's address: the fragment
    // counts it steps over must be powers of two (and B fragments come in pairs).
    static constexpr bool pow2(int x) { return x > 0 && (x & (x - 1)) == 0; }
    static_assert(pow2(kSMT) && pow2(kSNT) && pow2(kKvMT) && pow2(kKvNT) && pow2(kQMT) && pow2(kQNT), "pow2");
    static_assert(kSNT % 2 == 0 && kKvNT % 2 == 0 && kQNT % 2 == 0 && kDpSliceNT % 2 == 0,
                  "B fragments are loaded in pairs");
    static_assert(kDpSliceNT * kDpSlices == kSNT, "whole dP slices");
    static_assert(!kSdpTogether || kDpSlices == 1, "S and dP together are not sliced");
    static_assert(kSmemBytes <= 227 * 1024, "shared memory of one Hopper SM");
};

// ---- element types -------------------------------------------------------------------------------------
//
// pack rounds two floats to the dtype with .satfinite: a value beyond the dtype's range (infinities
// included) becomes its largest finite value, NaN stays NaN. Everything the backward rounds is a
// result whose exact value is finite: dS of float16 inputs can pass 65504 (float16 inputs of ~100
// already give |dO·Vᵀ| beyond it), and so can dq, dk and dv; an infinity there turns into NaN in the
// next product. P is in [0, 1] and unaffected. Same cost as the plain conversion.

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
    static __device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
        asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
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
    static __device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
        asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
};

// ---- PTX wrappers --------------------------------------------------------------------------------------

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global→shared copy that bypasses L1; when !pred it reads nothing and writes 16 zero bytes.
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool pred) {
    const int src_bytes = pred ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

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

__device__ __forceinline__ float ex2(float x) {  // 2^x; ex2(-inf) = 0
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
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

// dst[0..3] += v in global memory as one vector reduction where the hardware has it (sm_90).
__device__ __forceinline__ void atomic_add4(float* dst, float4 v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    atomicAdd(reinterpret_cast<float4*>(dst), v);
#else
    atomicAdd(dst, v.x);
    atomicAdd(dst + 1, v.y);
    atomicAdd(dst + 2, v.z);
    atomicAdd(dst + 3, v.w);
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

// The dQ workspace keeps each row's 16-byte chunks (4 floats) permuted: logical chunk c of row r sits at
// chunk c ^ 2·(r mod 4). The bulk reduction copies a shared-memory image of whole rows, so the image
// must have the workspace's layout; with this permutation the 8-byte stores of an accumulator fragment
// (rows g, 4 lanes of 2 columns each) hit 8 distinct 16-byte bank groups per half warp instead of 4-way
// conflicting, and a chunk never leaves its 128-byte line. All kDqWrite modes use the same layout, so the
// convert kernel reads it one way. Query tiles start at multiples of 4 rows, so tile row r and workspace
// row r share r mod 4.
__device__ __forceinline__ int dq_accum_chunk(int row, int chunk) { return chunk ^ ((row & 3) << 1); }
// Float offset of logical element (row, col) within a row-major [rows][kD] fp32 tile in that layout.
template <int kD>
__device__ __forceinline__ int dq_accum_offset(int row, int col) {
    return row * kD + dq_accum_chunk(row, col >> 2) * 4 + (col & 3);
}

// ---- swizzled shared-memory tiles ----------------------------------------------------------------------

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

// Loads rows [0, kRows) of a [seq, head_dim] slice (row stride in elements) into a swizzled [kRows][kD]
// tile. Rows >= valid_rows and columns >= head_dim are zero-filled, so they add nothing to the products.
template <int kRows, int kD>
__device__ __forceinline__ void load_tile(uint32_t smem, const uint16_t* gmem, int64_t stride, int valid_rows,
                                          int head_dim, bool vec16, int tid) {
    constexpr int kChunks = kD / 8;
    static_assert(kRows * kChunks % kThreads == 0, "whole chunks per thread");
#pragma unroll
    for (int it = 0; it < kRows * kChunks / kThreads; ++it) {
        const int idx = it * kThreads + tid;
        const int row = idx / kChunks, chunk = idx % kChunks;
        const bool pred = row < valid_rows && chunk * 8 < head_dim;
        const uint16_t* src = gmem + row * stride + chunk * 8;
        const uint32_t dst = smem + swz<kChunks>(row, chunk);
        if (vec16) {
            cp_async_16(dst, pred ? src : gmem, pred);
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
    for (int it = 0; it < kRows * kChunks / kThreads; ++it) {
        const int idx = it * kThreads + tid;
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
            if constexpr (!kATrans) ldmatrix_x4(a[mt], (a_lane ^ uint32_t(k / 8 * 16)) + uint32_t(mt * 16) * kARow);
            else ldmatrix_x4_trans(a[mt], (a_lane ^ uint32_t(mt * 2 * 16)) + uint32_t(k) * kARow);
        }
        uint32_t b[NT][2];
#pragma unroll
        for (int nt = 0; nt < NT; nt += 2) {
            uint32_t r[4];
            if constexpr (!kBTrans) ldmatrix_x4(r, (b_lane ^ uint32_t(k / 8 * 16)) + uint32_t(nt * 8) * kBRow);
            else ldmatrix_x4_trans(r, (b_lane ^ uint32_t(nt * 16)) + uint32_t(k) * kBRow);
            b[nt][0] = r[0];
            b[nt][1] = r[1];
            b[nt + 1][0] = r[2];
            b[nt + 1][1] = r[3];
        }
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) Elem<T>::mma(acc[mt][nt], a[mt], b[nt][0], b[nt][1]);
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

__device__ __forceinline__ const uint16_t* row_ptr(const SeqPtr& t, int b, int64_t row, int head) {
    return static_cast<const uint16_t*>(t.data) + b * t.batch_stride + row * t.seq_stride + head * t.head_stride;
}

// ---- 1. preprocess -------------------------------------------------------------------------------------

// One thread per (workspace row, 8-column chunk); kD/8 consecutive lanes share a row.
template <typename T, int kD>
__global__ void __launch_bounds__(kThreads) bwd_preprocess_kernel(const __grid_constant__ Params p) {
    constexpr int kChunks = kD / 8;
    constexpr int kRowsPerBlock = kThreads / kChunks;
    const int64_t rows = int64_t(p.batch) * p.heads_q * p.seqlen_q_pad;
    const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / kChunks;
    const int chunk = static_cast<int>(threadIdx.x % kChunks);
    const bool valid = row < rows;
    const int i = static_cast<int>(row % p.seqlen_q_pad);
    const int64_t bh = row / p.seqlen_q_pad;
    const int h = static_cast<int>(bh % p.heads_q), b = static_cast<int>(bh / p.heads_q);

    float sum = 0.0f;
    if (valid && i < p.seqlen_q && chunk * 8 < p.head_dim) {
        const uint16_t* o = row_ptr(p.out, b, i, h) + chunk * 8;
        const uint16_t* d = row_ptr(p.dout, b, i, h) + chunk * 8;
        uint16_t ov[8], dv[8];
        if (p.vec16) {
            *reinterpret_cast<uint4*>(ov) = *reinterpret_cast<const uint4*>(o);
            *reinterpret_cast<uint4*>(dv) = *reinterpret_cast<const uint4*>(d);
        } else {
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                ov[j] = o[j];
                dv[j] = d[j];
            }
        }
#pragma unroll
        for (int j = 0; j < 8; ++j) sum += Elem<T>::to_float(ov[j]) * Elem<T>::to_float(dv[j]);
    }
#pragma unroll
    for (int offset = kChunks / 2; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    if (!valid) return;
    float4* acc = reinterpret_cast<float4*>(p.dq_accum + row * kD + chunk * 8);
    acc[0] = make_float4(0.f, 0.f, 0.f, 0.f);
    acc[1] = make_float4(0.f, 0.f, 0.f, 0.f);
    if (chunk == 0) {
        p.delta[row] = sum;
        float row_lse = INFINITY;  // P = exp(s - inf) = 0 for padding rows
        if (i < p.seqlen_q) {
            const float lse = p.lse[b * p.lse_batch_stride + h * p.lse_head_stride + i * p.lse_seq_stride];
            // A row that attends no key has lse = -inf; +inf makes its P (and gradients) exactly 0.
            if (lse != -INFINITY) row_lse = lse;
        }
        p.lse_rows[row] = row_lse;
    }
}

// ---- 2. main -------------------------------------------------------------------------------------------

// kVec16 is p.vec16 made a template parameter: the 2-byte fallback copies never sit in the main loop of
// the kernel that the aligned (usual) case runs, where their registers and branches would cost.
template <typename T, class Tl, bool kCausal, bool kVec16>
__global__ void __launch_bounds__(kThreads, 1) bwd_main_kernel(const __grid_constant__ Params p) {
    constexpr int kD = Tl::kD, kBlockM = Tl::kBlockM, kBlockN = Tl::kBlockN;
    constexpr int kDChunks = kD / 8, kNChunks = kBlockN / 8;
    constexpr bool kBulk = Tl::kDqWrite == DqWrite::kBulk
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
                           && false
#endif
        ;
    constexpr bool kStmatrix = Tl::kStmatrix
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
                               && false
#endif
        ;
    extern __shared__ __align__(1024) unsigned char smem[];
    const uint32_t s_base = smem_u32(smem);
    if (s_base % 1024 != 0) __trap();  // warp_gemm's XOR addressing relies on 1 KiB aligned tiles
    const uint32_t sK = s_base + Tl::kOffK, sV = s_base + Tl::kOffV;
    const uint32_t sP = s_base + Tl::kOffP, sdS = s_base + Tl::kOffDS, sDq = s_base + Tl::kOffDq;
    const float* s_lse = reinterpret_cast<const float*>(smem + Tl::kOffLse);
    const float* s_delta = reinterpret_cast<const float*>(smem + Tl::kOffDelta);

    const int tid = static_cast<int>(threadIdx.x), warp = tid >> 5;
    const int hk = static_cast<int>(blockIdx.y), b = static_cast<int>(blockIdx.z);
    const int n0 = static_cast<int>(blockIdx.x) * kBlockN;
    const int kv_rows = min(kBlockN, p.seqlen_k - n0);
    const int causal_offset = p.seqlen_k - p.seqlen_q;  // query i sees key j iff j <= i + causal_offset

    // Query tiles with a row that sees a key of this tile: for causal, rows i >= n0 - causal_offset.
    const int m_tiles = (p.seqlen_q + kBlockM - 1) / kBlockM;
    int m_begin = 0;
    if constexpr (kCausal) m_begin = max(0, n0 - causal_offset) / kBlockM;
    const int m_count = max(0, m_tiles - m_begin);
    const int iters = m_count * p.group;  // (query head of the group, query tile) pairs
    // With p.stagger, key tile x starts at query tile x·m_count/gridDim.x of its range and wraps around.
    const int m_rot = p.stagger && m_count > 0
                          ? static_cast<int>((int64_t(blockIdx.x) * m_count) / static_cast<int64_t>(gridDim.x))
                          : 0;

    load_tile<kBlockN, kD>(sK, row_ptr(p.k, b, n0, hk), p.k.seq_stride, kv_rows, p.head_dim, kVec16, tid);
    load_tile<kBlockN, kD>(sV, row_ptr(p.v, b, n0, hk), p.v.seq_stride, kv_rows, p.head_dim, kVec16, tid);

    // Step t of the loop: query head hk·group + t / m_count, query tile m_begin + (t + m_rot) % m_count.
    const auto step_head = [&](int t) { return hk * p.group + t / m_count; };
    const auto step_m0 = [&](int t) {
        int mi = t % m_count + m_rot;
        if (mi >= m_count) mi -= m_count;
        return (m_begin + mi) * kBlockM;
    };
    const auto load_query_tile = [&](int t, int stage) {
        const int ltid = opaque(tid);  // see opaque()
        const int head = step_head(t), m0 = step_m0(t);
        const int rows = p.seqlen_q - m0;
        load_tile<kBlockM, kD>(s_base + Tl::kOffQ + stage * Tl::kTileQ, row_ptr(p.q, b, m0, head), p.q.seq_stride,
                               rows, p.head_dim, kVec16, ltid);
        load_tile<kBlockM, kD>(s_base + Tl::kOffDO + stage * Tl::kTileQ, row_ptr(p.dout, b, m0, head),
                               p.dout.seq_stride, rows, p.head_dim, kVec16, ltid);
        const int64_t ws_row = (int64_t(b) * p.heads_q + head) * p.seqlen_q_pad + m0;
        constexpr int kVecs = kBlockM / 4;  // float4s per row vector
        static_assert(2 * kVecs <= kThreads, "one 16-byte copy per thread for lse and D");
        if (ltid < kVecs)
            cp_async_16(s_base + Tl::kOffLse + (stage * kBlockM + ltid * 4) * 4, p.lse_rows + ws_row + ltid * 4, true);
        else if (ltid < 2 * kVecs)
            cp_async_16(s_base + Tl::kOffDelta + (stage * kBlockM + (ltid - kVecs) * 4) * 4,
                        p.delta + ws_row + (ltid - kVecs) * 4, true);
    };
    // The workspace rows of step t's dQ tile.
    const auto dq_tile = [&](int t) {
        return p.dq_accum + ((int64_t(b) * p.heads_q + step_head(t)) * p.seqlen_q_pad + step_m0(t)) * kD;
    };

    float acc_dk[Tl::kKvMT][Tl::kKvNT][4], acc_dv[Tl::kKvMT][Tl::kKvNT][4];
    clear(acc_dk);
    clear(acc_dv);

    // This warp's position in each of the three warp grids.
    const int sdp_row = (warp / Tl::kSdpWarpsN) * Tl::kSdpRows, sdp_col = (warp % Tl::kSdpWarpsN) * Tl::kSdpCols;
    const int kv_row = (warp / Tl::kKvWarpsD) * Tl::kKvRows, kv_col = (warp % Tl::kKvWarpsD) * Tl::kKvCols;
    const int dq_row = (warp / Tl::kDqWarpsD) * Tl::kDqRows, dq_col = (warp % Tl::kDqWarpsD) * Tl::kDqCols;
    const float scale = p.scale;

    if (iters > 0) load_query_tile(0, 0);
    cp_async_commit();

    for (int t = 0; t < iters; ++t) {
        const int stage = t & 1;
        // Everything derived from the lane index is recomputed from this opaque copy each step (see
        // opaque()): left to itself the compiler hoists some seventy fragment addresses out of the loop.
        const int lane = opaque(tid & 31);
        const int g = lane >> 2, tig = lane & 3;  // mma fragment: row group, thread in group
        // This lane's element (row sdp_row + g, column sdp_col + 2·tig) of sP/sdS; its other fragments are
        // whole rows (+ constant) or chunks (^ constant) away.
        const uint32_t ps_lane = swz_elem<kNChunks>(sdp_row + g, sdp_col + 2 * tig);
        // The row this lane addresses for stmatrix: row lane%8 (+8 for matrices 1, 3) of chunk lane/16.
        const uint32_t stsm_lane = swz<kNChunks>(sdp_row + (lane & 7) + ((lane >> 3) & 1) * 8, sdp_col / 8 + (lane >> 4));
        const uint32_t sQ = s_base + Tl::kOffQ + stage * Tl::kTileQ;
        const uint32_t sdO = s_base + Tl::kOffDO + stage * Tl::kTileQ;
        // This step's tiles have landed, and every warp is done with the previous step, whose buffers
        // (the other stage, sP, sdS) may now be overwritten and whose dQ tile is staged.
        cp_async_wait_all();
        __syncthreads();
        if constexpr (kBulk) {
            if (tid == 0 && t > 0) bulk_reduce_add_f32(dq_tile(t - 1), sDq, uint32_t(kBlockM * kD * 4));
        }
        if (t + 1 < iters) load_query_tile(t + 1, stage ^ 1);
        cp_async_commit();

        const int m0 = step_m0(t);
        const float* lse = s_lse + stage * kBlockM;
        const float* delta = s_delta + stage * kBlockM;
        const bool masked = n0 + kBlockN > p.seqlen_k || (kCausal && n0 + kBlockN - 1 > m0 + causal_offset);

        // Rounds the accumulator fragments v (n8 columns nt0.. of the warp tile) to the dtype into the
        // [kBlockM][kBlockN] tile at `tile`.
        const auto store_fragments = [&](uint32_t tile, const auto& v, int nt0) {
            constexpr int kNT = int(sizeof(v[0]) / sizeof(v[0][0]));
#pragma unroll
            for (int mt = 0; mt < Tl::kSMT; ++mt) {
                const uint32_t rows = uint32_t(mt * 16 * kBlockN * 2);
#pragma unroll
                for (int j = 0; j < kNT; j += 2) {
                    if constexpr (kStmatrix) {
                        // Matrices: (rows 0-7, n8 tile j), (rows 8-15, j), (0-7, j+1), (8-15, j+1).
                        stmatrix_x4(tile + (stsm_lane ^ uint32_t((nt0 + j) * 16)) + rows,
                                    Elem<T>::pack(v[mt][j][0], v[mt][j][1]), Elem<T>::pack(v[mt][j][2], v[mt][j][3]),
                                    Elem<T>::pack(v[mt][j + 1][0], v[mt][j + 1][1]),
                                    Elem<T>::pack(v[mt][j + 1][2], v[mt][j + 1][3]));
                    } else {
#pragma unroll
                        for (int jj = j; jj < j + 2; ++jj)
#pragma unroll
                            for (int half = 0; half < 2; ++half)
                                st_shared_u32(tile + (ps_lane ^ uint32_t((nt0 + jj) * 16)) + rows +
                                                  uint32_t(half * 8 * kBlockN * 2),
                                              Elem<T>::pack(v[mt][jj][2 * half], v[mt][jj][2 * half + 1]));
                    }
                }
            }
        };
        // P = exp(S·scale − lse) in place of S, zero where the key is past the end or (causal) after the
        // query's diagonal, rounded to the dtype into sP. S·scale is rounded before lse is subtracted, as
        // the forward rounded max·|scale| into lse (row_logsumexp, fa2_common.cuh): a row's maximum then gets
        // exactly exp(−ln sum) however large the scores. The fused 2^(S·scale_log2 − lse·log2e) carries
        // lse·log2e's rounding instead, which with lse near 1e8 (inputs of 1e4) exceeds 1 and gave the
        // maximum anything from 0 to overflow. The cap at 1 keeps P finite also for an lse that does not
        // belong to these scores. (Keeping the fused form beside this one for small |lse|, chosen per warp,
        // measured slower, by its code size, than the three extra instructions per score.)
        const auto scores_to_p = [&](float (&sc)[Tl::kSMT][Tl::kSNT][4]) {
#pragma unroll
            for (int mt = 0; mt < Tl::kSMT; ++mt) {
#pragma unroll
                for (int half = 0; half < 2; ++half) {
                    const int r = sdp_row + mt * 16 + g + half * 8;
                    const float row_lse = lse[r];
                    const int last_key = kCausal ? min(p.seqlen_k - 1, m0 + r + causal_offset) : p.seqlen_k - 1;
#pragma unroll
                    for (int nt = 0; nt < Tl::kSNT; ++nt) {
                        const int c = sdp_col + nt * 8 + 2 * tig;
                        float p0 = ex2(fminf(__fmul_rn(sc[mt][nt][2 * half], scale) - row_lse, 0.0f) * kLog2e);
                        float p1 = ex2(fminf(__fmul_rn(sc[mt][nt][2 * half + 1], scale) - row_lse, 0.0f) * kLog2e);
                        if (masked) {
                            if (n0 + c > last_key) p0 = 0.0f;
                            if (n0 + c + 1 > last_key) p1 = 0.0f;
                        }
                        sc[mt][nt][2 * half] = p0;
                        sc[mt][nt][2 * half + 1] = p1;
                    }
                }
            }
            store_fragments(sP, sc, 0);
        };
        // dS = P ∘ (dP − D) in place of dP, into sdS, for the n8 columns of `slice` (dp holds only those).
        const auto dp_to_ds = [&](const float (&pr)[Tl::kSMT][Tl::kSNT][4], auto& dp, int slice) {
            constexpr int kNT = int(sizeof(dp[0]) / sizeof(dp[0][0]));
#pragma unroll
            for (int mt = 0; mt < Tl::kSMT; ++mt) {
#pragma unroll
                for (int half = 0; half < 2; ++half) {
                    const float row_delta = delta[sdp_row + mt * 16 + g + half * 8];
#pragma unroll
                    for (int j = 0; j < kNT; ++j) {
                        const int nt = slice * kNT + j;
                        dp[mt][j][2 * half] = pr[mt][nt][2 * half] * (dp[mt][j][2 * half] - row_delta);
                        dp[mt][j][2 * half + 1] = pr[mt][nt][2 * half + 1] * (dp[mt][j][2 * half + 1] - row_delta);
                    }
                }
            }
            store_fragments(sdS, dp, slice * kNT);
        };

        float s[Tl::kSMT][Tl::kSNT][4];
        clear(s);
        warp_gemm<T, Tl::kSMT, Tl::kSNT, kD, false, false, kDChunks, kDChunks>(s, sQ, sdp_row, sK, sdp_col, lane);
        if constexpr (Tl::kSdpTogether) {
            // Both products back to back (the tensor cores see one run of 2·kD/16 k-steps), then P and dS.
            float dp[Tl::kSMT][Tl::kSNT][4];
            clear(dp);
            warp_gemm<T, Tl::kSMT, Tl::kSNT, kD, false, false, kDChunks, kDChunks>(dp, sdO, sdp_row, sV, sdp_col,
                                                                                    lane);
            scores_to_p(s);
            dp_to_ds(s, dp, 0);
        } else {
            // P first, then dP = dO·Vᵀ slice by slice: only one of the two fp32 tiles (plus one dP slice) is
            // live next to the dK/dV accumulators.
            scores_to_p(s);
#pragma unroll
            for (int slice = 0; slice < Tl::kDpSlices; ++slice) {
                constexpr int kNT = Tl::kDpSliceNT;
                float dp[Tl::kSMT][kNT][4];
                clear(dp);
                warp_gemm<T, Tl::kSMT, kNT, kD, false, false, kDChunks, kDChunks>(dp, sdO, sdp_row, sV,
                                                                                   sdp_col + slice * kNT * 8, lane);
                dp_to_ds(s, dp, slice);
            }
        }
        // The previous step's dQ tile must be read out of the staging buffer before it is rewritten below.
        if constexpr (kBulk) {
            if (tid == 0) bulk_wait_read();
        }
        __syncthreads();

        // dV += Pᵀ·dO, dK += dSᵀ·Q (Pᵀ, dSᵀ read transposed from the [query][key] tiles).
        warp_gemm<T, Tl::kKvMT, Tl::kKvNT, kBlockM, true, true, kNChunks, kDChunks>(acc_dv, sP, kv_row, sdO, kv_col,
                                                                                     lane);
        warp_gemm<T, Tl::kKvMT, Tl::kKvNT, kBlockM, true, true, kNChunks, kDChunks>(acc_dk, sdS, kv_row, sQ, kv_col,
                                                                                     lane);

        // dQ (unscaled) += dS·K, added to the fp32 workspace: other CTAs add their key tiles to the same rows.
        float dq[Tl::kQMT][Tl::kQNT][4];
        clear(dq);
        warp_gemm<T, Tl::kQMT, Tl::kQNT, kBlockN, false, true, kNChunks, kDChunks>(dq, sdS, dq_row, sK, dq_col, lane);
        if constexpr (kBulk) {
            // Staged as the workspace's image (dq_accum_offset); the bulk copy is issued next step.
            float* stage_dq = reinterpret_cast<float*>(smem + Tl::kOffDq);
#pragma unroll
            for (int mt = 0; mt < Tl::kQMT; ++mt)
#pragma unroll
                for (int half = 0; half < 2; ++half) {
                    const int r = dq_row + mt * 16 + g + half * 8;
#pragma unroll
                    for (int nt = 0; nt < Tl::kQNT; ++nt) {
                        const int c = dq_col + nt * 8 + 2 * tig;
                        *reinterpret_cast<float2*>(stage_dq + dq_accum_offset<kD>(r, c)) =
                            make_float2(dq[mt][nt][2 * half], dq[mt][nt][2 * half + 1]);
                    }
                }
            fence_proxy_async_shared();
        } else {
            float* dq_rows = dq_tile(t);
#pragma unroll
            for (int mt = 0; mt < Tl::kQMT; ++mt)
#pragma unroll
                for (int nt = 0; nt < Tl::kQNT; ++nt) {
                    const float* d = dq[mt][nt];
                    const int r = dq_row + mt * 16 + g, c = dq_col + nt * 8 + 2 * tig;
                    if constexpr (Tl::kDqWrite == DqWrite::kAtomic4) {
                        // Lane pair (tig even, tig odd) holds columns c..c+3 of rows r and r + 8: the even lane
                        // takes row r, the odd lane row r + 8, each giving the other the half it keeps not.
                        const bool odd = (tig & 1) != 0;
                        const float x0 = __shfl_xor_sync(0xffffffffu, odd ? d[0] : d[2], 1);
                        const float x1 = __shfl_xor_sync(0xffffffffu, odd ? d[1] : d[3], 1);
                        if (odd) atomic_add4(dq_rows + dq_accum_offset<kD>(r + 8, c - 2), make_float4(x0, x1, d[2], d[3]));
                        else atomic_add4(dq_rows + dq_accum_offset<kD>(r, c), make_float4(d[0], d[1], x0, x1));
                    } else {
                        atomic_add2(dq_rows + dq_accum_offset<kD>(r, c), d[0], d[1]);
                        atomic_add2(dq_rows + dq_accum_offset<kD>(r + 8, c), d[2], d[3]);
                    }
                }
        }
    }

    // Epilogue: the last dQ tile's bulk reduction, then dK·scale and dV rounded to the dtype, staged through
    // the K/V tiles for 16-byte stores.
    cp_async_wait_all();  // with no query tile (iters == 0) the K/V copies may still be landing
    __syncthreads();      // every warp is done reading sK and sV (and has staged its last dQ)
    if constexpr (kBulk) {
        if (tid == 0 && iters > 0) {
            bulk_reduce_add_f32(dq_tile(iters - 1), sDq, uint32_t(kBlockM * kD * 4));
            bulk_wait_all();
        }
    }
    const int g = (tid & 31) >> 2, tig = tid & 3;
#pragma unroll
    for (int mt = 0; mt < Tl::kKvMT; ++mt)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int r = kv_row + mt * 16 + g + half * 8;
#pragma unroll
            for (int nt = 0; nt < Tl::kKvNT; ++nt) {
                const int c = kv_col + nt * 8 + 2 * tig;
                st_shared_u32(sK + swz_elem<kDChunks>(r, c),
                              Elem<T>::pack(acc_dk[mt][nt][2 * half] * scale, acc_dk[mt][nt][2 * half + 1] * scale));
                st_shared_u32(sV + swz_elem<kDChunks>(r, c),
                              Elem<T>::pack(acc_dv[mt][nt][2 * half], acc_dv[mt][nt][2 * half + 1]));
            }
        }
    __syncthreads();
    uint16_t* dk = const_cast<uint16_t*>(row_ptr(p.dk, b, n0, hk));
    uint16_t* dv = const_cast<uint16_t*>(row_ptr(p.dv, b, n0, hk));
    store_tile<kBlockN, kD>(dk, p.dk.seq_stride, kv_rows, p.head_dim, sK, kVec16, tid);
    store_tile<kBlockN, kD>(dv, p.dv.seq_stride, kv_rows, p.head_dim, sV, kVec16, tid);
}

// ---- 3. dQ conversion ----------------------------------------------------------------------------------

// One thread per (query row, 8-column chunk): dq = dtype(scale · accumulator).
template <typename T, int kD>
__global__ void __launch_bounds__(kThreads) bwd_convert_dq_kernel(const __grid_constant__ Params p) {
    constexpr int kChunks = kD / 8;
    constexpr int kRowsPerBlock = kThreads / kChunks;
    const int64_t rows = int64_t(p.batch) * p.heads_q * p.seqlen_q;
    const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / kChunks;
    const int chunk = static_cast<int>(threadIdx.x % kChunks);
    if (row >= rows || chunk * 8 >= p.head_dim) return;
    const int i = static_cast<int>(row % p.seqlen_q);
    const int64_t bh = row / p.seqlen_q;
    const int h = static_cast<int>(bh % p.heads_q), b = static_cast<int>(bh / p.heads_q);
    const float* src = p.dq_accum + (bh * p.seqlen_q_pad + i) * kD;
    const float4 x = *reinterpret_cast<const float4*>(src + dq_accum_chunk(i, 2 * chunk) * 4);
    const float4 y = *reinterpret_cast<const float4*>(src + dq_accum_chunk(i, 2 * chunk + 1) * 4);
    const float s = p.scale;
    const uint32_t w[4] = {Elem<T>::pack(x.x * s, x.y * s), Elem<T>::pack(x.z * s, x.w * s),
                           Elem<T>::pack(y.x * s, y.y * s), Elem<T>::pack(y.z * s, y.w * s)};
    uint16_t* dst = const_cast<uint16_t*>(row_ptr(p.dq, b, i, h)) + chunk * 8;
    if (p.vec16) {
        *reinterpret_cast<uint4*>(dst) = make_uint4(w[0], w[1], w[2], w[3]);
    } else {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            dst[2 * j] = static_cast<uint16_t>(w[j] & 0xffffu);
            dst[2 * j + 1] = static_cast<uint16_t>(w[j] >> 16);
        }
    }
}

// ---- launcher ------------------------------------------------------------------------------------------

// Queues the three kernels with tile shape Tl. `stagger`: see Params::stagger.
template <typename T, class Tl, bool kCausal>
void launch_backward(Params p, bool stagger, cudaStream_t stream) {
    constexpr int kD = Tl::kD;
    constexpr int kSmem = Tl::kSmemBytes;
    p.stagger = stagger;
    int device = 0, smem_optin = 0;
    FA4J_CUDA_CHECK(cudaGetDevice(&device));
    FA4J_CUDA_CHECK(cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    if (smem_optin < kSmem)
        fail(FA4J_ERROR_UNSUPPORTED, "attention backward on CUDA needs " + std::to_string(kSmem) +
                                         " bytes of shared memory per block for head_dim " + std::to_string(p.head_dim) +
                                         "; this device allows " + std::to_string(smem_optin) +
                                         " (an A100/H100-class GPU is required)");
    constexpr int kChunks = kD / 8;
    constexpr int kRowsPerBlock = kThreads / kChunks;
    const int64_t ws_rows = int64_t(p.batch) * p.heads_q * p.seqlen_q_pad;
    if (ws_rows > 0) {
        const auto blocks = static_cast<unsigned>((ws_rows + kRowsPerBlock - 1) / kRowsPerBlock);
        bwd_preprocess_kernel<T, kD><<<blocks, kThreads, 0, stream>>>(p);
        FA4J_CUDA_CHECK(cudaGetLastError());
    }
    const int n_tiles = (p.seqlen_k + Tl::kBlockN - 1) / Tl::kBlockN;
    if (n_tiles > 0 && p.batch > 0) {
        const auto kernel = p.vec16 ? bwd_main_kernel<T, Tl, kCausal, true> : bwd_main_kernel<T, Tl, kCausal, false>;
        FA4J_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
        // Key tiles vary fastest: the CTAs in flight together belong to one or two heads and walk the same
        // query rows, which L2 then serves; under the causal mask tile 0 has the most query tiles, so the
        // longest CTAs start first.
        const dim3 grid(static_cast<unsigned>(n_tiles), static_cast<unsigned>(p.heads_kv), static_cast<unsigned>(p.batch));
        kernel<<<grid, kThreads, kSmem, stream>>>(p);
        FA4J_CUDA_CHECK(cudaGetLastError());
    }
    const int64_t q_rows = int64_t(p.batch) * p.heads_q * p.seqlen_q;
    if (q_rows > 0) {
        const auto blocks = static_cast<unsigned>((q_rows + kRowsPerBlock - 1) / kRowsPerBlock);
        bwd_convert_dq_kernel<T, kD><<<blocks, kThreads, 0, stream>>>(p);
        FA4J_CUDA_CHECK(cudaGetLastError());
    }
}

// Picks the instantiation for the call's dtype and mask.
template <class Tl>
void dispatch_backward(const Params& p, bool bf16, bool causal, bool stagger, cudaStream_t stream) {
    if (bf16) {
        if (causal) launch_backward<__nv_bfloat16, Tl, true>(p, stagger, stream);
        else launch_backward<__nv_bfloat16, Tl, false>(p, stagger, stream);
    } else {
        if (causal) launch_backward<__half, Tl, true>(p, stagger, stream);
        else launch_backward<__half, Tl, false>(p, stagger, stream);
    }
}

}  // namespace fa4j::cuda::v1::fa2bwd
