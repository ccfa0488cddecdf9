/* conv2d.c: 2-D convolution, PyTorch's nn.Conv2d with a square kernel (no dilation, no groups).
 *
 * CPU path: the whole batch is unfolded with im2col into one matrix whose columns are every output
 * pixel of every sample, so each pass is a single large OpenBLAS SGEMM:
 *     forward   tmp  = W (OC, C*K*K) x col (C*K*K, N*OH*OW), then tmp is scattered into y (NCHW)
 *     backward  dW  += dY (OC, N*OH*OW) x col^T,  db += row sums of dY,
 *               dcol = W^T x dY, folded back into dx with col2im.
 * The workspace holds col and tmp: (C*K*K + OC) * OH*OW floats per sample. */
#include <cblas.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runexp.h"

static const rx_param params[] = {
    { .key = "out", .type = RX_INT, .required = true, .help = "output channels" },
    { .key = "kernel", .type = RX_INT, .required = true, .help = "kernel height and width" },
    { .key = "stride", .type = RX_INT, .def = { .i = 1 }, .help = "step between kernel positions" },
    { .key = "padding", .type = RX_INT, .def = { .i = 0 }, .help = "zeros added on every side" },
    { .key = "bias", .type = RX_BOOL, .def = { .b = true }, .help = "learn one bias per output channel" },
    { 0 },
};
enum { ARG_OUT, ARG_KERNEL, ARG_STRIDE, ARG_PADDING, ARG_BIAS };

typedef struct conv2d {
    int c, h, w;       /* input (C, H, W) */
    int oc, oh, ow;    /* output (OC, OH, OW) */
    int k, stride, pad;
    bool bias;
} conv2d;

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
    if (ph > INT_MAX || pw > INT_MAX || (double)c * k * k > INT_MAX || (double)oh * ow > INT_MAX ||
        (double)c * h * w > INT_MAX || (double)oc * oh * ow > INT_MAX)
        return rx_fail(ctx, "input (%" PRId64 ", %" PRId64 ", %" PRId64 ") with kernel %"
                       PRId64 " is too large for 32-bit BLAS sizes", c, h, w, k);

    conv2d *s = malloc(sizeof *s);
    if (!s) return rx_fail(ctx, "out of memory");
    *s = (conv2d){ .c = (int)c, .h = (int)h, .w = (int)w, .oc = (int)oc, .oh = (int)oh,
                   .ow = (int)ow, .k = (int)k, .stride = (int)stride, .pad = (int)pad,
                   .bias = args[ARG_BIAS].b };
    const int64_t rows = c * k * k;  /* fan-in: the length of one im2col column */
    const float scale = 1.0f / sqrtf((float)rows);
    info->out = (rx_shape){ .ndim = 3, .d = { oc, oh, ow } };
    info->ntensors = s->bias ? 2 : 1;
    info->tensors[0] = (rx_tensor_decl){ .name = "weight", .shape = { .ndim = 4, .d = { oc, c, k, k } },
                                         .init = RX_INIT_UNIFORM, .scale = scale };
    if (s->bias)
        info->tensors[1] = (rx_tensor_decl){ .name = "bias", .shape = { .ndim = 1, .d = { oc } },
                                             .init = RX_INIT_UNIFORM, .scale = scale };
    info->state_bytes = 0;
    info->workspace_bytes = sizeof(float) * (size_t)(rows + oc) * (size_t)(oh * ow);
    *self = s;
    return 0;
}

static void conv2d_destroy(void *self) { free(self); }

/* Output columns j whose tap j*stride - pad + kj lands inside a row of the input: [*lo, *hi). */
static void conv2d_valid_cols(const conv2d *s, int kj, int *lo, int *hi)
{
    const int first = s->pad - kj;       /* need j*stride >= pad - kj */
    const int end = s->w + s->pad - kj;  /* and   j*stride <  w + pad - kj */
    *lo = first <= 0 ? 0 : (first + s->stride - 1) / s->stride;
    *hi = end <= 0 ? 0 : (end - 1) / s->stride + 1;
    if (*hi > s->ow) *hi = s->ow;
    if (*lo > *hi) *lo = *hi;
}

