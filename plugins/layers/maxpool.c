/* maxpool.c: 2-D max pooling over (C, H, W), like torch.nn.MaxPool2d without padding.
 * Forward records, per output, where the maximum came from (an int32 index into the sample) in
 * the per-sample state; backward routes each upstream gradient to that one input. Ties go to the
 * first maximum in row-major order; a NaN in a window wins, as in PyTorch. */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runexp.h"

static const rx_param params[] = {
    { .key = "size", .type = RX_INT, .def = { .i = 2 }, .help = "window height and width" },
    { .key = "stride", .type = RX_INT, .def = { .i = 0 }, .help = "step between windows (0: size)" },
    { 0 },
};
enum { ARG_SIZE, ARG_STRIDE };

typedef struct maxpool {
    int c, h, w;   /* input (C, H, W) */
    int oh, ow;    /* output (C, OH, OW) */
    int size, stride;
} maxpool;

static int maxpool_create(void **self, rx_ctx *ctx, const rx_value *args, rx_shape in,
                          rx_layer_info *info)
{
    const int64_t size = args[ARG_SIZE].i;
    const int64_t stride = args[ARG_STRIDE].i == 0 ? size : args[ARG_STRIDE].i;
    if (in.ndim != 3)
        return rx_fail(ctx, "expects a (C, H, W) input, got %d dimension%s", in.ndim,
                       in.ndim == 1 ? "" : "s");
    if (size < 1) return rx_fail(ctx, "size must be at least 1, got %" PRId64, size);
    if (stride < 1 || stride > INT32_MAX)
        return rx_fail(ctx, "stride must be at least 1 (or 0 for size), got %" PRId64, stride);
    const int64_t c = in.d[0], h = in.d[1], w = in.d[2];
    if (c < 1 || h < 1 || w < 1)
        return rx_fail(ctx, "input (%" PRId64 ", %" PRId64 ", %" PRId64 ") has an empty "
                       "dimension", c, h, w);
    if (size > h || size > w)
        return rx_fail(ctx, "size %" PRId64 " is larger than the input %" PRId64 "x%" PRId64,
                       size, h, w);
    /* The argmax indices are int32 offsets into one sample. */
    if ((double)c * h * w > INT32_MAX)
        return rx_fail(ctx, "input (%" PRId64 ", %" PRId64 ", %" PRId64 ") has more than "
                       "2^31 - 1 elements", c, h, w);
    const int64_t oh = (h - size) / stride + 1, ow = (w - size) / stride + 1;

    maxpool *s = malloc(sizeof *s);
    if (!s) return rx_fail(ctx, "out of memory");
    *s = (maxpool){ .c = (int)c, .h = (int)h, .w = (int)w, .oh = (int)oh, .ow = (int)ow,
                    .size = (int)size, .stride = (int)stride };
    info->out = (rx_shape){ .ndim = 3, .d = { c, oh, ow } };
    info->ntensors = 0;
    info->state_bytes = sizeof(int32_t) * (size_t)(c * oh * ow);
    info->workspace_bytes = 0;
    *self = s;
    return 0;
}

static void maxpool_destroy(void *self) { free(self); }

static int maxpool_forward_cpu(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w,
                               rx_tensor *y, void *state)
{
    const maxpool *s = self;
    const int64_t planes = x->shape.d[0] * s->c;  /* every (sample, channel) pair */
    const size_t in_plane = (size_t)s->h * s->w, out_plane = (size_t)s->oh * s->ow;
    for (int64_t p = 0; p < planes; p++) {
        const float *xp = x->data + (size_t)p * in_plane;      /* (H, W) */
        float *yp = y->data + (size_t)p * out_plane;           /* (OH, OW) */
        int32_t *arg = (int32_t *)state + (size_t)p * out_plane; /* (OH, OW) */
        const int32_t base = (int32_t)((size_t)(p % s->c) * in_plane); /* channel start in the sample */
        for (int i = 0; i < s->oh; i++)
            for (int j = 0; j < s->ow; j++) {
                int best = i * s->stride * s->w + j * s->stride;
                for (int ki = 0; ki < s->size; ki++) {
                    const int row = (i * s->stride + ki) * s->w + j * s->stride;
                    for (int kj = 0; kj < s->size; kj++)
                        if (xp[row + kj] > xp[best] || isnan(xp[row + kj])) best = row + kj;
                }
                yp[i * s->ow + j] = xp[best];
                arg[i * s->ow + j] = base + best;
            }
    }
    return 0;
}

static int maxpool_backward_cpu(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y,
                                const rx_tensor *dy, const rx_tensor *w, const void *state,
                                rx_tensor *dx, rx_tensor *dw)
{
    if (!dx) return 0;
    const maxpool *s = self;
    const int64_t n = x->shape.d[0];
    const size_t in_size = (size_t)s->c * s->h * s->w, out_size = (size_t)s->c * s->oh * s->ow;
    memset(dx->data, 0, sizeof(float) * in_size * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        const int32_t *arg = (const int32_t *)state + (size_t)i * out_size; /* (C, OH, OW) */
        const float *g = dy->data + (size_t)i * out_size;                   /* (C, OH, OW) */
        float *d = dx->data + (size_t)i * in_size;                          /* (C, H, W) */
        for (size_t o = 0; o < out_size; o++) d[arg[o]] += g[o];
    }
    return 0;
}

static const rx_plugin desc = {
    .abi = RX_ABI_VERSION,
    .size = sizeof(rx_plugin),
    .kind = RX_LAYER,
    .name = "maxpool",
    .summary = "2-D max pooling over (C, H, W), like torch.nn.MaxPool2d",
    .params = params,
    .layer = {
        .create = maxpool_create,
        .destroy = maxpool_destroy,
        .forward = { [RX_CPU] = maxpool_forward_cpu },
        .backward = { [RX_CPU] = maxpool_backward_cpu },
    },
};

RX_EXPORT(maxpool) { return &desc; }
