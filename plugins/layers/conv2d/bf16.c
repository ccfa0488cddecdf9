/* bf16.c: bfloat16 products with float32 sums (bf16.h), for conv2d's precision = "bf16".
 *
 * The kernel computes a tile of C, up to 8 rows by 32 columns (two panels of B), in 16 vector
 * registers of sums that stay put over all of K: per pair of K rows, two loads of B, one
 * broadcast of A per row, and one vdpbf16ps per row and panel. Only the functions that use the
 * instructions are compiled for AVX-512 BF16 (the target attribute), so the file builds whatever
 * the compiler's -march, and conv2d's create refuses precision = "bf16" where bf16_supported()
 * is false rather than reach an instruction the CPU lacks. */
#include "bf16.h"

#include <immintrin.h>
#include <string.h>

#define BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512bf16")))

enum { TILE_ROWS = 8, TILE_PANELS = 2 };

bool bf16_supported(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512bf16");
}

/* f rounded as vcvtne2ps2bf16 rounds it: a denormal counts as zero (keeping its sign), a NaN
 * stays one, the rest go to the nearest bfloat16, ties to even. For the ends of rows the vector
 * loops leave, so that every value rounds the same wherever it sits. */
static uint32_t bf16_round(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7f800000u) == 0) u &= 0x80000000u;
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

static uint32_t bf16_pair(float lo, float hi) { return bf16_round(lo) | bf16_round(hi) << 16; }

/* A row's pairs are its values in order, two to a word: 32 floats a vector conversion. */
BF16_TARGET void bf16_pack_rows(const float *a, int lda, int m, int k, uint32_t *out)
{
    const int k2 = (k + 1) / 2;
    for (int i = 0; i < m; i++) {
        const float *row = a + (size_t)i * lda;
        uint32_t *o = out + (size_t)i * k2;
        int q = 0;
        for (; 2 * q + 32 <= k; q += 16) {
            const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(row + 2 * q + 16), _mm512_loadu_ps(row + 2 * q));
            _mm512_storeu_si512(o + q, (__m512i)v);
        }
        for (; q < k / 2; q++) o[q] = bf16_pair(row[2 * q], row[2 * q + 1]);
        if (k % 2) o[k2 - 1] = bf16_pair(row[k - 1], 0.0f);
    }
}

/* A panel's pair row interleaves two rows of B: converted together (row 2q in the low half),
 * then shuffled so that column j's two values share word j. */
BF16_TARGET void bf16_pack_cols(const float *b, int ldb, int k, int n, uint32_t *out)
{
    const int k2 = (k + 1) / 2, panels = (n + BF16_PANEL - 1) / BF16_PANEL;
    const __m512i zip = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                                         21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    for (int p = 0; p < panels; p++) {
        const int cols = n - p * BF16_PANEL < BF16_PANEL ? n - p * BF16_PANEL : BF16_PANEL;
        const __mmask16 mask = (__mmask16)((1u << cols) - 1);
        for (int q = 0; q < k2; q++) {
            const float *r0 = b + (size_t)(2 * q) * ldb + (size_t)p * BF16_PANEL;
            const __m512 lo = _mm512_maskz_loadu_ps(mask, r0);
            const __m512 hi = 2 * q + 1 < k ? _mm512_maskz_loadu_ps(mask, r0 + ldb) : _mm512_setzero_ps();
            const __m512i pairs = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
            _mm512_storeu_si512(out + ((size_t)p * k2 + q) * BF16_PANEL, _mm512_permutexvar_epi16(zip, pairs));
        }
    }
}

/* The 16 x 16 words of w transposed in registers: w[i] word j goes to w[j] word i. Four rounds
 * of shuffles, each pairing vectors at twice the distance of the one before (32-bit, 64-bit,
 * 128-bit lanes, then 256-bit halves). */
