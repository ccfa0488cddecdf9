/* dropout.c: inverted dropout, like torch.nn.Dropout. While training, each element is kept with
 * probability 1 - p and scaled by 1 / (1 - p), so evaluation is the identity with no rescaling.
 * The keep mask (one byte per element) lives in the per-sample state for backward; random
 * numbers come from ctx->rng, so a run replays exactly from its seed: one per element, in order,
 * so a part of a batch whose rng starts where the whole batch's forward reached the part's first
 * sample draws that part's mask (runexp.h: per_sample).
 * CUDA path: dropout.cu, which draws the very same mask from ctx->rng; dropout.h holds the
 * struct both files share. */
#include <string.h>

#include "create.h"
#include "dropout.h"

static const rx_param params[] = {
    { .key = "p", .type = RX_NUM, .def = { .num = 0.5 },
      .help = "probability of zeroing an element, in [0, 1)" },
    { 0 },
};
enum { ARG_P };

static int dropout_create(void **self, rx_ctx *ctx, const rx_value *args, rx_shape in,
                          rx_layer_info *info)
{
    const double p = args[ARG_P].num;
    if (!(p >= 0.0 && p < 1.0)) return rx_fail(ctx, "p must be in [0, 1), got %g", p);
    const size_t mask_bytes = (size_t)rx_numel(in);  /* the uint8 keep mask: per-sample state */
    if (layer_elementwise_info(ctx, in, mask_bytes, info) != 0) return -1;
    info->per_sample = true;  /* the mask is per sample, drawn per element in order */
    const dropout s = { .p = (float)p, .scale = (float)(1.0 / (1.0 - p)) };
    return plugin_new_self(self, ctx, &s, sizeof s);
}

static int dropout_forward_cpu(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w,
                               rx_tensor *y, void *state)
{
    const dropout *s = self;
    const size_t n = (size_t)rx_numel(x->shape);
    if (!ctx->training) {
        if (y->data != x->data) memcpy(y->data, x->data, sizeof(float) * n);
        return 0;
    }
    const float *restrict in = x->data;  /* (N, ...) */
    float *restrict out = y->data;       /* (N, ...) */
    uint8_t *restrict keep = state;      /* (N, ...) */
    /* The stream in a local: keep's bytes may alias ctx->rng, which kept the loop scalar, its
     * state stored and reloaded at every element. */
    rx_rng rng = ctx->rng;
    for (size_t i = 0; i < n; i++) keep[i] = rx_rng_uniform(&rng) >= s->p;
    ctx->rng = rng;
    for (size_t i = 0; i < n; i++) out[i] = in[i] * (float)keep[i] * s->scale;
    return 0;
}

static int dropout_backward_cpu(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y,
                                const rx_tensor *dy, const rx_tensor *w, const void *state,
                                rx_tensor *dx, rx_tensor *dw)
{
    if (!dx) return 0;
    const dropout *s = self;
    const size_t n = (size_t)rx_numel(dy->shape);
    if (!ctx->training) {
        if (dx->data != dy->data) memcpy(dx->data, dy->data, sizeof(float) * n);
        return 0;
    }
    const float *restrict g = dy->data;     /* (N, ...) */
    float *restrict out = dx->data;         /* (N, ...) */
    const uint8_t *restrict keep = state;   /* (N, ...) */
    for (size_t i = 0; i < n; i++) out[i] = g[i] * (float)keep[i] * s->scale;
    return 0;
}

/* Dropout is the identity in inference: nothing to add. */
static int dropout_export_onnx(void *self, rx_ctx *ctx, rx_onnx *g)
{
    g->same(g);
    return 0;
}

static const rx_plugin desc = {
    .abi = RX_ABI_VERSION,
    .size = sizeof(rx_plugin),
    .kind = RX_LAYER,
    .name = "dropout",
    .summary = "inverted dropout: zeroes elements with probability p while training",
    .params = params,
    .layer = {
        .create = dropout_create,
        .destroy = plugin_free_self,
#ifdef RX_WITH_CUDA
        .forward = { [RX_CPU] = dropout_forward_cpu, [RX_CUDA] = dropout_forward_cuda },
        .backward = { [RX_CPU] = dropout_backward_cpu, [RX_CUDA] = dropout_backward_cuda },
#else
        .forward = { [RX_CPU] = dropout_forward_cpu },
        .backward = { [RX_CPU] = dropout_backward_cpu },
#endif
        .export_onnx = dropout_export_onnx,
    },
};

RX_EXPORT(dropout) { return &desc; }
