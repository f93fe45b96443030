// The SM80 backward's tile shapes, one per head-dim instantiation, its shared-memory layout and the layout
// of its fp32 workspace. Plain C++ (no CUDA types): the kernel table (dispatch/cuda_kernel_table.cpp)
// reads the shared memory an instantiation needs from these same definitions, and the entry point
// (attention_backward_cuda.cu) sizes the workspace with them.
#pragma once

#include <cstdint>

namespace fa4j::cuda::kernels::sm80 {

constexpr int kBwdThreads = 256;  // 8 warps per CTA, one CTA per SM (dK/dV accumulators take most registers)
constexpr int kBwdWarps = kBwdThreads / 32;

// ---- workspace ------------------------------------------------------------------------------------------
//
// The workspace holds, per query head, rows of an fp32 dQ accumulator [rows][kD] and two fp32 row vectors
// (lse, D). Sequence b's query row i is workspace row workspace_row0(b) + i of its head; each sequence owns
// its rows rounded up to the query tile, so that the main kernel reads and accumulates whole tiles without
// bounds checks and never into another sequence's rows:
//   dense   sequence b: rows [b·seqlen_q_pad, (b + 1)·seqlen_q_pad), seqlen_q_pad = seqlen_q rounded up to
//           kRowPadding (a multiple of every query tile);
//   varlen  sequence b (packed query rows [q_row0, q_row0 + len)): rows from (q_row0 rounded down to 4) +
//           b·kVarlenRowGap. Tiles touch rows below row0 + len + kBlockM - 1 <= q_row0 + b·G + len +
//           kBlockM - 1, and sequence b + 1 starts at or after q_row0 + len - 3 + (b + 1)·G (cu_seqlens
//           non-decreasing), so with G >= kBlockM + 2 no two sequences share a row; with any metadata the
//           last row is below total_q + (batch - 1)·G + kBlockM - 1 < workspace_rows_per_head. Row 0 of every
//           sequence is a multiple of 4 (16-byte vectors of lse and D).
constexpr int kRowPadding = 128;
constexpr int kVarlenRowGap = kRowPadding + 4;

constexpr int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

constexpr int64_t dense_seqlen_q_pad(int64_t seqlen_q) { return round_up(seqlen_q, kRowPadding); }

// First workspace row (within its head) of sequence b, whose query rows start at packed row q_row0 (varlen).
constexpr int64_t workspace_row0(bool varlen, int64_t b, int64_t q_row0, int64_t seqlen_q_pad) {
    return varlen ? (q_row0 & ~int64_t{3}) + b * kVarlenRowGap : b * seqlen_q_pad;
}

// Workspace rows per query head (a multiple of 4, so every head's rows start 16-byte aligned).
constexpr int64_t workspace_rows_per_head(bool varlen, int64_t batch, int64_t total_q, int64_t seqlen_q_pad) {
    return varlen ? round_up(total_q, 4) + batch * kVarlenRowGap : batch * seqlen_q_pad;
}

// ---- tile shapes ----------------------------------------------------------------------------------------

// kD: padded head dim. kBlockM query rows per step, kBlockN keys per CTA. The three warp grids split the 8
// warps over [rows x columns] of each product: S/dP [kBlockM x kBlockN] as kSdpWarpsM x (8 / kSdpWarpsM),
// dK/dV [kBlockN x kD] as kKvWarpsN x (8 / kKvWarpsN), dQ [kBlockM x kD] as kDqWarpsM x (8 / kDqWarpsM). A
// warp tile of r x c reads (r + c)·16·2 bytes of shared memory per k16 step for r·c·32 FLOP: square warp
// tiles read the least.
//
// kMaskInSmem: how tiles that need the per-element mask (window, causal, the end of the keys) get it without
// softcap and ALiBi: P zeroed in registers as it is computed, or P and dS zeroed in shared memory after they
// are stored (see the main kernel; with softcap or ALiBi always the latter). Both are exact; the choice is
// ptxas's spills per head dim (the kernels run at 255 registers): in shared memory 16 bytes at d=64 against
// 48-56 in registers, in registers 16-32 at d=128 against 80-112.
template <int kD_, int kBlockM_, int kBlockN_, int kSdpWarpsM_, int kKvWarpsN_, int kDqWarpsM_, bool kMaskInSmem_>
struct BwdTile {
    static constexpr int kD = kD_, kBlockM = kBlockM_, kBlockN = kBlockN_;
    static constexpr bool kMaskInSmem = kMaskInSmem_;

