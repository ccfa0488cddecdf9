/* winograd.c: conv2d's Winograd F(4x4, 3x3) path on the CPU, for 3x3 kernels at stride 1 with
 * padding 0 to 2 (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016):
 * its geometry and scratch, the transforms, and one chunk of samples forward and backward.
 * conv2d.c chooses it, plans the workspace and runs the chunks (conv2d.h declares both sides).
 *
 * The output is cut into 4x4 tiles, each computed from a 6x6 input tile with 36 multiplies per
 * (input, output) channel pair instead of 144: 4x fewer multiply-adds (F(2x2, 3x3), which this
 * replaced, saves 2.25x). Per group of samples (see WINO_COLUMNS), with V = their transformed
 * input tiles side by side (36 planes of (C, tiles)) and U = the transformed kernels (36 planes
 * of (OC, C), once per call, into the call's workspace):
 *     forward   M_e = U_e V_e for each of the 36 planes e, then y = the output transform of M
 *     backward  dU_e += Z_e V_e^T, Z = the transformed output-gradient tiles; dW = G^T dU G
 *               dx: the same forward, run on dY with the kernels turned 180 degrees and their
 *               channel axes swapped (stride 1 makes the input gradient a convolution too).
 * Its results differ from im2col's by rounding only (a few 1e-6 of the largest value; the
 * transforms' 1/6 and 1/24 are not exact in binary, and 6x6 tiles add more terms).
 *
 * The group's samples are interleaved, innermost: a channel's padded input is (ph, 4, xs, n),
 * each row split by column residue mod 4 (column 4x + r at [r][x]) and sample k of the n at [k],
 * and a plane's columns are its tiles in row-major order with the n samples of each side by side
 * (column (ti * tw + tj) * n + k). The transforms are elementwise over those last axes, so each of
 * their loops runs over whole rows of tiles of all n samples at once: vectors of tw * n, where one
 * sample alone gave loops of tw (1, 2 or 4 on CIFAR's smaller planes, mostly scalar code). A
 * group of one sample (planes 32 wide and more) is the same layout with n = 1, its residues split
 * as the transforms read its plain padded rows ("Into and out of the interleaved layout"). */
#include <cblas.h>
#include <immintrin.h>
#include <string.h>

#include "bf16.h"
#include "conv2d.h"
#include "gemm.h"

/* GCC turns wino_copy_row's loop of 4-float moves back into a memmove call, which for rows of
 * 3 to 31 floats cost several times the moves (a tenth of the recipe's step went to memmove). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-tree-loop-distribute-patterns")
#endif

/* Rounds a plane size up so that the 36 planes of a transform do not start at multiples of
 * 4 KB: transforms write all 36 at once, and planes 4 KB apart would share L1 sets (2-10x
 * slower for the tutorial's shapes). */
static size_t wino_plane(size_t floats) { return (floats + 15) / 16 * 16 + 16; }

static wino_geom wino_geometry(int cin, int h, int w, int cout, int pad)
{
    wino_geom g = { .cin = cin, .h = h, .w = w, .cout = cout, .oh = h + 2 * pad - 2,
                    .ow = w + 2 * pad - 2, .pad = pad };
    g.th = (g.oh + 3) / 4;
    g.tw = (g.ow + 3) / 4;
    g.tiles = g.th * g.tw;
    g.ph = 4 * g.th + 2;
    g.pw = 4 * g.tw + 4;
    g.xs = g.pw / 4;
    return g;
}

/* Floats from one sample's plane of whole output tiles (4 * th, 4 * tw) to the next in
 * wino_output's staging: 4 more, so that the n planes are not a power of two apart. */
static size_t wino_tile_plane(const wino_geom *g) { return (size_t)16 * g->tiles + 4; }

static size_t max_size(size_t a, size_t b) { return a > b ? a : b; }

/* Floats of the stage for a group of s->group samples: the input transforms' six rows of pw * n
 * (wino_input, wino_grad_tiles), or the output transform's 24 rows of tw * n and 16 output rows
 * (wino_output), for the wider of the two geometries. */
static size_t wino_stage(const conv2d *s)
{
    const size_t rows = 6 * (size_t)max_size((size_t)s->fwd.pw, (size_t)s->back.pw);
    const size_t out = 40 * (size_t)max_size((size_t)s->fwd.tw, (size_t)s->back.tw);
    return max_size(rows, out) * (size_t)s->group;
}

/* Floats per sample of v's and m's planes: the forward's and the dx convolution's tiles share
 * them (dW's dY tiles are the size of the forward's products). */
static size_t wino_v_floats(const conv2d *s)
{
    return max_size((size_t)s->c * s->fwd.tiles, (size_t)s->oc * s->back.tiles);
}

static size_t wino_m_floats(const conv2d *s)
{
    return max_size((size_t)s->oc * s->fwd.tiles, (size_t)s->c * s->back.tiles);
}

/* In bf16, 32-bit words of one packed plane of U (the larger of the forward's and dx's), and of
 * the operands of one plane's product packed: a group's V (up to group x tiles columns of either
 * convolution), or for dU both V transposed and Z. */
_Static_assert(sizeof(uint32_t) == sizeof(float), "packed bf16 words are carved from the slot's floats");

static size_t wino_upack_words(const conv2d *s)
{
    return s->bf16 ? max_size(bf16_rows_words(s->oc, s->c), bf16_rows_words(s->c, s->oc)) : 0;
}

static size_t wino_bpack_words(const conv2d *s)
{
    const int cols = s->group * (s->fwd.tiles > s->back.tiles ? s->fwd.tiles : s->back.tiles);
    const int grad_cols = s->group * s->fwd.tiles;  /* dU's K: V transposed, then Z (wino_kernel_grad_plane) */
    const size_t products = bf16_cols_words(s->c > s->oc ? s->c : s->oc, cols);
    const size_t grads = bf16_cols_words(grad_cols, s->c) + bf16_rows_words(s->oc, grad_cols);
    return s->bf16 ? max_size(products, grads) : 0;
}

/* Floats of the group's planes of one channel (see wino_gather and wino_output): padded in each
 * geometry, twice (the samples' own planes and the interleaved copy), and of whole output tiles. */
static size_t wino_channel_floats(const conv2d *s)
{
    const wino_geom *f = &s->fwd, *b = &s->back;
    const size_t tiles = max_size(wino_tile_plane(f), wino_tile_plane(b));
    return (size_t)s->group * (2 * ((size_t)f->ph * f->pw + (size_t)b->ph * b->pw) + tiles);
}

