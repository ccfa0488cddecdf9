/* conv2d.c: 2-D convolution, PyTorch's nn.Conv2d with a square kernel (no dilation, no groups).
 *
 * CPU path: the batch is split into one contiguous chunk of samples per thread (OpenMP, at most
 * ctx->threads); each thread works sample by sample in its own slot of the workspace, calling a
 * single-threaded OpenBLAS SGEMM (the host keeps OpenBLAS's own pool at one thread, so the two
 * never compete for cores). One sample at a time keeps the scratch in the core's cache and
 * writes y and dx straight into their NCHW planes. Two algorithms, chosen at create:
 *
 * im2col, any kernel, stride and padding. Per sample, with col = im2col(x) (C*K*K, OH*OW):
 *     forward   y   = W (OC, C*K*K) x col + b
 *     backward  dW += dY (OC, OH*OW) x col^T,  db += row sums of dY,
 *               dcol = W^T x dY, folded back into dx with col2im.
 *   A 1x1 kernel with stride 1 and no padding needs no im2col: col is x itself.
 *
 * Winograd F(2x2, 3x3), for 3x3 kernels at stride 1 with padding 0 to 2 (Lavin and Gray, "Fast
 * Algorithms for Convolutional Neural Networks", 2016). The output is cut into 2x2 tiles, each
 * computed from a 4x4 input tile with 16 multiplies per (input, output) channel pair instead of
 * 36: 2.25x fewer multiply-adds. Per sample, with V = the transformed input tiles (16 planes of
 * (C, tiles)) and U = the transformed kernels (16 planes of (OC, C), once per call):
 *     forward   M_e = U_e V_e for each of the 16 planes e, then y = the output transform of M
 *     backward  dU_e += Z_e V_e^T, Z = the transformed output-gradient tiles; dW = G^T dU G
 *               dx: the same forward, run on dY with the kernels turned 180 degrees and their
 *               channel axes swapped (stride 1 makes the input gradient a convolution too).
 *   Its results differ from im2col's by rounding only (about 1e-6 relative). It is taken where
 *   it measured faster: both channel counts at least 8 (see conv2d_choose).
 *
 * Determinism: each sample's y and dx are computed alone, so they do not depend on the thread
 * count; the weight gradients are summed per chunk in the chunk's slot and the chunks then added
 * in chunk order, so the same thread count gives the same bits, run after run.
 *
 * Workspace: a batch of N lends N slots (declared per sample) and uses min(N, threads) of them,
 * one per chunk (see conv2d_scratch). create declares the larger of a slot and what the CUDA path
 * needs per sample (conv2d.h), so that the same layer runs on either device.
 *
 * CUDA path: conv2d.cu, im2col over the whole batch and strided-batched cuBLAS SGEMMs, whatever
 * algorithm the CPU chose (the two agree to rounding). The layer's struct is in conv2d.h, which
 * both files share. */
#include <cblas.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "conv2d.h"

static const rx_param params[] = {
    { .key = "out", .type = RX_INT, .required = true, .help = "output channels" },
    { .key = "kernel", .type = RX_INT, .required = true, .help = "kernel height and width" },
    { .key = "stride", .type = RX_INT, .def = { .i = 1 }, .help = "step between kernel positions" },
    { .key = "padding", .type = RX_INT, .def = { .i = 0 }, .help = "zeros added on every side" },
    { .key = "bias", .type = RX_BOOL, .def = { .b = true }, .help = "learn one bias per output channel" },
    { 0 },
};
enum { ARG_OUT, ARG_KERNEL, ARG_STRIDE, ARG_PADDING, ARG_BIAS };

/* Winograd tiles: 2x2 outputs from 4x4 inputs, 16 transformed planes. */
enum { WINO_PLANES = 16 };

/* One chunk's scratch, carved from its workspace slot. im2col uses col, xpad, dxpad, dw, db;
 * Winograd uses xpad, dypad, v, m, stage, dw (its 16 planes of dU) and db. */
typedef struct conv2d_scratch {
    float *col;   /* im2col: (C*K*K, OH*OW) the current sample's columns, then its dcol */
    float *xpad;  /* the current sample with its zero border, kept zero between samples */
    float *dxpad; /* im2col: col2im's sums, padding included */
    float *dypad; /* Winograd: the current sample's dY with the border the dx convolution needs */
    float *v;     /* Winograd: 16 planes of transformed input tiles */
    float *m;     /* Winograd: 16 planes of products, or of transformed dY tiles for dW */
    float *stage; /* Winograd: the transforms' scratch, or two output rows of whole tiles when
                   * OH or OW is odd (see wino_stage) */
    float *dw;    /* the chunk's share of dW (Winograd: 16 planes of dU) */
    float *db;    /* (OC) the chunk's share of db */
} conv2d_scratch;

/* Rounds a plane size up so that the 16 planes of a transform do not start at multiples of
 * 4 KB: transforms write all 16 at once, and planes 4 KB apart would share L1 sets (2-10x
 * slower for the tutorial's shapes). */
static size_t wino_plane(size_t floats) { return (floats + 15) / 16 * 16 + 16; }

static wino_geom wino_geometry(int cin, int h, int w, int cout, int pad)
{
    wino_geom g = { .cin = cin, .h = h, .w = w, .cout = cout, .oh = h + 2 * pad - 2,
                    .ow = w + 2 * pad - 2, .pad = pad };
    g.th = (g.oh + 1) / 2;
    g.tw = (g.ow + 1) / 2;
    g.tiles = g.th * g.tw;
    g.ph = 2 * g.th + 2;
    g.pw = 2 * g.tw + 2;
    g.vplane = wino_plane((size_t)cin * (size_t)g.tiles);
    g.mplane = wino_plane((size_t)cout * (size_t)g.tiles);
    return g;
}

