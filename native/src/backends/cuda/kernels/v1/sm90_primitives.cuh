// Hopper (sm_90a) primitives for the FlashAttention-3-style kernels, written once here: mbarriers, the
// tensor-memory-accelerator (TMA) tile load that completes on an mbarrier, warpgroup MMA (wgmma) with its
// fences and shared-memory matrix descriptors, register reallocation (setmaxnreg) and named barriers.
//
// Every instruction wrapper compiles to nothing but a trap outside the sm_90a pass: the library is also
// built for sm_80, where these instructions do not exist, and the kernels that use them are only
// launched on compute capability 9.0 devices (attention_forward_cuda.cu checks).
//
// Shared-memory tiles: every tile of 16-bit elements with 64 or 128 columns is stored as column blocks
// of 64 elements (128 bytes): block c holds columns [64c, 64c + 64) of every row, rows 128 bytes apart,
// and within each group of 8 rows (1024 bytes) the 16-byte chunk j of row r sits at chunk j ^ (r % 8).
// That is both what TMA writes with CU_TENSOR_MAP_SWIZZLE_128B and box {64, rows} and the canonical
// 128-byte-swizzled layout wgmma reads, K-major (Q, K: rows = M or N, columns = K) as well as MN-major
// (V for P·V: rows = K, columns = N). Tiles start at multiples of 1024 bytes.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <utility>

#include <cute/arch/mma_sm90_gmma.hpp>

namespace fa4j::cuda::v1::sm90 {

#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FA4J_SM90_UNAVAILABLE() __trap()
#else
#define FA4J_SM90_UNAVAILABLE() \
    do {                        \
    } while (0)
#endif

constexpr int kWarpgroupThreads = 128;
constexpr int kSwizzleRowBytes = 128;    // one row of a 64-column block
constexpr int kSwizzleAtomBytes = 1024;  // 8 rows: the period of the swizzle
constexpr int kBlockCols = 64;           // columns of a 16-bit tile per 128-byte column block

__device__ __forceinline__ uint32_t smem_address(const void* pointer) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(pointer));
}

// ---- mbarriers ------------------------------------------------------------------------------------

__device__ __forceinline__ void mbarrier_init(uint32_t bar, uint32_t arrivals) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(arrivals) : "memory");
#else
    (void)bar, (void)arrivals;
    FA4J_SM90_UNAVAILABLE();
#endif
}

// Makes the initialisations visible to the async proxy (TMA) before anyone uses the barriers.
__device__ __forceinline__ void mbarrier_init_fence() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#else
    FA4J_SM90_UNAVAILABLE();
#endif
}

// One arrival that also announces `bytes` more bytes of transactions (TMA copies) for this phase.
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
#else
    (void)bar, (void)bytes;
    FA4J_SM90_UNAVAILABLE();
#endif
}

__device__ __forceinline__ void mbarrier_arrive(uint32_t bar) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
#else
    (void)bar;
    FA4J_SM90_UNAVAILABLE();
#endif
}

// Waits until the phase of parity `parity` has completed. A fresh barrier is in phase 0, so waiting
// for parity 1 returns at once: producers start by waiting on "empty" barriers with parity 1.
__device__ __forceinline__ void mbarrier_wait(uint32_t bar, uint32_t parity) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile(
        "{\n"
        ".reg .pred done;\n"
        "WAIT:\n"
        "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
        "@!done bra WAIT;\n"
        "}\n" ::"r"(bar),
        "r"(parity)
        : "memory");
#else
    (void)bar, (void)parity;
    FA4J_SM90_UNAVAILABLE();
#endif
}

// ---- TMA ------------------------------------------------------------------------------------------

__device__ __forceinline__ void tma_prefetch_descriptor(const void* tensor_map) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(tensor_map)) : "memory");
#else
    (void)tensor_map;
    FA4J_SM90_UNAVAILABLE();
#endif
}

// One box of a 4-D tensor map at coordinates (c0 innermost .. c3) into shared memory at `dst`; the
// copy's bytes complete a transaction on `bar`. Out-of-range elements are written as zeros.
__device__ __forceinline__ void tma_load_4d(uint32_t dst, const void* tensor_map, uint32_t bar, int c0, int c1, int c2,
                                            int c3) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile(
        "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5}], "
        "[%6];\n" ::"r"(dst),
        "l"(reinterpret_cast<uint64_t>(tensor_map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar)
        : "memory");
#else
    (void)dst, (void)tensor_map, (void)bar, (void)c0, (void)c1, (void)c2, (void)c3;
    FA4J_SM90_UNAVAILABLE();
#endif
}

// ---- registers and barriers among warpgroups -------------------------------------------------------

template <int kRegisters>
__device__ __forceinline__ void setmaxnreg_increase() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
#else
    FA4J_SM90_UNAVAILABLE();
#endif
}

template <int kRegisters>
__device__ __forceinline__ void setmaxnreg_decrease() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
#else
    FA4J_SM90_UNAVAILABLE();
#endif
}