/* In float32, the flipped kernels' U for dx, beside dU while the backward pass fills it; in bf16
 * dx reads their packed copy (upack) instead. */
static size_t wino_uflip_floats(const conv2d *s) { return s->bf16 ? 0 : WINO_PLANES * s->uplane; }

/* Floats of one Winograd slot but for v and m: the stage, the channel planes, dU, db, and in bf16
 * the packed operands (words the size of floats). */
static size_t wino_fixed_floats(const conv2d *s)
{
    return wino_stage(s) + wino_channel_floats(s) + WINO_PLANES * s->uplane + (size_t)s->oc +
           WINO_PLANES * wino_upack_words(s) + wino_bpack_words(s) + wino_uflip_floats(s);
}

static void wino_kernel_matrix(conv2d *s);


void wino_init(conv2d *s)
{
    s->fwd = wino_geometry(s->c, s->h, s->w, s->oc, s->pad);
    s->back = wino_geometry(s->oc, s->oh, s->ow, s->c, 2 - s->pad);
    /* dW reads the forward's dY tiles from the dx convolution's padded dY: with padding 2
     * the forward has a row (and column) of tiles more than the dx convolution needs. */
    if (s->back.ph < s->back.pad + 4 * s->fwd.th) s->back.ph = s->back.pad + 4 * s->fwd.th;
    if (s->back.pw < s->back.pad + 4 * s->fwd.tw) {  /* whole residue columns: a multiple of 4 */
        s->back.xs = (s->back.pad + 4 * s->fwd.tw + 3) / 4;
        s->back.pw = 4 * s->back.xs;
    }
    s->uplane = wino_plane((size_t)s->oc * (size_t)s->c);
    wino_kernel_matrix(s);
    s->group = WINO_COLUMNS / s->fwd.tiles > 1 ? WINO_COLUMNS / s->fwd.tiles : 1;
    conv2d_plan largest = { .group = s->group };  /* a call's groups are never larger */
    wino_plan_slot(s, &largest);
    s->slot = largest.slot;
}

/* The slot layout, sized here and carved by wino_scratch_at just below. */
void wino_plan_slot(const conv2d *s, conv2d_plan *p)
{
    p->vplane = wino_plane((size_t)p->group * wino_v_floats(s));
    p->mplane = wino_plane((size_t)p->group * wino_m_floats(s));
    p->slot = wino_fixed_floats(s) + WINO_PLANES * (2 * p->vplane + p->mplane);
}

float *wino_scratch_at(const conv2d *s, const conv2d_plan *plan, float *p, conv2d_scratch *sc)
{
    sc->v = p;
    p += WINO_PLANES * plan->vplane;
    sc->m = p;
    p += WINO_PLANES * plan->mplane;
    sc->vdy = p;
    p += WINO_PLANES * plan->vplane;
    sc->stage = p;
    p += wino_stage(s);
    sc->xplanes = p;
    p += (size_t)s->group * s->fwd.ph * s->fwd.pw;
    sc->xpad = p;
    p += (size_t)s->group * s->fwd.ph * s->fwd.pw;
    sc->dyplanes = p;
    p += (size_t)s->group * s->back.ph * s->back.pw;
    sc->dypad = p;
    p += (size_t)s->group * s->back.ph * s->back.pw;
    sc->tplanes = p;
    p += (size_t)s->group * max_size(wino_tile_plane(&s->fwd), wino_tile_plane(&s->back));
    sc->dw = p;
    p += WINO_PLANES * s->uplane;
    sc->upack = (uint32_t *)(void *)p;  /* words, not floats: the same size (bf16.h) */
    p += WINO_PLANES * wino_upack_words(s);
    sc->bpack = (uint32_t *)(void *)p;
    p += wino_bpack_words(s);
    sc->uflip = p;
    p += wino_uflip_floats(s);
    return p;
}

/* ---- The transforms ----
 * With a 6x6 input tile d, a 3x3 kernel g and a 4x4 output tile y (Lavin and Gray's points
 * 0, 1, -1, 2, -2 and infinity):
 *     y = A^T [(G g G^T) . (B^T d B)] A          (. elementwise, 36 products)
 *     B^T = | 4  0 -5  0  1  0 |   G = |  1/4   0     0   |   A^T = | 1  1  1  1  1  0 |
 *           | 0 -4 -4  1  1  0 |       | -1/6  -1/6  -1/6 |         | 0  1 -1  2 -2  0 |
 *           | 0  4 -4 -1  1  0 |       | -1/6   1/6  -1/6 |         | 0  1  1  4  4  0 |
 *           | 0 -2 -1  2  1  0 |       |  1/24  1/12  1/6 |         | 0  1 -1  8 -8  1 |
 *           | 0  2 -1 -2  1  0 |       |  1/24 -1/12  1/6 |
 *           | 0  4  0 -5  0  1 |       |  0     0     1   |
 * Summed over input channels, each of the 36 products is a matrix product across channels, so
 * plane e of the transformed tiles gives M_e (cout, tiles) = U_e (cout, cin) V_e (cin, tiles).
 * For the kernel gradient, dU_e = sum over tiles of (A dY A^T)_e V_e, and dW = G^T dU G.
 * Each transform is a 1-D one applied down the columns, then along the rows: the helpers below
 * are those 1-D transforms, written once. */

/* The 1-D transforms on named scalars: macros, not functions on arrays, because the vectorizer
 * gives up on loops whose body passes arrays around (written that way, -fopt-info-vec-optimized
 * listed none of the transform loops). */

/* (o0 .. o5) = B^T (d0 .. d5) */
#define WINO_BT(d0, d1, d2, d3, d4, d5, o0, o1, o2, o3, o4, o5) \
    do {                                                         \
        o0 = 4.0f * (d0) - 5.0f * (d2) + (d4);                   \
        o1 = -4.0f * ((d1) + (d2)) + (d3) + (d4);                \
        o2 = 4.0f * ((d1) - (d2)) - (d3) + (d4);                 \
        o3 = 2.0f * ((d3) - (d1)) - (d2) + (d4);                 \
        o4 = 2.0f * ((d1) - (d3)) - (d2) + (d4);                 \
        o5 = 4.0f * (d1) - 5.0f * (d3) + (d5);                   \
    } while (0)

