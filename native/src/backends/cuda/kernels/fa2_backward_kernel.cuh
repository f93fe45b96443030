// FlashAttention-2 backward on tensor cores (sm_80 mma.sync, which also runs on sm_90a), in three kernels:
//
//   1. preprocess:  D = rowsum(dO ∘ O) and lse·log2(e) per query row into the workspace, and the fp32 dQ
//                   accumulator zeroed.
//   2. main:        one CTA per (key tile of kBlockN rows, kv head, batch). K and V stay in shared memory;
//                   the CTA walks the query tiles of every query head of its GQA group, recomputes
//                   S = Q·Kᵀ and P = exp2(S·scale·log2e − lse·log2e), and accumulates dV += Pᵀ·dO and
//                   dK += dSᵀ·Q in registers, dS = P ∘ (dO·Vᵀ − D). dQ += dS·K goes to the fp32 workspace
//                   through atomics, since many key tiles add to one query row. Looping the group's query
//                   heads inside the CTA makes dK/dV per kv head without atomics or a reduction pass.
//   3. convert:     dQ = scale · accumulator, rounded to the dtype and written through dq's strides.
//
// Shared-memory tiles are row-major with 16-byte chunks XOR-swizzled by (row mod 8): the 8 row addresses
// of an ldmatrix (and the 8 rows a warp stores an accumulator fragment to) then fall into 8 distinct
// bank groups, so neither the normal nor the transposed reads conflict.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "backends/cuda/cuda_check.cuh"
#include "backends/cuda/kernels/fa2_backward_params.cuh"

namespace fa4j::cuda::fa2bwd {

constexpr int kThreads = 256;  // 8 warps per CTA
constexpr float kLog2e = 1.4426950408889634f;

// ---- tile shapes ---------------------------------------------------------------------------------------

// kD: padded head dim (64 or 128); kBlockM: query rows per step of the main loop.
template <int kD, int kBlockM>
struct Tile {
    static constexpr int kBlockN = 128;  // keys per CTA: dK, dV for 128 keys live in registers

    // S = Q·Kᵀ and dP = dO·Vᵀ ([kBlockM x kBlockN]): 2 x 4 warps, each (kBlockM/2) x 32.
    static constexpr int kSMT = kBlockM / 32, kSNT = 4;
    // dV, dK ([kBlockN x kD]): 4 x 2 warps, each 32 x kD/2.
    static constexpr int kKvMT = 2, kKvNT = kD / 16;
    // dQ ([kBlockM x kD]): 2 x 4 warps, each (kBlockM/2) x kD/4.
    static constexpr int kQMT = kBlockM / 32, kQNT = kD / 32;

    // Shared memory (bytes). Q and dO (and their lse/D rows) are double-buffered so the next query tile
    // streams in (cp.async) while this one is computed; P and dS go through shared memory because the
    // dV/dK products need them transposed.
    static constexpr int kTileQ = kBlockM * kD * 2;
    static constexpr int kTileK = kBlockN * kD * 2;
    static constexpr int kTileP = kBlockM * kBlockN * 2;
    static constexpr int kOffK = 0;
    static constexpr int kOffV = kOffK + kTileK;
    static constexpr int kOffQ = kOffV + kTileK;     // 2 stages
    static constexpr int kOffDO = kOffQ + 2 * kTileQ;  // 2 stages
    static constexpr int kOffP = kOffDO + 2 * kTileQ;
    static constexpr int kOffDS = kOffP + kTileP;
    static constexpr int kOffLse = kOffDS + kTileP;         // 2 stages of kBlockM floats
    static constexpr int kOffDelta = kOffLse + 2 * kBlockM * 4;  // 2 stages of kBlockM floats
    static constexpr int kSmemBytes = kOffDelta + 2 * kBlockM * 4;

