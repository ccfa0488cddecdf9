/* relu.c: rectified linear unit, y = max(x, 0), elementwise on any shape.
 * Stateless: backward masks dy with x > 0, so it needs neither self nor state. Both passes are one
 * vectorized loop, split across ctx->threads when the tensor is large enough to pay for it;
 * elementwise, so the result never depends on the thread count. CUDA path: relu.cu. */
#include "create.h"
#include "relu.h"
#include "threads.h"
#include "onnx_nodes.h"

static const rx_param params[] = { { 0 } };

static int relu_create(void **self, rx_ctx *ctx, const rx_value *args, rx_shape in,
                       rx_layer_info *info)
{
    if (layer_elementwise_info(ctx, in, 0, info) != 0) return -1;
    info->per_sample = true;  /* elementwise, no self */
    return 0;
}

static int relu_forward_cpu(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w,
                            rx_tensor *y, void *state)
{
    const float *restrict in = x->data;  /* (N, ...) */
    float *restrict out = y->data;       /* (N, ...) */
    THREADS_ELEMENTWISE(ctx, (size_t)rx_numel(x->shape), i, out[i] = in[i] > 0.0f ? in[i] : 0.0f);
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
    THREADS_ELEMENTWISE(ctx, (size_t)rx_numel(x->shape), i, out[i] = in[i] > 0.0f ? g[i] : 0.0f);
    return 0;
}

/* Relu, as in inference. */
static int relu_export_onnx(void *self, rx_ctx *ctx, rx_onnx *g) { return onnx_unary(ctx, g, "Relu"); }

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
        .export_onnx = relu_export_onnx,
        .traits = RX_TRAIT_MONOTONE, /* before a max-pool, the host runs it after: a quarter of the work */
    },
};

RX_EXPORT(relu) { return &desc; }
