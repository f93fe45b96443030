// The tile shape of the sm_80 forward for each head dim it is instantiated for (cmake/Fa4jInstantiations.cmake
// lists them; a call runs on the smallest >= its head dim, the extra columns zero-filled). Every loop
// bound, buffer size and copy mapping of the kernel derives from these.
#pragma once

#include "backends/cuda/kernels/sm80/primitives.cuh"

namespace fa4j::cuda::sm80 {

// The largest dynamic shared memory per CTA of sm_86 and sm_89 (99 KB; sm_80 has 163 KB, sm_90 227 KB).
// Every shape below fits it, so the kernel runs on every GPU from sm_80 on with no per-arch check.
constexpr int kMaxSmemBytesSm86 = 99 * 1024;

template <int kHeadDim_, int kBlockM_, int kBlockN_, int kWarps_, int kStages_, int kMinBlocksPerSm_>
struct ForwardTile {
    static constexpr int kHeadDim = kHeadDim_;
    static constexpr int kBlockM = kBlockM_;  // query rows per CTA
    static constexpr int kBlockN = kBlockN_;  // key/value rows per pipeline step
    static constexpr int kWarps = kWarps_;
    static constexpr int kStages = kStages_;  // K/V buffers in shared memory (2: double buffering)
    static constexpr int kMinBlocksPerSm = kMinBlocksPerSm_;  // register budget: 64K / (threads · this)

    static constexpr int kThreads = kWarps * kWarpSize;
    static constexpr int kWarpRows = kBlockM / kWarps;   // query rows owned by one warp
    static constexpr int kMFrags = kWarpRows / 16;       // m16 fragments per warp
    static constexpr int kSTiles = kBlockN / 8;          // n8 accumulator tiles of S per fragment
    static constexpr int kOTiles = kHeadDim / 8;         // n8 accumulator tiles of O per fragment
    static constexpr int kQkSteps = kHeadDim / 16;       // k16 steps of Q·Kᵀ
    static constexpr int kPvSteps = kBlockN / 16;        // k16 steps of P·V
    static constexpr int kChunksPerRow = kHeadDim / kChunkElems;

    static constexpr int kQBytes = kBlockM * kHeadDim * 2;
    static constexpr int kKvBytes = kBlockN * kHeadDim * 2;  // one K (or V) buffer
    static constexpr int kSmemBytes = kQBytes + 2 * kStages * kKvBytes;

    static_assert(kWarpRows * kWarps == kBlockM && kWarpRows % 16 == 0, "each warp owns whole m16 fragments");
    static_assert(kBlockN % 16 == 0, "k16 steps of P·V, pairs of n8 key tiles per ldmatrix");
    static_assert(kHeadDim % 32 == 0, "k16 steps of Q·Kᵀ, pairs of n8 head-dim tiles, rows of 4k chunks (swizzle)");
    static_assert((kBlockM * kChunksPerRow) % kThreads == 0 && (kBlockN * kChunksPerRow) % kThreads == 0,
                  "tiles split evenly across the threads' copies");
    static_assert((kWarpRows * kChunksPerRow) % kWarpSize == 0, "a warp's output rows split evenly across its lanes");
    static_assert(kStages >= 2, "at least double buffering");
    static_assert(kSmemBytes <= kMaxSmemBytesSm86, "fits the shared memory of every sm_8x GPU");
};

template <int kHeadDim>
struct ForwardTileOf;

// 128 query rows over 4 warps (32 rows, two m16 fragments each): every K and V fragment a warp loads
// from shared memory feeds two MMAs, half the shared-memory traffic per FLOP of 16-row warps. 64 keys
// per step: O (64) and S (64) accumulators leave ptxas room to keep the next fragments in flight
// without spilling (a 128-key step needs 128 for S and spills). 48 KB.
template <>
struct ForwardTileOf<64> {
    using type = ForwardTile</*kHeadDim=*/64, /*kBlockM=*/128, /*kBlockN=*/64, /*kWarps=*/4, /*kStages=*/2,
                             /*kMinBlocksPerSm=*/2>;
};

// As d = 64 with 96 columns (O: 96 registers, S: 64): rows of 12 chunks use the 4-chunk swizzle. 72 KB.
template <>
struct ForwardTileOf<96> {
    using type = ForwardTile<96, 128, 64, 4, 2, 2>;
};

// 128 query rows over 4 warps (32 rows each), 64 keys per step: O takes 128 registers and S 64, which
// with fragments and addresses just fits the 255-register limit; two stages of K and V (64 KB) plus
// Q (32 KB) leave room for two CTAs per SM on Hopper (228 KB). 96 KB.
template <>
struct ForwardTileOf<128> {
    using type = ForwardTile<128, 128, 64, 4, 2, 2>;
};

// From d = 192 on, O of two m16 fragments would take 192-256 registers: each warp owns one fragment
// (16 rows, O 96 registers), and 8 warps keep 128 rows per CTA, so a K/V tile fetched from L2 still
// serves 128 queries. 32 keys per step keeps the two K/V stages (48 KB) and Q (48 KB) within 96 KB.
template <>
struct ForwardTileOf<192> {
    using type = ForwardTile<192, 128, 32, 8, 2, 1>;
};

// d = 256: Q alone would take 64 KB at 128 rows, so 64 rows over 4 warps (O: 128 registers) and 32 keys
// per step: Q 32 KB + two K/V stages 64 KB = 96 KB. (FlashAttention-2 runs 64 × 64 tiles with single K
// and V buffers on sm_86 for the same reason.)
template <>
struct ForwardTileOf<256> {
    using type = ForwardTile<256, 64, 32, 4, 2, 2>;
};

}  // namespace fa4j::cuda::sm80