    static_assert(kD == 64 || kD == 128, "head-dim instantiations are 64 and 128");
    static_assert(kBlockM == 64 || kBlockM == 128, "query tile of 64 or 128 rows");
    static_assert(kRowPadding % kBlockM == 0, "workspace rows must hold whole query tiles");
};

// ---- element types -------------------------------------------------------------------------------------

template <typename T>
struct Elem;

template <>
struct Elem<__nv_bfloat16> {
    static __device__ __forceinline__ float to_float(uint16_t u) { return __uint_as_float(uint32_t(u) << 16); }
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<const uint32_t*>(&h);
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
        const __half2 h = __floats2half2_rn(lo, hi);
        return *reinterpret_cast<const uint32_t*>(&h);
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
        float l2 = __int_as_float(0x7f800000);  // +inf: P = exp2(s - inf) = 0 for padding rows
        if (i < p.seqlen_q) {
            const float lse = p.lse[b * p.lse_batch_stride + h * p.lse_head_stride + i * p.lse_seq_stride];
            // A row that attends no key has lse = -inf; +inf makes its P (and gradients) exactly 0.
            if (lse != -l2) l2 = lse * kLog2e;
        }
        p.lse_log2[row] = l2;
    }
}

// ---- 2. main -------------------------------------------------------------------------------------------

