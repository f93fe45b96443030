// Outputs are written into NaN-poisoned buffers (strided_tensor.hpp); afterwards every element that no
// output view covers must still hold the poison: a kernel that writes padding, the next head's rows or
// past a ragged tile's end is caught here even when its results are right.
#pragma once

#include <string>

#include "support/strided_tensor.hpp"
#include "support/test_report.hpp"

namespace fa4j_test {

inline void check_untouched_gaps(Outcome& o, const char* name, const View& view) {
    const Buffer& b = *view.buffer;
    for (size_t e = 0; e < b.elements(); ++e)
        if (!b.covered[e] && !b.is_poison(e)) return fail(o, std::string("wrote outside ") + name);
}

// For a call that was refused: nothing at all may have been written.
inline void check_all_poison(Outcome& o, const char* name, const View& view) {
    const Buffer& b = *view.buffer;
    for (size_t e = 0; e < b.elements(); ++e)
        if (!b.is_poison(e)) return fail(o, std::string("a refused call wrote into ") + name);
}

}  // namespace fa4j_test
