/* gemm.c: see gemm.h. */
#include "gemm.h"

#include <stddef.h>

void gemm_in_blocks(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, float alpha, const float *a,
                    int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
    const double mnk = (double)m * (double)n * (double)k;
    const int longer = m >= n ? m : n;
    int blocks = mnk > GEMM_SMALL_MNK ? (int)((mnk + GEMM_SMALL_MNK - 1) / GEMM_SMALL_MNK) : 1;
    if (blocks > longer) blocks = longer;
    for (int i = 0; i < blocks; i++) {
        const int lo = (int)((long long)longer * i / blocks), hi = (int)((long long)longer * (i + 1) / blocks);
        if (m >= n) /* rows lo..hi of C: of A's rows, or of its columns when A is transposed */
            cblas_sgemm(CblasRowMajor, ta, tb, hi - lo, n, k, alpha,
                        a + (ta == CblasNoTrans ? (size_t)lo * lda : (size_t)lo), lda, b, ldb, beta,
                        c + (size_t)lo * ldc, ldc);
        else /* columns lo..hi of C: of B's columns, or of its rows when B is transposed */
            cblas_sgemm(CblasRowMajor, ta, tb, m, hi - lo, k, alpha, a, lda,
                        b + (tb == CblasNoTrans ? (size_t)lo : (size_t)lo * ldb), ldb, beta, c + lo, ldc);
    }
}