static size_t max_size(size_t a, size_t b) { return a > b ? a : b; }

/* Floats of the stage: the transforms' row scratch (8 rows of tw + 1), or two output rows
 * (4 * tw), for the wider of the two geometries. */
static size_t wino_stage(const conv2d *s)
{
    return 8 * (max_size((size_t)s->fwd.tw, (size_t)s->back.tw) + 1);
}

/* The slot layout, in one place: conv2d_scratch_at carves it, create sizes it. */
static conv2d_scratch conv2d_scratch_at(const conv2d *s, float *slot)
{
    conv2d_scratch sc = { 0 };
    float *p = slot;
    if (s->algo == CONV2D_IM2COL) {
        sc.col = p;
        p += (size_t)s->rows * s->pixels;
        sc.xpad = p;
        p += s->padded;
        sc.dxpad = p;
        p += s->padded;
        sc.dw = p;
        p += (size_t)s->oc * s->rows;
    } else {
        const wino_geom *f = &s->fwd, *b = &s->back;
        sc.xpad = p;
        p += (size_t)f->cin * f->ph * f->pw;
        sc.dypad = p;
        p += (size_t)b->cin * b->ph * b->pw;
        sc.v = p;
        p += WINO_PLANES * max_size(f->vplane, b->vplane);
        sc.m = p;
        p += WINO_PLANES * max_size(f->mplane, b->mplane);  /* dW's dY tiles: fwd.mplane too */
        sc.stage = p;
        p += wino_stage(s);
        sc.dw = p;
        p += WINO_PLANES * s->uplane;
    }
    sc.db = p;
    p += (size_t)s->oc;
    return sc;
}

static void conv2d_destroy(void *self)
{
    conv2d *s = self;
    if (!s) return;
    free(s->u);
    free(s->u_back);
    free(s);
}

/* Winograd where it measured faster: a 3x3 kernel at stride 1 with padding 0 to 2 (what the
 * transforms cover), and at least 8 channels in and out (with fewer, its products are too thin
 * for SGEMM to run well: the tutorial's first layer, 3 -> 16, is faster with im2col). */
static conv2d_algo conv2d_choose(const conv2d *s)
{
    const bool fits = s->k == 3 && s->stride == 1 && s->pad <= 2;
    return fits && s->c >= 8 && s->oc >= 8 ? CONV2D_WINOGRAD : CONV2D_IM2COL;
}

static int conv2d_create(void **self, rx_ctx *ctx, const rx_value *args, rx_shape in,
                         rx_layer_info *info)
{
    const int64_t oc = args[ARG_OUT].i, k = args[ARG_KERNEL].i;
    const int64_t stride = args[ARG_STRIDE].i, pad = args[ARG_PADDING].i;
    if (in.ndim != 3)
        return rx_fail(ctx, "expects a (C, H, W) input, got %d dimension%s", in.ndim,
                       in.ndim == 1 ? "" : "s");
    if (oc < 1 || oc > INT_MAX) return rx_fail(ctx, "out must be at least 1, got %" PRId64, oc);
    if (k < 1 || k > INT_MAX) return rx_fail(ctx, "kernel must be at least 1, got %" PRId64, k);
    if (stride < 1 || stride > INT_MAX)
        return rx_fail(ctx, "stride must be at least 1, got %" PRId64, stride);
    if (pad < 0 || pad > INT_MAX)
        return rx_fail(ctx, "padding must be 0 or more, got %" PRId64, pad);
    const int64_t c = in.d[0], h = in.d[1], w = in.d[2];
    if (c < 1 || h < 1 || w < 1 || c > INT_MAX || h > INT_MAX || w > INT_MAX)
        return rx_fail(ctx, "input (%" PRId64 ", %" PRId64 ", %" PRId64 ") has an empty or "
                       "oversized dimension", c, h, w);
    const int64_t ph = h + 2 * pad, pw = w + 2 * pad;
    if (k > ph || k > pw)
        return rx_fail(ctx, "kernel %" PRId64 " is larger than the padded input %" PRId64
                       "x%" PRId64, k, ph, pw);
    const int64_t oh = (ph - k) / stride + 1, ow = (pw - k) / stride + 1;
    /* OpenBLAS takes int dimensions; double keeps these products from overflowing. */
    if (ph > INT_MAX - 4 || pw > INT_MAX - 4 || (double)c * k * k > INT_MAX || (double)oh * ow > INT_MAX ||
        (double)c * h * w > INT_MAX || (double)oc * oh * ow > INT_MAX || (double)oc * c * k * k > INT_MAX)
        return rx_fail(ctx, "input (%" PRId64 ", %" PRId64 ", %" PRId64 ") with kernel %"
                       PRId64 " is too large for 32-bit BLAS sizes", c, h, w, k);

    conv2d *s = calloc(1, sizeof *s);
    if (!s) return rx_fail(ctx, "out of memory");
    const int64_t rows = c * k * k;
    *s = (conv2d){ .c = (int)c, .h = (int)h, .w = (int)w, .oc = (int)oc, .oh = (int)oh,
                   .ow = (int)ow, .k = (int)k, .stride = (int)stride, .pad = (int)pad,
                   .bias = args[ARG_BIAS].b, .rows = (int)rows, .pixels = (int)(oh * ow),
                   .pointwise = k == 1 && stride == 1 && pad == 0 };
    s->algo = conv2d_choose(s);
    if (s->algo == CONV2D_IM2COL) {
        s->padded = (size_t)c * (size_t)ph * (size_t)pw;
        s->slot = (size_t)rows * (size_t)(oh * ow) + 2 * s->padded + (size_t)oc * (size_t)rows + (size_t)oc;
    } else {
        s->fwd = wino_geometry(s->c, s->h, s->w, s->oc, s->pad);
        s->back = wino_geometry(s->oc, s->oh, s->ow, s->c, 2 - s->pad);
        s->uplane = wino_plane((size_t)oc * (size_t)c);
        s->u = malloc(sizeof(float) * WINO_PLANES * s->uplane);
        s->u_back = malloc(sizeof(float) * WINO_PLANES * s->uplane);
        if (!s->u || !s->u_back) {
            conv2d_destroy(s);
            return rx_fail(ctx, "out of memory");
        }
        const wino_geom *f = &s->fwd, *b = &s->back;
        s->slot = (size_t)f->cin * f->ph * f->pw + (size_t)b->cin * b->ph * b->pw +
                  WINO_PLANES * (max_size(f->vplane, b->vplane) + max_size(f->mplane, b->mplane) + s->uplane) +
                  wino_stage(s) + (size_t)oc;
    }
    const float scale = 1.0f / sqrtf((float)rows);
    info->out = (rx_shape){ .ndim = 3, .d = { oc, oh, ow } };
    info->ntensors = s->bias ? 2 : 1;
    info->tensors[0] = (rx_tensor_decl){ .name = "weight", .shape = { .ndim = 4, .d = { oc, c, k, k } },
                                         .init = RX_INIT_UNIFORM, .scale = scale };
    if (s->bias)
        info->tensors[1] = (rx_tensor_decl){ .name = "bias", .shape = { .ndim = 1, .d = { oc } },
                                             .init = RX_INIT_UNIFORM, .scale = scale };
    info->state_bytes = 0;
    /* The CPU path uses one slot per chunk of the batch, the CUDA path the per-sample im2col and
     * dW of every sample at once (conv2d.h): the larger, so either device can run. */
    const size_t cuda_floats = conv2d_cuda_floats_per_sample(s);
    info->workspace_bytes = sizeof(float) * (s->slot > cuda_floats ? s->slot : cuda_floats);
    *self = s;
    return 0;
}

