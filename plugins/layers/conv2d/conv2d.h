/* conv2d.h: what conv2d's files share (declarations only): conv2d.c (the descriptor, create,
 * the im2col path and the CPU operations), winograd.c (the Winograd path), pool.c (pool = 2) and
 * conv2d.cu (the CUDA path). The layer's geometry and the CPU's algorithm with its Winograd plan, fixed at
 * create; the workspace the CUDA path needs; how the CPU splits a batch and carves its scratch;
 * and the functions each file offers the others. The CUDA path always runs im2col and reads only
 * the geometry. */
#ifndef RX_LAYER_CONV2D_H
#define RX_LAYER_CONV2D_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runexp.h"

/* One 3x3, stride-1 convolution as Winograd sees it: cin (h, w) -> cout (oh, ow). The layer
 * has two: the forward one, and the one that computes dx from dY. */
typedef struct wino_geom {
    int cin, h, w;     /* input */
    int cout, oh, ow;  /* output: oh = h + 2*pad - 2 */
    int pad;
    int th, tw;        /* rows and columns of 4x4 output tiles: ceil(oh / 4), ceil(ow / 4) */
    int tiles;         /* th * tw */
    int ph, pw;        /* the zero-padded input every tile reads from: at least (4*th + 2,
                        * 4*tw + 4), the input at (pad, pad); large enough for the last,
                        * partial tiles (pw: 2 columns more, see wino_input_row) */
    int xs;            /* pw / 4 (pw is a multiple of 4): columns of each residue mod 4 in the
                        * group's padded copy (winograd.c: wino_gather) */
} wino_geom;

/* Winograd tiles: 4x4 outputs from 6x6 inputs, 36 transformed planes. Small planes have few
 * tiles (a 7x7 output has 4), and SGEMMs that thin run at half speed: the transformed tiles of
 * several samples go side by side, so that every product has about WINO_COLUMNS columns. */
enum { WINO_PLANES = 36, WINO_COLUMNS = 64 };

typedef enum { CONV2D_IM2COL, CONV2D_WINOGRAD } conv2d_algo;

/* precision = "bf16" on the GPU: refused, never run in float32 instead. */
#define CONV2D_BF16_CPU_ONLY \
    "precision = \"bf16\" runs on the CPU only (the GPU path computes in float32): leave it out for device = \"cuda\""
/* pool = 2 on the GPU likewise: refused, never run some other way. */
#define CONV2D_POOL_CPU_ONLY \
    "pool = 2 runs on the CPU only: for device = \"cuda\", leave it out and follow the layer with { \"maxpool\", size = 2 }"

typedef struct conv2d {
    int c, h, w;       /* input (C, H, W) */
    int oc, oh, ow;    /* the convolution's output (OC, OH, OW) */
    int k, stride, pad;
    bool bias;
    int pool;          /* 0, or 2: the layer's output is the convolution's max-pooled 2x2 at stride 2 (pool.c) */
    int yh, yw;        /* the layer's output (OC, YH, YW): (OH, OW), or (OH / 2, OW / 2) with pool */
    int ypixels;       /* YH*YW */
    conv2d_algo algo;
    bool bf16;         /* precision = "bf16": Winograd's products from bfloat16 operands (bf16.h) */
    int rows;          /* C*K*K: the length of one im2col column, the fan-in */
    int pixels;        /* OH*OW: the columns of one sample's im2col matrix */
    bool pointwise;    /* 1x1, stride 1, no padding: im2col would copy x unchanged */
    bool direct;       /* im2col layer whose forward runs as a direct convolution (conv2d_direct_sample) */
    size_t padded;     /* im2col: C*(H+2P)*(W+2P), one sample with its zero border */
    wino_geom fwd;     /* Winograd: x -> y */
    wino_geom back;    /* Winograd: dY -> dx, padding 2 - P */
    size_t uplane;     /* Winograd: floats from one transformed-kernel plane (OC*C) to the next */
    float wg[2][WINO_PLANES * 9]; /* Winograd: G g G^T as a (36, 9) matrix of the taps, and the same
                                   * with its columns reversed (the kernels turned 180 degrees) */
    int group;         /* Winograd: samples whose tiles one SGEMM takes together (see WINO_COLUMNS) */
    size_t slot;       /* floats of workspace declared per thread: a chunk's (conv2d_scratch, conv2d_plan) */
} conv2d;

/* Floats of workspace per sample that the CUDA path uses in backward (forward uses a part):
 * the sample's im2col matrix (C*K*K, OH*OW), which its dcol later overwrites, unless the layer
 * is pointwise (col is x itself), and the sample's own dW (OC, C*K*K), which the batch's dW sums
 * in a fixed order. create declares it in a CUDA build, beside the CPU's slot per thread. */
static inline size_t conv2d_cuda_floats_per_sample(const conv2d *s)
{
    const size_t col = s->pointwise ? 0 : (size_t)s->rows * (size_t)s->pixels;
    return col + (size_t)s->oc * (size_t)s->rows;
}


/* One chunk's scratch, carved from its workspace slot. im2col uses col, xpad, dxpad, dw, db (and
 * full, with pool);
 * Winograd uses xpad, dypad, v, m, stage, dw (its 36 planes of dU) and db. */