/* (o0 .. o3) = A^T (m0 .. m5) */
#define WINO_AT(m0, m1, m2, m3, m4, m5, o0, o1, o2, o3)                          \
    do {                                                                         \
        const float p1_ = (m1) + (m2), n1_ = (m1) - (m2);                        \
        const float p2_ = (m3) + (m4), n2_ = (m3) - (m4);                        \
        o0 = (m0) + p1_ + p2_;                                                   \
        o1 = n1_ + 2.0f * n2_;                                                   \
        o2 = p1_ + 4.0f * p2_;                                                   \
        o3 = n1_ + 8.0f * n2_ + (m5);                                            \
    } while (0)

/* (o0 .. o5) = A (d0 .. d3), for dY */
#define WINO_A(d0, d1, d2, d3, o0, o1, o2, o3, o4, o5)                                            \
    do {                                                                                          \
        const float p_ = (d0) + (d2), q_ = (d1) + (d3);                                           \
        const float p4_ = (d0) + 4.0f * (d2), q8_ = 2.0f * (d1) + 8.0f * (d3);                    \
        o0 = (d0);                                                                                \
        o1 = p_ + q_;                                                                             \
        o2 = p_ - q_;                                                                             \
        o3 = p4_ + q8_;                                                                           \
        o4 = p4_ - q8_;                                                                           \
        o5 = (d3);                                                                                \
    } while (0)

/* G g for one column g of 3 (a kernel): 6 outputs. At create only (wino_kernel_matrix). */
static void wino_g(const float g[3], float out[6])
{
    out[0] = 0.25f * g[0];
    out[1] = -(g[0] + g[1] + g[2]) / 6.0f;
    out[2] = -(g[0] - g[1] + g[2]) / 6.0f;
    out[3] = g[0] / 24.0f + g[1] / 12.0f + g[2] / 6.0f;
    out[4] = g[0] / 24.0f - g[1] / 12.0f + g[2] / 6.0f;
    out[5] = g[2];
}

/* U_e (cout, cin) for e = 6i + j from the 3x3 kernels: G g G^T, each of the 36 a fixed sum of
 * the 9 taps, so all kernels at once are one product: U (36, kernels) = s->wg (36, 9) x the
 * kernels (kernels, 9)^T. `flip` reads the kernels as the dx convolution needs them: for output
 * channel c and input o, W[o][c] turned 180 degrees (wg's reversed columns), one product per c
 * (the kernels W[.][c] are C * 9 floats apart). */
void wino_kernels(const conv2d *s, const float *weight, float *u, bool flip)
{
    if (!flip) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, WINO_PLANES, s->oc * s->c, 9, 1.0f, s->wg[0], 9,
                    weight, 9, 0.0f, u, (int)s->uplane);
        return;
    }
    for (int c = 0; c < s->c; c++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, WINO_PLANES, s->oc, 9, 1.0f, s->wg[1], 9,
                    weight + (size_t)c * 9, s->c * 9, 0.0f, u + (size_t)c * s->oc, (int)s->uplane);
}

void wino_pack_kernels(const conv2d *s, const wino_geom *g, const float *u, uint32_t *upack)
{
    for (int e = 0; e < WINO_PLANES; e++)
        bf16_pack_rows(u + e * s->uplane, g->cin, g->cout, g->cin, upack + e * wino_upack_words(s));
}

/* dW (OC, C, 3, 3) += G^T dU G, from the 36 planes of dU (OC, C): the same matrix, the other
 * way, dW (kernels, 9) += dU^T (kernels, 36) x wg (36, 9). */
void wino_kernel_grads(const conv2d *s, const float *du, float *dweight)
{
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, s->oc * s->c, 9, WINO_PLANES, 1.0f, du, (int)s->uplane,
                s->wg[0], 9, 1.0f, dweight, 9);
}

/* wg: G g G^T for each of the 9 one-tap kernels g, a column each (and reversed, for flip). */
static void wino_kernel_matrix(conv2d *s)
{
    for (int tap = 0; tap < 9; tap++) {
        float g[3][3] = { { 0 } };  /* columns first: g[b][a] is the kernel's row a, column b */
        g[tap % 3][tap / 3] = 1.0f;
        float t[3][6];  /* G g, column b */
        for (int b = 0; b < 3; b++) wino_g(g[b], t[b]);
        for (int i = 0; i < 6; i++) {  /* (G g) G^T, row i */
            const float row[3] = { t[0][i], t[1][i], t[2][i] };
            float r[6];
            wino_g(row, r);
            for (int j = 0; j < 6; j++) {
                s->wg[0][(6 * i + j) * 9 + tap] = r[j];
                s->wg[1][(6 * i + j) * 9 + 8 - tap] = r[j];
            }
        }
    }
}

/* ---- Into and out of the interleaved layout ----
 * One channel at a time, through planes of the n samples' own (the group's padded planes of
 * that channel, then of its output tiles), so that the interleaving is a transpose between
 * buffers in L1, in whole 4x4 blocks of 4 samples' 4 neighbouring columns (SSE: 4 loads, 8
 * shuffles, 4 stores for 16 floats); a last, short group whose n is not a multiple of 4 goes
 * float by float. Interleaving straight from x and into y was 2-3x slower: the samples' planes
 * are powers of two apart, so the n rows a block reads or writes share a set of the L1 cache.
 * A group of one sample (planes of 32 columns and more) needs no interleaving: it keeps the
 * plain padded rows, which the column passes split by residue as they read them, and its
 * outputs go straight into y, as before the interleaving, which measured 10-25% slower there. */

/* One padded row into the group's copy (n > 1): d gets 4 residues of xs * n floats, column 4x + r
 * of sample k at d[r * xs * n + x * n + k], from the n samples' padded rows (src: sample 0's,
 * stride floats to the next; 4 * xs floats each). */
static void wino_interleave_row(const float *src, size_t stride, int n, int xs, float *restrict d)
{
    const size_t xn = (size_t)xs * n;
    int x = 0;
    if (n % 4 == 0) {
        for (; x < xs; x++)
            for (int k = 0; k < n; k += 4) {
                const float *in = src + (size_t)k * stride + 4 * x;
                __m128 c0 = _mm_loadu_ps(in), c1 = _mm_loadu_ps(in + stride);
                __m128 c2 = _mm_loadu_ps(in + 2 * stride), c3 = _mm_loadu_ps(in + 3 * stride);
                _MM_TRANSPOSE4_PS(c0, c1, c2, c3);  /* c_r: residue r of samples k .. k+3 */
                float *o = d + (size_t)x * n + k;
                _mm_storeu_ps(o, c0);
                _mm_storeu_ps(o + xn, c1);
                _mm_storeu_ps(o + 2 * xn, c2);
                _mm_storeu_ps(o + 3 * xn, c3);
            }
    }
    for (; x < xs; x++)
        for (int k = 0; k < n; k++)
            for (int r = 0; r < 4; r++) d[r * xn + (size_t)x * n + k] = src[(size_t)k * stride + 4 * x + r];
}

