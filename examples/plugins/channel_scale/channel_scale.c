/* channel_scale.c: an out-of-tree runexp layer with a learned parameter tensor and a CUDA path:
 * y[n, c, ...] = scale[c] * x[n, c, ...], one factor per channel, initialized to 1 (the learned
 * scale of a normalization layer, on its own). The CPU path is here; the CUDA kernels are in
 * channel_scale.cu, compiled in (RX_WITH_CUDA) when the Makefile finds nvcc. */
#include <stdlib.h>

#include "channel_scale.h"

static const rx_param params[] = { { 0 } };

static int channel_scale_create(void **self, rx_ctx *ctx, const rx_value *args, rx_shape in, rx_layer_info *info)
{
    if (in.ndim != 1 && in.ndim != 3)
        return rx_fail(ctx, "expects a (C) or (C, H, W) input, got %d dimensions", in.ndim);
    channel_scale *s = malloc(sizeof *s);
    if (!s) return rx_fail(ctx, "out of memory");
    s->c = in.d[0];
    s->plane = in.ndim == 3 ? in.d[1] * in.d[2] : 1;
    *self = s;
    info->out = in;
    info->ntensors = 1;
    info->tensors[0] = (rx_tensor_decl){ .name = "scale", .shape = { .ndim = 1, .d = { s->c } }, .init = RX_INIT_ONES };
    /* Each sample alone, self only read: the host may run parts of a batch at once (ABI 4). */
    info->per_sample = true;
    return 0;
}

static void channel_scale_destroy(void *self)
{
    free(self);
}

static int channel_scale_forward_cpu(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w, rx_tensor *y,
                                     void *state)
{
    const channel_scale *s = self;
    const float *scale = w[0].data; /* (C) */
    int64_t n = x->shape.d[0];
    for (int64_t b = 0; b < n; b++)
        for (int64_t c = 0; c < s->c; c++) {
            const float *in = x->data + (b * s->c + c) * s->plane;
            float *out = y->data + (b * s->c + c) * s->plane;
            for (int64_t i = 0; i < s->plane; i++) out[i] = scale[c] * in[i];
        }
    return 0;
}

/* dscale[c] += sum over n and the plane of dy * x; dx = scale[c] * dy. */
static int channel_scale_backward_cpu(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y,
                                      const rx_tensor *dy, const rx_tensor *w, const void *state, rx_tensor *dx,
                                      rx_tensor *dw)
{
    const channel_scale *s = self;
    const float *scale = w[0].data;
    float *dscale = dw[0].data;
    int64_t n = x->shape.d[0];
    for (int64_t c = 0; c < s->c; c++) {
        double sum = 0;
        for (int64_t b = 0; b < n; b++) {
            int64_t at = (b * s->c + c) * s->plane;
            for (int64_t i = 0; i < s->plane; i++) {
                sum += (double)dy->data[at + i] * x->data[at + i];
                if (dx) dx->data[at + i] = scale[c] * dy->data[at + i];
            }
        }
        dscale[c] += (float)sum;
    }
    return 0;
}

/* For `runexp export`: Mul(x, scale) with the scale (C) made (C, 1, 1) by Unsqueeze, so that it
 * broadcasts over (N, C, H, W); a flat (N, C) input takes it as it is. */
static int channel_scale_export_onnx(void *self, rx_ctx *ctx, rx_onnx *g)
{
    const char *scale = g->tensors[0];
    if (g->in.ndim == 3) {
        const int64_t axes[] = { 1, 2 };
        const char *shaped = g->temp(g), *ax = g->ints(g, 2, axes);
        if (!shaped || !ax || g->node(g, "Unsqueeze", (const char *[]){ scale, ax }, 2, &shaped, 1, NULL, 0) != 0)
            return rx_fail(ctx, "out of memory");
        scale = shaped;
    }
    if (g->node(g, "Mul", (const char *[]){ g->input, scale }, 2, &g->output, 1, NULL, 0) != 0)
        return rx_fail(ctx, "out of memory");
    return 0;
}

static const rx_plugin desc = {
    .abi = RX_ABI_VERSION,
    .size = sizeof(rx_plugin),
    .kind = RX_LAYER,
    .name = "channel_scale",
    .summary = "one learned factor per channel, y = scale[c] * x (an out-of-tree example with CUDA)",
    .params = params,
    .layer = {
        .create = channel_scale_create,
        .destroy = channel_scale_destroy,
#ifdef RX_WITH_CUDA
        .forward = { [RX_CPU] = channel_scale_forward_cpu, [RX_CUDA] = channel_scale_forward_cuda },
        .backward = { [RX_CPU] = channel_scale_backward_cpu, [RX_CUDA] = channel_scale_backward_cuda },
#else
        .forward = { [RX_CPU] = channel_scale_forward_cpu },
        .backward = { [RX_CPU] = channel_scale_backward_cpu },
#endif
        .export_onnx = channel_scale_export_onnx,
    },
};

RX_EXPORT(channel_scale) { return &desc; }
