#include "backends/cpu/isa.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "backends/cpu/simd.hpp"

namespace fa4j::cpu {
namespace {

IsaLevel hardware_isa() {
#if FA4J_X86_DISPATCH
    static const IsaLevel level = [] {
        // libgcc's checks include the OS having enabled the wider register state (XGETBV).
        __builtin_cpu_init();
        const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        if (avx2 && __builtin_cpu_supports("avx512f")) return IsaLevel::Avx512;
        return avx2 ? IsaLevel::Avx2 : IsaLevel::Generic;
    }();
    return level;
#else
    return IsaLevel::Generic;
#endif
}

}  // namespace

IsaLevel select_isa() {
    const IsaLevel hardware = hardware_isa();
    const char* requested = std::getenv("FA4J_CPU_ISA");
    if (requested == nullptr) return hardware;
    for (IsaLevel level : {IsaLevel::Generic, IsaLevel::Avx2, IsaLevel::Avx512})
        if (std::strcmp(requested, isa_name(level)) == 0) return std::min(level, hardware);
    return hardware;
}

const char* isa_name(IsaLevel level) {
    switch (level) {
        case IsaLevel::Generic: return "generic";
        case IsaLevel::Avx2: return "avx2";
        case IsaLevel::Avx512: return "avx512";
    }
    return "?";
}

}  // namespace fa4j::cpu
