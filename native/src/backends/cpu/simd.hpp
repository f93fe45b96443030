// Instruction-set levels the CPU kernels are compiled for. The library ships as one binary, so it is
// built for baseline x86-64 (SSE2); the hot kernels are additionally compiled for AVX2+FMA and AVX-512
// inside functions carrying a `target` attribute and chosen at run time (isa.hpp). Everything those
// functions call is FA4J_INLINE, so it is compiled into them with their instruction set rather than
// called out of line at baseline.
#pragma once

#include <cmath>

#if defined(__GNUC__)
#define FA4J_INLINE __attribute__((always_inline)) inline
#else
#define FA4J_INLINE inline
#endif

#if defined(__GNUC__) && defined(__x86_64__)
#define FA4J_X86_DISPATCH 1
#define FA4J_TARGET_AVX2 __attribute__((target("avx2,fma")))
#if defined(__clang__)
#define FA4J_TARGET_AVX512 __attribute__((target("avx512f,avx2,fma")))
#else
// Some GCC tunings would otherwise keep to 256-bit vectors even where AVX-512 is enabled.
#define FA4J_TARGET_AVX512 __attribute__((target("avx512f,avx2,fma,prefer-vector-width=512")))
#endif
#else
#define FA4J_X86_DISPATCH 0
#endif

namespace fa4j::cpu {

// Register blocking of the tile matrix products (tile_matmul.hpp): a kRowBlock x kColBlock block of
// the result stays in vector registers while the shared dimension streams past. kColBlock is two
// vector registers wide; kRowBlock is as many rows as the register file holds with room to spare.
struct IsaGeneric {  // SSE2: 16 registers of 4 floats, no FMA
    static constexpr bool kFma = false;
    static constexpr int kRowBlock = 4;
    static constexpr int kColBlock = 8;
};

struct IsaAvx2 {  // 16 registers of 8 floats
    static constexpr bool kFma = true;
    static constexpr int kRowBlock = 4;
    static constexpr int kColBlock = 16;
};

struct IsaAvx512 {  // 32 registers of 16 floats
    static constexpr bool kFma = true;
    static constexpr int kRowBlock = 8;
    static constexpr int kColBlock = 32;
};

// a * b + c. Fused where the level has FMA; std::fma on baseline x86-64 would be a slow library call.
template <class Isa>
FA4J_INLINE float madd(float a, float b, float c) {
    if constexpr (Isa::kFma) return std::fma(a, b, c);
    else return a * b + c;
}

}  // namespace fa4j::cpu
