// The score features the drivers run (fa4j_attention's softcap, ALiBi and sliding windows) and the dense
// shapes they run them on, shared by the CPU and CUDA drivers so that every backend sees the same cases:
// softcap (30: mild, 5: strong), ALiBi slopes per head and per batch and head, windows bounded on the left,
// the right, both, both with causal (which overrides the right bound), (0, 0) (each row sees one key, or
// with Nq > Nk none), a causal sliding window, and all together; on ragged shapes with Nq != Nk both ways
// (windows leave rows empty when Nq > Nk), GQA, a single query, and the layouts of tensor_layouts.hpp.
#pragma once

#include <cstdint>
#include <vector>

#include "support/attention_case.hpp"
#include "support/reference_attention.hpp"
#include "support/tensor_layouts.hpp"

namespace fa4j_test {

// A shape and the layout its tensors are stored in.
struct ShapeLayout {
    Shape s;
    Layout layout;
};

// One set of score features (and the causal flag that goes with it).
struct Features {
    float softcap;
    int64_t left, right;  // -1: unbounded
    bool causal;
    Alibi alibi;
};

inline const std::vector<Features>& feature_sets() {
    static const std::vector<Features> sets = {
        {30, -1, -1, false, Alibi::None},         {5, -1, -1, true, Alibi::None},
        {0, -1, -1, false, Alibi::PerHead},       {0, -1, -1, true, Alibi::PerBatchHead},
        {0, 40, -1, false, Alibi::None},          {0, -1, 20, false, Alibi::None},
        {0, 50, 10, false, Alibi::None},          {0, 50, 10, true, Alibi::None},
        {0, 0, 0, false, Alibi::None},            {0, 3, -1, true, Alibi::None},
        {20, 64, 8, true, Alibi::PerHead},        {5, 100, 30, false, Alibi::PerBatchHead},
    };
    return sets;
}

inline const std::vector<ShapeLayout>& feature_shapes() {
    static const std::vector<ShapeLayout> shapes = {
        {{1, 17, 17, 2, 2, 64}, Layout::Packed},           {{2, 333, 333, 4, 2, 32}, Layout::Contiguous},
        {{1, 128, 333, 8, 4, 128}, Layout::HeadMajor},     {{1, 333, 128, 2, 1, 64}, Layout::PaddedUnaligned},
        {{2, 65, 130, 4, 2, 64}, Layout::BroadcastKv},     {{1, 70, 70, 2, 1, 40}, Layout::Packed},
        {{1, 1, 333, 2, 1, 64}, Layout::Contiguous},
    };
    return shapes;
}

inline Case with_features(Case c, const Features& f) {
    c.softcap = f.softcap;
    c.window_left = f.left;
    c.window_right = f.right;
    c.causal = f.causal;
    c.alibi = f.alibi;
    return c;
}

}  // namespace fa4j_test
