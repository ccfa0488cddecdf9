/* conv2d.h: what conv2d.c (the CPU path, create and the descriptor) and conv2d.cu (the CUDA
 * path) share: the layer's geometry and the CPU's algorithm with its Winograd plan, fixed at
 * create; the workspace the CUDA path needs; and the CUDA entry points. The CUDA path always
 * runs im2col and reads only the geometry. */
#ifndef RX_LAYER_CONV2D_H
#define RX_LAYER_CONV2D_H

#include <stdbool.h>
#include <stddef.h>

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
} wino_geom;

typedef enum { CONV2D_IM2COL, CONV2D_WINOGRAD } conv2d_algo;

typedef struct conv2d {
    int c, h, w;       /* input (C, H, W) */
    int oc, oh, ow;    /* output (OC, OH, OW) */
    int k, stride, pad;
    bool bias;
    conv2d_algo algo;
    int rows;          /* C*K*K: the length of one im2col column, the fan-in */
    int pixels;        /* OH*OW: the columns of one sample's im2col matrix */
    bool pointwise;    /* 1x1, stride 1, no padding: im2col would copy x unchanged */
    size_t padded;     /* im2col: C*(H+2P)*(W+2P), one sample with its zero border */
    wino_geom fwd;     /* Winograd: x -> y */
    wino_geom back;    /* Winograd: dY -> dx, padding 2 - P */
    size_t uplane;     /* Winograd: floats from one transformed-kernel plane (OC*C) to the next */
    int group;         /* Winograd: samples whose tiles one SGEMM takes together (see WINO_COLUMNS) */
    float *u;          /* Winograd: (16, OC, C) transformed kernels, redone every forward */
    float *u_back;     /* Winograd: (16, C, OC) the same for dx, redone every backward */
    size_t slot;       /* floats of workspace declared per sample (see conv2d_scratch, conv2d_plan) */
} conv2d;

/* Floats of workspace per sample that the CUDA path uses in backward (forward uses a part):
 * the sample's im2col matrix (C*K*K, OH*OW), which its dcol later overwrites, unless the layer
 * is pointwise (col is x itself), and the sample's own dW (OC, C*K*K), which the batch's dW sums
 * in a fixed order. create declares the larger of this and the CPU's slot. */
static inline size_t conv2d_cuda_floats_per_sample(const conv2d *s)
{
    const size_t col = s->pointwise ? 0 : (size_t)s->rows * (size_t)s->pixels;
    return col + (size_t)s->oc * (size_t)s->rows;
}

#ifdef __cplusplus
extern "C" {
#endif
/* conv2d.cu: the same operations on the GPU, queued on ctx->cuda_stream. */
int conv2d_forward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w, rx_tensor *y,
                        void *state);
int conv2d_backward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y, const rx_tensor *dy,
                         const rx_tensor *w, const void *state, rx_tensor *dx, rx_tensor *dw);
#ifdef __cplusplus
}
#endif

#endif
