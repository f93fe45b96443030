// What the parts of the Hopper forward kernel (mainloop.cuh, epilogue.cuh, forward_kernel.cuh) share: the
// kernel's parameters, the view of its shared memory, the pipeline position that the producer and the
// consumers track alike, and the description of one work tile.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backends/cuda/kernels/common/attention_params.hpp"
#include "backends/cuda/kernels/common/block_range.cuh"
#include "backends/cuda/kernels/common/seqlen_info.cuh"
#include "backends/cuda/kernels/sm90/primitives.cuh"
#include "backends/cuda/kernels/sm90/tensor_map.hpp"
#include "backends/cuda/kernels/sm90/tile_scheduler.cuh"

namespace fa4j::cuda::sm90 {

// The kernel's only argument (__grid_constant__): the call, the TMA descriptors of q, k, v, the schedule.
struct ForwardKernelParams {
    ForwardTensorMaps tma;
    kernels::ForwardParams p;
    TileSchedulerParams sched;
};

// Shared memory of a Tile: Q, the K and V rings and the mbarriers, from a 1024-byte aligned base.
template <class Tile>
struct ForwardSmem {
    uint32_t base;       // shared-state-space address
    unsigned char* ptr;  // the same, generic

    __device__ explicit ForwardSmem(unsigned char* raw) {
        base = (smem_address(raw) + (kSwizzleAtomBytes - 1)) & ~static_cast<uint32_t>(kSwizzleAtomBytes - 1);
        ptr = raw + (base - smem_address(raw));
    }
    __device__ uint32_t q() const { return base + Tile::kQOffset; }
    __device__ unsigned char* q_ptr() const { return ptr + Tile::kQOffset; }
    __device__ uint32_t k(int stage) const { return base + Tile::kKOffset + static_cast<uint32_t>(stage * Tile::kKvBytes); }
    __device__ uint32_t v(int stage) const { return base + Tile::kVOffset + static_cast<uint32_t>(stage * Tile::kKvBytes); }
    __device__ uint32_t bar(int i) const { return base + Tile::kBarrierOffset + 8u * static_cast<uint32_t>(i); }
    __device__ uint32_t q_full() const { return bar(0); }
    __device__ uint32_t q_empty() const { return bar(1); }
    __device__ uint32_t full_k(int stage) const { return bar(2 + stage); }
    __device__ uint32_t full_v(int stage) const { return bar(2 + Tile::kStages + stage); }
    __device__ uint32_t empty_k(int stage) const { return bar(2 + 2 * Tile::kStages + stage); }
    __device__ uint32_t empty_v(int stage) const { return bar(2 + 3 * Tile::kStages + stage); }

    // One thread, before anyone uses them.
    __device__ void init_barriers() const {
        mbarrier_init(q_full(), 1);
        mbarrier_init(q_empty(), 4 * Tile::kConsumers);  // every consumer warp, after its epilogue
        for (int stage = 0; stage < Tile::kStages; ++stage) {
            mbarrier_init(full_k(stage), 1);
            mbarrier_init(full_v(stage), 1);
            // Every consumer warp arrives once it is done with the buffer.
            mbarrier_init(empty_k(stage), 4 * Tile::kConsumers);
            mbarrier_init(empty_v(stage), 4 * Tile::kConsumers);
        }
        mbarrier_init_fence();
    }
};

// Where the producer and each consumer are in the work of their CTA (identical on both sides, tile after
// tile): K/V steps so far (the ring's stage and phase derive from it) and Q tiles so far (the parity of
// the Q barriers).
struct PipelineState {
    int kv_steps = 0;
    int q_tiles = 0;

    template <int kStages>
    __device__ int stage(int step) const { return (kv_steps + step) % kStages; }
    template <int kStages>
    __device__ uint32_t phase(int step) const { return static_cast<uint32_t>((kv_steps + step) / kStages) & 1u; }
};

// One work tile as every thread of the CTA sees it.
struct WorkTile {
    kernels::SeqlenInfo seq;
    int head, batch;
    int m0;    // first query row of the tile within its sequence
    int rows;  // query rows of the tile inside the sequence; <= 0: the tile is past the sequence's end
    kernels::BlockRange keys;  // key tiles visited, from the last to the first; empty: no row sees a key

    __device__ bool has_keys() const { return keys.count() > 0; }

    template <int kBlockM, int kBlockN>
    __device__ static WorkTile of(const kernels::ForwardParams& p, const TileCoord& t) {
        WorkTile w;
        w.seq = kernels::SeqlenInfo::of(p, t.batch);
        w.head = t.head;
        w.batch = t.batch;
        w.m0 = t.m_block * kBlockM;
        w.rows = min(kBlockM, w.seq.seqlen_q - w.m0);
        if (w.rows > 0) w.keys = kernels::key_blocks(w.seq.window(p.score), w.m0, w.rows, kBlockN);
        return w;
    }
};

}  // namespace fa4j::cuda::sm90