/* dst[0, w) = src[0, w): rows of CIFAR's odd widths (31, 15, 7) went through a call to memmove
 * each (see the pragma above). With AVX-512, 16-float moves and a masked last one (a row of 31 is
 * two; 2% of the tutorial's and the bf16 recipe's steps against the 4-float moves, whose last one
 * overlaps the one before it, kept for other CPUs). */
static inline void wino_copy_row(float *restrict dst, const float *restrict src, int w)
{
#ifdef __AVX512F__
    int at = 0;
    for (; at + 16 <= w; at += 16) _mm512_storeu_ps(dst + at, _mm512_loadu_ps(src + at));
    if (at < w) {
        const __mmask16 m = (__mmask16)((1u << (w - at)) - 1);
        _mm512_mask_storeu_ps(dst + at, m, _mm512_maskz_loadu_ps(m, src + at));
    }
#else
    if (w < 4) {
        for (int j = 0; j < w; j++) dst[j] = src[j];
        return;
    }
    for (int j = 0; j + 4 <= w; j += 4) _mm_storeu_ps(dst + j, _mm_loadu_ps(src + j));
    if (w % 4) _mm_storeu_ps(dst + w - 4, _mm_loadu_ps(src + w - 4));
#endif
}

/* The n samples' planes (hw floats each, channels in order) are n short streams, which the
 * hardware's prefetchers follow poorly: wino_gather's row copies, which first read each layer's
 * input from memory, were 18% of the bf16 recipe's step under perf. So each call asks for the
 * planes of a channel at least WINO_AHEAD bytes on (at least 2 channels; 29 on 3x3 planes). A
 * one-off cycle count saw the copies' cycles halve; the step's wall time moved by about 1%,
 * within the noise (docs/benchmarks.md, "Prefetching the next planes"). */
enum { WINO_AHEAD = 1024 };

static void wino_prefetch(const float *in, size_t in_size, int n, size_t hw, int c, int channels)
{
    size_t ahead = (WINO_AHEAD + hw * sizeof(float) - 1) / (hw * sizeof(float));
    if (ahead < 2) ahead = 2;
    if ((size_t)c + ahead >= (size_t)channels) return;
    for (int k = 0; k < n; k++) {
        const char *next = (const char *)(in + (size_t)k * in_size + ((size_t)c + ahead) * hw);
        for (size_t b = 0; b < hw * sizeof(float); b += 64) __builtin_prefetch(next + b);
    }
}

/* Channel c of samples in[0 .. n-1] (in_size floats apart, each (cin, h, w)) into `planes` (n
 * padded planes of ph * pw, the input at (pad, pad); the caller has zeroed their borders, which
 * stay zero) and, for n > 1, on into the group's padded copy of that channel (ph, 4, xs, n):
 * column 4x + r of padded row `row` of sample k at [row][r][x][k]. One channel at a time, so that
 * the transform reads the copy from L1: the whole group's, for 192 channels of 4 samples,
 * is 1.1 MB, beyond the core's L2. With `at` (dY of a layer with pool = 2), each sample's input
 * is pooled, (cin, h / 2, w / 2) with its winners' places in `at` alike, and is spread back over
 * its windows as it is copied (pool.c). */
static void wino_gather(const wino_geom *g, const float *in, const uint8_t *at, size_t in_size, int n, int c,
                        float *planes, float *padded)
{
    const size_t plane = (size_t)g->ph * g->pw, len = (size_t)g->pw * n;
    const size_t hw = at ? (size_t)(g->h / 2) * (size_t)(g->w / 2) : (size_t)g->h * g->w;
    wino_prefetch(in, in_size, n, hw, c, g->cin);
    for (int k = 0; k < n; k++) {
        const float *src = in + (size_t)k * in_size + (size_t)c * hw;
        float *dst = planes + (size_t)k * plane + (size_t)g->pad * g->pw + g->pad;
        if (at)
            conv2d_unpool_plane(src, at + (size_t)k * in_size + (size_t)c * hw, g->h, g->w, dst, (size_t)g->pw);
        else
            for (int i = 0; i < g->h; i++) wino_copy_row(dst + (size_t)i * g->pw, src + (size_t)i * g->w, g->w);
    }
    for (int row = 0; n > 1 && row < g->ph; row++)
        wino_interleave_row(planes + (size_t)row * g->pw, plane, n, g->xs, padded + (size_t)row * len);
}

/* The column pass of a row of tiles' transform, for wino_input_row and wino_grad_row: COLUMN
 * (WINO_BT_COLUMN or WINO_A_COLUMN) takes column i of the padded rows r0, r1, ... (len floats
 * each) into column j of the rows t0, t1, ... For n > 1 the rows are the interleaved copy, already
 * split by residue, so j = i. For a group of one sample they are the plain padded rows, and
 * column 4x + r goes to residue r's column x (r * len / 4 + x), all four residues in one loop, so
 * that the loads of a row are one group of four that the vectorizer splits with shuffles. */
#define WINO_COLUMN_PASS(n, len, COLUMN)                                                              \
    if ((n) == 1) {                                                                                   \
        const size_t residue_ = (len) / 4;                                                            \
        _Pragma("omp simd") for (size_t x = 0; x < residue_; x++) {                                   \
            COLUMN(4 * x, x);                                                                         \
            COLUMN(4 * x + 1, residue_ + x);                                                          \
            COLUMN(4 * x + 2, 2 * residue_ + x);                                                      \
            COLUMN(4 * x + 3, 3 * residue_ + x);                                                      \
        }                                                                                             \
    } else {                                                                                          \
        _Pragma("omp simd") for (size_t x = 0; x < (len); x++) COLUMN(x, x);                          \
    }
#define WINO_BT_COLUMN(i, j) WINO_BT(r0[i], r1[i], r2[i], r3[i], r4[i], r5[i], t0[j], t1[j], t2[j], t3[j], t4[j], t5[j])
#define WINO_A_COLUMN(i, j) WINO_A(r0[i], r1[i], r2[i], r3[i], t0[j], t1[j], t2[j], t3[j], t4[j], t5[j])