    static constexpr int kSdpWarpsM = kSdpWarpsM_, kSdpWarpsN = kBwdWarps / kSdpWarpsM_;
    static constexpr int kSdpRows = kBlockM / kSdpWarpsM, kSdpCols = kBlockN / kSdpWarpsN;  // per warp
    static constexpr int kSMT = kSdpRows / 16, kSNT = kSdpCols / 8;                           // m16 x n8 tiles

    static constexpr int kKvWarpsN = kKvWarpsN_, kKvWarpsD = kBwdWarps / kKvWarpsN_;
    static constexpr int kKvRows = kBlockN / kKvWarpsN, kKvCols = kD / kKvWarpsD;
    static constexpr int kKvMT = kKvRows / 16, kKvNT = kKvCols / 8;

    static constexpr int kDqWarpsM = kDqWarpsM_, kDqWarpsD = kBwdWarps / kDqWarpsM_;
    static constexpr int kDqRows = kBlockM / kDqWarpsM, kDqCols = kD / kDqWarpsD;
    static constexpr int kQMT = kDqRows / 16, kQNT = kDqCols / 8;

    // Shared memory (bytes). Q and dO (and their lse/D rows) are double-buffered so the next query tile
    // streams in (cp.async) while this one is computed; P and dS go through shared memory because the dV/dK
    // products need them transposed. The CTA's constants (backward_main.cuh: CtaConstants) sit after the row
    // vectors. Last, and only where dQ leaves by bulk reduction (uses_bulk_dq), the fp32 dQ tile staged for
    // the bulk copy: without it the kernel fits the 163 KB of compute capability 8.0/8.7.
    static constexpr int kTileQ = kBlockM * kD * 2;
    static constexpr int kTileK = kBlockN * kD * 2;
    static constexpr int kTileP = kBlockM * kBlockN * 2;
    static constexpr int kTileDq = kBlockM * kD * 4;
    static constexpr int kStages = 2;
    static constexpr int kOffK = 0;
    static constexpr int kOffV = kOffK + kTileK;
    static constexpr int kOffQ = kOffV + kTileK;
    static constexpr int kOffDO = kOffQ + kStages * kTileQ;
    static constexpr int kOffP = kOffDO + kStages * kTileQ;
    static constexpr int kOffDS = kOffP + kTileP;
    static constexpr int kOffLse = kOffDS + kTileP;                    // kStages x kBlockM floats
    static constexpr int kOffDelta = kOffLse + kStages * kBlockM * 4;  // kStages x kBlockM floats
    static constexpr int kOffCta = kOffDelta + kStages * kBlockM * 4;  // CtaConstants
    static constexpr int kCtaBytes = 128;
    static constexpr int kOffDq = kOffCta + kCtaBytes;
    static constexpr int kSmemBytesAtomic = kOffDq;
    static constexpr int kSmemBytesBulk = kOffDq + kTileDq;