/* Unfolds one sample x (C, H, W) into col (C*K*K, OH*OW), whose rows are `ld` floats apart: row
 * (c, ki, kj) holds, for each output pixel, the input pixel under that kernel tap (0 in the
 * padding). */
static void conv2d_im2col(const conv2d *s, const float *restrict x, float *restrict col, size_t ld)
{
    const int k = s->k, st = s->stride, oh = s->oh, ow = s->ow;
    for (int c = 0; c < s->c; c++)
        for (int ki = 0; ki < k; ki++)
            for (int kj = 0; kj < k; kj++) {
                int lo, hi;
                conv2d_valid_cols(s, kj, &lo, &hi);
                const int off = kj - s->pad;
                float *row = col + (size_t)((c * k + ki) * k + kj) * ld;  /* (OH, OW) */
                for (int i = 0; i < oh; i++, row += ow) {
                    const int ih = i * st - s->pad + ki;
                    if (ih < 0 || ih >= s->h) {
                        memset(row, 0, sizeof(float) * (size_t)ow);
                        continue;
                    }
                    const float *xr = x + ((size_t)c * s->h + ih) * s->w;  /* (W) */
                    for (int j = 0; j < lo; j++) row[j] = 0.0f;
                    if (st == 1) memcpy(row + lo, xr + lo + off, sizeof(float) * (size_t)(hi - lo));
                    else
                        for (int j = lo; j < hi; j++) row[j] = xr[j * st + off];
                    for (int j = hi; j < ow; j++) row[j] = 0.0f;
                }
            }
}

/* The adjoint of im2col: adds each entry of col (C*K*K, OH*OW), rows `ld` floats apart, onto the
 * input pixel it was read from, in dx (C, H, W). Taps in the padding are dropped. */
static void conv2d_col2im(const conv2d *s, const float *restrict col, size_t ld, float *restrict dx)
{
    const int k = s->k, st = s->stride, oh = s->oh, ow = s->ow;
    for (int c = 0; c < s->c; c++)
        for (int ki = 0; ki < k; ki++)
            for (int kj = 0; kj < k; kj++) {
                int lo, hi;
                conv2d_valid_cols(s, kj, &lo, &hi);
                const int off = kj - s->pad;
                const float *row = col + (size_t)((c * k + ki) * k + kj) * ld;  /* (OH, OW) */
                for (int i = 0; i < oh; i++, row += ow) {
                    const int ih = i * st - s->pad + ki;
                    if (ih < 0 || ih >= s->h) continue;
                    float *dr = dx + ((size_t)c * s->h + ih) * s->w;  /* (W) */
                    if (st == 1)
                        for (int j = lo; j < hi; j++) dr[j + off] += row[j];
                    else
                        for (int j = lo; j < hi; j++) dr[j * st + off] += row[j];
                }
            }
}

/* Checks the workspace and the batch size, and splits the workspace into col and tmp. */
static int conv2d_workspace(const conv2d *s, rx_ctx *ctx, int64_t n, float **col, float **tmp)
{
    const size_t rows = (size_t)s->c * s->k * s->k, pixels = (size_t)s->oh * s->ow;
    if ((double)n * pixels > INT_MAX)
        return rx_fail(ctx, "a batch of %" PRId64 " x %zu output pixels is too large for "
                       "32-bit BLAS sizes", n, pixels);
    const size_t need = sizeof(float) * (rows + (size_t)s->oc) * pixels * (size_t)n;
    if (!ctx->workspace || ctx->workspace_bytes < need)
        return rx_fail(ctx, "needs %zu bytes of workspace for a batch of %" PRId64 ", got %zu",
                       need, n, ctx->workspace ? ctx->workspace_bytes : 0);
    *col = ctx->workspace;
    *tmp = *col + rows * pixels * (size_t)n;
    return 0;
}

