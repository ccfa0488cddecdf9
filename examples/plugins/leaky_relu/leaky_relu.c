/* leaky_relu.c: an out-of-tree runexp layer, the smallest useful one: y = x for x > 0, else
 * slope * x. CPU only, no parameters. Build it with this folder's Makefile and use it as
 * { "leaky_relu", slope = 0.1 } in a model (see leaky_relu.lua). */
#include <stdlib.h>

#include "runexp.h"

enum { ARG_SLOPE };

static const rx_param params[] = {
    { .key = "slope", .type = RX_NUM, .def = { .num = 0.01 }, .help = "slope for negative inputs, in [0, 1)" },
    { 0 },
};

typedef struct leaky_relu {
    float slope;
} leaky_relu;

static int leaky_relu_create(void **self, rx_ctx *ctx, const rx_value *args, rx_shape in, rx_layer_info *info)
{
    double slope = args[ARG_SLOPE].num;
    if (!(slope >= 0 && slope < 1)) return rx_fail(ctx, "slope must be in [0, 1), got %g", slope);
    leaky_relu *s = malloc(sizeof *s);
    if (!s) return rx_fail(ctx, "out of memory");
    s->slope = (float)slope;
    *self = s;
    info->out = in; /* elementwise: same shape, no parameters, no state */
    /* Each sample alone, self only read: the host may run parts of a batch at once (ABI 4). */
    info->per_sample = true;
    return 0;
}

static void leaky_relu_destroy(void *self)
{
    free(self);
}

static int leaky_relu_forward(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w, rx_tensor *y,
                              void *state)
{
    const float slope = ((const leaky_relu *)self)->slope;
    const float *in = x->data;
    float *out = y->data;
    for (int64_t i = 0, n = rx_numel(x->shape); i < n; i++) out[i] = in[i] > 0 ? in[i] : slope * in[i];
    return 0;
}

/* dx = dy where x > 0, else slope * dy. No parameters, so nothing to add into dw. */
static int leaky_relu_backward(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y, const rx_tensor *dy,
                               const rx_tensor *w, const void *state, rx_tensor *dx, rx_tensor *dw)
{
    if (!dx) return 0;
    const float slope = ((const leaky_relu *)self)->slope;
    for (int64_t i = 0, n = rx_numel(x->shape); i < n; i++)
        dx->data[i] = x->data[i] > 0 ? dy->data[i] : slope * dy->data[i];
    return 0;
}

/* For `runexp export`: ONNX's LeakyRelu is this very function. */
static int leaky_relu_export_onnx(void *self, rx_ctx *ctx, rx_onnx *g)
{
    const rx_onnx_attr alpha = { .name = "alpha", .type = RX_ATTR_FLOAT, .f = ((const leaky_relu *)self)->slope };
    if (g->node(g, "LeakyRelu", &g->input, 1, &g->output, 1, &alpha, 1) != 0) return rx_fail(ctx, "out of memory");
    return 0;
}

static const rx_plugin desc = {
    .abi = RX_ABI_VERSION,
    .size = sizeof(rx_plugin),
    .kind = RX_LAYER,
    .name = "leaky_relu",
    .summary = "leaky rectifier: x if x > 0, else slope * x (an out-of-tree example)",
    .params = params,
    .layer = {
        .create = leaky_relu_create,
        .destroy = leaky_relu_destroy,
        .forward = { [RX_CPU] = leaky_relu_forward },
        .backward = { [RX_CPU] = leaky_relu_backward },
        .export_onnx = leaky_relu_export_onnx,
        .traits = RX_TRAIT_MONOTONE, /* non-decreasing for slope >= 0 (create refuses less) */
    },
};

RX_EXPORT(leaky_relu) { return &desc; }