    static_assert(kD % 64 == 0, "rows of whole swizzle groups (8 chunks of 8 elements)");
    static_assert(kBlockM % 64 == 0 && kBlockM <= kRowPadding && kRowPadding % kBlockM == 0,
                  "dense workspace rows hold whole query tiles");
    static_assert(kBlockM + 2 <= kVarlenRowGap && kVarlenRowGap % 4 == 0, "varlen workspace rows (see above)");
    static_assert(kBlockN % 64 == 0, "key tiles of whole swizzle groups");
    static_assert(kSdpRows * kSdpWarpsM == kBlockM && kSdpCols * kSdpWarpsN == kBlockN, "S/dP warp grid");
    static_assert(kKvRows * kKvWarpsN == kBlockN && kKvCols * kKvWarpsD == kD, "dK/dV warp grid");
    static_assert(kDqRows * kDqWarpsM == kBlockM && kDqCols * kDqWarpsD == kD, "dQ warp grid");
    // warp_gemm moves between fragments by XOR-ing chunk offsets into the lane's address: the fragment
    // counts it steps over must be powers of two (and B fragments come in pairs).
    static constexpr bool pow2(int x) { return x > 0 && (x & (x - 1)) == 0; }
    static_assert(pow2(kSMT) && pow2(kSNT) && pow2(kKvMT) && pow2(kKvNT) && pow2(kQMT) && pow2(kQNT), "pow2");
    static_assert(kSNT % 2 == 0 && kKvNT % 2 == 0 && kQNT % 2 == 0, "B fragments are loaded in pairs");
    static_assert(kOffLse % 1024 == 0, "every operand tile 1 KiB aligned (warp_gemm's XOR addressing)");
    static_assert(kOffDq % 128 == 0, "the bulk copy's source is 16-byte aligned");
    static_assert(kSmemBytesBulk <= 227 * 1024, "shared memory of one Hopper SM");
};

// The tile of each head-dim instantiation (cmake/Fa4jInstantiations.cmake lists them; the generated
// translation units fail to compile for a head dim without a tile here).
template <int kD>
struct BackwardTileFor;

// 128 query rows per step, 128 keys per CTA: dK/dV take 64 registers, S/P and dP 64 each. Twice the FLOPs
// of a 64-row step per barrier pair and per lse/D load; S/dP as 2 x 4 warps of 64 x 32, dK/dV and dQ as
// 4 x 2 warps of 32 x 32. Measured on the H100 (docs/PERF.md, "FA2 backward v2"): against 64-row steps
// +14 %, against S/dP as 4 x 2 warps of 32 x 64 even, against S and dP both before P and dS (FA2's order)
// +2 % non-causal / +14 % causal.
template <>
struct BackwardTileFor<64> {
    using type = BwdTile</*kD=*/64, /*kBlockM=*/128, /*kBlockN=*/128, /*kSdpWarpsM=*/2, /*kKvWarpsN=*/4,
                         /*kDqWarpsM=*/4, /*kMaskInSmem=*/true>;
};

// 64 query rows per step, 128 keys per CTA. dK and dV for 128 keys take 128 of the 255 registers, so the
// query tile stays at 64 rows (32 registers each for S/P and dP). S/dP and dQ as 2 x 4 warps of 32 x 32 and
// dK/dV as 4 x 2 warps of 32 x 64: the warp tiles that read the least shared memory. Measured on the H100
// (docs/PERF.md): computing dP in two column slices (16 fewer registers) cost 8 %.
template <>
struct BackwardTileFor<128> {
    using type = BwdTile</*kD=*/128, /*kBlockM=*/64, /*kBlockN=*/128, /*kSdpWarpsM=*/2, /*kKvWarpsN=*/4,
                         /*kDqWarpsM=*/2, /*kMaskInSmem=*/false>;
};

template <int kD>
using BackwardTile = typename BackwardTileFor<kD>::type;

// Whether dQ leaves by bulk reduction (cp.reduce.async.bulk, sm_90) on a GPU of compute capability
// cc_major.x: the kernels use it exactly when compiled for __CUDA_ARCH__ >= 900, which is the code every
// compute capability >= 9.0 runs (sm_90a SASS, compute_90 PTX). (A build with only sm_8x code running on a
// 9.0 GPU reserves the staging tile and leaves it unused.)
constexpr bool uses_bulk_dq(int cc_major) { return cc_major >= 9; }

// Shared memory per CTA of the instantiation for head dim head_dim_instantiation on a GPU of compute
// capability cc_major.x; 0 for a head dim without an instantiation.
constexpr int backward_smem_bytes(int head_dim_instantiation, int cc_major) {
    const bool bulk = uses_bulk_dq(cc_major);
    switch (head_dim_instantiation) {
        case 64: return bulk ? BackwardTile<64>::kSmemBytesBulk : BackwardTile<64>::kSmemBytesAtomic;
        case 128: return bulk ? BackwardTile<128>::kSmemBytesBulk : BackwardTile<128>::kSmemBytesAtomic;
        default: return 0;
    }
}

}  // namespace fa4j::cuda::kernels::sm80