// bar.sync on barrier `id` (1..15; 0 is __syncthreads') among `threads` threads.
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// bar.arrive: counts this warp's threads towards barrier `id` (of `threads`) without waiting.
__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// ---- wgmma ----------------------------------------------------------------------------------------

// Orders register writes by ordinary instructions before the wgmma instructions that read them.
__device__ __forceinline__ void wgmma_fence() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#else
    FA4J_SM90_UNAVAILABLE();
#endif
}

__device__ __forceinline__ void wgmma_commit() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#else
    FA4J_SM90_UNAVAILABLE();
#endif
}

// Waits until at most kPending committed wgmma groups of this warpgroup are still running.
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
#else
    FA4J_SM90_UNAVAILABLE();
#endif
}

// The compiler does not know that wgmma reads and writes its registers asynchronously: these pin an
// array to its registers at a point of the program (after a wait, before an issue), so that no access
// to it moves across that point and its registers are not reused while a wgmma may still use them.
template <int N>
__device__ __forceinline__ void pin_registers(float (&r)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
template <int N>
__device__ __forceinline__ void pin_registers(uint32_t (&r)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+r"(r[i])::"memory");
}

// Shared-memory matrix descriptor of a 128-byte-swizzled operand starting at `address` (see above).
// K-major: `stride_bytes` is the distance between groups of 8 rows (1024), the leading offset is unused
// (1 by convention). MN-major: `leading_bytes` is the distance between 64-column blocks along N and
// `stride_bytes` the distance between groups of 8 rows along K.
__device__ __forceinline__ uint64_t smem_descriptor(uint32_t address, uint32_t leading_bytes, uint32_t stride_bytes) {
    uint64_t desc = static_cast<uint64_t>((address & 0x3FFFFu) >> 4);
    desc |= static_cast<uint64_t>((leading_bytes >> 4) & 0x3FFFu) << 16;
    desc |= static_cast<uint64_t>((stride_bytes >> 4) & 0x3FFFu) << 32;
    desc |= uint64_t{1} << 62;  // layout type 1: 128-byte swizzle
    return desc;
}

// m64nNk16 wgmma atoms (CuTe's) by element type and N: SS reads A and B from shared memory, both
// K-major; RS takes A from registers (K-major) and B from shared memory MN-major (the transpose bit).
template <class T, int N>
struct Gmma;

#define FA4J_SM90_GMMA(TYPE, CUTE_TYPE, N)                                                                    \
    template <>                                                                                               \
    struct Gmma<TYPE, N> {                                                                                    \
        using SS = cute::SM90_64x##N##x16_F32##CUTE_TYPE##_SS<cute::GMMA::Major::K, cute::GMMA::Major::K>;  \
        using RS = cute::SM90_64x##N##x16_F32##CUTE_TYPE##_RS<cute::GMMA::Major::K, cute::GMMA::Major::MN>; \
    };
FA4J_SM90_GMMA(__nv_bfloat16, BF16BF16, 64)
FA4J_SM90_GMMA(__nv_bfloat16, BF16BF16, 96)
FA4J_SM90_GMMA(__nv_bfloat16, BF16BF16, 128)
FA4J_SM90_GMMA(__nv_bfloat16, BF16BF16, 192)
FA4J_SM90_GMMA(__half, F16F16, 64)
FA4J_SM90_GMMA(__half, F16F16, 96)
FA4J_SM90_GMMA(__half, F16F16, 128)
FA4J_SM90_GMMA(__half, F16F16, 192)
#undef FA4J_SM90_GMMA

template <class Atom, int N, size_t... I>
__device__ __forceinline__ void gmma_ss(uint64_t desc_a, uint64_t desc_b, float (&d)[N], bool accumulate,
                                        std::index_sequence<I...>) {
    Atom::fma(desc_a, desc_b, d[I]..., accumulate ? cute::GMMA::ScaleOut::One : cute::GMMA::ScaleOut::Zero);
}

template <class Atom, int N, size_t... I>
__device__ __forceinline__ void gmma_rs(const uint32_t* a, uint64_t desc_b, float (&d)[N], std::index_sequence<I...>) {
    Atom::fma(a[0], a[1], a[2], a[3], desc_b, d[I]..., cute::GMMA::ScaleOut::One);
}

// d (m64 × kN fp32 accumulators of the warpgroup, kN/2 per thread) = or += A·B, A and B in shared memory.
template <class T, int kN>
__device__ __forceinline__ void wgmma_ss(uint64_t desc_a, uint64_t desc_b, float (&d)[kN / 2], bool accumulate) {
    gmma_ss<typename Gmma<T, kN>::SS, kN / 2>(desc_a, desc_b, d, accumulate, std::make_index_sequence<kN / 2>{});
}

// d += A·B with A (m64 × k16, the mma.sync A-fragment layout per warp) in four registers.
template <class T, int kN>
__device__ __forceinline__ void wgmma_rs(const uint32_t* a, uint64_t desc_b, float (&d)[kN / 2]) {
    gmma_rs<typename Gmma<T, kN>::RS, kN / 2>(a, desc_b, d, std::make_index_sequence<kN / 2>{});
}

}  // namespace fa4j::cuda::v1::sm90