/* The row pass of a row of tiles' transform, for wino_input_row and wino_grad_row: the column
 * pass has left six rows i of t, `len` floats apart, each laid out as the padded copy's rows;
 * column s of tile tj, sample k, is at c_s[tj * n + k], with c_s = t + o_s. This transforms each
 * tile's row i into planes 6i .. 6i+5 of out (tile tj of sample k at out[e * plane + tj * n + k]),
 * in one loop over q = tj * n + k, the whole row of tiles of all n samples. TILE is WINO_BT_TILE
 * for 6x6 input tiles, whose columns 4 and 5 are the next tile's residues 0 and 1 (n further
 * on), or WINO_A_TILE for 4x4 dY tiles. Four distinct pointers per plane group, or the compiler
 * must assume the planes overlap and keeps the stores in order. A macro, so that each use is the
 * plain loop the vectorizer wants: an inline function with a flag for the transform compiled to
 * different and larger code. */
#define WINO_TILES_TO_PLANES(t, len, o_0, o_1, o_2, o_3, n, out, plane, count, TILE)                       \
    for (int i = 0; i < 6; i++) {                                                                       \
        const float *restrict t_ = (t) + (size_t)i * (len);                                             \
        const float *restrict c0 = t_ + (o_0), *restrict c1 = t_ + (o_1);                               \
        const float *restrict c2 = t_ + (o_2), *restrict c3 = t_ + (o_3);                               \
        const float *restrict c0n = c0 + (n), *restrict c1n = c1 + (n); /* WINO_BT_TILE's */             \
        (void)c0n, (void)c1n;                                                                           \
        float *restrict o0 = (out) + (size_t)6 * i * (plane), *restrict o1 = o0 + (plane);              \
        float *restrict o2 = o1 + (plane), *restrict o3 = o2 + (plane), *restrict o4 = o3 + (plane);    \
        float *restrict o5 = o4 + (plane);                                                              \
        _Pragma("omp simd") for (int q = 0; q < (count); q++) TILE;                                     \
    }
#define WINO_BT_TILE WINO_BT(c0[q], c1[q], c2[q], c3[q], c0n[q], c1n[q], o0[q], o1[q], o2[q], o3[q], o4[q], o5[q])
#define WINO_A_TILE WINO_A(c0[q], c1[q], c2[q], c3[q], o0[q], o1[q], o2[q], o3[q], o4[q], o5[q])

/* One row of tiles of one channel through B^T d B: the six padded rows from r0 on (len = pw * n
 * floats each) down the columns into t (six rows of len), then the tiles' rows into planes of v
 * from out on. `count` (tw * n) is a parameter so that wino_input can pass the usual ones as
 * constants; `omp simd` then keeps the compiler from unrolling those short loops into scalar
 * code. */
static inline __attribute__((always_inline)) void wino_input_row(const float *restrict r0, size_t len, int n,
                                                                 float *restrict t, float *restrict out,
                                                                 size_t plane, int count)
{
    const float *restrict r1 = r0 + len, *restrict r2 = r1 + len, *restrict r3 = r2 + len;
    const float *restrict r4 = r3 + len, *restrict r5 = r4 + len;
    float *restrict t0 = t, *restrict t1 = t0 + len, *restrict t2 = t1 + len;
    float *restrict t3 = t2 + len, *restrict t4 = t3 + len, *restrict t5 = t4 + len;
    const size_t xn = len / 4;  /* one residue's columns */
    WINO_COLUMN_PASS(n, len, WINO_BT_COLUMN);
    WINO_TILES_TO_PLANES(t, len, 0, xn, 2 * xn, 3 * xn, n, out, plane, count, WINO_BT_TILE);
}

/* wino_input_row with the usual counts as constants (see there). */
static void wino_input_row_any(const float *r0, size_t len, int n, float *t, float *out, size_t plane, int count)
{
    switch (count) {
    case 8: wino_input_row(r0, len, n, t, out, plane, 8); break;
    case 16: wino_input_row(r0, len, n, t, out, plane, 16); break;
    case 32: wino_input_row(r0, len, n, t, out, plane, 32); break;
    case 64: wino_input_row(r0, len, n, t, out, plane, 64); break;
    default: wino_input_row(r0, len, n, t, out, plane, count);
    }
}

/* The group's transformed input tiles into the 36 planes of V (cin, ld), from its n samples at in
 * (in_size floats apart), a channel at a time through wino_gather (planes and padded: its
 * scratch); t is scratch for six rows of pw * n floats. */
static void wino_input(const wino_geom *g, int n, const float *in, size_t in_size, float *planes, float *padded,
                       float *t, float *v, size_t ld, size_t plane)
{
    const size_t len = (size_t)g->pw * n;
    const int count = g->tw * n;
    for (int c = 0; c < g->cin; c++) {
        wino_gather(g, in, NULL, in_size, n, c, planes, padded);
        const float *rows = n == 1 ? planes : padded;
        for (int ti = 0; ti < g->th; ti++)
            wino_input_row_any(rows + (size_t)(4 * ti) * len, len, n, t, v + (size_t)c * ld + (size_t)ti * count,
                               plane, count);
    }
}

/* M_e (cout, cols) = U_e (cout, cin) V_e (cin, cols) for the 36 planes; cols = the group's tiles.
 * In float32, in blocks (gemm.h; bench/gemm_blocks.c times a 192-channel group both ways). The
 * kernel gradient's products (192 x 192 x 64, V transposed) gained nothing from blocks of rows or
 * of columns (docs/benchmarks.md), so they stay whole (wino_backward_chunk). In bf16, from the
 * call's packed U, each plane of V packed in turn (bench/gemm_bf16.c times both). */
static void wino_multiply(const conv2d *s, const wino_geom *g, const conv2d_plan *plan, const conv2d_scratch *sc,
                          const float *vplanes, const float *u, const uint32_t *upack, int cols)
{
    for (int e = 0; e < WINO_PLANES; e++) {
        const float *v = vplanes + e * plan->vplane;
        float *m = sc->m + e * plan->mplane;
        if (s->bf16) {
            bf16_pack_cols(v, cols, g->cin, cols, sc->bpack);
            bf16_gemm(g->cout, cols, g->cin, upack + e * wino_upack_words(s), sc->bpack, m, cols, false);
        } else {
            gemm_in_blocks(CblasNoTrans, CblasNoTrans, g->cout, cols, g->cin, 1.0f, u + e * s->uplane, g->cin, v,
                           cols, 0.0f, m, cols);
        }
    }
}

