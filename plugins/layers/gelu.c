/* gelu.c: Gaussian error linear unit, like torch.nn.GELU, elementwise on any shape.
 *     approximate = "none" (default): y = x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2)))
 *     approximate = "tanh":           y = 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))
 * Both passes follow PyTorch's CPU kernels expression for expression, in float. Backward needs
 * only x, so there is no state; self holds the formula. Split across ctx->threads when the tensor
 * is large enough to pay for it; elementwise, so the result never depends on the thread count.
 * CUDA path: gelu.cu, with the same expressions (CUDA's erff and tanhf may differ from the C
 * library's in the last bit or two, so the devices agree to a few ulp, not to the bit). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gelu.h"

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
    if (in.ndim < 1)
        return rx_fail(ctx, "expects a per-sample input with at least 1 dimension, got 0");
    gelu *s = malloc(sizeof *s);
    if (!s) return rx_fail(ctx, "out of memory");
    *s = (gelu){ .form = form };
    info->out = in;
    info->ntensors = 0;
    info->state_bytes = 0;
    info->workspace_bytes = 0;
    *self = s;
    return 0;
}

static void gelu_destroy(void *self) { free(self); }

/* Threads for a pass over n floats: a parallel region costs a few microseconds, about what 4K
 * erff or tanhf calls take (each some ten times a relu element), so smaller tensors stay on one. */
static int gelu_threads(const rx_ctx *ctx, size_t n)
{
    return n >= 4096 && ctx->threads > 1 ? ctx->threads : 1;
}

/* The formulas, one element each; gelu.cu has the same expressions. */
static inline float gelu_exact(float v)
{
    return v * 0.5f * (1.0f + erff(v * GELU_SQRT1_2));
}

static inline float gelu_tanh(float v)
{
    const float inner = GELU_SQRT_2_OVER_PI * (v + GELU_KAPPA * (v * v * v));
    return 0.5f * v * (1.0f + tanhf(inner));
}

/* d/dx x Phi(x) = Phi(x) + x phi(x). */
static inline float gelu_exact_grad(float v)
{
    const float cdf = 0.5f * (1.0f + erff(v * GELU_SQRT1_2));
    const float pdf = GELU_INV_SQRT_2PI * expf(-0.5f * v * v);
    return cdf + v * pdf;
}

/* d/dx 0.5 x (1 + t), t = tanh(u(x)): 0.5 (1 + t) + 0.5 x (1 - t^2) u'(x), with
 * u'(x) = sqrt(2 / pi) (1 + 3 * 0.044715 x^2). */
static inline float gelu_tanh_grad(float v)
{
    const float v2 = v * v;
    const float t = tanhf(GELU_SQRT_2_OVER_PI * (v + GELU_KAPPA * (v2 * v)));
    const float left = 0.5f * v, right = 1.0f + t;
    return 0.5f * right + left * (1.0f - t * t) * (GELU_SQRT_2_OVER_PI * (1.0f + 3.0f * GELU_KAPPA * v2));
}

static int gelu_forward_cpu(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w,
                            rx_tensor *y, void *state)
{
    const gelu *s = self;
    const float *restrict in = x->data;  /* (N, ...) */
    float *restrict out = y->data;       /* (N, ...) */
    const size_t n = (size_t)rx_numel(x->shape);
    const int threads = gelu_threads(ctx, n);
    (void)threads;  /* read only by the pragmas, which a build without OpenMP ignores */
    if (s->form == GELU_TANH) {
#pragma omp parallel for num_threads(threads) schedule(static)
        for (size_t i = 0; i < n; i++) out[i] = gelu_tanh(in[i]);
    } else {
#pragma omp parallel for num_threads(threads) schedule(static)
        for (size_t i = 0; i < n; i++) out[i] = gelu_exact(in[i]);
    }
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
    const int threads = gelu_threads(ctx, n);
    (void)threads;  /* read only by the pragmas, which a build without OpenMP ignores */
    if (s->form == GELU_TANH) {
#pragma omp parallel for num_threads(threads) schedule(static)
        for (size_t i = 0; i < n; i++) out[i] = g[i] * gelu_tanh_grad(in[i]);
    } else {
#pragma omp parallel for num_threads(threads) schedule(static)
        for (size_t i = 0; i < n; i++) out[i] = g[i] * gelu_exact_grad(in[i]);
    }
    return 0;
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
        .destroy = gelu_destroy,
#ifdef RX_WITH_CUDA
        .forward = { [RX_CPU] = gelu_forward_cpu, [RX_CUDA] = gelu_forward_cuda },
        .backward = { [RX_CPU] = gelu_backward_cpu, [RX_CUDA] = gelu_backward_cuda },
#else
        .forward = { [RX_CPU] = gelu_forward_cpu },
        .backward = { [RX_CPU] = gelu_backward_cpu },
#endif
    },
};

RX_EXPORT(gelu) { return &desc; }
