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
 * transforms' 1/6 and 1/24 are not exact in binary, and 6x6 tiles add more terms). */
#include <cblas.h>
#include <string.h>

#include "bf16.h"
#include "conv2d.h"
#include "gemm.h"

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
    return g;
}

static size_t max_size(size_t a, size_t b) { return a > b ? a : b; }

/* Floats of the stage: the transforms' row scratch (24 rows of tw + 1), or the output's (24 rows
 * of tw, then four output rows of 4 * tw), for the wider of the two geometries. */
static size_t wino_stage(const conv2d *s)
{
    return 40 * (max_size((size_t)s->fwd.tw, (size_t)s->back.tw) + 1);
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

/* Floats of one Winograd slot but for v and m: the padded copies, the stage, dU, db, and in bf16
 * the packed operands (words the size of floats). */
static size_t wino_fixed_floats(const conv2d *s)
{
    const wino_geom *f = &s->fwd, *b = &s->back;
    return (size_t)f->cin * f->ph * f->pw + (size_t)b->cin * b->ph * b->pw + wino_stage(s) +
           WINO_PLANES * s->uplane + (size_t)s->oc + WINO_PLANES * wino_upack_words(s) + wino_bpack_words(s);
}

static void wino_kernel_matrix(conv2d *s);

void wino_init(conv2d *s)
{
    s->fwd = wino_geometry(s->c, s->h, s->w, s->oc, s->pad);
    s->back = wino_geometry(s->oc, s->oh, s->ow, s->c, 2 - s->pad);
    /* dW reads the forward's dY tiles from the dx convolution's padded dY: with padding 2
     * the forward has a row (and column) of tiles more than the dx convolution needs. */
    if (s->back.ph < s->back.pad + 4 * s->fwd.th) s->back.ph = s->back.pad + 4 * s->fwd.th;
    if (s->back.pw < s->back.pad + 4 * s->fwd.tw) s->back.pw = s->back.pad + 4 * s->fwd.tw;
    s->uplane = wino_plane((size_t)s->oc * (size_t)s->c);
    wino_kernel_matrix(s);
    s->group = WINO_COLUMNS / s->fwd.tiles > 1 ? WINO_COLUMNS / s->fwd.tiles : 1;
    /* Per sample: a call's chunks hold at most n + group - 1 < 2n samples' planes (groups
     * are whole; group <= n), and wino_plane adds at most 32 floats to a plane. */
    s->slot = wino_fixed_floats(s) + WINO_PLANES * 2 * (wino_v_floats(s) + wino_m_floats(s) + 32);
}

/* The slot layout, sized here and carved by wino_scratch_at just below. */
void wino_plan_slot(const conv2d *s, conv2d_plan *p)
{
    p->vplane = wino_plane((size_t)p->group * wino_v_floats(s));
    p->mplane = wino_plane((size_t)p->group * wino_m_floats(s));
    p->slot = wino_fixed_floats(s) + WINO_PLANES * (p->vplane + p->mplane);
}

float *wino_scratch_at(const conv2d *s, const conv2d_plan *plan, float *p, conv2d_scratch *sc)
{
    const wino_geom *f = &s->fwd, *b = &s->back;
    sc->xpad = p;
    p += (size_t)f->cin * f->ph * f->pw;
    sc->dypad = p;
    p += (size_t)b->cin * b->ph * b->pw;
    sc->v = p;
    p += WINO_PLANES * plan->vplane;
    sc->m = p;
    p += WINO_PLANES * plan->mplane;
    sc->stage = p;
    p += wino_stage(s);
    sc->dw = p;
    p += WINO_PLANES * s->uplane;
    sc->upack = (uint32_t *)(void *)p;  /* words, not floats: the same size (bf16.h) */
    p += WINO_PLANES * wino_upack_words(s);
    sc->bpack = (uint32_t *)(void *)p;
    p += wino_bpack_words(s);
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

/* The second half of a row of tiles' transform, for wino_input_row and wino_grad_row: the
 * first has transformed the columns into t (6 rows i, each as 4 residue rows of `ld` floats,
 * residue r at c + r * ld); this transforms each tile's row i, tile tj reading columns tj (and
 * tj + 1) of the residues, into planes 6i .. 6i+5 of out (tile tj at out[e * plane + tj]).
 * TILE is WINO_BT_TILE for 6x6 input tiles, whose columns 4 and 5 are the next tile's residues 0
 * and 1, or WINO_A_TILE for 4x4 dY tiles. Four distinct pointers per plane group, or the
 * compiler must assume the planes overlap and keeps the stores in order. A macro, so that each
 * use is the plain loop the vectorizer wants: an inline function with a flag for the transform
 * compiled to different and larger code, the macro to the very instructions of the two loops it
 * replaced. */
#define WINO_TILES_TO_PLANES(t, ld, out, plane, tw, TILE)                                             \
    for (int i = 0; i < 6; i++) {                                                                     \
        const float *restrict c0 = (t) + (size_t)(4 * i) * (ld), *restrict c1 = c0 + (ld);            \
        const float *restrict c2 = c1 + (ld), *restrict c3 = c2 + (ld);                               \
        float *restrict o0 = (out) + (size_t)6 * i * (plane), *restrict o1 = o0 + (plane);            \
        float *restrict o2 = o1 + (plane), *restrict o3 = o2 + (plane), *restrict o4 = o3 + (plane);  \
        float *restrict o5 = o4 + (plane);                                                            \
        _Pragma("omp simd") for (int tj = 0; tj < (tw); tj++) TILE;                                   \
    }
#define WINO_BT_TILE \
    WINO_BT(c0[tj], c1[tj], c2[tj], c3[tj], c0[tj + 1], c1[tj + 1], o0[tj], o1[tj], o2[tj], o3[tj], o4[tj], o5[tj])
#define WINO_A_TILE WINO_A(c0[tj], c1[tj], c2[tj], c3[tj], o0[tj], o1[tj], o2[tj], o3[tj], o4[tj], o5[tj])

/* One row of tiles through B^T d B. The tiles' 6x6 inputs start at r0 (six rows pw apart, tile
 * tj at column 4*tj); plane e of the result goes to v[e * plane + tj]. B^T d is done first for
 * the whole width of the six rows, split by column residue mod 4 (t: 6 rows x 4 residues x
 * tw + 1); then each tile's (B^T d) B reads its columns 4tj .. 4tj+5 from those: plain vector
 * loops, where one loop over tiles doing both did not vectorize. `tw` is a parameter so that
 * wino_input can pass the usual widths as constants; `omp simd` then keeps the compiler from
 * unrolling those short loops into scalar code. */
static inline __attribute__((always_inline)) void wino_input_row(const float *restrict r0, size_t pw,
                                                                 float *restrict t, float *restrict v,
                                                                 size_t plane, int tw)
{
    const int n = tw + 1;  /* columns of one residue a row of tiles reads (pw = 4 * tw + 4) */
    const float *restrict r1 = r0 + pw, *restrict r2 = r1 + pw, *restrict r3 = r2 + pw;
    const float *restrict r4 = r3 + pw, *restrict r5 = r4 + pw;
    /* all four residues in one loop: the loads of a row are then one group of four that the
     * vectorizer splits with shuffles (one loop per residue loads with a stride of 4) */
#define WINO_BT_RESIDUE(r)                                                                                   \
    WINO_BT(r0[4 * x + r], r1[4 * x + r], r2[4 * x + r], r3[4 * x + r], r4[4 * x + r], r5[4 * x + r],         \
            t[(0 + r) * n + x], t[(4 + r) * n + x], t[(8 + r) * n + x], t[(12 + r) * n + x], t[(16 + r) * n + x], \
            t[(20 + r) * n + x])
#pragma omp simd
    for (int x = 0; x < n; x++) {
        WINO_BT_RESIDUE(0);
        WINO_BT_RESIDUE(1);
        WINO_BT_RESIDUE(2);
        WINO_BT_RESIDUE(3);
    }
#undef WINO_BT_RESIDUE
    WINO_TILES_TO_PLANES(t, n, v, plane, tw, WINO_BT_TILE);
}

/* One sample's transformed input tiles into the 36 planes of V (cin, ld), from its padded copy
 * (cin, ph, pw): v points at the sample's first column (its tiles are columns v .. v + tiles - 1
 * of each channel's row, ld floats long); rows is scratch for 24 rows of tw + 1 floats. */
static void wino_input(const wino_geom *g, const float *padded, float *rows, float *v, size_t ld, size_t plane)
{
    for (int c = 0; c < g->cin; c++)
        for (int ti = 0; ti < g->th; ti++) {
            const float *r0 = padded + ((size_t)c * g->ph + 4 * ti) * g->pw;
            float *out = v + (size_t)c * ld + (size_t)ti * g->tw;
            switch (g->tw) {
            case 1: wino_input_row(r0, (size_t)g->pw, rows, out, plane, 1); break;
            case 2: wino_input_row(r0, (size_t)g->pw, rows, out, plane, 2); break;
            case 4: wino_input_row(r0, (size_t)g->pw, rows, out, plane, 4); break;
            case 8: wino_input_row(r0, (size_t)g->pw, rows, out, plane, 8); break;
            default: wino_input_row(r0, (size_t)g->pw, rows, out, plane, g->tw);
            }
        }
}

/* M_e (cout, cols) = U_e (cout, cin) V_e (cin, cols) for the 36 planes; cols = the group's tiles.
 * In float32, in blocks (gemm.h; bench/gemm_blocks.c times a 192-channel group both ways). The
 * kernel gradient's products (192 x 192 x 64, V transposed) gained nothing from blocks of rows or
 * of columns (docs/benchmarks.md), so they stay whole (wino_backward_chunk). In bf16, from the
 * call's packed U, each plane of V packed in turn (bench/gemm_bf16.c times both). */
static void wino_multiply(const conv2d *s, const wino_geom *g, const conv2d_plan *plan, const conv2d_scratch *sc,
                          const float *u, const uint32_t *upack, int cols)
{
    for (int e = 0; e < WINO_PLANES; e++) {
        const float *v = sc->v + e * plan->vplane;
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

/* One row of tiles through A^T M A, plus the bias: M's 36 planes start at m (tile tj at m[tj]);
 * the four output rows go to y (rows ld apart), four columns per tile. A^T M first, into st (24
 * rows of tw: row r of column j at st[(4j + r) * tw]), then each row through A. */
static inline __attribute__((always_inline)) void wino_output_row(const float *restrict m, size_t plane,
                                                                  float bias, float *restrict st,
                                                                  float *restrict y, size_t ld, int tw)
{
    for (int j = 0; j < 6; j++) {
        const float *restrict m0 = m + (size_t)j * plane, *restrict m1 = m0 + 6 * plane;
        const float *restrict m2 = m1 + 6 * plane, *restrict m3 = m2 + 6 * plane;
        const float *restrict m4 = m3 + 6 * plane, *restrict m5 = m4 + 6 * plane;
        float *restrict s0 = st + (size_t)(4 * j) * tw, *restrict s1 = s0 + tw;
        float *restrict s2 = s1 + tw, *restrict s3 = s2 + tw;
#pragma omp simd
        for (int tj = 0; tj < tw; tj++)
            WINO_AT(m0[tj], m1[tj], m2[tj], m3[tj], m4[tj], m5[tj], s0[tj], s1[tj], s2[tj], s3[tj]);
    }
    for (int r = 0; r < 4; r++) {
        const float *restrict a = st + (size_t)r * tw;  /* column j of row r at a + 4 * j * tw */
        float *restrict yr = y + (size_t)r * ld;
#pragma omp simd
        for (int tj = 0; tj < tw; tj++) {
            float o0, o1, o2, o3;
            WINO_AT(a[tj], a[4 * tw + tj], a[8 * tw + tj], a[12 * tw + tj], a[16 * tw + tj], a[20 * tw + tj], o0, o1,
                    o2, o3);
            yr[4 * tj] = o0 + bias;
            yr[4 * tj + 1] = o1 + bias;
            yr[4 * tj + 2] = o2 + bias;
            yr[4 * tj + 3] = o3 + bias;
        }
    }
}

static void wino_output_row_any(const float *m, size_t plane, float bias, float *st, float *y, size_t ld, int tw)
{
    switch (tw) {
    case 1: wino_output_row(m, plane, bias, st, y, ld, 1); break;
    case 2: wino_output_row(m, plane, bias, st, y, ld, 2); break;
    case 4: wino_output_row(m, plane, bias, st, y, ld, 4); break;
    case 8: wino_output_row(m, plane, bias, st, y, ld, 8); break;
    default: wino_output_row(m, plane, bias, st, y, ld, tw);
    }
}

/* y (cout, oh, ow) from the 36 product planes (cout, ld), the sample's tiles starting at m; stage holds 24 rows of tw for wino_output_row and
 * 4 more of 4*tw. Whole tiles go straight into y; when oh or ow is not a multiple of 4 the last
 * tiles stick out, so rows are built in the stage's 4 rows and cut to fit. */
static void wino_output(const wino_geom *g, const float *m, size_t ld, size_t plane, const float *bias, float *stage,
                        float *y)
{
    const bool exact = g->oh % 4 == 0 && g->ow % 4 == 0;
    const size_t width = (size_t)4 * g->tw;
    float *rows = stage + (size_t)24 * g->tw;  /* (4, width) */
    for (int o = 0; o < g->cout; o++) {
        float *out = y + (size_t)o * g->oh * g->ow;  /* (OH, OW) */
        const float b = bias ? bias[o] : 0.0f;
        for (int ti = 0; ti < g->th; ti++) {
            const float *row = m + (size_t)o * ld + (size_t)ti * g->tw;
            float *y0 = out + (size_t)4 * ti * g->ow;
            if (exact) {
                wino_output_row_any(row, plane, b, stage, y0, (size_t)g->ow, g->tw);
                continue;
            }
            wino_output_row_any(row, plane, b, stage, rows, width, g->tw);
            for (int r = 0; r < 4 && 4 * ti + r < g->oh; r++)
                memcpy(y0 + (size_t)r * g->ow, rows + r * width, sizeof(float) * (size_t)g->ow);
        }
    }
}

/* One row of dY tiles through A dY A^T. The 4x4 tiles start at r0 (four rows pw apart, tile tj
 * at column 4*tj); plane e goes to z[e * plane + tj]. As in wino_input_row, A dY first, split by
 * column residue (q: 6 rows x 4 residues x tw), then the tiles. */
static inline __attribute__((always_inline)) void wino_grad_row(const float *restrict r0, size_t pw,
                                                                float *restrict q, float *restrict z,
                                                                size_t plane, int tw)
{
    const float *restrict r1 = r0 + pw, *restrict r2 = r1 + pw, *restrict r3 = r2 + pw;
#define WINO_A_RESIDUE(r)                                                                                   \
    WINO_A(r0[4 * x + r], r1[4 * x + r], r2[4 * x + r], r3[4 * x + r], q[(0 + r) * tw + x], q[(4 + r) * tw + x], \
           q[(8 + r) * tw + x], q[(12 + r) * tw + x], q[(16 + r) * tw + x], q[(20 + r) * tw + x])
#pragma omp simd
    for (int x = 0; x < tw; x++) {  /* the four residues together, as in wino_input_row */
        WINO_A_RESIDUE(0);
        WINO_A_RESIDUE(1);
        WINO_A_RESIDUE(2);
        WINO_A_RESIDUE(3);
    }
#undef WINO_A_RESIDUE
    WINO_TILES_TO_PLANES(q, tw, z, plane, tw, WINO_A_TILE);
}

/* Z: one sample's transformed dY tiles into the 36 planes (OC, ld), from z on, read from dypad, where dY
 * sits at (back.pad, back.pad) with zeros past its last row and column (the partial tiles);
 * rows is scratch for 24 rows of tw floats. */
static void wino_grad_tiles(const conv2d *s, const float *dypad, float *rows, float *z, size_t ld, size_t plane)
{
    const wino_geom *f = &s->fwd, *b = &s->back;
    for (int o = 0; o < s->oc; o++)
        for (int ti = 0; ti < f->th; ti++) {
            const float *r0 = dypad + ((size_t)o * b->ph + b->pad + 4 * ti) * b->pw + b->pad;
            float *out = z + (size_t)o * ld + (size_t)ti * f->tw;
            switch (f->tw) {
            case 1: wino_grad_row(r0, (size_t)b->pw, rows, out, plane, 1); break;
            case 2: wino_grad_row(r0, (size_t)b->pw, rows, out, plane, 2); break;
            case 4: wino_grad_row(r0, (size_t)b->pw, rows, out, plane, 4); break;
            case 8: wino_grad_row(r0, (size_t)b->pw, rows, out, plane, 8); break;
            default: wino_grad_row(r0, (size_t)b->pw, rows, out, plane, f->tw);
            }
        }
}

/* Samples [first, end) of a chunk through one of the layer's two convolutions g (the forward's,
 * or dx's from dY), a group at a time: the group's tiles side by side in V, 36 SGEMMs with the
 * call's U, then each sample's output transform. pad is g's padded copy (xpad or dypad). */
static void wino_convolve(const conv2d *s, const wino_geom *g, const conv2d_plan *plan, const conv2d_scratch *sc,
                          float *pad, const float *u, const uint32_t *upack, const float *in, const float *bias,
                          float *out, int64_t first, int64_t end)
{
    const size_t in_size = (size_t)g->cin * g->h * g->w, out_size = (size_t)g->cout * g->oh * g->ow;
    memset(pad, 0, sizeof(float) * (size_t)g->cin * g->ph * g->pw);
    for (int64_t i = first; i < end; i += plan->group) {
        const int n = (int)(end - i < plan->group ? end - i : plan->group);
        const size_t ld = (size_t)n * g->tiles;
        for (int k = 0; k < n; k++) {
            conv2d_pad_planes(in + (size_t)(i + k) * in_size, g->cin, g->h, g->w, pad, g->ph, g->pw, g->pad);
            wino_input(g, pad, sc->stage, sc->v + (size_t)k * g->tiles, ld, plan->vplane);
        }
        wino_multiply(s, g, plan, sc, u, upack, (int)ld);
        for (int k = 0; k < n; k++)
            wino_output(g, sc->m + (size_t)k * g->tiles, ld, plan->mplane, bias, sc->stage,
                        out + (size_t)(i + k) * out_size);
    }
}

void wino_forward_chunk(const conv2d *s, const conv2d_plan *plan, const conv2d_scratch *sc, const float *u,
                        const uint32_t *upack, const float *x, const float *bias, float *y, int64_t first, int64_t end)
{
    wino_convolve(s, &s->fwd, plan, sc, sc->xpad, u, upack, x, bias, y, first, end);
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
 * group's tiles by one SGEMM per plane), and db. */
void wino_backward_chunk(const conv2d *s, const conv2d_plan *plan, const conv2d_scratch *sc, const float *x,
                         const float *dy, int64_t first, int64_t end)
{
    const wino_geom *f = &s->fwd, *b = &s->back;
    const size_t xsize = (size_t)s->c * s->h * s->w, ysize = (size_t)s->oc * s->pixels;
    memset(sc->xpad, 0, sizeof(float) * (size_t)f->cin * f->ph * f->pw);
    memset(sc->dypad, 0, sizeof(float) * (size_t)b->cin * b->ph * b->pw);
    memset(sc->dw, 0, sizeof(float) * WINO_PLANES * s->uplane);
    memset(sc->db, 0, sizeof(float) * (size_t)s->oc);
    for (int64_t i = first; i < end; i += plan->group) {
        const int g = (int)(end - i < plan->group ? end - i : plan->group);
        const size_t ld = (size_t)g * f->tiles;
        for (int k = 0; k < g; k++) {
            const float *dys = dy + (size_t)(i + k) * ysize;  /* (OC, OH, OW) */
            conv2d_pad_planes(x + (size_t)(i + k) * xsize, s->c, s->h, s->w, sc->xpad, f->ph, f->pw, f->pad);
            wino_input(f, sc->xpad, sc->stage, sc->v + (size_t)k * f->tiles, ld, plan->vplane);
            conv2d_pad_planes(dys, s->oc, s->oh, s->ow, sc->dypad, b->ph, b->pw, b->pad);
            wino_grad_tiles(s, sc->dypad, sc->stage, sc->m + (size_t)k * f->tiles, ld, plan->mplane);
            if (s->bias) conv2d_add_bias_grad(s, dys, sc->db);
        }
        for (int e = 0; e < WINO_PLANES; e++)  /* dU_e (OC, C) += Z_e (OC, cols) V_e^T */
            wino_kernel_grad_plane(s, sc, sc->m + e * plan->mplane, sc->v + e * plan->vplane, (int)ld,
                                   sc->dw + e * s->uplane);
    }
}

/* dx: the convolution of dY by the flipped kernels (u), without bias. */
void wino_dx_chunk(const conv2d *s, const conv2d_plan *plan, const conv2d_scratch *sc, const float *u,
                   const uint32_t *upack, const float *dy, float *dx, int64_t first, int64_t end)
{
    wino_convolve(s, &s->back, plan, sc, sc->dypad, u, upack, dy, NULL, dx, first, end);
}