/* ---- Shared helpers ---- */

/* dst (rows, len) = src (rows, len), each with its rows `ld` floats apart: a rectangle of a plane. */
static inline __attribute__((always_inline)) void copy_block(const float *restrict src, size_t src_ld,
                                                             float *restrict dst, size_t dst_ld,
                                                             int rows, int len)
{
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < len; j++) dst[(size_t)i * dst_ld + j] = src[(size_t)i * src_ld + j];
}

/* dst (rows, len) += src (rows, len), likewise. */
static inline __attribute__((always_inline)) void add_block(const float *restrict src, size_t src_ld,
                                                            float *restrict dst, size_t dst_ld,
                                                            int rows, int len)
{
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < len; j++) dst[(size_t)i * dst_ld + j] += src[(size_t)i * src_ld + j];
}

/* The same with the usual CIFAR widths as constants: a row of 8, 16 or 32 floats becomes one or
 * two vector moves instead of a loop with a remainder, which makes im2col and col2im 2-3x faster
 * on small planes than with a variable width. */
static void copy_block_any(const float *src, size_t src_ld, float *dst, size_t dst_ld, int rows, int len)
{
    switch (len) {
    case 8: copy_block(src, src_ld, dst, dst_ld, rows, 8); break;
    case 16: copy_block(src, src_ld, dst, dst_ld, rows, 16); break;
    case 32: copy_block(src, src_ld, dst, dst_ld, rows, 32); break;
    default: copy_block(src, src_ld, dst, dst_ld, rows, len);
    }
}

static void add_block_any(const float *src, size_t src_ld, float *dst, size_t dst_ld, int rows, int len)
{
    switch (len) {
    case 8: add_block(src, src_ld, dst, dst_ld, rows, 8); break;
    case 16: add_block(src, src_ld, dst, dst_ld, rows, 16); break;
    case 32: add_block(src, src_ld, dst, dst_ld, rows, 32); break;
    default: add_block(src, src_ld, dst, dst_ld, rows, len);
    }
}

/* Copies `planes` planes (h, w) into the interiors of a padded stack (planes, ph, pw), at
 * (pad, pad) in each; the border is left as it was (zero). */
static void pad_planes(const float *x, int planes, int h, int w, float *padded, int ph, int pw, int pad)
{
    for (int c = 0; c < planes; c++)
        copy_block_any(x + (size_t)c * h * w, (size_t)w, padded + ((size_t)c * ph + pad) * pw + pad,
                       (size_t)pw, h, w);
}

/* Sum of v[0 .. n-1]; `omp simd` lets the compiler keep several partial sums in one vector,
 * which is fast and, for one build, always adds in the same order. */
static float row_sum(const float *restrict v, int n)
{
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int i = 0; i < n; i++) sum += v[i];
    return sum;
}

/* db (OC) += the row sums of one sample's dY (OC, OH*OW). */
static void add_bias_grad(const conv2d *s, const float *dys, float *db)
{
    for (int o = 0; o < s->oc; o++) db[o] += row_sum(dys + (size_t)o * s->pixels, s->pixels);
}

/* How many chunks a batch of n is split into: one per thread, and no chunk without a sample
 * (but at least one, which an empty batch leaves idle: OpenMP wants a team of one or more). */
static int conv2d_chunks(const rx_ctx *ctx, int64_t n)
{
    const int threads = ctx->threads > 0 ? ctx->threads : 1;
    return n < 1 ? 1 : n < threads ? (int)n : threads;
}

