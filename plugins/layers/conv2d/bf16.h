/* bf16.h: matrix products with bfloat16 operands and float32 sums, for conv2d's
 * precision = "bf16" on CPUs with AVX-512 BF16 (bf16.c).
 *
 * vdpbf16ps multiplies 32 pairs of bf16 values and adds each pair's two products into one of 16
 * float32 sums: twice the multiply-adds of a float32 FMA per instruction (bench/bf16_peak.c
 * measures both ceilings). So K is taken two at a time: A's rows are packed as 32-bit words of
 * two neighbouring K entries, (A[i][2k], A[i][2k+1]), B's columns as the same pairs in panels of
 * 16 columns, one 64-byte vector per pair of K rows. An odd K gets a zero as its last partner.
 * Values are rounded to the nearest bf16 (ties to even) once, when packed; the sums stay
 * float32, in a fixed order (K ascending), so results repeat bit for bit. */
#ifndef RX_CONV2D_BF16_H
#define RX_CONV2D_BF16_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { BF16_PANEL = 16 }; /* B's columns per packed panel: one vector of float32 sums */

/* Whether this CPU runs vdpbf16ps (AVX-512 BF16). */
bool bf16_supported(void);

/* 32-bit words of A (m x k) packed by bf16_pack_rows, and of B (k x n) by bf16_pack_cols. */
static inline size_t bf16_rows_words(int m, int k) { return (size_t)m * (size_t)((k + 1) / 2); }
static inline size_t bf16_cols_words(int k, int n)
{
    return (size_t)((k + 1) / 2) * (size_t)((n + BF16_PANEL - 1) / BF16_PANEL * BF16_PANEL);
}

/* A (m x k, row-major, rows lda apart) into out: row i's pairs at out[i * ceil(k/2) ..]. */
void bf16_pack_rows(const float *a, int lda, int m, int k, uint32_t *out);
/* B (k x n, row-major, rows ldb apart) into out: panel p (columns 16p ..), pair row q, column j
 * at out[(p * ceil(k/2) + q) * 16 + j]; columns past n are zeros. */
void bf16_pack_cols(const float *b, int ldb, int k, int n, uint32_t *out);
/* The same from B's transpose bt (n x k, rows ldbt apart). */
void bf16_pack_cols_t(const float *bt, int ldbt, int k, int n, uint32_t *out);
/* C (m x n, rows ldc apart) = A B, or C += A B with add, from the packed operands. */
void bf16_gemm(int m, int n, int k, const uint32_t *a, const uint32_t *b, float *c, int ldc, bool add);

#endif
