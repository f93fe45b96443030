// Runs body(i) for i in [0, n) on all hardware threads. The float64 reference is the slowest part of
// the attention tests (it is O(N²) per head and untiled); tasks never share output elements, so the
// results do not depend on the thread count.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace fa4j_test {

template <class Body>
void parallel_for(int64_t n, const Body& body) {
    const int64_t hardware = std::max<int64_t>(1, static_cast<int64_t>(std::thread::hardware_concurrency()));
    const int64_t workers = std::min(n, hardware);
    if (workers <= 1) {
        for (int64_t i = 0; i < n; ++i) body(i);
        return;
    }
    std::atomic<int64_t> next{0};
    std::vector<std::thread> threads;
    threads.reserve(static_cast<size_t>(workers));
    for (int64_t w = 0; w < workers; ++w)
        threads.emplace_back([&] {
            for (int64_t i = next++; i < n; i = next++) body(i);
        });
    for (std::thread& t : threads) t.join();
}

}  // namespace fa4j_test