/* Checks the workspace for a batch of n and returns it as slots of s->slot floats. */
static float *conv2d_slots(const conv2d *s, rx_ctx *ctx, int64_t n)
{
    const size_t need = sizeof(float) * s->slot * (size_t)(n > 0 ? n : 1);
    if (!ctx->workspace || ctx->workspace_bytes < need) {
        rx_fail(ctx, "needs %zu bytes of workspace for a batch of %" PRId64 ", got %zu", need, n,
                ctx->workspace ? ctx->workspace_bytes : 0);
        return NULL;
    }
    return ctx->workspace;
}

/* ---- im2col ---- */

/* Unfolds one sample x (C, H, W) into col (C*K*K, OH*OW): row (c, ki, kj) holds, for each output
 * pixel, the input pixel under that kernel tap (0 in the padding). x is first copied into the
 * interior of pad (C, H+2P, W+2P), whose border the caller has zeroed, so that every tap reads a
 * plain rectangle and no loop tests for the padding. */
static void conv2d_im2col(const conv2d *s, const float *restrict x, float *restrict pad,
                          float *restrict col)
{
    const int k = s->k, st = s->stride, oh = s->oh, ow = s->ow;
    const size_t ph = (size_t)s->h + 2 * s->pad, pw = (size_t)s->w + 2 * s->pad;
    pad_planes(x, s->c, s->h, s->w, pad, (int)ph, (int)pw, s->pad);
    for (int c = 0; c < s->c; c++)
        for (int ki = 0; ki < k; ki++)
            for (int kj = 0; kj < k; kj++) {
                const float *tap = pad + ((size_t)c * ph + ki) * pw + kj;  /* under output pixel (0, 0) */
                float *row = col + (size_t)((c * k + ki) * k + kj) * (size_t)s->pixels;  /* (OH, OW) */
                if (st == 1) copy_block_any(tap, pw, row, (size_t)ow, oh, ow);
                else
                    for (int i = 0; i < oh; i++)
                        for (int j = 0; j < ow; j++) row[i * ow + j] = tap[(size_t)i * st * pw + (size_t)j * st];
            }
}

/* The adjoint of im2col: dx (C, H, W) = the sum, onto each input pixel, of the entries of col
 * (C*K*K, OH*OW) that were read from it, tap by tap in im2col's order. The taps are added into
 * pad (C, H+2P, W+2P), which takes the padding's share too, and its interior is then copied to
 * dx; so, as in im2col, no loop tests for the padding. */
static void conv2d_col2im(const conv2d *s, const float *restrict col, float *restrict pad,
                          float *restrict dx)
{
    const int k = s->k, st = s->stride, oh = s->oh, ow = s->ow;
    const size_t ph = (size_t)s->h + 2 * s->pad, pw = (size_t)s->w + 2 * s->pad;
    memset(pad, 0, sizeof(float) * (size_t)s->c * ph * pw);
    for (int c = 0; c < s->c; c++)
        for (int ki = 0; ki < k; ki++)
            for (int kj = 0; kj < k; kj++) {
                float *tap = pad + ((size_t)c * ph + ki) * pw + kj;  /* under output pixel (0, 0) */
                const float *row = col + (size_t)((c * k + ki) * k + kj) * (size_t)s->pixels;  /* (OH, OW) */
                if (st == 1) add_block_any(row, (size_t)ow, tap, pw, oh, ow);
                else
                    for (int i = 0; i < oh; i++)
                        for (int j = 0; j < ow; j++) tap[(size_t)i * st * pw + (size_t)j * st] += row[i * ow + j];
            }
    for (int c = 0; c < s->c; c++)
        copy_block_any(pad + ((size_t)c * ph + s->pad) * pw + s->pad, pw, dx + (size_t)c * s->h * s->w,
                       (size_t)s->w, s->h, s->w);
}

/* Samples [first, end) of a chunk forward: y (OC, OH*OW) = W col + b, sample by sample. */
static void im2col_forward_chunk(const conv2d *s, const conv2d_scratch *sc, const float *x, const float *weight,
                                 const float *bias, float *y, int64_t first, int64_t end)
{
    const size_t xsize = (size_t)s->c * s->h * s->w, ysize = (size_t)s->oc * s->pixels;
    memset(sc->xpad, 0, sizeof(float) * s->padded);  /* the border; samples fill the interior */
    for (int64_t i = first; i < end; i++) {
        const float *xs = x + (size_t)i * xsize;  /* (C, H, W) */
        float *ys = y + (size_t)i * ysize;        /* (OC, OH*OW) */
        const float *cols = xs;
        if (!s->pointwise) {
            conv2d_im2col(s, xs, sc->xpad, sc->col);
            cols = sc->col;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->oc, s->pixels, s->rows, 1.0f,
                    weight, s->rows, cols, s->pixels, 0.0f, ys, s->pixels);
        if (bias)
            for (int o = 0; o < s->oc; o++) {
                float *restrict plane = ys + (size_t)o * s->pixels;  /* (OH*OW) */
                for (int p = 0; p < s->pixels; p++) plane[p] += bias[o];
            }
    }
}

/* Samples [first, end) of a chunk backward: the chunk's dW and db into sc, dx (unless NULL)
 * sample by sample. */