template <typename T, int kD, int kBlockM, bool kCausal>
__global__ void __launch_bounds__(kThreads, 1) bwd_main_kernel(const __grid_constant__ Params p) {
    using Tl = Tile<kD, kBlockM>;
    constexpr int kBlockN = Tl::kBlockN;
    constexpr int kDChunks = kD / 8, kNChunks = kBlockN / 8;
    extern __shared__ __align__(1024) unsigned char smem[];
    const uint32_t s_base = smem_u32(smem);
    if (s_base % 1024 != 0) __trap();  // warp_gemm's XOR addressing relies on 1 KiB aligned tiles
    const uint32_t sK = s_base + Tl::kOffK, sV = s_base + Tl::kOffV;
    const uint32_t sP = s_base + Tl::kOffP, sdS = s_base + Tl::kOffDS;
    const float* s_lse = reinterpret_cast<const float*>(smem + Tl::kOffLse);
    const float* s_delta = reinterpret_cast<const float*>(smem + Tl::kOffDelta);

    const int tid = static_cast<int>(threadIdx.x), lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, tig = lane & 3;  // mma fragment: row group, thread in group
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

    load_tile<kBlockN, kD>(sK, row_ptr(p.k, b, n0, hk), p.k.seq_stride, kv_rows, p.head_dim, p.vec16, tid);
    load_tile<kBlockN, kD>(sV, row_ptr(p.v, b, n0, hk), p.v.seq_stride, kv_rows, p.head_dim, p.vec16, tid);

    // Step t of the loop: query head hk·group + t / m_count, query tile m_begin + t % m_count.
    const auto load_query_tile = [&](int t, int stage) {
        const int head = hk * p.group + t / m_count;
        const int m0 = (m_begin + t % m_count) * kBlockM;
        const int rows = p.seqlen_q - m0;
        load_tile<kBlockM, kD>(s_base + Tl::kOffQ + stage * Tl::kTileQ, row_ptr(p.q, b, m0, head), p.q.seq_stride,
                               rows, p.head_dim, p.vec16, tid);
        load_tile<kBlockM, kD>(s_base + Tl::kOffDO + stage * Tl::kTileQ, row_ptr(p.dout, b, m0, head),
                               p.dout.seq_stride, rows, p.head_dim, p.vec16, tid);
        const int64_t ws_row = (int64_t(b) * p.heads_q + head) * p.seqlen_q_pad + m0;
        constexpr int kVecs = kBlockM / 4;  // float4s per row vector
        if (tid < kVecs)
            cp_async_16(s_base + Tl::kOffLse + (stage * kBlockM + tid * 4) * 4, p.lse_log2 + ws_row + tid * 4, true);
        else if (tid < 2 * kVecs)
            cp_async_16(s_base + Tl::kOffDelta + (stage * kBlockM + (tid - kVecs) * 4) * 4,
                        p.delta + ws_row + (tid - kVecs) * 4, true);
    };

    float acc_dk[Tl::kKvMT][Tl::kKvNT][4], acc_dv[Tl::kKvMT][Tl::kKvNT][4];
    clear(acc_dk);
    clear(acc_dv);

    // Warp tiles: S/dP and dQ as 2 x 4 warps (wm, wn); dK/dV as 4 x 2 warps (wmk, wnk).
    const int wm = warp >> 2, wn = warp & 3, wmk = warp >> 1, wnk = warp & 1;
    const float scale_log2 = p.scale_log2;

    if (iters > 0) load_query_tile(0, 0);
    cp_async_commit();

    for (int t = 0; t < iters; ++t) {
        const int stage = t & 1;
        const uint32_t sQ = s_base + Tl::kOffQ + stage * Tl::kTileQ;
        const uint32_t sdO = s_base + Tl::kOffDO + stage * Tl::kTileQ;
        // This step's tiles have landed, and every warp is done with the previous step, whose buffers
        // (the other stage, sP, sdS) may now be overwritten.
        cp_async_wait_all();
        __syncthreads();
        if (t + 1 < iters) load_query_tile(t + 1, stage ^ 1);
        cp_async_commit();

        const int head = hk * p.group + t / m_count;
        const int m0 = (m_begin + t % m_count) * kBlockM;

        // S = Q·Kᵀ, dP = dO·Vᵀ.
        float s[Tl::kSMT][Tl::kSNT][4], dp[Tl::kSMT][Tl::kSNT][4];
        clear(s);
        clear(dp);
        warp_gemm<T, Tl::kSMT, Tl::kSNT, kD, false, false, kDChunks, kDChunks>(s, sQ, wm * (kBlockM / 2), sK, wn * 32,
                                                                                lane);
        warp_gemm<T, Tl::kSMT, Tl::kSNT, kD, false, false, kDChunks, kDChunks>(dp, sdO, wm * (kBlockM / 2), sV,
                                                                                wn * 32, lane);

        // P = exp2(S·scale·log2e − lse·log2e) and dS = P ∘ (dP − D), masked where the key is past the end or
        // (causal) after the query's diagonal; both rounded to the dtype into shared memory.
        const float* lse = s_lse + stage * kBlockM;
        const float* delta = s_delta + stage * kBlockM;
        const bool masked = n0 + kBlockN > p.seqlen_k || (kCausal && n0 + kBlockN - 1 > m0 + causal_offset);
        // This lane's element (row wm·kBlockM/2 + g, column wn·32 + 2·tig) of sP/sdS; other fragments are
        // whole rows (+ constant) or chunks (^ constant) away.
        const uint32_t ps_lane = swz_elem<kNChunks>(wm * (kBlockM / 2) + g, wn * 32 + 2 * tig);
#pragma unroll
        for (int mt = 0; mt < Tl::kSMT; ++mt) {
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                const int r = wm * (kBlockM / 2) + mt * 16 + g + half * 8;
                const float row_lse = lse[r], row_delta = delta[r];
                const int last_key = kCausal ? min(p.seqlen_k - 1, m0 + r + causal_offset) : p.seqlen_k - 1;
#pragma unroll
                for (int nt = 0; nt < Tl::kSNT; ++nt) {
                    const int c = wn * 32 + nt * 8 + 2 * tig;
                    float p0 = ex2(fmaf(s[mt][nt][2 * half], scale_log2, -row_lse));
                    float p1 = ex2(fmaf(s[mt][nt][2 * half + 1], scale_log2, -row_lse));
                    if (masked) {
                        if (n0 + c > last_key) p0 = 0.0f;
                        if (n0 + c + 1 > last_key) p1 = 0.0f;
                    }
                    const float ds0 = p0 * (dp[mt][nt][2 * half] - row_delta);
                    const float ds1 = p1 * (dp[mt][nt][2 * half + 1] - row_delta);
                    const uint32_t offset = (ps_lane ^ uint32_t(nt * 16)) + uint32_t((mt * 16 + half * 8) * kBlockN * 2);
                    st_shared_u32(sP + offset, Elem<T>::pack(p0, p1));
                    st_shared_u32(sdS + offset, Elem<T>::pack(ds0, ds1));
                }
            }
        }
        __syncthreads();

        // dV += Pᵀ·dO, dK += dSᵀ·Q (Pᵀ, dSᵀ read transposed from the [query][key] tiles).
        warp_gemm<T, Tl::kKvMT, Tl::kKvNT, kBlockM, true, true, kNChunks, kDChunks>(acc_dv, sP, wmk * 32, sdO,
                                                                                     wnk * (kD / 2), lane);
        warp_gemm<T, Tl::kKvMT, Tl::kKvNT, kBlockM, true, true, kNChunks, kDChunks>(acc_dk, sdS, wmk * 32, sQ,
                                                                                     wnk * (kD / 2), lane);

        // dQ (unscaled) += dS·K, added to the fp32 workspace: other CTAs add their key tiles to the same rows.
        float dq[Tl::kQMT][Tl::kQNT][4];
        clear(dq);
        warp_gemm<T, Tl::kQMT, Tl::kQNT, kBlockN, false, true, kNChunks, kDChunks>(dq, sdS, wm * (kBlockM / 2), sK,
                                                                                    wn * (kD / 4), lane);
        float* dq_rows = p.dq_accum + ((int64_t(b) * p.heads_q + head) * p.seqlen_q_pad + m0) * kD;
#pragma unroll
        for (int mt = 0; mt < Tl::kQMT; ++mt)
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                const int r = wm * (kBlockM / 2) + mt * 16 + g + half * 8;
#pragma unroll
                for (int nt = 0; nt < Tl::kQNT; ++nt) {
                    const int c = wn * (kD / 4) + nt * 8 + 2 * tig;
                    atomic_add2(dq_rows + r * kD + c, dq[mt][nt][2 * half], dq[mt][nt][2 * half + 1]);
                }
            }
    }

    // Epilogue: dK·scale and dV rounded to the dtype, staged through the K/V tiles for 16-byte stores.
    cp_async_wait_all();  // with no query tile (iters == 0) the K/V copies may still be landing
    __syncthreads();      // every warp is done reading sK and sV
    const float scale = p.scale;
