// Which work tiles, (m_block, head, batch), a CTA of the Hopper forward runs. The grid covers every query
// tile of every (batch, head) at the maximum query length; a tile past its own sequence's end (varlen)
// is still handed out and the kernel skips it. Tile indices are 64-bit: any batch x heads works.
//
// Two schedulers, both with query tiles from the last to the first (the last ones see the most keys under
// a causal mask or a right-bounded window, so the grid's tail is made of light tiles):
//   SingleTileScheduler      one tile per CTA (the default), batch entries one after the other. With a
//                            causal-like mask the head runs fastest (the heaviest tiles of every head
//                            start first), otherwise m_block runs fastest (the K/V of one head stay in L2
//                            while its query tiles run): the order of v1's 2-D grid.
//   PersistentTileScheduler  one CTA per SM walks tiles blockIdx.x, + gridDim.x, ... in a longest-first
//                            order within sections of (batch, head) pairs whose K and V fit in L2. A
//                            measured ablation (tools/sm90_forward_tuning.cu), not the default.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace fa4j::cuda::sm90 {

struct TileSchedulerParams {
    int m_blocks;       // query tiles per (batch, head), over the maximum query length
    int heads;          // query heads
    int batch;
    int heads_fastest;  // 1: tile order (m_block from the last) x head, the head fastest; 0: m_block fastest
    int64_t total;      // m_blocks x heads x batch
    int hb_per_section;  // (batch, head) pairs per section (>= 1): heads for the single-tile scheduler (the batch
                         // runs slowest, as the 2-D grid of v1 did), a count whose K and V fit L2 for the
                         // persistent one
};

struct TileCoord {
    int m_block, head, batch;
};

namespace detail {
// Tile `linear` in the order of `s`: sections of hb_per_section (batch, head) pairs (pair = batch x heads +
// head) one after the other; within a section, with heads_fastest, (m_block from the last) x pair with the
// pair fastest, else pair x (m_block from the last) with m_block fastest. Index: int64_t, or uint32_t where
// the host guarantees total < 2^32 (32-bit divisions are inline; 64-bit ones are calls, around which a
// persistent kernel's live registers would spill).
template <class Index>
__host__ __device__ __forceinline__ TileCoord tile_at(const TileSchedulerParams& s, Index linear) {
    const Index pairs = static_cast<Index>(s.heads) * static_cast<Index>(s.batch);
    const Index per_section = static_cast<Index>(s.hb_per_section);
    const Index m_blocks = static_cast<Index>(s.m_blocks);
    const Index section_tiles = per_section * m_blocks;
    const Index section = linear / section_tiles;
    const Index hb0 = section * per_section;
    const Index hb = pairs - hb0 < per_section ? pairs - hb0 : per_section;  // the last section may be short
    const Index local = linear - section * section_tiles;
    Index pair, m_index;
    if (s.heads_fastest) {
        pair = local % hb;
        m_index = local / hb;
    } else {
        m_index = local % m_blocks;
        pair = local / m_blocks;
    }
    pair += hb0;
    TileCoord t;
    t.m_block = s.m_blocks - 1 - static_cast<int>(m_index);
    t.head = static_cast<int>(pair % static_cast<Index>(s.heads));
    t.batch = static_cast<int>(pair / static_cast<Index>(s.heads));
    return t;
}
}  // namespace detail

class SingleTileScheduler {
public:
    static constexpr bool kPersistent = false;
    static bool supports(const TileSchedulerParams&) { return true; }

    // grid.x x grid.y >= total: x up to 2^31 - 1, y the rest (tiles past total exit at once).
    static dim3 grid(const TileSchedulerParams& s, int /*sm_count*/) {
        const int64_t x = s.total < 0x7fffffff ? s.total : 0x7fffffff;
        const int64_t y = (s.total + x - 1) / x;
        return dim3(static_cast<unsigned>(x), static_cast<unsigned>(y));
    }

    __device__ explicit SingleTileScheduler(const TileSchedulerParams& s) : s_(s) {}

    __device__ bool first(TileCoord& t) const {
        const int64_t linear = static_cast<int64_t>(blockIdx.y) * gridDim.x + blockIdx.x;
        if (linear >= s_.total) return false;
        t = detail::tile_at<int64_t>(s_, linear);  // once per CTA, before anything is live
        return true;
    }
    __device__ bool next(TileCoord&) const { return false; }

private:
    const TileSchedulerParams& s_;
};

class PersistentTileScheduler {
public:
    static constexpr bool kPersistent = true;

    // 32-bit tile arithmetic: total and total + the grid (at most 65535 CTAs here) stay below 2^32.
    static bool supports(const TileSchedulerParams& s) { return s.total <= 0xffff0000ll; }
    static dim3 grid(const TileSchedulerParams& s, int sm_count) {
        return dim3(static_cast<unsigned>(s.total < sm_count ? s.total : sm_count));
    }

    __device__ explicit PersistentTileScheduler(const TileSchedulerParams& s) : s_(s), linear_(blockIdx.x) {}

    __device__ bool first(TileCoord& t) const { return at(t); }
    __device__ bool next(TileCoord& t) {
        linear_ += gridDim.x;  // < total + grid < 2^32 (supports): no wrap before the end test
        return at(t);
    }

private:
    __device__ bool at(TileCoord& t) const {
        if (linear_ >= s_.total) return false;
        t = detail::tile_at<uint32_t>(s_, linear_);
        return true;
    }

    const TileSchedulerParams& s_;
    uint32_t linear_;
};

}  // namespace fa4j::cuda::sm90
