// The sm_80 building blocks of the mma.sync kernels (the forward in this folder, the backward, and the
// Hopper forward's register-level pieces): the 16-byte vector that every copy and every shared-memory
// access is made of, the XOR swizzle of shared-memory tiles, thin wrappers over the sm_80 instructions
// (cp.async, ldmatrix, mma.sync m16n8k16), float → 16-bit packing, and quad reductions. Everything here
// runs unchanged on sm_80 and sm_90a. The online softmax built on them is common/online_softmax.cuh.
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

namespace fa4j::cuda::sm80 {

constexpr int kWarpSize = 32;
// Every global↔shared copy moves 16 bytes (cp.async's widest), every ldmatrix row is 16 bytes, and the
// swizzle permutes 16-byte chunks: 8 elements of a 16-bit type.
constexpr int kChunkBytes = 16;
constexpr int kChunkElems = 8;
// The swizzle of rows whose length is a multiple of 8 chunks permutes chunks within groups of 8 (128
// bytes = all 32 banks); rows of 4 mod 8 chunks (head dims 32 mod 64, e.g. 96) use groups of 4.
constexpr int kSwizzleChunks = 8;

__host__ __device__ constexpr int ceil_div(int a, int b) { return (a + b - 1) / b; }

// The largest power of two that divides both a and b (a, b > 0).
__host__ __device__ constexpr int largest_common_power_of_two(int a, int b) {
    int p = 1;
    while (a % (2 * p) == 0 && b % (2 * p) == 0) p *= 2;
    return p;
}

// ---- shared-memory tiles --------------------------------------------------------------------------
//
// A tile of kRows × kCols 16-bit elements is stored row-major with rows of kCols·2 bytes, but the
// chunks of a row are permuted within groups:
//   rows of 8k chunks (kCols % 64 == 0): chunk c of row r sits at c ^ (r % 8) (groups of 8);
//   rows of 8k+4 chunks (kCols % 64 == 32): at (c & ~3) | ((c ^ (r/2)) & 3) (groups of 4).
// ldmatrix reads 8 consecutive rows at one logical chunk per phase, and cp.async writes consecutive
// chunks of a row. In the first case all rows start at the same bank, and the XOR with r % 8 spreads
// the 8 rows over the 8 16-byte bank groups. In the second, consecutive rows start 4 groups apart
// (8k+4 chunks), so rows 2i and 2i+1 already differ in the high bit of the group and the XOR with
// (r/2) % 4 separates the four pairs: again 8 distinct groups, neither loads nor stores conflict.
// Moving by 8 rows keeps the pattern in both cases.

template <int kCols>
struct SwizzledTile {
    static_assert(kCols % (kChunkElems * 4) == 0, "tile rows must hold a multiple of 4 chunks");
    static constexpr int kChunksPerRow = kCols / kChunkElems;
    static constexpr int kGroup = kChunksPerRow % kSwizzleChunks == 0 ? kSwizzleChunks : 4;  // chunks per XOR group

    // The XOR pattern of row `row` (constant over 8 rows apart).
    __host__ __device__ __forceinline__ static int pattern(int row) {
        return kGroup == kSwizzleChunks ? row % kSwizzleChunks : (row >> 1) % 4;
    }
    // Chunk position of logical chunk `chunk` in its row.
    __host__ __device__ __forceinline__ static int position(int row, int chunk) {
        return kGroup == kSwizzleChunks ? (chunk ^ pattern(row))
                                        : ((chunk & ~(kGroup - 1)) | ((chunk ^ pattern(row)) & (kGroup - 1)));
    }
    // Byte offset of logical chunk `chunk` of row `row`.
    __host__ __device__ __forceinline__ static uint32_t offset(int row, int chunk) {
        return static_cast<uint32_t>((row * kChunksPerRow + position(row, chunk)) * kChunkBytes);
    }
};

// The byte offsets at which one lane points ldmatrix into a swizzled tile, for the pairs of chunks
// (2j, 2j+1) of its row, j = 0, 1, ...: the lane addresses chunk 2j + bit, where bit picks the matrix.
// Because the XOR only touches the chunk bits below the group size, only kGroup/2 distinct lane offsets
// exist (j % (kGroup/2)); the rest is a compile-time immediate, and so is moving by a multiple of 8 rows.
// Keeping these few in registers, instead of recomputing the XOR for each of the dozens of ldmatrix per
// tile, keeps the address arithmetic out of the inner loops and off the register budget.
template <int kCols>
struct LdmatrixLane {
    using Tile = SwizzledTile<kCols>;
    static constexpr int kRowBytes = kCols * 2;
    static constexpr int kPairs = Tile::kGroup / 2;  // chunk pairs per XOR group
    uint32_t offset[kPairs];

    __host__ __device__ __forceinline__ LdmatrixLane(int row, int bit) {
#ifdef __CUDA_ARCH__  // host compilers do not know the pragma (this is host-callable for index checks)
#pragma unroll
#endif
        for (int j = 0; j < kPairs; ++j)
            offset[j] = static_cast<uint32_t>(row * kRowBytes + Tile::position(row, 2 * j + bit) * kChunkBytes);
    }
    // Offset of chunk pair j (a compile-time constant after unrolling), `rows` rows further down
    // (a multiple of 8, so the swizzle pattern is the same).
    __host__ __device__ __forceinline__ uint32_t at(int j, int rows = 0) const {
        return offset[j % kPairs] + static_cast<uint32_t>((j / kPairs) * Tile::kGroup * kChunkBytes + rows * kRowBytes);
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

// ---- quad reductions --------------------------------------------------------------------------------

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

}  // namespace fa4j::cuda::sm80
