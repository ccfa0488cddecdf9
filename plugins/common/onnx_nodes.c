/* onnx_nodes.c: the in-tree layers' common ONNX steps (see onnx_nodes.h). */
#include "onnx_nodes.h"

int onnx_op(rx_ctx *ctx, rx_onnx *g, const char *op, const char *const *inputs, int ninputs, const char *output,
            const rx_onnx_attr *attrs, int nattrs)
{
    if (g->node(g, op, inputs, ninputs, &output, 1, attrs, nattrs) != 0)
        return rx_fail(ctx, "out of memory adding an ONNX %s node", op);
    return 0;
}

int onnx_unary(rx_ctx *ctx, rx_onnx *g, const char *op)
{
    return onnx_op(ctx, g, op, &g->input, 1, g->output, NULL, 0);
}

const char *onnx_scalar(rx_ctx *ctx, rx_onnx *g, float v)
{
    const float value[1] = { v };
    const rx_shape scalar = { .ndim = 0 };
    const char *name = g->constant(g, scalar, value); /* copied into the graph */
    if (!name) rx_fail(ctx, "out of memory adding an ONNX constant");
    return name;
}

const char *onnx_temp(rx_ctx *ctx, rx_onnx *g)
{
    const char *name = g->temp(g);
    if (!name) rx_fail(ctx, "out of memory naming an ONNX value");
    return name;
}