#pragma unroll
    for (int mt = 0; mt < Tl::kKvMT; ++mt)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int r = wmk * 32 + mt * 16 + g + half * 8;
#pragma unroll
            for (int nt = 0; nt < Tl::kKvNT; ++nt) {
                const int c = wnk * (kD / 2) + nt * 8 + 2 * tig;
                st_shared_u32(sK + swz_elem<kDChunks>(r, c),
                              Elem<T>::pack(acc_dk[mt][nt][2 * half] * scale, acc_dk[mt][nt][2 * half + 1] * scale));
                st_shared_u32(sV + swz_elem<kDChunks>(r, c),
                              Elem<T>::pack(acc_dv[mt][nt][2 * half], acc_dv[mt][nt][2 * half + 1]));
            }
        }
    __syncthreads();
    uint16_t* dk = const_cast<uint16_t*>(row_ptr(p.dk, b, n0, hk));
    uint16_t* dv = const_cast<uint16_t*>(row_ptr(p.dv, b, n0, hk));
    store_tile<kBlockN, kD>(dk, p.dk.seq_stride, kv_rows, p.head_dim, sK, p.vec16, tid);
    store_tile<kBlockN, kD>(dv, p.dv.seq_stride, kv_rows, p.head_dim, sV, p.vec16, tid);
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
    const float4* src = reinterpret_cast<const float4*>(p.dq_accum + (bh * p.seqlen_q_pad + i) * kD + chunk * 8);
    const float4 x = src[0], y = src[1];
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

template <typename T, int kD, int kBlockM, bool kCausal>
void launch_backward(const Params& p, cudaStream_t stream) {
    constexpr int kSmem = Tile<kD, kBlockM>::kSmemBytes;
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
    const int n_tiles = (p.seqlen_k + Tile<kD, kBlockM>::kBlockN - 1) / Tile<kD, kBlockM>::kBlockN;
    if (n_tiles > 0 && p.batch > 0) {
        const auto kernel = bwd_main_kernel<T, kD, kBlockM, kCausal>;
        FA4J_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
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

// Query rows per step of the main loop, per padded head dim.
template <int kD>
constexpr int kQueryTile = 64;

template <typename Element, int kD, bool kCausal>
void run_backward(const Params& p, cudaStream_t stream) {
    launch_backward<Element, kD, kQueryTile<kD>, kCausal>(p, stream);
}

}  // namespace fa4j::cuda::fa2bwd