/* One row of tiles of all n samples through A^T M A, plus the bias: M's 36 planes start at m
 * (column q = tj * n + k); A^T M first, into st (24 rows of count: row r of tile column j at
 * st[(4j + r) * count]), then each row through A: with one sample (y not NULL), straight into
 * its four output rows, y and ld apart, tile tj at columns 4tj .. 4tj+3; with more, into 16 rows
 * of count from st + 24 * count (output row r, column c of the tiles at row 4r + c), which
 * wino_deinterleave_rows takes apart. */
static inline __attribute__((always_inline)) void wino_output_row(const float *restrict m, size_t plane,
                                                                  float bias, float *restrict st, int count,
                                                                  float *restrict y, size_t ld)
{
    for (int j = 0; j < 6; j++) {
        const float *restrict m0 = m + (size_t)j * plane, *restrict m1 = m0 + 6 * plane;
        const float *restrict m2 = m1 + 6 * plane, *restrict m3 = m2 + 6 * plane;
        const float *restrict m4 = m3 + 6 * plane, *restrict m5 = m4 + 6 * plane;
        float *restrict s0 = st + (size_t)(4 * j) * count, *restrict s1 = s0 + count;
        float *restrict s2 = s1 + count, *restrict s3 = s2 + count;
#pragma omp simd
        for (int q = 0; q < count; q++)
            WINO_AT(m0[q], m1[q], m2[q], m3[q], m4[q], m5[q], s0[q], s1[q], s2[q], s3[q]);
    }
    for (int r = 0; r < 4; r++) {
        const float *restrict a = st + (size_t)r * count;  /* tile column j of row r at a + 4 * j * count */
        if (y) {
            float *restrict yr = y + (size_t)r * ld;
#pragma omp simd
            for (int q = 0; q < count; q++) {
                float o0, o1, o2, o3;
                WINO_AT(a[q], a[4 * count + q], a[8 * count + q], a[12 * count + q], a[16 * count + q],
                        a[20 * count + q], o0, o1, o2, o3);
                yr[4 * q] = o0 + bias;
                yr[4 * q + 1] = o1 + bias;
                yr[4 * q + 2] = o2 + bias;
                yr[4 * q + 3] = o3 + bias;
            }
            continue;
        }
        float *restrict y0 = st + (size_t)(24 + 4 * r) * count, *restrict y1 = y0 + count;
        float *restrict y2 = y1 + count, *restrict y3 = y2 + count;
#pragma omp simd
        for (int q = 0; q < count; q++) {
            float o0, o1, o2, o3;
            WINO_AT(a[q], a[4 * count + q], a[8 * count + q], a[12 * count + q], a[16 * count + q],
                    a[20 * count + q], o0, o1, o2, o3);
            y0[q] = o0 + bias;
            y1[q] = o1 + bias;
            y2[q] = o2 + bias;
            y3[q] = o3 + bias;
        }
    }
}

static void wino_output_row_any(const float *m, size_t plane, float bias, float *st, int count, float *y, size_t ld)
{
    switch (count) {
    case 8: wino_output_row(m, plane, bias, st, 8, y, ld); break;
    case 16: wino_output_row(m, plane, bias, st, 16, y, ld); break;
    case 32: wino_output_row(m, plane, bias, st, 32, y, ld); break;
    case 64: wino_output_row(m, plane, bias, st, 64, y, ld); break;
    default: wino_output_row(m, plane, bias, st, count, y, ld);
    }
}

/* The way back of the interleaving (n > 1), for the 16 rows wino_output_row made for row of tiles
 * ti (row 4r + c: output row 4ti + r, column 4tj + c, of sample k at [tj * n + k]): into the n
 * samples' planes of whole tiles (4 * th, 4 * tw), `stride` floats apart from out on. */
static void wino_deinterleave_rows(const wino_geom *g, const float *rows, int n, int ti, float *out, size_t stride)
{
    const size_t count = (size_t)g->tw * n, width = (size_t)4 * g->tw;
    for (int r = 0; r < 4; r++) {
        const float *o = rows + 4 * r * count;  /* column c of tile tj, sample k, at o[c * count + tj * n + k] */
        float *yr = out + (size_t)(4 * ti + r) * width;
        for (int tj = 0; tj < g->tw; tj++) {
            int k = 0;
            for (; n % 4 == 0 && k < n; k += 4) {
                const float *ok = o + (size_t)tj * n + k;
                __m128 c0 = _mm_loadu_ps(ok), c1 = _mm_loadu_ps(ok + count);
                __m128 c2 = _mm_loadu_ps(ok + 2 * count), c3 = _mm_loadu_ps(ok + 3 * count);
                _MM_TRANSPOSE4_PS(c0, c1, c2, c3);  /* c_j: the tile's 4 columns of sample k + j */
                float *yk = yr + (size_t)k * stride + 4 * tj;
                _mm_storeu_ps(yk, c0);
                _mm_storeu_ps(yk + stride, c1);
                _mm_storeu_ps(yk + 2 * stride, c2);
                _mm_storeu_ps(yk + 3 * stride, c3);
            }
            for (; k < n; k++) {
                const float *ok = o + (size_t)tj * n + k;
                _mm_storeu_ps(yr + (size_t)k * stride + 4 * tj, _mm_setr_ps(ok[0], ok[count], ok[2 * count], ok[3 * count]));
            }
        }
    }
}

/* pool = 2 for a group of n > 1 samples, on the 16 rows wino_output_row made for row of tiles ti
 * (row 4r + c: output row 4ti + r, column 4tj + c, of sample k at [tj * n + k]): a tile holds
 * 2x2 windows whole, and window (a, b)'s taps are rows 8a + 2b, one on, four on and five on, so
 * each window is pooled across whole rows of all n samples' tiles (vectors of tw * n, into
 * `pooled`: 4 rows of count floats, then 4 of count place bytes). Then each pooled value goes
 * straight to its sample's y (yh, yw) and its place to at, out_size apart from sample to sample,
 * but where the window is cut off (an odd oh or ow, or a partial tile). Pooling each sample's
 * plane of whole tiles after the interleaving was taken apart, 3 to 7 windows a call, took 2.5%
 * of the bf16 recipe's step under perf; this takes about 1% (docs/benchmarks.md). */