static int conv2d_forward_cpu(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w,
                              rx_tensor *y, void *state)
{
    const conv2d *s = self;
    const int64_t n = x->shape.d[0];
    const int rows = s->c * s->k * s->k, pixels = s->oh * s->ow;
    const size_t ld = (size_t)n * pixels;  /* one row of col or tmp: every pixel of the batch */
    const size_t xsize = (size_t)s->c * s->h * s->w, ysize = (size_t)s->oc * pixels;
    float *col, *tmp;  /* (C*K*K, N*OH*OW) and (OC, N*OH*OW) */
    if (conv2d_workspace(s, ctx, n, &col, &tmp) != 0) return -1;

    for (int64_t i = 0; i < n; i++)
        conv2d_im2col(s, x->data + (size_t)i * xsize, col + (size_t)i * pixels, ld);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->oc, (int)ld, rows, 1.0f,
                w[0].data, rows, col, (int)ld, 0.0f, tmp, (int)ld);

    const float *bias = s->bias ? w[1].data : NULL;  /* (OC) */
    for (int64_t i = 0; i < n; i++)
        for (int o = 0; o < s->oc; o++) {
            const float *src = tmp + (size_t)o * ld + (size_t)i * pixels;  /* (OH, OW) */
            float *dst = y->data + (size_t)i * ysize + (size_t)o * pixels;  /* (OH, OW) */
            const float b = bias ? bias[o] : 0.0f;
            for (int p = 0; p < pixels; p++) dst[p] = src[p] + b;
        }
    return 0;
}

static int conv2d_backward_cpu(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y,
                               const rx_tensor *dy, const rx_tensor *w, const void *state,
                               rx_tensor *dx, rx_tensor *dw)
{
    const conv2d *s = self;
    const int64_t n = x->shape.d[0];
    const int rows = s->c * s->k * s->k, pixels = s->oh * s->ow;
    const size_t ld = (size_t)n * pixels;
    const size_t xsize = (size_t)s->c * s->h * s->w, ysize = (size_t)s->oc * pixels;
    float *col, *tmp;  /* (C*K*K, N*OH*OW) and (OC, N*OH*OW) */
    if (conv2d_workspace(s, ctx, n, &col, &tmp) != 0) return -1;

    /* dY from (N, OC, OH*OW) to (OC, N*OH*OW), the layout the forward GEMM produced. */
    for (int64_t i = 0; i < n; i++)
        for (int o = 0; o < s->oc; o++)
            memcpy(tmp + (size_t)o * ld + (size_t)i * pixels,
                   dy->data + (size_t)i * ysize + (size_t)o * pixels, sizeof(float) * (size_t)pixels);

    if (s->bias) {
        float *db = dw[1].data;  /* (OC) */
        for (int o = 0; o < s->oc; o++) {
            const float *row = tmp + (size_t)o * ld;
            double sum = 0.0;
            for (size_t p = 0; p < ld; p++) sum += row[p];
            db[o] += (float)sum;
        }
    }

    for (int64_t i = 0; i < n; i++)
        conv2d_im2col(s, x->data + (size_t)i * xsize, col + (size_t)i * pixels, ld);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s->oc, rows, (int)ld, 1.0f,
                tmp, (int)ld, col, (int)ld, 1.0f, dw[0].data, rows);

    if (dx) {
        /* dcol = W^T dY overwrites col, then folds back onto the zeroed dx. */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, rows, (int)ld, s->oc, 1.0f,
                    w[0].data, rows, tmp, (int)ld, 0.0f, col, (int)ld);
        memset(dx->data, 0, sizeof(float) * xsize * (size_t)n);
        for (int64_t i = 0; i < n; i++)
            conv2d_col2im(s, col + (size_t)i * pixels, ld, dx->data + (size_t)i * xsize);
    }
    return 0;
}

static const rx_plugin desc = {
    .abi = RX_ABI_VERSION,
    .size = sizeof(rx_plugin),
    .kind = RX_LAYER,
    .name = "conv2d",
    .summary = "2-D convolution (im2col + SGEMM), like torch.nn.Conv2d",
    .params = params,
    .layer = {
        .create = conv2d_create,
        .destroy = conv2d_destroy,
        .forward = { [RX_CPU] = conv2d_forward_cpu },
        .backward = { [RX_CPU] = conv2d_backward_cpu },
    },
};

RX_EXPORT(conv2d) { return &desc; }
