// Picks the instantiation of a kernel for a dtype and an instruction-set level. A kernel is a type
// with `template <class Isa, class Elem> static FA4J_INLINE void run(Args...)`; the wrappers below are
// the only out-of-line functions, one per level, each compiled for its level (simd.hpp), and the whole
// kernel is inlined into them.
#pragma once

#include "backends/cpu/isa.hpp"
#include "backends/cpu/simd.hpp"
#include "backends/cpu/tile_io.hpp"
#include "core/dtype.hpp"

namespace fa4j::cpu {

template <class... Args>
using KernelFn = void (*)(Args...);

template <class Kernel, class Elem, class... Args>
void run_generic(Args... args) {
    Kernel::template run<IsaGeneric, Elem>(args...);
}

#if FA4J_X86_DISPATCH
template <class Kernel, class Elem, class... Args>
FA4J_TARGET_AVX2 void run_avx2(Args... args) {
    Kernel::template run<IsaAvx2, Elem>(args...);
}

template <class Kernel, class Elem, class... Args>
FA4J_TARGET_AVX512 void run_avx512(Args... args) {
    Kernel::template run<IsaAvx512, Elem>(args...);
}
#endif

template <class Kernel, class Elem, class... Args>
KernelFn<Args...> select_for_isa(IsaLevel isa) {
#if FA4J_X86_DISPATCH
    if (isa == IsaLevel::Avx512) return &run_avx512<Kernel, Elem, Args...>;
    if (isa == IsaLevel::Avx2) return &run_avx2<Kernel, Elem, Args...>;
#endif
    (void)isa;
    return &run_generic<Kernel, Elem, Args...>;
}

template <class Kernel, class... Args>
KernelFn<Args...> select_kernel(DType dtype, IsaLevel isa) {
    switch (dtype) {
        case DType::F16: return select_for_isa<Kernel, F16Elem, Args...>(isa);
        case DType::BF16: return select_for_isa<Kernel, Bf16Elem, Args...>(isa);
        case DType::F32: break;
        // Quantized dtypes never reach the plain kernels (validation refuses them without a quant_mode).
        case DType::F8E4M3:
        case DType::F8E5M2:
        case DType::I8:
        case DType::I4: break;
    }
    return select_for_isa<Kernel, F32Elem, Args...>(isa);
}

}  // namespace fa4j::cpu