static void wino_pool_tiles(const wino_geom *g, const float *rows, int n, int ti, float *pooled, float *y,
                            uint8_t *at, size_t out_size)
{
    const int count = g->tw * n, yh = g->oh / 2, yw = g->ow / 2;
    uint8_t *places = (uint8_t *)(pooled + 4 * (size_t)count);
    for (int w = 0; w < 4; w++) {
        const float *t0 = rows + (size_t)(8 * (w / 2) + 2 * (w % 2)) * count, *t2 = t0 + 4 * (size_t)count;
        conv2d_pool_taps(t0, t0 + count, t2, t2 + count, count, pooled + (size_t)w * count, places + (size_t)w * count);
    }
    for (int w = 0; w < 4; w++) {
        const int i = 2 * ti + w / 2, b = w % 2;  /* pooled row; column 2tj + b */
        if (i >= yh) continue;
        const float *pv = pooled + (size_t)w * count;
        const uint8_t *pk = places + (size_t)w * count;
        for (int tj = 0; tj < g->tw && 2 * tj + b < yw; tj++)
            for (int k = 0; k < n; k++) {
                const size_t to = (size_t)k * out_size + (size_t)i * yw + 2 * tj + b;
                y[to] = pv[tj * n + k];
                at[to] = pk[tj * n + k];
            }
    }
}

/* The group's outputs from the 36 product planes (cout, ld): y (cout, oh, ow) of its n samples,
 * out_size floats apart from y on. Per channel, its rows of tiles through wino_output_row: with
 * one sample, straight into y (or, where the last tiles stick out, into the stage and cut); with
 * more, into the stage's 40 rows of tw * n, out of the interleaving into `planes` (n planes of
 * whole tiles, wino_tile_plane floats apart), and then each sample's plane into y, cut to (oh,
 * ow) (see "Into and out of the interleaved layout"). With `at` (pool = 2), y is (cout, oh / 2,
 * ow / 2) and `at` its winners' places alike: one sample's rows are pooled in pairs from the
 * stage, more samples' tiles in the interleaved layout (wino_pool_tiles). */
static void wino_output(const wino_geom *g, const float *m, int n, size_t ld, size_t plane, const float *bias,
                        float *stage, float *planes, float *y, uint8_t *at, size_t out_size)
{
    const int count = g->tw * n;
    const size_t stride = wino_tile_plane(g), width = (size_t)4 * g->tw;
    const bool exact = g->oh % 4 == 0 && g->ow % 4 == 0;
    const int yh = at ? g->oh / 2 : g->oh, yw = at ? g->ow / 2 : g->ow;
    for (int o = 0; o < g->cout; o++) {
        const float b = bias ? bias[o] : 0.0f;
        float *yo = y + (size_t)o * yh * yw;
        uint8_t *ao = at ? at + (size_t)o * yh * yw : NULL;
        for (int ti = 0; ti < g->th; ti++) {
            const float *mrow = m + (size_t)o * ld + (size_t)ti * count;
            float *y0 = yo + (size_t)4 * ti * g->ow, *rows = stage + (size_t)24 * count;  /* (4, width) */
            if (n > 1) {
                wino_output_row_any(mrow, plane, b, stage, count, NULL, 0);
                if (at) wino_pool_tiles(g, rows, n, ti, stage, yo, ao, out_size);  /* into the stage's free rows */
                else wino_deinterleave_rows(g, rows, n, ti, planes, stride);
            } else if (exact && !at) {
                wino_output_row_any(mrow, plane, b, stage, count, y0, (size_t)g->ow);
            } else {  /* the last tiles stick out, or pool: whole rows in the stage, cut to fit or pooled */
                wino_output_row_any(mrow, plane, b, stage, count, rows, width);
                for (int r = 0; at && r < 4 && 2 * ti + r / 2 < yh; r += 2)  /* output rows 4ti + r and one on */
                    conv2d_pool_rows(rows + r * width, rows + (r + 1) * width, g->ow, yo + (size_t)(2 * ti + r / 2) * yw,
                                     ao + (size_t)(2 * ti + r / 2) * yw);
                for (int r = 0; !at && r < 4 && 4 * ti + r < g->oh; r++)
                    wino_copy_row(y0 + (size_t)r * g->ow, rows + r * width, g->ow);
            }
        }
        for (int k = 0; n > 1 && !at && k < n; k++) {
            float *yk = yo + (size_t)k * out_size;
            const float *pk = planes + (size_t)k * stride;
            if (width == (size_t)g->ow) memcpy(yk, pk, sizeof(float) * (size_t)g->oh * g->ow);
            else
                for (int i = 0; i < g->oh; i++) wino_copy_row(yk + (size_t)i * g->ow, pk + i * width, g->ow);
        }
    }
}

/* One row of dY tiles of one channel through A dY A^T: the four padded rows from r0 on (len
 * floats each) down the columns into t (six rows of len), then the tiles' rows into planes of z
 * from out on; column s of the tiles at offset o_s of t's rows (wino_grad_tiles). */
static inline __attribute__((always_inline)) void wino_grad_row(const float *restrict r0, size_t len, int n,
                                                                const size_t off[4], float *restrict t,
                                                                float *restrict out, size_t plane, int count)
{
    const float *restrict r1 = r0 + len, *restrict r2 = r1 + len, *restrict r3 = r2 + len;
    float *restrict t0 = t, *restrict t1 = t0 + len, *restrict t2 = t1 + len;
    float *restrict t3 = t2 + len, *restrict t4 = t3 + len, *restrict t5 = t4 + len;
    WINO_COLUMN_PASS(n, len, WINO_A_COLUMN);
    WINO_TILES_TO_PLANES(t, len, off[0], off[1], off[2], off[3], n, out, plane, count, WINO_A_TILE);
}

/* Z: the group's transformed dY tiles (the forward's tiles) into the 36 planes (OC, ld), from its
 * n samples' dY at dy (ysize floats apart; with pool, pooled and spread back over the windows
 * from `at` by wino_gather), a channel at a time through wino_gather in the dx
 * convolution's geometry, which puts dY at (back.pad, back.pad) with zeros past its last row and
 * column (the partial tiles); t is scratch for six rows of back.pw * n floats. Unless vdy is NULL,
 * the same padded dY also goes on into the dx convolution's input tiles, the 36 planes of vdy
 * (OC, n * back.tiles), vplane apart: one gather of dY serves both (it measured 2-4% of a float32
 * step, when dx gathered dY again after dW). */
