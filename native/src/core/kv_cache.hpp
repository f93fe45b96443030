// KV caches as decode reads and writes them (FA4J_ATTENTION_DECODE in flashattn4j.h): where position p of
// sequence b lives, for dense and paged caches alike, so that every backend addresses them one way.
//   dense: [batch, capacity, heads_kv, head_dim]: the "page" of sequence b is b, its slot p (page_size =
//          capacity, one page per sequence, no block table);
//   paged: [num_pages, page_size, heads_kv, head_dim]: page block_table[b, p / page_size], slot p % page_size.
// Plain C++ apart from FA4J_HOST_DEVICE (core/host_device.hpp), so CUDA kernels can use it too.
#pragma once

#include <cstdint>

#include "core/host_device.hpp"

namespace fa4j {

// Where the pages of the sequences are. Validation fills it; for CPU calls it has checked that every entry
// of a used page lies in [0, num_pages) (device kernels must clamp).
struct KvCacheLayout {
    int64_t page_size = 0;  // dense: the capacity
    int64_t capacity = 0;   // positions a sequence can hold: max_pages * page_size (dense: the capacity)
    int64_t num_pages = 0;  // paged: pages of the cache tensors; dense: the batch
    const int32_t* block_table = nullptr;  // null: dense
    int64_t table_batch_stride = 0, table_page_stride = 0;

    FA4J_HOST_DEVICE bool paged() const { return block_table != nullptr; }
    // Pages sequence b uses when it holds `keys` positions.
    FA4J_HOST_DEVICE int64_t pages_for(int64_t keys) const { return (keys + page_size - 1) / page_size; }
    // The table entry of logical page `page` of sequence b (paged caches).
    FA4J_HOST_DEVICE int64_t table_entry(int64_t b, int64_t page) const {
        return block_table[b * table_batch_stride + page * table_page_stride];
    }
    FA4J_HOST_DEVICE int64_t page_of(int64_t b, int64_t position) const {
        return paged() ? table_entry(b, position / page_size) : b;
    }
};

// One cache tensor (keys or values): element (page, slot, head, 0) at data + page·page_stride +
// slot·slot_stride + head·head_stride elements; head_dim contiguous.
struct CacheTensor {
    void* data = nullptr;
    int64_t page_stride = 0, slot_stride = 0, head_stride = 0;

    // Element offset of (sequence b, position, head h, 0).
    FA4J_HOST_DEVICE int64_t offset(const KvCacheLayout& layout, int64_t b, int64_t position, int64_t h) const {
        return layout.page_of(b, position) * page_stride + (position % layout.page_size) * slot_stride + h * head_stride;
    }
};

}  // namespace fa4j
