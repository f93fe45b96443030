// The compile-time shape of one Hopper forward kernel: every loop bound, register array and shared-memory
// offset of the mainloop and the epilogue derives from these (values per head dim: tile_size.hpp).
#pragma once

#include "backends/cuda/kernels/sm90/primitives.cuh"
#include "backends/cuda/kernels/sm90/tile_size.hpp"

namespace fa4j::cuda::sm90 {

template <int kHeadDim_, int kBlockN_, int kConsumers_, int kStages_, bool kPingpong_>
struct ForwardTile {
    static constexpr int kHeadDim = kHeadDim_;  // the instantiation's head dim: Q·Kᵀ runs over it
    // Shared-memory tiles, P·V and O are whole 64-column (128-byte) blocks; columns past the call's head
    // dim are zero-filled by TMA and never written.
    static constexpr int kHeadDimPadded = (kHeadDim + kBlockCols - 1) / kBlockCols * kBlockCols;
    static constexpr int kBlockN = kBlockN_;        // keys per pipeline step (the N of S = Q·Kᵀ)
    static constexpr int kConsumers = kConsumers_;  // consumer warpgroups, 64 query rows each
    static constexpr int kStages = kStages_;        // K and V buffers in the shared-memory ring
    // Consumers take turns issuing their matrix products (named barriers), so that one warpgroup's
    // softmax runs while the other's products occupy the tensor cores.
    static constexpr bool kPingpong = kPingpong_;
    static constexpr int kBlockM = 64 * kConsumers;
    static constexpr int kThreads = kWarpgroupThreads * (1 + kConsumers);
    // Registers per thread after setmaxnreg: the producer keeps few, the consumers share the rest of
    // the 64K-register file (the sum stays within it; values are multiples of 8).
    static constexpr int kProducerRegisters = kConsumers == 2 ? 24 : 32;
    static constexpr int kConsumerRegisters = kConsumers == 2 ? 240 : 160;

    static constexpr int kColBlocks = kHeadDimPadded / kBlockCols;  // 128-byte column blocks per row
    static constexpr int kQkSteps = kHeadDim / 16;                  // k16 steps of Q·Kᵀ
    static constexpr int kPvSteps = kBlockN / 16;                   // k16 steps of P·V
    static constexpr int kSRegs = kBlockN / 2;                      // S accumulators per thread
    static constexpr int kORegs = kHeadDimPadded / 2;               // O accumulators per thread
    static constexpr int kPRegs = kBlockN / 4;                      // P, two 16-bit values per register

    static constexpr int kQBytes = kBlockM * kHeadDimPadded * 2;
    static constexpr int kKvBytes = kBlockN * kHeadDimPadded * 2;  // one K (or V) buffer
    static constexpr int kQOffset = 0;
    static constexpr int kKOffset = kQOffset + kQBytes;
    static constexpr int kVOffset = kKOffset + kStages * kKvBytes;
    static constexpr int kBarrierOffset = kVOffset + kStages * kKvBytes;
    // Q full, Q empty (persistent schedulers: the epilogue is done with the Q buffer); K full, V full,
    // K empty, V empty per stage.
    static constexpr int kBarriers = 2 + 4 * kStages;
    // + 1024: the dynamic shared memory is aligned up to the swizzle period at run time.
    static constexpr int kSmemBytes = kBarrierOffset + 8 * kBarriers + kSwizzleAtomBytes;

    static_assert(kHeadDim % 16 == 0 && kHeadDim <= 256, "head dims are k16 steps, at most 256");
    static_assert(kBlockN % 16 == 0 && kBlockN <= 256, "kBlockN is a wgmma N and a TMA box height");
    static_assert(kBlockM <= 256, "the Q tile is one TMA box high");
    static_assert(kQBytes % kSwizzleAtomBytes == 0 && kKvBytes % kSwizzleAtomBytes == 0,
                  "tiles keep the 1024-byte alignment of the swizzle");
    static_assert((kBlockN * kSwizzleRowBytes) % kSwizzleAtomBytes == 0 && (kBlockM * kSwizzleRowBytes) % kSwizzleAtomBytes == 0,
                  "column blocks keep the 1024-byte alignment of the swizzle");
    static_assert(kProducerRegisters * 128 + kConsumerRegisters * 128 * kConsumers <= 65536, "register file");
    static_assert(kSmemBytes <= 227 * 1024, "shared memory per CTA");
    static_assert(1 + 2 * kConsumers <= 16, "named barriers: 0, the epilogue's and the pingpong turns");
};

// The tile of the instantiation for head dim kHeadDim (tile_size.hpp).
template <int kHeadDim>
using ForwardTileOf = ForwardTile<kHeadDim, forward_tile_size(kHeadDim).block_n, forward_tile_size(kHeadDim).consumers,
                                  forward_tile_size(kHeadDim).stages, forward_tile_size(kHeadDim).pingpong>;

}  // namespace fa4j::cuda::sm90