static void im2col_backward_chunk(const conv2d *s, const conv2d_scratch *sc, const float *x, const float *dy,
                                  const float *weight, float *dx, int64_t first, int64_t end)
{
    const size_t xsize = (size_t)s->c * s->h * s->w, ysize = (size_t)s->oc * s->pixels;
    memset(sc->xpad, 0, sizeof(float) * s->padded);
    memset(sc->dw, 0, sizeof(float) * (size_t)s->oc * s->rows);
    memset(sc->db, 0, sizeof(float) * (size_t)s->oc);
    for (int64_t i = first; i < end; i++) {
        const float *xs = x + (size_t)i * xsize;   /* (C, H, W) */
        const float *dys = dy + (size_t)i * ysize; /* (OC, OH*OW) */
        const float *cols = xs;
        if (!s->pointwise) {
            conv2d_im2col(s, xs, sc->xpad, sc->col);
            cols = sc->col;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s->oc, s->rows, s->pixels, 1.0f,
                    dys, s->pixels, cols, s->pixels, 1.0f, sc->dw, s->rows);
        if (s->bias) add_bias_grad(s, dys, sc->db);
        if (!dx) continue;
        float *dxs = dx + (size_t)i * xsize;  /* (C, H, W) */
        if (s->pointwise) {  /* dx is dcol itself */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, s->rows, s->pixels, s->oc, 1.0f,
                        weight, s->rows, dys, s->pixels, 0.0f, dxs, s->pixels);
            continue;
        }
        /* dcol = W^T dY overwrites col, whose values dW has consumed */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, s->rows, s->pixels, s->oc, 1.0f,
                    weight, s->rows, dys, s->pixels, 0.0f, sc->col, s->pixels);
        conv2d_col2im(s, sc->col, sc->dxpad, dxs);
    }
}

/* ---- Winograd F(2x2, 3x3) ----
 * With a 4x4 input tile d, a 3x3 kernel g and a 2x2 output tile y:
 *     y = A^T [(G g G^T) . (B^T d B)] A          (. elementwise, 16 products)
 *     B^T = | 1  0 -1  0 |    G = | 1    0    0   |    A^T = | 1  1  1  0 |
 *           | 0  1  1  0 |        | 1/2  1/2  1/2 |          | 0  1 -1 -1 |
 *           | 0 -1  1  0 |        | 1/2 -1/2  1/2 |
 *           | 0  1  0 -1 |        | 0    0    1   |
 * Summed over input channels, each of the 16 products is a matrix product across channels, so
 * plane e of the transformed tiles gives M_e (cout, tiles) = U_e (cout, cin) V_e (cin, tiles).
 * For the kernel gradient, dU_e = sum over tiles of (A dY A^T)_e V_e, and dW = G^T dU G. */

/* U_e (cout, cin) for e = 4i + j from the 3x3 kernels: G g G^T. `flip` reads the kernels as the
 * dx convolution needs them: for output channel c and input o, W[o][c] turned 180 degrees. */
static void wino_kernels(const conv2d *s, const float *weight, float *u, bool flip)
{
    const int cout = flip ? s->c : s->oc, cin = flip ? s->oc : s->c;
    for (int o = 0; o < cout; o++)
        for (int c = 0; c < cin; c++) {
            const float *k = flip ? weight + ((size_t)c * s->c + o) * 9 : weight + ((size_t)o * s->c + c) * 9;
            float g[3][3];  /* the kernel as this convolution applies it */
            for (int a = 0; a < 3; a++)
                for (int b = 0; b < 3; b++) g[a][b] = flip ? k[(2 - a) * 3 + (2 - b)] : k[a * 3 + b];
            float t[4][3];  /* G g */
            for (int b = 0; b < 3; b++) {
                t[0][b] = g[0][b];
                t[1][b] = 0.5f * (g[0][b] + g[1][b] + g[2][b]);
                t[2][b] = 0.5f * (g[0][b] - g[1][b] + g[2][b]);
                t[3][b] = g[2][b];
            }
            float *out = u + (size_t)o * cin + c;
            for (int i = 0; i < 4; i++) {  /* (G g) G^T */
                out[(4 * i + 0) * s->uplane] = t[i][0];
                out[(4 * i + 1) * s->uplane] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
                out[(4 * i + 2) * s->uplane] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
                out[(4 * i + 3) * s->uplane] = t[i][2];
            }
        }
}

/* dW (OC, C, 3, 3) += G^T dU G, from the 16 planes of dU (OC, C). */
static void wino_kernel_grads(const conv2d *s, const float *du, float *dweight)
{
    for (int o = 0; o < s->oc; o++)
        for (int c = 0; c < s->c; c++) {
            const float *d = du + (size_t)o * s->c + c;
            float r[3][4];  /* G^T dU */
            for (int j = 0; j < 4; j++) {
                const float d0 = d[(0 + j) * s->uplane], d1 = d[(4 + j) * s->uplane];
                const float d2 = d[(8 + j) * s->uplane], d3 = d[(12 + j) * s->uplane];
                r[0][j] = d0 + 0.5f * (d1 + d2);
                r[1][j] = 0.5f * (d1 - d2);
                r[2][j] = 0.5f * (d1 + d2) + d3;
            }
            float *k = dweight + ((size_t)o * s->c + c) * 9;
            for (int a = 0; a < 3; a++) {  /* (G^T dU) G */
                k[a * 3 + 0] += r[a][0] + 0.5f * (r[a][1] + r[a][2]);
                k[a * 3 + 1] += 0.5f * (r[a][1] - r[a][2]);
                k[a * 3 + 2] += 0.5f * (r[a][1] + r[a][2]) + r[a][3];
            }
        }
}

