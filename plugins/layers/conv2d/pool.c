/* pool.c: conv2d's pool = 2, a 2x2 max-pool at stride 2 on the convolution's output, within the
 * layer (conv2d.h declares these for conv2d.c and winograd.c). Forward pools each pair of output
 * rows while it is still in the cache; backward spreads the pooled gradient back over its windows
 * as the convolution's backward reads it. So the full-size output and its gradient never pass
 * through memory: for the airbench networks on the CPU that was four passes over the largest
 * tensors of the step (a write and a read of each, forward and backward).
 *
 * The maxpool layer's rule picks the winner (max_take.h), so that conv2d with pool = 2 gives the
 * bits of conv2d followed by maxpool size = 2. Its place in the window is one byte per pooled
 * output (0, 1: the top row's left and right; 2, 3: the bottom row's), the layer's per-sample
 * state. An odd row or column past the last window is dropped forward and gets zeros backward,
 * as maxpool does. */
#include "conv2d.h"
#include "max_take.h"

#include <immintrin.h>

/* With AVX-512 (F, BW for the place bytes, VL for their 16-byte vectors), intrinsics: GCC left
 * the plain loops below scalar and branchy at CIFAR's widths (21% of the bf16 recipe's step under
 * perf at 8ce172d's first version; docs/benchmarks.md gives the command). */
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
/* 16 windows a vector: the two rows' 32 floats each split into even and odd columns (a window's
 * left and right taps), folded in the rule's order with masks; a last, partial vector masked. */
static const int32_t even_odd[2][16] = { { 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30 },
                                         { 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31 } };
static const int32_t zip[2][16] = { { 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23 },
                                    { 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31 } };

static inline __mmask16 first_bits(int n) { return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1); }

/* The two halves of a row's 2 * count floats from p: (left taps, right taps). */
static inline void load_taps(const float *p, int count, __m512 *left, __m512 *right)
{
    const __m512 lo = _mm512_maskz_loadu_ps(first_bits(2 * count), p);
    const __m512 hi = _mm512_maskz_loadu_ps(first_bits(2 * count - 16 > 0 ? 2 * count - 16 : 0), p + 16);
    *left = _mm512_permutex2var_ps(lo, _mm512_loadu_si512(even_odd[0]), hi);
    *right = _mm512_permutex2var_ps(lo, _mm512_loadu_si512(even_odd[1]), hi);
}

