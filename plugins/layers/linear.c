/* linear.c: fully connected layer, PyTorch's nn.Linear: y = x W^T + b.
 *
 * Any per-sample input shape is read as F = numel features, so a (C, H, W) input needs no
 * flatten in front. Each pass is one OpenBLAS SGEMM over the whole batch. */
#include <cblas.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>

#include "runexp.h"

static const rx_param params[] = {
    { .key = "out", .type = RX_INT, .required = true, .help = "output features" },
    { .key = "bias", .type = RX_BOOL, .def = { .b = true }, .help = "learn one bias per output" },
    { 0 },
};
enum { ARG_OUT, ARG_BIAS };

typedef struct linear {
    int in, out;  /* F input features, `out` outputs */
    bool bias;
} linear;

static int linear_create(void **self, rx_ctx *ctx, const rx_value *args, rx_shape in,
                         rx_layer_info *info)
{
    const int64_t out = args[ARG_OUT].i;
    if (in.ndim < 1)
        return rx_fail(ctx, "expects a per-sample input with at least 1 dimension, got 0");
    if (out < 1 || out > INT_MAX) return rx_fail(ctx, "out must be at least 1, got %" PRId64, out);
    const int64_t f = rx_numel(in);
    if (f < 1 || f > INT_MAX)
        return rx_fail(ctx, "the input has %" PRId64 " features, expected 1 to %d", f, INT_MAX);

    linear *s = malloc(sizeof *s);
    if (!s) return rx_fail(ctx, "out of memory");
    *s = (linear){ .in = (int)f, .out = (int)out, .bias = args[ARG_BIAS].b };
    const float scale = 1.0f / sqrtf((float)f);
    info->out = (rx_shape){ .ndim = 1, .d = { out } };
    info->ntensors = s->bias ? 2 : 1;
    info->tensors[0] = (rx_tensor_decl){ .name = "weight", .shape = { .ndim = 2, .d = { out, f } },
                                         .init = RX_INIT_UNIFORM, .scale = scale };
    if (s->bias)
        info->tensors[1] = (rx_tensor_decl){ .name = "bias", .shape = { .ndim = 1, .d = { out } },
                                             .init = RX_INIT_UNIFORM, .scale = scale };
    info->state_bytes = 0;
    info->workspace_bytes = 0;
    *self = s;
    return 0;
}

static void linear_destroy(void *self) { free(self); }

static int linear_forward_cpu(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w,
                              rx_tensor *y, void *state)
{
    const linear *s = self;
    const int64_t n = x->shape.d[0];
    if (n > INT_MAX) return rx_fail(ctx, "batch %" PRId64 " is too large for 32-bit BLAS sizes", n);
    float *out = y->data;  /* (N, OUT) */
    float beta = 0.0f;
    if (s->bias) {
        const float *b = w[1].data;  /* (OUT) */
        for (int64_t i = 0; i < n; i++)
            for (int o = 0; o < s->out; o++) out[(size_t)i * s->out + o] = b[o];
        beta = 1.0f;
    }
    /* (N, F) x (OUT, F)^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, s->out, s->in, 1.0f,
                x->data, s->in, w[0].data, s->in, beta, out, s->out);
    return 0;
}

static int linear_backward_cpu(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y,
                               const rx_tensor *dy, const rx_tensor *w, const void *state,
                               rx_tensor *dx, rx_tensor *dw)
{
    const linear *s = self;
    const int64_t n = x->shape.d[0];
    if (n > INT_MAX) return rx_fail(ctx, "batch %" PRId64 " is too large for 32-bit BLAS sizes", n);
    const float *g = dy->data;  /* (N, OUT) */
    /* dW (OUT, F) += dY^T (OUT, N) x X (N, F) */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, s->out, s->in, (int)n, 1.0f,
                g, s->out, x->data, s->in, 1.0f, dw[0].data, s->in);
    if (s->bias) {
        float *db = dw[1].data;  /* (OUT) */
        for (int64_t i = 0; i < n; i++)
            for (int o = 0; o < s->out; o++) db[o] += g[(size_t)i * s->out + o];
    }
    /* dX (N, F) = dY (N, OUT) x W (OUT, F) */
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, s->in, s->out, 1.0f,
                    g, s->out, w[0].data, s->in, 0.0f, dx->data, s->in);
    return 0;
}

static const rx_plugin desc = {
    .abi = RX_ABI_VERSION,
    .size = sizeof(rx_plugin),
    .kind = RX_LAYER,
    .name = "linear",
    .summary = "fully connected layer y = x W^T + b (SGEMM), like torch.nn.Linear",
    .params = params,
    .layer = {
        .create = linear_create,
        .destroy = linear_destroy,
        .forward = { [RX_CPU] = linear_forward_cpu },
        .backward = { [RX_CPU] = linear_backward_cpu },
    },
};

RX_EXPORT(linear) { return &desc; }