static inline __attribute__((always_inline)) BF16_TARGET void bf16_transpose16(__m512i w[16])
{
    __m512i t[16];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(w[2 * i], w[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(w[2 * i], w[2 * i + 1]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        w[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        w[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        w[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        w[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        const int a = (i / 4) * 8 + i % 4;
        t[a] = _mm512_shuffle_i32x4(w[a], w[a + 4], 0x88);
        t[a + 4] = _mm512_shuffle_i32x4(w[a], w[a + 4], 0xdd);
    }
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++) {
        w[j] = _mm512_shuffle_i32x4(t[j], t[j + 8], 0x88);
        w[j + 8] = _mm512_shuffle_i32x4(t[j], t[j + 8], 0xdd);
    }
}

/* B given as its transpose: row j of bt holds column j of B, so column j's pairs are row j's
 * values in order, converted as in bf16_pack_rows: 16 pairs of each of a panel's 16 rows, a
 * vector each, then transposed so that each vector is a pair row (word j from row j). A scatter
 * of each row's words, 16 apart, did the same at three times the cost (perf: 3% of the bf16
 * recipe's step). */
BF16_TARGET void bf16_pack_cols_t(const float *bt, int ldbt, int k, int n, uint32_t *out)
{
    const int k2 = (k + 1) / 2, panels = (n + BF16_PANEL - 1) / BF16_PANEL;
    for (int p = 0; p < panels; p++) {
        uint32_t *panel = out + (size_t)p * k2 * BF16_PANEL;
        for (int q = 0; q < k2; q += 16) {  /* 32 values of each row, 16 pairs */
            const int left = k - 2 * q;
            const __mmask16 lo = (__mmask16)(left >= 16 ? 0xffff : (1u << left) - 1);
            const __mmask16 hi = (__mmask16)(left > 16 ? (left >= 32 ? 0xffff : (1u << (left - 16)) - 1) : 0);
            __m512i w[16];
#pragma GCC unroll 16
            for (int jj = 0; jj < BF16_PANEL; jj++) {
                const int j = p * BF16_PANEL + jj;  /* past n: zeros, nothing read */
                const float *row = bt + (size_t)(j < n ? j : 0) * ldbt + 2 * q;
                const __mmask16 l = j < n ? lo : 0, h = j < n ? hi : 0;
                w[jj] = (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(h, row + 16), _mm512_maskz_loadu_ps(l, row));
            }
            bf16_transpose16(w);
            const int rows = k2 - q < 16 ? k2 - q : 16;
            for (int r = 0; r < rows; r++) _mm512_storeu_si512(panel + (size_t)(q + r) * BF16_PANEL, w[r]);
        }
    }
}

/* C's tile of `rows` rows (<= 8) and `cols` columns (<= 16 * panels) from A's rows (k2 words
 * each) and B's panels (panel words apart). rows and panels are constants at each call site
 * (bf16_tile_any), so the sums unroll into registers. */
static inline __attribute__((always_inline)) BF16_TARGET void bf16_tile(int rows, int panels, int k2, const uint32_t *a,
                                                                      const uint32_t *b, size_t panel, float *c,
                                                                      int ldc, int cols, bool add)
{
    __m512 acc[TILE_ROWS][TILE_PANELS];
#pragma GCC unroll 2
    for (int p = 0; p < panels; p++) {
        const int left = cols - p * BF16_PANEL;
        const __mmask16 mask = left >= BF16_PANEL ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
#pragma GCC unroll 8
        for (int r = 0; r < rows; r++)
            acc[r][p] = add ? _mm512_maskz_loadu_ps(mask, c + (size_t)r * ldc + p * BF16_PANEL) : _mm512_setzero_ps();
    }
    for (int q = 0; q < k2; q++) {
        __m512bh bv[TILE_PANELS];
#pragma GCC unroll 2
        for (int p = 0; p < panels; p++) bv[p] = (__m512bh)_mm512_loadu_si512(b + p * panel + (size_t)q * BF16_PANEL);
#pragma GCC unroll 8
        for (int r = 0; r < rows; r++) {
            const __m512bh av = (__m512bh)_mm512_set1_epi32((int)a[(size_t)r * k2 + q]);
#pragma GCC unroll 2
            for (int p = 0; p < panels; p++) acc[r][p] = _mm512_dpbf16_ps(acc[r][p], av, bv[p]);
        }
    }
#pragma GCC unroll 2
    for (int p = 0; p < panels; p++) {
        const int left = cols - p * BF16_PANEL;
        const __mmask16 mask = left >= BF16_PANEL ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
#pragma GCC unroll 8
        for (int r = 0; r < rows; r++) _mm512_mask_storeu_ps(c + (size_t)r * ldc + p * BF16_PANEL, mask, acc[r][p]);
    }
}

static BF16_TARGET void bf16_tile_any(int rows, int panels, int k2, const uint32_t *a, const uint32_t *b,
                                      size_t panel, float *c, int ldc, int cols, bool add)
{
#define BF16_TILE(R)                                                                  \
    case R:                                                                           \
        if (panels == 2) bf16_tile(R, 2, k2, a, b, panel, c, ldc, cols, add);         \
        else bf16_tile(R, 1, k2, a, b, panel, c, ldc, cols, add);                     \
        break;
    switch (rows) {
        BF16_TILE(1) BF16_TILE(2) BF16_TILE(3) BF16_TILE(4) BF16_TILE(5) BF16_TILE(6) BF16_TILE(7) BF16_TILE(8)
    }
#undef BF16_TILE
}

BF16_TARGET void bf16_gemm(int m, int n, int k, const uint32_t *a, const uint32_t *b, float *c, int ldc, bool add)
{
    const int k2 = (k + 1) / 2, width = TILE_PANELS * BF16_PANEL;
    const size_t panel = (size_t)k2 * BF16_PANEL;
    for (int j = 0; j < n; j += width) {
        const int cols = n - j < width ? n - j : width;
        const uint32_t *bj = b + (size_t)(j / BF16_PANEL) * panel;
        for (int i = 0; i < m; i += TILE_ROWS)
            bf16_tile_any(m - i < TILE_ROWS ? m - i : TILE_ROWS, (cols + BF16_PANEL - 1) / BF16_PANEL, k2,
                          a + (size_t)i * k2, bj, panel, c + (size_t)i * ldc + j, ldc, cols, add);
    }
}