typedef struct conv2d_scratch {
    float *col;   /* im2col: (C*K*K, OH*OW) the current sample's columns, then its dcol */
    float *xpad;  /* im2col: the current sample with its zero border, kept zero between samples;
                   * Winograd: one channel of the group's samples padded and interleaved (wino_gather; a
                   * group of one sample reads its plane in xplanes instead) */
    float *dxpad; /* im2col: col2im's sums, padding included */
    float *dypad; /* Winograd: one channel of the group's dY likewise, with the dx convolution's border */
    float *v;     /* Winograd: 36 planes of the group's transformed input tiles */
    float *vdy;   /* Winograd: 36 planes of the group's dY tiles for the dx convolution */
    float *uflip; /* Winograd in float32: the call's U of the flipped kernels (the first chunk's serves all) */
    float *m;     /* Winograd: 36 planes of products, or of transformed dY tiles for dW */
    float *stage; /* Winograd: the transforms' scratch (see wino_stage) */
    float *xplanes, *dyplanes, *tplanes; /* Winograd: one channel's planes of the group's samples:
                                          * padded x, padded dY, output tiles (wino_channel_floats) */
    float *dw;    /* the chunk's share of dW (Winograd: 36 planes of dU; the first chunk's holds the
                   * call's U while there is no dU: forward, and dx after dW) */
    float *db;    /* (OC) the chunk's share of db */
    float *full;  /* im2col with pool: the current sample's whole output (OC, OH*OW), or its gradient */
    uint32_t *upack; /* Winograd in bf16: the call's U packed (the first chunk's serves all), */
    uint32_t *bpack; /* and one plane of the group's V packed for its product */
} conv2d_scratch;

/* How one call splits its batch of n: into groups of `group` samples (Winograd: one set of
 * SGEMMs each; im2col: 1), and the groups into one run per thread (a chunk). Groups start at
 * multiples of `group` whatever the thread count, so y and dx never depend on it. */
typedef struct conv2d_plan {
    int group;
    int64_t groups;        /* ceil(n / group) */
    int chunks;            /* at least 1, and no more than groups */
    size_t slot;           /* floats of one chunk's scratch */
    size_t vplane, mplane; /* Winograd: floats from one plane of v (of m) to the next */
} conv2d_plan;

#ifdef __cplusplus
extern "C" {
#endif
/* conv2d.c, for both CPU algorithms: */
/* db (OC) += the row sums of one sample's dY (OC, YH*YW): with pool the pooled gradient, whose
 * every value lands on one output. */
void conv2d_add_bias_grad(const conv2d *s, const float *dys, float *db);

/* pool.c, for both CPU algorithms (pool = 2): the rows top and bottom (width floats each) into
 * width / 2 pooled outputs y and their winners' places at (0 .. 3). */
void conv2d_pool_rows(const float *top, const float *bottom, int width, float *y, uint8_t *at);
/* Windows whose taps, in the rule's order, are t0[q] .. t3[q] (winograd.c's interleaved tiles):
 * y[q] and at[q] for q in [0, count). */
void conv2d_pool_taps(const float *t0, const float *t1, const float *t2, const float *t3, int count, float *y,
                      uint8_t *at);
/* A whole (h, w) plane, rows ld apart, to and from its pooled (h / 2, w / 2); backward puts the
 * pooled gradient g back at the winners and zeros elsewhere, in all h rows (an odd last row and
 * column get zeros). */
void conv2d_pool_plane(const float *src, size_t ld, int h, int w, float *y, uint8_t *at);
void conv2d_unpool_plane(const float *g, const uint8_t *at, int h, int w, float *dst, size_t ld);

/* winograd.c, for create and the CPU operations in conv2d.c: */
/* create's share: both geometries, the group and the slot per thread (a chunk's, at the largest group). */
void wino_init(conv2d *s);
/* Fills p's vplane, mplane and slot for its group. */
void wino_plan_slot(const conv2d *s, conv2d_plan *p);
/* Carves Winograd's share of a slot from p on into sc; returns where it ends. */
float *wino_scratch_at(const conv2d *s, const conv2d_plan *plan, float *p, conv2d_scratch *sc);
/* U (36 planes of (cout, cin), s->uplane apart) from the kernels; flip: for the dx convolution.
 * Each call transforms them into its own workspace (the first chunk's dU: conv2d.c says when
 * that is free), never into the layer's struct: calls on parts of a batch may run at once
 * (runexp.h: per_sample). */
void wino_kernels(const conv2d *s, const float *weight, float *u, bool flip);
/* In bf16: the 36 planes of U (made by wino_kernels for g: the forward's or, flipped, dx's)
 * packed into upack for bf16_gemm. */
void wino_pack_kernels(const conv2d *s, const wino_geom *g, const float *u, uint32_t *upack);
/* dW (OC, C, 3, 3) += G^T dU G, from the 36 planes of dU (OC, C). */
void wino_kernel_grads(const conv2d *s, const float *du, float *dweight);
/* Samples [first, end) of a chunk: y forward, with the call's U; backward, the chunk's dU and db
 * into sc and, unless dx is NULL, dx with the U of the flipped kernels (uflip in float32, upack
 * in bf16: the first chunk's, which the call made first). Forward never writes sc->dw. With
 * pool, y and dy are pooled and `at` is the layer's state (OC*YH*YW bytes a sample), else NULL. */
void wino_forward_chunk(const conv2d *s, const conv2d_plan *plan, const conv2d_scratch *sc, const float *u,
                        const uint32_t *upack, const float *x, const float *bias, float *y, uint8_t *at,
                        int64_t first, int64_t end);
void wino_backward_chunk(const conv2d *s, const conv2d_plan *plan, const conv2d_scratch *sc, const float *x,
                         const float *dy, const uint8_t *at, const float *uflip, const uint32_t *upack, float *dx,
                         int64_t first, int64_t end);

/* conv2d.cu: the same operations on the GPU, queued on ctx->cuda_stream. */
int conv2d_forward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w, rx_tensor *y,
                        void *state);
int conv2d_backward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y, const rx_tensor *dy,
                         const rx_tensor *w, const void *state, rx_tensor *dx, rx_tensor *dw);
#ifdef __cplusplus
}
#endif

#endif
