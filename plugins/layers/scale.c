/* scale.c: multiplies by a constant, y = by * x, elementwise on any shape; e.g. the 1/9 that
 * scales airbench94's logits (its final Mul layer), as `x * by` does in PyTorch: the factor is
 * rounded to float once and every product is one float multiply. No tensors and no state;
 * backward is dx = by * dy. Split across ctx->threads when the tensor is large enough to pay for
 * it; elementwise, so the result never depends on the thread count. CUDA path: scale.cu, with
 * the same single multiply, so both devices give the same bits. */
#include <float.h>
#include <math.h>

#include "create.h"
#include "scale.h"
#include "threads.h"
#include "onnx_nodes.h"

static const rx_param params[] = {
    { .key = "by", .type = RX_NUM, .required = true, .help = "the factor, a finite number" },
    { 0 },
};
enum { ARG_BY };

static int scale_create(void **self, rx_ctx *ctx, const rx_value *args, rx_shape in,
                        rx_layer_info *info)
{
    const double by = args[ARG_BY].num;
    if (isnan(by)) return rx_fail(ctx, "by must be a finite number, got nan");  /* %g may say -nan */
    if (!isfinite(by)) return rx_fail(ctx, "by must be a finite number, got %g", by);
    if (fabs(by) > FLT_MAX)
        return rx_fail(ctx, "by must fit in a float (magnitude at most %g), got %g", (double)FLT_MAX, by);
    if (layer_elementwise_info(ctx, in, 0, info) != 0) return -1;
    info->per_sample = true;  /* elementwise; self (the factor) only read */
    return plugin_new_self(self, ctx, &(scale){ .by = (float)by }, sizeof(scale));
}

/* out = by * in over n floats: forward with (x, y), backward with (dy, dx). */
static void scale_multiply(const rx_ctx *ctx, float by, const float *restrict in, float *restrict out, size_t n)
{
    THREADS_ELEMENTWISE(ctx, n, i, out[i] = by * in[i]);
}

static int scale_forward_cpu(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w,
                             rx_tensor *y, void *state)
{
    const scale *s = self;
    scale_multiply(ctx, s->by, x->data, y->data, (size_t)rx_numel(x->shape));  /* (N, ...) */
    return 0;
}

static int scale_backward_cpu(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y,
                              const rx_tensor *dy, const rx_tensor *w, const void *state,
                              rx_tensor *dx, rx_tensor *dw)
{
    if (!dx) return 0;
    const scale *s = self;
    scale_multiply(ctx, s->by, dy->data, dx->data, (size_t)rx_numel(dy->shape));  /* (N, ...) */
    return 0;
}

/* Mul by the factor, a float scalar as forward rounds it. */
static int scale_export_onnx(void *self, rx_ctx *ctx, rx_onnx *g)
{
    const scale *s = self;
    const char *by = onnx_scalar(ctx, g, s->by);
    return by ? onnx_op(ctx, g, "Mul", (const char *[]){ g->input, by }, 2, g->output, NULL, 0) : -1;
}

static const rx_plugin desc = {
    .abi = RX_ABI_VERSION,
    .size = sizeof(rx_plugin),
    .kind = RX_LAYER,
    .name = "scale",
    .summary = "multiplies by a constant, y = by * x, like `x * by` in PyTorch",
    .params = params,
    .layer = {
        .create = scale_create,
        .destroy = plugin_free_self,
#ifdef RX_WITH_CUDA
        .forward = { [RX_CPU] = scale_forward_cpu, [RX_CUDA] = scale_forward_cuda },
        .backward = { [RX_CPU] = scale_backward_cpu, [RX_CUDA] = scale_backward_cuda },
#else
        .forward = { [RX_CPU] = scale_forward_cpu },
        .backward = { [RX_CPU] = scale_backward_cpu },
#endif
        .export_onnx = scale_export_onnx,
    },
};

RX_EXPORT(scale) { return &desc; }
