/* relu.c: rectified linear unit, y = max(x, 0), elementwise on any shape.
 * Stateless: backward masks dy with x > 0, so it needs neither self nor state. Both passes are one
 * vectorized loop, split across ctx->threads when the tensor is large enough to pay for it;
 * elementwise, so the result never depends on the thread count. CUDA path: relu.cu. */
#include <stdlib.h>

#include "relu.h"
#include "threads.h"

static const rx_param params[] = { { 0 } };

static int relu_create(void **self, rx_ctx *ctx, const rx_value *args, rx_shape in,
                       rx_layer_info *info)
{
    if (in.ndim < 1)
        return rx_fail(ctx, "expects a per-sample input with at least 1 dimension, got 0");
    info->out = in;
    info->ntensors = 0;
    info->state_bytes = 0;
    info->workspace_bytes = 0;
    return 0;
}

static int relu_forward_cpu(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w,
                            rx_tensor *y, void *state)
{
    const float *restrict in = x->data;  /* (N, ...) */
    float *restrict out = y->data;       /* (N, ...) */
    const size_t n = (size_t)rx_numel(x->shape);
    const int threads = threads_for(ctx, n, THREADS_MIN_WORK);
    (void)threads;  /* read only by the pragma, which a build without OpenMP ignores */
#pragma omp parallel for simd num_threads(threads) schedule(static)
    for (size_t i = 0; i < n; i++) out[i] = in[i] > 0.0f ? in[i] : 0.0f;
    return 0;
}

static int relu_backward_cpu(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y,
                             const rx_tensor *dy, const rx_tensor *w, const void *state,
                             rx_tensor *dx, rx_tensor *dw)
{
    if (!dx) return 0;
    const float *restrict in = x->data;  /* (N, ...) */
    const float *restrict g = dy->data;  /* (N, ...) */
    float *restrict out = dx->data;      /* (N, ...) */
    const size_t n = (size_t)rx_numel(x->shape);
    const int threads = threads_for(ctx, n, THREADS_MIN_WORK);
    (void)threads;  /* read only by the pragma, which a build without OpenMP ignores */
#pragma omp parallel for simd num_threads(threads) schedule(static)
    for (size_t i = 0; i < n; i++) out[i] = in[i] > 0.0f ? g[i] : 0.0f;
    return 0;
}

static const rx_plugin desc = {
    .abi = RX_ABI_VERSION,
    .size = sizeof(rx_plugin),
    .kind = RX_LAYER,
    .name = "relu",
    .summary = "rectified linear unit max(x, 0), like torch.nn.ReLU",
    .params = params,
    .layer = {
        .create = relu_create,
        .destroy = NULL,
#ifdef RX_WITH_CUDA
        .forward = { [RX_CPU] = relu_forward_cpu, [RX_CUDA] = relu_forward_cuda },
        .backward = { [RX_CPU] = relu_backward_cpu, [RX_CUDA] = relu_backward_cuda },
#else
        .forward = { [RX_CPU] = relu_forward_cpu },
        .backward = { [RX_CPU] = relu_backward_cpu },
#endif
    },
};

RX_EXPORT(relu) { return &desc; }
