// Products of small row-major float tiles, the arithmetic core of every attention kernel here. The
// operands are tiles already converted to float and padded (tiling.hpp), so sizes are multiples of
// the register blocks and there are no edge cases in the inner loops.
#pragma once

#include "backends/cpu/simd.hpp"
#include "backends/cpu/tiling.hpp"

namespace fa4j::cpu {

// Element (r, p) of A, which is stored either as A [m x k] or, when kTransposedA, as Aᵀ [k x m].
template <bool kTransposedA>
FA4J_INLINE float a_element(const float* a, int lda, int r, int p) {
    return kTransposedA ? a[p * lda + r] : a[r * lda + p];
}

// C[kRows x kCols] (+)= A[kRows x k] * B[k x kCols], the block held in registers throughout.
template <class Isa, bool kAccumulate, bool kTransposedA, int kRows, int kCols>
FA4J_INLINE void matmul_block(int k, const float* a, int lda, const float* b, int ldb, float* c, int ldc) {
    float acc[kRows][kCols];
    for (int r = 0; r < kRows; ++r) {
#pragma omp simd
        for (int j = 0; j < kCols; ++j) acc[r][j] = kAccumulate ? c[r * ldc + j] : 0.0f;
    }
    for (int p = 0; p < k; ++p) {
        const float* b_row = b + p * ldb;
        for (int r = 0; r < kRows; ++r) {
            const float a_rp = a_element<kTransposedA>(a, lda, r, p);
#pragma omp simd
            for (int j = 0; j < kCols; ++j) acc[r][j] = madd<Isa>(a_rp, b_row[j], acc[r][j]);
        }
    }
    for (int r = 0; r < kRows; ++r) {
#pragma omp simd
        for (int j = 0; j < kCols; ++j) c[r * ldc + j] = acc[r][j];
    }
}

// Rows i.. of C in blocks of kRows: A's block starts at row i, or at column i of Aᵀ.
template <class Isa, bool kAccumulate, bool kTransposedA, int kRows, int kCols>
FA4J_INLINE int matmul_rows(int i, int m, int k, const float* a, int lda, const float* b, int ldb, float* c, int ldc) {
    for (; i + kRows <= m; i += kRows)
        matmul_block<Isa, kAccumulate, kTransposedA, kRows, kCols>(k, kTransposedA ? a + i : a + i * lda, lda, b, ldb,
                                                                    c + i * ldc, ldc);
    return i;
}

// Columns from `first_col` on, in blocks of kCols and then of halves of it down to kColPad.
template <class Isa, bool kAccumulate, bool kTransposedA, int kCols>
FA4J_INLINE void matmul_columns(int m, int n, int k, const float* a, int lda, const float* b, int ldb, float* c,
                                int ldc, int first_col) {
    int j = first_col;
    for (; j + kCols <= n; j += kCols) {
        // Rows innermost: the k x kCols panel of B stays in L1 while it meets every row of A.
        const int i = matmul_rows<Isa, kAccumulate, kTransposedA, Isa::kRowBlock, kCols>(0, m, k, a, lda, b + j, ldb,
                                                                                         c + j, ldc);
        // A block height that does not divide the row padding leaves an even number of rows.
        if constexpr (kRowPad % Isa::kRowBlock != 0)
            matmul_rows<Isa, kAccumulate, kTransposedA, 2, kCols>(i, m, k, a, lda, b + j, ldb, c + j, ldc);
    }
    if constexpr (kCols > kColPad)
        matmul_columns<Isa, kAccumulate, kTransposedA, kCols / 2>(m, n, k, a, lda, b, ldb, c, ldc, j);
}

// C[m x n] = A[m x k] * B[k x n], or C += A * B when kAccumulate; A is passed as Aᵀ [k x m] when
// kTransposedA, which spares the kernels from transposing tiles that come out of one product in the
// orientation the next one does not want. m must be a multiple of kRowPad, n of kColPad; leading
// dimensions are in floats.
template <class Isa, bool kAccumulate, bool kTransposedA = false>
FA4J_INLINE void matmul(int m, int n, int k, const float* a, int lda, const float* b, int ldb, float* c, int ldc) {
    static_assert(kRowPad % 2 == 0, "row tails are handled two rows at a time");
    matmul_columns<Isa, kAccumulate, kTransposedA, Isa::kColBlock>(m, n, k, a, lda, b, ldb, c, ldc, 0);
}

}  // namespace fa4j::cpu
