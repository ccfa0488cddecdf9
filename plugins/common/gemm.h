/* gemm.h: cblas_sgemm cut into products OpenBLAS runs at full speed.
 *
 * OpenBLAS (0.3.21, AVX-512 builds: Debian's on this project's machines) computes a product of
 * at most GEMM_SMALL_MNK = 100^3 multiply-adds, M x N x K, with its small-matrix kernels, straight
 * from the operands, and a larger one by first packing both into its own buffers, which is much
 * slower on the shapes runexp's layers make: bench/gemm_blocks.c times both forms on a Winograd
 * group and on the tutorial's linear layer (docs/benchmarks.md has its output). Elsewhere the cut
 * costs little: the packing path then packs a few more, smaller pieces. Each element of C is its
 * row and column of the product over all of K either way, though the two paths may add K's terms
 * in another order. Which kernel a product reaches may depend on its size, and so on the batch a
 * rank or lane holds: a caller whose results must not depend on how the batch is cut keeps such
 * products whole (linear.c). */
#ifndef RX_COMMON_GEMM_H
#define RX_COMMON_GEMM_H

#include <cblas.h>

#define GEMM_SMALL_MNK 1000000.0

/* cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, ...), as the fewest nearly equal products of C's
 * rows or columns (whichever C has more of) that each stay within GEMM_SMALL_MNK. */
void gemm_in_blocks(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, float alpha, const float *a,
                    int lda, const float *b, int ldb, float beta, float *c, int ldc);

#endif