/* One row of tiles through B^T d B. The tiles' 4x4 inputs start at r0 (four rows pw apart, tile
 * tj at column 2*tj); plane e of the result goes to v[e * plane + tj]. B^T d is done first for
 * the whole width of the four rows, split into even and odd columns (t: 8 rows of tw + 1); then
 * each tile's (B^T d) B reads columns tj and tj + 1 of those: plain vector loops, where one loop
 * over tiles doing both did not vectorize. `tw` is a parameter so that wino_input can pass the
 * usual widths as constants; `omp simd` then keeps the compiler from unrolling those short loops
 * into scalar code (2x slower). */
static inline __attribute__((always_inline)) void wino_input_row(const float *restrict r0, size_t pw,
                                                                 float *restrict t, float *restrict v,
                                                                 size_t plane, int tw)
{
    const int half = tw + 1;  /* even (or odd) columns of the 2*tw + 2 a row of tiles reads */
    const float *restrict r1 = r0 + pw, *restrict r2 = r1 + pw, *restrict r3 = r2 + pw;
#pragma omp simd
    for (int x = 0; x < half; x++)  /* B^T d: rows i = 0..3, even columns at t[2i], odd at t[2i+1] */
        for (int odd = 0; odd < 2; odd++) {
            const int col = 2 * x + odd;
            t[(0 + odd) * half + x] = r0[col] - r2[col];
            t[(2 + odd) * half + x] = r1[col] + r2[col];
            t[(4 + odd) * half + x] = r2[col] - r1[col];
            t[(6 + odd) * half + x] = r1[col] - r3[col];
        }
    for (int i = 0; i < 4; i++) {  /* (B^T d) B: columns 2tj..2tj+3 are even[tj], odd[tj], even[tj+1], odd[tj+1] */
        const float *restrict even = t + (size_t)(2 * i) * half, *restrict odd = even + half;
        /* four distinct pointers, or the compiler must assume the planes overlap and keeps the
         * stores in order, one float at a time */
        float *restrict v0 = v + (size_t)4 * i * plane, *restrict v1 = v0 + plane;
        float *restrict v2 = v1 + plane, *restrict v3 = v2 + plane;
#pragma omp simd
        for (int tj = 0; tj < tw; tj++) {
            v0[tj] = even[tj] - even[tj + 1];
            v1[tj] = odd[tj] + even[tj + 1];
            v2[tj] = even[tj + 1] - odd[tj];
            v3[tj] = odd[tj] - odd[tj + 1];
        }
    }
}

/* V: the 16 planes (cin, tiles) of one sample's transformed input tiles, from its padded copy
 * (cin, ph, pw); rows is scratch for 8 rows of tw + 1 floats. */
static void wino_input(const wino_geom *g, const float *padded, float *rows, float *v)
{
    for (int c = 0; c < g->cin; c++)
        for (int ti = 0; ti < g->th; ti++) {
            const float *r0 = padded + ((size_t)c * g->ph + 2 * ti) * g->pw;
            float *out = v + (size_t)c * g->tiles + (size_t)ti * g->tw;
            switch (g->tw) {
            case 4: wino_input_row(r0, (size_t)g->pw, rows, out, g->vplane, 4); break;
            case 8: wino_input_row(r0, (size_t)g->pw, rows, out, g->vplane, 8); break;
            default: wino_input_row(r0, (size_t)g->pw, rows, out, g->vplane, g->tw);
            }
        }
}

/* M_e (cout, tiles) = U_e (cout, cin) V_e (cin, tiles) for the 16 planes. */
static void wino_multiply(const conv2d *s, const wino_geom *g, const float *u, const float *v, float *m)
{
    for (int e = 0; e < WINO_PLANES; e++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->cout, g->tiles, g->cin, 1.0f,
                    u + e * s->uplane, g->cin, v + e * g->vplane, g->tiles, 0.0f, m + e * g->mplane, g->tiles);
}

/* One row of tiles through A^T M A, plus the bias: M's 16 planes start at m (tile tj at m[tj]);
 * the two output rows go to y0 and y1, two columns per tile. */
static inline __attribute__((always_inline)) void wino_output_row(const float *restrict m, size_t plane,
                                                                  float bias, float *restrict y0,
                                                                  float *restrict y1, int tw)
{
    for (int tj = 0; tj < tw; tj++) {
        float s0[4], s1[4];  /* A^T M, column k */
        for (int k = 0; k < 4; k++) {
            const float q0 = m[(0 + k) * plane + tj], q1 = m[(4 + k) * plane + tj];
            const float q2 = m[(8 + k) * plane + tj], q3 = m[(12 + k) * plane + tj];
            s0[k] = q0 + q1 + q2;
            s1[k] = q1 - q2 - q3;
        }
        y0[2 * tj] = s0[0] + s0[1] + s0[2] + bias;  /* (A^T M) A */
        y0[2 * tj + 1] = s0[1] - s0[2] - s0[3] + bias;
        y1[2 * tj] = s1[0] + s1[1] + s1[2] + bias;
        y1[2 * tj + 1] = s1[1] - s1[2] - s1[3] + bias;
    }
}

static void wino_output_row_any(const float *m, size_t plane, float bias, float *y0, float *y1, int tw)
{
    switch (tw) {
    case 4: wino_output_row(m, plane, bias, y0, y1, 4); break;
    case 8: wino_output_row(m, plane, bias, y0, y1, 8); break;
    case 16: wino_output_row(m, plane, bias, y0, y1, 16); break;
    default: wino_output_row(m, plane, bias, y0, y1, tw);
    }
}

/* y (cout, oh, ow) from the 16 product planes. Whole tiles go straight into y; when oh or ow is
 * odd the last tiles stick out, so rows are built in `stage` (2 rows of 2*tw) and cut to fit. */
