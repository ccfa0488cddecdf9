/* gelu.c: Gaussian error linear unit, like torch.nn.GELU, elementwise on any shape.
 *     approximate = "none" (default): y = x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2)))
 *     approximate = "tanh":           y = 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))
 * The formulas (gelu_math.h) follow PyTorch's CPU kernels expression for expression, in float, and,
 * like PyTorch's vectorized kernels, evaluate erf, exp and tanh with short polynomials that the
 * compiler vectorizes: libm's scalar erff made gelu a quarter of a small network's time. Backward
 * needs only x, so there is no state; self holds the formula. Split across ctx->threads when the
 * tensor is large enough to pay for it; elementwise, so the result never depends on the thread
 * count. CUDA path: gelu.cu, running the same functions from gelu_math.h. */
#include <string.h>

#include "create.h"
#include "gelu.h"
#include "gelu_math.h"
#include "onnx_nodes.h"
#include "threads.h"

static const rx_param params[] = {
    { .key = "approximate", .type = RX_STR, .def = { .s = "none" },
      .help = "'none' for the exact erf form, 'tanh' for the tanh approximation" },
    { 0 },
};
enum { ARG_APPROXIMATE };

static int gelu_create(void **self, rx_ctx *ctx, const rx_value *args, rx_shape in,
                       rx_layer_info *info)
{
    const char *approximate = args[ARG_APPROXIMATE].s;
    gelu_form form;
    if (approximate && strcmp(approximate, "none") == 0) form = GELU_EXACT;
    else if (approximate && strcmp(approximate, "tanh") == 0) form = GELU_TANH;
    else
        return rx_fail(ctx, "approximate must be 'none' or 'tanh', got '%s'",
                       approximate ? approximate : "(nothing)");
    if (layer_elementwise_info(ctx, in, 0, info) != 0) return -1;
    info->per_sample = true;  /* elementwise; self (the formula) only read */
    return plugin_new_self(self, ctx, &(gelu){ .form = form }, sizeof(gelu));
}

static int gelu_forward_cpu(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w,
                            rx_tensor *y, void *state)
{
    const gelu *s = self;
    const float *restrict in = x->data;  /* (N, ...) */
    float *restrict out = y->data;       /* (N, ...) */
    const size_t n = (size_t)rx_numel(x->shape);
    if (s->form == GELU_TANH) THREADS_ELEMENTWISE(ctx, n, i, out[i] = gelu_tanh(in[i]));
    else THREADS_ELEMENTWISE(ctx, n, i, out[i] = gelu_exact(in[i]));
    return 0;
}

static int gelu_backward_cpu(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y,
                             const rx_tensor *dy, const rx_tensor *w, const void *state,
                             rx_tensor *dx, rx_tensor *dw)
{
    if (!dx) return 0;
    const gelu *s = self;
    const float *restrict in = x->data;  /* (N, ...) */
    const float *restrict g = dy->data;  /* (N, ...) */
    float *restrict out = dx->data;      /* (N, ...) */
    const size_t n = (size_t)rx_numel(x->shape);
    if (s->form == GELU_TANH) THREADS_ELEMENTWISE(ctx, n, i, out[i] = g[i] * gelu_tanh_grad(in[i]));
    else THREADS_ELEMENTWISE(ctx, n, i, out[i] = g[i] * gelu_exact_grad(in[i]));
    return 0;
}

/* The formula of the header comment (onnx_nodes.h: opset 17 has no Gelu). */
static int gelu_export_onnx(void *self, rx_ctx *ctx, rx_onnx *g)
{
    const gelu *s = self;
    return onnx_gelu(ctx, g, g->input, g->output, s->form == GELU_TANH);
}

static const rx_plugin desc = {
    .abi = RX_ABI_VERSION,
    .size = sizeof(rx_plugin),
    .kind = RX_LAYER,
    .name = "gelu",
    .summary = "Gaussian error linear unit x * Phi(x), exact or tanh form, like torch.nn.GELU",
    .params = params,
    .layer = {
        .create = gelu_create,
        .destroy = plugin_free_self,
#ifdef RX_WITH_CUDA
        .forward = { [RX_CPU] = gelu_forward_cpu, [RX_CUDA] = gelu_forward_cuda },
        .backward = { [RX_CPU] = gelu_backward_cpu, [RX_CUDA] = gelu_backward_cuda },
#else
        .forward = { [RX_CPU] = gelu_forward_cpu },
        .backward = { [RX_CPU] = gelu_backward_cpu },
#endif
        .export_onnx = gelu_export_onnx,
    },
};

RX_EXPORT(gelu) { return &desc; }