/* maxpool_take on 16 windows: v wins where it is larger or NaN. */
static inline void take16(__m512 *best, __m128i *at, __m512 v, int place)
{
    const __mmask16 m = _mm512_cmp_ps_mask(v, *best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    *best = _mm512_mask_mov_ps(*best, m, v);
    *at = _mm_mask_mov_epi8(*at, m, _mm_set1_epi8((char)place));
}

static void pool_windows(const float *top, const float *bottom, float *y, uint8_t *at, int n)
{
    for (int j = 0; j < n; j += 16) {
        const int count = n - j < 16 ? n - j : 16;
        __m512 a, b, c, d;
        load_taps(top + 2 * j, count, &a, &b);
        load_taps(bottom + 2 * j, count, &c, &d);
        __m128i k = _mm_setzero_si128();
        take16(&a, &k, b, 1);
        take16(&a, &k, c, 2);
        take16(&a, &k, d, 3);
        _mm512_mask_storeu_ps(y + j, first_bits(count), a);
        _mm_mask_storeu_epi8(at + j, first_bits(count), k);
    }
}

/* One row's 2 * count floats at p from its windows' left and right values. */
static inline void store_taps(float *p, int count, __m512 left, __m512 right)
{
    _mm512_mask_storeu_ps(p, first_bits(2 * count), _mm512_permutex2var_ps(left, _mm512_loadu_si512(zip[0]), right));
    if (count > 8)
        _mm512_mask_storeu_ps(p + 16, first_bits(2 * count - 16),
                              _mm512_permutex2var_ps(left, _mm512_loadu_si512(zip[1]), right));
}

static void unpool_windows(const float *g, const uint8_t *at, float *top, float *bottom, int n)
{
    for (int j = 0; j < n; j += 16) {
        const int count = n - j < 16 ? n - j : 16;
        const __m512 v = _mm512_maskz_loadu_ps(first_bits(count), g + j);
        const __m128i k = _mm_maskz_loadu_epi8(first_bits(count), at + j);
        __m512 t[4];
        for (int place = 0; place < 4; place++)
            t[place] = _mm512_maskz_mov_ps(_mm_cmpeq_epi8_mask(k, _mm_set1_epi8((char)place)), v);
        store_taps(top + 2 * j, count, t[0], t[1]);
        store_taps(bottom + 2 * j, count, t[2], t[3]);
    }
}
void conv2d_pool_taps(const float *t0, const float *t1, const float *t2, const float *t3, int count, float *y,
                      uint8_t *at)
{
    for (int q = 0; q < count; q += 16) {
        const __mmask16 m = first_bits(count - q);
        __m512 best = _mm512_maskz_loadu_ps(m, t0 + q);
        __m128i k = _mm_setzero_si128();
        take16(&best, &k, _mm512_maskz_loadu_ps(m, t1 + q), 1);
        take16(&best, &k, _mm512_maskz_loadu_ps(m, t2 + q), 2);
        take16(&best, &k, _mm512_maskz_loadu_ps(m, t3 + q), 3);
        _mm512_mask_storeu_ps(y + q, m, best);
        _mm_mask_storeu_epi8(at + q, m, k);
    }
}
#else
/* One window's taps in the rule's order: its maximum into *y, the winner's place into *at. */
static inline __attribute__((always_inline)) void pool_window(float t0, float t1, float t2, float t3, float *y,
                                                              uint8_t *at)
{
    float best = t0;
    int32_t k = 0;
    maxpool_take(&best, &k, t1, 1);
    maxpool_take(&best, &k, t2, 2);
    maxpool_take(&best, &k, t3, 3);
    *y = best;
    *at = (uint8_t)k;
}

/* The same in plain loops for the vectorizer. */
void conv2d_pool_taps(const float *restrict t0, const float *restrict t1, const float *restrict t2,
                      const float *restrict t3, int count, float *restrict y, uint8_t *restrict at)
{
#pragma omp simd
    for (int q = 0; q < count; q++) pool_window(t0[q], t1[q], t2[q], t3[q], &y[q], &at[q]);
}

static void pool_windows(const float *restrict top, const float *restrict bottom, float *restrict y,
                         uint8_t *restrict at, int n)
{
#pragma omp simd
    for (int j = 0; j < n; j++) pool_window(top[2 * j], top[2 * j + 1], bottom[2 * j], bottom[2 * j + 1], &y[j], &at[j]);
}

static void unpool_windows(const float *restrict g, const uint8_t *restrict at, float *restrict top,
                           float *restrict bottom, int n)
{
#pragma omp simd
    for (int j = 0; j < n; j++) {
        const int k = at[j];
        top[2 * j] = k == 0 ? g[j] : 0.0f;
        top[2 * j + 1] = k == 1 ? g[j] : 0.0f;
        bottom[2 * j] = k == 2 ? g[j] : 0.0f;
        bottom[2 * j + 1] = k == 3 ? g[j] : 0.0f;
    }
}
#endif

void conv2d_pool_rows(const float *top, const float *bottom, int width, float *y, uint8_t *at)
{
    pool_windows(top, bottom, y, at, width / 2);
}

static void unpool_rows(const float *g, const uint8_t *at, int width, float *top, float *bottom)
{
    unpool_windows(g, at, top, bottom, width / 2);
    if (width % 2) top[width - 1] = bottom[width - 1] = 0.0f;
}

void conv2d_pool_plane(const float *src, size_t ld, int h, int w, float *y, uint8_t *at)
{
    const int pw = w / 2;
    for (int i = 0; i < h / 2; i++)
        conv2d_pool_rows(src + (size_t)(2 * i) * ld, src + (size_t)(2 * i + 1) * ld, w, y + (size_t)i * pw,
                         at + (size_t)i * pw);
}

void conv2d_unpool_plane(const float *g, const uint8_t *at, int h, int w, float *dst, size_t ld)
{
    const int pw = w / 2;
    for (int i = 0; i < h / 2; i++)
        unpool_rows(g + (size_t)i * pw, at + (size_t)i * pw, w, dst + (size_t)(2 * i) * ld,
                           dst + (size_t)(2 * i + 1) * ld);
    if (h % 2)
        for (int j = 0; j < w; j++) dst[(size_t)(h - 1) * ld + j] = 0.0f;
}