static void wino_output(const wino_geom *g, const float *m, const float *bias, float *stage, float *y)
{
    const bool exact = g->oh % 2 == 0 && g->ow % 2 == 0;
    for (int o = 0; o < g->cout; o++) {
        float *plane = y + (size_t)o * g->oh * g->ow;  /* (OH, OW) */
        const float b = bias ? bias[o] : 0.0f;
        for (int ti = 0; ti < g->th; ti++) {
            const float *row = m + (size_t)o * g->tiles + (size_t)ti * g->tw;
            float *y0 = plane + (size_t)2 * ti * g->ow;
            if (exact) {
                wino_output_row_any(row, g->mplane, b, y0, y0 + g->ow, g->tw);
                continue;
            }
            float *s0 = stage, *s1 = stage + 2 * g->tw;
            wino_output_row_any(row, g->mplane, b, s0, s1, g->tw);
            memcpy(y0, s0, sizeof(float) * (size_t)g->ow);
            if (2 * ti + 1 < g->oh) memcpy(y0 + g->ow, s1, sizeof(float) * (size_t)g->ow);
        }
    }
}

/* One row of dY tiles through A dY A^T (A = (A^T)^T, 4x2). The 2x2 tiles start at r0 (two rows
 * pw apart, tile tj at column 2*tj); plane e goes to z[e * plane + tj]. As in wino_input_row,
 * A dY first, split into even and odd columns (q: 8 rows of tw), then the tiles. */
static inline __attribute__((always_inline)) void wino_grad_row(const float *restrict r0, size_t pw,
                                                                float *restrict q, float *restrict z,
                                                                size_t plane, int tw)
{
    const float *restrict r1 = r0 + pw;
#pragma omp simd
    for (int x = 0; x < tw; x++)  /* A dY: rows i = 0..3, even columns at q[2i], odd at q[2i+1] */
        for (int odd = 0; odd < 2; odd++) {
            const int col = 2 * x + odd;
            q[(0 + odd) * tw + x] = r0[col];
            q[(2 + odd) * tw + x] = r0[col] + r1[col];
            q[(4 + odd) * tw + x] = r0[col] - r1[col];
            q[(6 + odd) * tw + x] = -r1[col];
        }
    for (int i = 0; i < 4; i++) {  /* (A dY) A^T */
        const float *restrict even = q + (size_t)(2 * i) * tw, *restrict odd = even + tw;
        float *restrict z0 = z + (size_t)4 * i * plane, *restrict z1 = z0 + plane;  /* as in wino_input_row */
        float *restrict z2 = z1 + plane, *restrict z3 = z2 + plane;
#pragma omp simd
        for (int tj = 0; tj < tw; tj++) {
            z0[tj] = even[tj];
            z1[tj] = even[tj] + odd[tj];
            z2[tj] = even[tj] - odd[tj];
            z3[tj] = -odd[tj];
        }
    }
}

/* Z: the 16 planes (OC, tiles) of one sample's transformed dY tiles, read from dypad, where dY
 * sits at (back.pad, back.pad) with zeros past its last row and column (the partial tiles);
 * rows is scratch for 8 rows of tw floats. */
static void wino_grad_tiles(const conv2d *s, const float *dypad, float *rows, float *z)
{
    const wino_geom *f = &s->fwd, *b = &s->back;
    for (int o = 0; o < s->oc; o++)
        for (int ti = 0; ti < f->th; ti++) {
            const float *r0 = dypad + ((size_t)o * b->ph + b->pad + 2 * ti) * b->pw + b->pad;
            float *out = z + (size_t)o * f->tiles + (size_t)ti * f->tw;
            switch (f->tw) {
            case 4: wino_grad_row(r0, (size_t)b->pw, rows, out, f->mplane, 4); break;
            case 8: wino_grad_row(r0, (size_t)b->pw, rows, out, f->mplane, 8); break;
            default: wino_grad_row(r0, (size_t)b->pw, rows, out, f->mplane, f->tw);
            }
        }
}

static void wino_forward_chunk(const conv2d *s, const conv2d_scratch *sc, const float *x, const float *bias,
                               float *y, int64_t first, int64_t end)
{
    const wino_geom *f = &s->fwd;
    const size_t xsize = (size_t)s->c * s->h * s->w, ysize = (size_t)s->oc * s->pixels;
    memset(sc->xpad, 0, sizeof(float) * (size_t)f->cin * f->ph * f->pw);
    for (int64_t i = first; i < end; i++) {
        pad_planes(x + (size_t)i * xsize, s->c, s->h, s->w, sc->xpad, f->ph, f->pw, f->pad);
        wino_input(f, sc->xpad, sc->stage, sc->v);
        wino_multiply(s, f, s->u, sc->v, sc->m);
        wino_output(f, sc->m, bias, sc->stage, y + (size_t)i * ysize);
    }
}

/* Per sample: dU += Z V^T (the kernel gradient, in the transformed domain), db, and dx as the
 * forward convolution of dY by the flipped kernels. */
