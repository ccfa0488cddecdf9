/* prelu.c: an out-of-tree runexp layer whose parameter starts at a constant: PyTorch's PReLU,
 * y = x for x > 0, else a * x, with the slope a learned, one per channel (or one in all), and
 * starting at `init` (0.25, as nn.PReLU does), declared with RX_INIT_CONSTANT. CPU only. Its
 * checkpoint name is "weight", so a PyTorch nn.PReLU(num_parameters=C) loads it. Build it with
 * this folder's Makefile and use it as { "prelu" } in a model (see prelu.lua). */
#include <math.h>
#include <stdlib.h>

#include "runexp.h"

enum { ARG_PER_CHANNEL, ARG_INIT };

static const rx_param params[] = {
    { .key = "per_channel", .type = RX_BOOL, .def = { .b = true },
      .help = "one slope per channel (the input's first dimension), or one for all" },
    { .key = "init", .type = RX_NUM, .def = { .num = 0.25 }, .help = "every slope's first value" },
    { 0 },
};

typedef struct prelu {
    int64_t c, plane;            /* slopes, and the elements each applies to in a sample */
} prelu;

static int prelu_create(void **self, rx_ctx *ctx, const rx_value *args, rx_shape in, rx_layer_info *info)
{
    double init = args[ARG_INIT].num;
    if (!isfinite(init)) return rx_fail(ctx, "init must be a finite number, got %g", init);
    prelu *s = malloc(sizeof *s);
    if (!s) return rx_fail(ctx, "out of memory");
    int64_t numel = rx_numel(in);
    s->c = args[ARG_PER_CHANNEL].b ? in.d[0] : 1;
    s->plane = numel / s->c;
    *self = s;
    info->out = in;
    info->ntensors = 1;
    info->tensors[0] = (rx_tensor_decl){ .name = "weight", .shape = { .ndim = 1, .d = { s->c } },
                                         .init = RX_INIT_CONSTANT, .scale = (float)init };
    /* Each sample alone, self only read: the host may run parts of a batch at once (ABI 4). */
    info->per_sample = true;
    return 0;
}

static void prelu_destroy(void *self)
{
    free(self);
}

static int prelu_forward(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w, rx_tensor *y, void *state)
{
    const prelu *s = self;
    const float *a = w[0].data; /* (C) */
    int64_t n = x->shape.d[0];
    for (int64_t b = 0; b < n; b++)
        for (int64_t c = 0; c < s->c; c++) {
            const float *in = x->data + (b * s->c + c) * s->plane;
            float *out = y->data + (b * s->c + c) * s->plane;
            for (int64_t i = 0; i < s->plane; i++) out[i] = in[i] > 0 ? in[i] : a[c] * in[i];
        }
    return 0;
}

/* da[c] += sum of dy * x where x <= 0; dx = dy where x > 0, else a[c] * dy. */
static int prelu_backward(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y, const rx_tensor *dy,
                          const rx_tensor *w, const void *state, rx_tensor *dx, rx_tensor *dw)
{
    const prelu *s = self;
    const float *a = w[0].data;
    int64_t n = x->shape.d[0];
    for (int64_t c = 0; c < s->c; c++) {
        double sum = 0;
        for (int64_t b = 0; b < n; b++) {
            int64_t at = (b * s->c + c) * s->plane;
            for (int64_t i = 0; i < s->plane; i++) {
                float xi = x->data[at + i], g = dy->data[at + i];
                if (xi <= 0) sum += (double)g * xi;
                if (dx) dx->data[at + i] = xi > 0 ? g : a[c] * g;
            }
        }
        dw[0].data[c] += (float)sum;
    }
    return 0;
}

static const rx_plugin desc = {
    .abi = RX_ABI_VERSION,
    .size = sizeof(rx_plugin),
    .kind = RX_LAYER,
    .name = "prelu",
    .summary = "parametric rectifier: x if x > 0, else a * x, a learned from 0.25 (an out-of-tree example)",
    .params = params,
    .layer = {
        .create = prelu_create,
        .destroy = prelu_destroy,
        .forward = { [RX_CPU] = prelu_forward },
        .backward = { [RX_CPU] = prelu_backward },
    },
};

RX_EXPORT(prelu) { return &desc; }