static void wino_grad_tiles(const conv2d *s, int n, const float *dy, const uint8_t *at, size_t ysize, float *planes,
                            float *padded, float *t, float *z, size_t ld, size_t plane, float *vdy, size_t vplane)
{
    const wino_geom *f = &s->fwd, *b = &s->back;
    const size_t len = (size_t)b->pw * n, xn = (size_t)b->xs * n;
    const int count = f->tw * n, vcount = b->tw * n;
    const size_t vld = (size_t)n * b->tiles;
    size_t off[4];  /* dY column 4tj + c is padded column 4tj + pad + c: its residue, and x one on past 3 */
    for (int c = 0; c < 4; c++) off[c] = (size_t)((b->pad + c) % 4) * xn + (size_t)((b->pad + c) / 4) * n;
    for (int o = 0; o < s->oc; o++) {
        wino_gather(b, dy, at, ysize, n, o, planes, padded);
        const float *rows = n == 1 ? planes : padded;
        for (int ti = 0; ti < f->th; ti++) {
            const float *r0 = rows + (size_t)(b->pad + 4 * ti) * len;
            float *out = z + (size_t)o * ld + (size_t)ti * count;
            switch (count) {
            case 8: wino_grad_row(r0, len, n, off, t, out, plane, 8); break;
            case 16: wino_grad_row(r0, len, n, off, t, out, plane, 16); break;
            case 32: wino_grad_row(r0, len, n, off, t, out, plane, 32); break;
            case 64: wino_grad_row(r0, len, n, off, t, out, plane, 64); break;
            default: wino_grad_row(r0, len, n, off, t, out, plane, count);
            }
        }
        for (int ti = 0; vdy && ti < b->th; ti++)  /* the same padded dY, as the dx convolution's input */
            wino_input_row_any(rows + (size_t)(4 * ti) * len, len, n, t,
                               vdy + (size_t)o * vld + (size_t)ti * vcount, vplane, vcount);
    }
}

/* A group at a time: the group's tiles side by side in V, 36 products with the call's U, then
 * the output transform. */
void wino_forward_chunk(const conv2d *s, const conv2d_plan *plan, const conv2d_scratch *sc, const float *u,
                        const uint32_t *upack, const float *x, const float *bias, float *y, uint8_t *at,
                        int64_t first, int64_t end)
{
    const wino_geom *g = &s->fwd;
    const size_t in_size = (size_t)g->cin * g->h * g->w, out_size = (size_t)g->cout * s->ypixels;
    memset(sc->xplanes, 0, sizeof(float) * (size_t)plan->group * g->ph * g->pw);  /* their borders */
    for (int64_t i = first; i < end; i += plan->group) {
        const int n = (int)(end - i < plan->group ? end - i : plan->group);
        const size_t ld = (size_t)n * g->tiles;
        wino_input(g, n, x + (size_t)i * in_size, in_size, sc->xplanes, sc->xpad, sc->stage, sc->v, ld, plan->vplane);
        wino_multiply(s, g, plan, sc, sc->v, u, upack, (int)ld);
        wino_output(g, sc->m, n, ld, plan->mplane, bias, sc->stage, sc->tplanes, y + (size_t)i * out_size,
                    at ? at + (size_t)i * out_size : NULL, out_size);
    }
}

/* One plane of the kernel gradient, dU_e (OC, C) += Z_e (OC, cols) V_e^T: whole in float32 (see
 * wino_multiply), or with both operands packed to bf16 (V_e transposed as it is packed). */
static void wino_kernel_grad_plane(const conv2d *s, const conv2d_scratch *sc, const float *z, const float *v,
                                   int cols, float *du)
{
    if (!s->bf16) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s->oc, s->c, cols, 1.0f, z, cols, v, cols, 1.0f, du,
                    s->c);
        return;
    }
    uint32_t *vt = sc->bpack, *zp = sc->bpack + bf16_cols_words(cols, s->c);
    bf16_pack_cols_t(v, cols, cols, s->c, vt);
    bf16_pack_rows(z, cols, s->oc, cols, zp);
    bf16_gemm(s->oc, s->c, cols, zp, vt, du, s->c, true);
}

/* Per group: dU += Z V^T (the kernel gradient, in the transformed domain, summed over the
 * group's tiles by one SGEMM per plane), db, and unless dx is NULL the group's dx: the
 * convolution of dY by the flipped kernels (uflip, or packed in upack), whose input tiles
 * wino_grad_tiles made from the same gather of dY as Z. */
void wino_backward_chunk(const conv2d *s, const conv2d_plan *plan, const conv2d_scratch *sc, const float *x,
                         const float *dy, const uint8_t *at, const float *uflip, const uint32_t *upack, float *dx,
                         int64_t first, int64_t end)
{
    const wino_geom *f = &s->fwd, *b = &s->back;
    const size_t xsize = (size_t)s->c * s->h * s->w, ysize = (size_t)s->oc * s->ypixels;
    memset(sc->dw, 0, sizeof(float) * WINO_PLANES * s->uplane);
    memset(sc->db, 0, sizeof(float) * (size_t)s->oc);
    memset(sc->xplanes, 0, sizeof(float) * (size_t)plan->group * f->ph * f->pw);  /* their borders */
    memset(sc->dyplanes, 0, sizeof(float) * (size_t)plan->group * b->ph * b->pw);
    for (int64_t i = first; i < end; i += plan->group) {
        const int g = (int)(end - i < plan->group ? end - i : plan->group);
        const size_t ld = (size_t)g * f->tiles;
        wino_input(f, g, x + (size_t)i * xsize, xsize, sc->xplanes, sc->xpad, sc->stage, sc->v, ld, plan->vplane);
        wino_grad_tiles(s, g, dy + (size_t)i * ysize, at ? at + (size_t)i * ysize : NULL, ysize, sc->dyplanes,
                        sc->dypad, sc->stage, sc->m, ld, plan->mplane, dx ? sc->vdy : NULL, plan->vplane);
        for (int k = 0; s->bias && k < g; k++) conv2d_add_bias_grad(s, dy + (size_t)(i + k) * ysize, sc->db);
        for (int e = 0; e < WINO_PLANES; e++)  /* dU_e (OC, C) += Z_e (OC, cols) V_e^T */
            wino_kernel_grad_plane(s, sc, sc->m + e * plan->mplane, sc->v + e * plan->vplane, (int)ld,
                                   sc->dw + e * s->uplane);
        if (!dx) continue;
        const size_t bld = (size_t)g * b->tiles;
        wino_multiply(s, b, plan, sc, sc->vdy, uflip, upack, (int)bld);
        wino_output(b, sc->m, g, bld, plan->mplane, NULL, sc->stage, sc->tplanes, dx + (size_t)i * xsize, NULL, xsize);
    }
}