static void wino_backward_chunk(const conv2d *s, const conv2d_scratch *sc, const float *x, const float *dy,
                                float *dx, int64_t first, int64_t end)
{
    const wino_geom *f = &s->fwd, *b = &s->back;
    const size_t xsize = (size_t)s->c * s->h * s->w, ysize = (size_t)s->oc * s->pixels;
    memset(sc->xpad, 0, sizeof(float) * (size_t)f->cin * f->ph * f->pw);
    memset(sc->dypad, 0, sizeof(float) * (size_t)b->cin * b->ph * b->pw);
    memset(sc->dw, 0, sizeof(float) * WINO_PLANES * s->uplane);
    memset(sc->db, 0, sizeof(float) * (size_t)s->oc);
    for (int64_t i = first; i < end; i++) {
        const float *dys = dy + (size_t)i * ysize;  /* (OC, OH, OW) */
        pad_planes(x + (size_t)i * xsize, s->c, s->h, s->w, sc->xpad, f->ph, f->pw, f->pad);
        wino_input(f, sc->xpad, sc->stage, sc->v);
        pad_planes(dys, s->oc, s->oh, s->ow, sc->dypad, b->ph, b->pw, b->pad);
        wino_grad_tiles(s, sc->dypad, sc->stage, sc->m);
        for (int e = 0; e < WINO_PLANES; e++)  /* dU_e (OC, C) += Z_e (OC, tiles) V_e^T */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s->oc, s->c, f->tiles, 1.0f,
                        sc->m + e * f->mplane, f->tiles, sc->v + e * f->vplane, f->tiles, 1.0f,
                        sc->dw + e * s->uplane, s->c);
        if (s->bias) add_bias_grad(s, dys, sc->db);
        if (!dx) continue;
        wino_input(b, sc->dypad, sc->stage, sc->v);
        wino_multiply(s, b, s->u_back, sc->v, sc->m);
        wino_output(b, sc->m, NULL, sc->stage, dx + (size_t)i * xsize);
    }
}

/* ---- The operations: chunks in parallel, then the chunks' gradients in chunk order ---- */

static int conv2d_forward_cpu(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w,
                              rx_tensor *y, void *state)
{
    const conv2d *s = self;
    const int64_t n = x->shape.d[0];
    float *slots = conv2d_slots(s, ctx, n);
    if (!slots) return -1;
    const float *bias = s->bias ? w[1].data : NULL;  /* (OC) */
    if (s->algo == CONV2D_WINOGRAD) wino_kernels(s, w[0].data, s->u, false);
    const int chunks = conv2d_chunks(ctx, n);

#pragma omp parallel for num_threads(chunks) schedule(static, 1)
    for (int t = 0; t < chunks; t++) {
        const conv2d_scratch sc = conv2d_scratch_at(s, slots + (size_t)t * s->slot);
        const int64_t first = n * t / chunks, end = n * (t + 1) / chunks;
        if (s->algo == CONV2D_WINOGRAD) wino_forward_chunk(s, &sc, x->data, bias, y->data, first, end);
        else im2col_forward_chunk(s, &sc, x->data, w[0].data, bias, y->data, first, end);
    }
    return 0;
}

static int conv2d_backward_cpu(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y,
                               const rx_tensor *dy, const rx_tensor *w, const void *state,
                               rx_tensor *dx, rx_tensor *dw)
{
    const conv2d *s = self;
    const int64_t n = x->shape.d[0];
    float *slots = conv2d_slots(s, ctx, n);
    if (!slots) return -1;
    const bool winograd = s->algo == CONV2D_WINOGRAD;
    if (winograd && dx) wino_kernels(s, w[0].data, s->u_back, true);
    const int chunks = conv2d_chunks(ctx, n);

#pragma omp parallel for num_threads(chunks) schedule(static, 1)
    for (int t = 0; t < chunks; t++) {
        const conv2d_scratch sc = conv2d_scratch_at(s, slots + (size_t)t * s->slot);
        const int64_t first = n * t / chunks, end = n * (t + 1) / chunks;
        if (winograd) wino_backward_chunk(s, &sc, x->data, dy->data, dx ? dx->data : NULL, first, end);
        else im2col_backward_chunk(s, &sc, x->data, dy->data, w[0].data, dx ? dx->data : NULL, first, end);
    }

    /* The chunks' sums, added in chunk order whatever thread finished first: into chunk 0's
     * (Winograd: then turned into dW once), or straight into dW. */
    const conv2d_scratch first = conv2d_scratch_at(s, slots);
    const size_t wsize = winograd ? WINO_PLANES * s->uplane : (size_t)s->oc * s->rows;
    float *restrict sum = winograd ? first.dw : dw[0].data;
    for (int t = winograd ? 1 : 0; t < chunks; t++) {
        const float *restrict part = conv2d_scratch_at(s, slots + (size_t)t * s->slot).dw;
        for (size_t j = 0; j < wsize; j++) sum[j] += part[j];
    }
    if (winograd) wino_kernel_grads(s, first.dw, dw[0].data);
    if (s->bias) {
        float *restrict dbias = dw[1].data;  /* (OC) */
        for (int t = 0; t < chunks; t++) {
            const float *restrict part = conv2d_scratch_at(s, slots + (size_t)t * s->slot).db;
            for (int o = 0; o < s->oc; o++) dbias[o] += part[o];
        }
    }
    return 0;
}

static const rx_plugin desc = {
    .abi = RX_ABI_VERSION,
    .size = sizeof(rx_plugin),
    .kind = RX_LAYER,
    .name = "conv2d",
    .summary = "2-D convolution (im2col + SGEMM, or Winograd F(2x2, 3x3)), like torch.nn.Conv2d",
    .params = params,
    .layer = {
        .create = conv2d_create,
        .destroy = conv2d_destroy,
#ifdef RX_WITH_CUDA
        .forward = { [RX_CPU] = conv2d_forward_cpu, [RX_CUDA] = conv2d_forward_cuda },
        .backward = { [RX_CPU] = conv2d_backward_cpu, [RX_CUDA] = conv2d_backward_cuda },
#else
        .forward = { [RX_CPU] = conv2d_forward_cpu },
        .backward = { [RX_CPU] = conv2d_backward_cpu },
#endif
    },
};

RX_EXPORT(conv2d) { return &desc; }
