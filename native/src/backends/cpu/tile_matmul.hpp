// Products of small row-major float tiles, the arithmetic core of every attention kernel here. The
// operands are tiles already converted to float and padded (tiling.hpp), so sizes are multiples of
// the register blocks and there are no edge cases in the inner loops.
#pragma once

#include "backends/cpu/simd.hpp"
#include "backends/cpu/tiling.hpp"

namespace fa4j::cpu {

// C[kRows x kCols] (+)= A[kRows x k] * B[k x kCols], the block held in registers throughout.
template <class Isa, bool kAccumulate, int kRows, int kCols>
FA4J_INLINE void matmul_block(int k, const float* a, int lda, const float* b, int ldb, float* c, int ldc) {
    float acc[kRows][kCols];
    for (int r = 0; r < kRows; ++r) {
#pragma omp simd
        for (int j = 0; j < kCols; ++j) acc[r][j] = kAccumulate ? c[r * ldc + j] : 0.0f;
    }
    for (int p = 0; p < k; ++p) {
        const float* b_row = b + p * ldb;
        for (int r = 0; r < kRows; ++r) {
            const float a_rp = a[r * lda + p];
#pragma omp simd
            for (int j = 0; j < kCols; ++j) acc[r][j] = madd<Isa>(a_rp, b_row[j], acc[r][j]);
        }
    }
    for (int r = 0; r < kRows; ++r) {
#pragma omp simd
        for (int j = 0; j < kCols; ++j) c[r * ldc + j] = acc[r][j];
    }
}

// Columns from `first_col` on, in blocks of kCols and then of halves of it down to kColPad.
template <class Isa, bool kAccumulate, int kCols>
FA4J_INLINE void matmul_columns(int m, int n, int k, const float* a, int lda, const float* b, int ldb, float* c,
                                int ldc, int first_col) {
    int j = first_col;
    for (; j + kCols <= n; j += kCols) {
        // Rows innermost: the k x kCols panel of B stays in L1 while it meets every row of A.
        for (int i = 0; i < m; i += Isa::kRowBlock)
            matmul_block<Isa, kAccumulate, Isa::kRowBlock, kCols>(k, a + i * lda, lda, b + j, ldb, c + i * ldc + j, ldc);
    }
    if constexpr (kCols > kColPad) matmul_columns<Isa, kAccumulate, kCols / 2>(m, n, k, a, lda, b, ldb, c, ldc, j);
}

// C[m x n] = A[m x k] * B[k x n], or C += A * B when kAccumulate. m must be a multiple of kRowPad,
// n a multiple of kColPad; leading dimensions are in floats.
template <class Isa, bool kAccumulate>
FA4J_INLINE void matmul(int m, int n, int k, const float* a, int lda, const float* b, int ldb, float* c, int ldc) {
    static_assert(kRowPad % Isa::kRowBlock == 0, "row padding must cover whole register blocks");
    matmul_columns<Isa, kAccumulate, Isa::kColBlock>(m, n, k, a, lda, b, ldb, c, ldc, 0);
}

}  // namespace fa4j::cpu
