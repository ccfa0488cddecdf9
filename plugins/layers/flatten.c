/* flatten.c: reshapes each sample, typically (C, H, W), into a vector (C*H*W), like
 * torch.nn.Flatten. Row-major data is already in that order, so both passes are plain copies.
 * CUDA path: flatten.cu (device-to-device copies). */
#include <string.h>

#include "flatten.h"
#include "onnx_nodes.h"

static const rx_param params[] = { { 0 } };

static int flatten_create(void **self, rx_ctx *ctx, const rx_value *args, rx_shape in,
                          rx_layer_info *info)
{
    if (in.ndim < 1)
        return rx_fail(ctx, "expects a per-sample input with at least 1 dimension, got 0");
    info->out = (rx_shape){ .ndim = 1, .d = { rx_numel(in) } };
    info->ntensors = 0;
    info->state_bytes = 0;
    info->workspace_bytes = 0;
    info->per_sample = true;  /* a copy, no self */
    return 0;
}

static int flatten_forward_cpu(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w,
                               rx_tensor *y, void *state)
{
    /* (N, C, H, W) -> (N, C*H*W) */
    if (y->data != x->data) memcpy(y->data, x->data, sizeof(float) * (size_t)rx_numel(x->shape));
    return 0;
}

static int flatten_backward_cpu(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y,
                                const rx_tensor *dy, const rx_tensor *w, const void *state,
                                rx_tensor *dx, rx_tensor *dw)
{
    /* (N, C*H*W) -> (N, C, H, W) */
    if (dx && dx->data != dy->data)
        memcpy(dx->data, dy->data, sizeof(float) * (size_t)rx_numel(dy->shape));
    return 0;
}

/* Flatten at axis 1: (N, ...) -> (N, numel). */
static int flatten_export_onnx(void *self, rx_ctx *ctx, rx_onnx *g)
{
    const rx_onnx_attr axis = { .name = "axis", .type = RX_ATTR_INT, .i = 1 };
    return onnx_op(ctx, g, "Flatten", &g->input, 1, g->output, &axis, 1);
}

static const rx_plugin desc = {
    .abi = RX_ABI_VERSION,
    .size = sizeof(rx_plugin),
    .kind = RX_LAYER,
    .name = "flatten",
    .summary = "reshapes each sample (C, H, W) to (C*H*W), like torch.nn.Flatten",
    .params = params,
    .layer = {
        .create = flatten_create,
        .destroy = NULL,
#ifdef RX_WITH_CUDA
        .forward = { [RX_CPU] = flatten_forward_cpu, [RX_CUDA] = flatten_forward_cuda },
        .backward = { [RX_CPU] = flatten_backward_cpu, [RX_CUDA] = flatten_backward_cuda },
#else
        .forward = { [RX_CPU] = flatten_forward_cpu },
        .backward = { [RX_CPU] = flatten_backward_cpu },
#endif
        .export_onnx = flatten_export_onnx,
    },
};

RX_EXPORT(flatten) { return &desc; }
