// Run-time choice of the instruction-set level the CPU kernels use (see simd.hpp).
#pragma once

namespace fa4j::cpu {

enum class IsaLevel { Generic = 0, Avx2 = 1, Avx512 = 2 };

// The best level this CPU (and its OS) supports, lowered to the one named by the FA4J_CPU_ISA
// environment variable ("generic", "avx2", "avx512") if that is set; a level the CPU lacks is never
// chosen. The override exists to test and compare the code paths on one machine.
IsaLevel select_isa();

const char* isa_name(IsaLevel level);

}  // namespace fa4j::cpu
