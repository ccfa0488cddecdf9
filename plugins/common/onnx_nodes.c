/* onnx_nodes.c: the in-tree layers' common ONNX steps (see onnx_nodes.h). */
#include "onnx_nodes.h"

#include "gelu_math.h"

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

/* One node of a formula, op(in) into a new value *out (`output` when last). An input is NULL
 * when its constant could not be made (rx_fail said why). */
static int formula_node(rx_ctx *ctx, rx_onnx *g, const char *op, const char *const *in, int n, const char *output,
                        const char **out)
{
    for (int i = 0; i < n; i++)
        if (!in[i]) return -1;
    *out = output ? output : onnx_temp(ctx, g);
    return *out ? onnx_op(ctx, g, op, in, n, *out, NULL, 0) : -1;
}

int onnx_gelu(rx_ctx *ctx, rx_onnx *g, const char *x, const char *output, bool tanh_form)
{
    const char *t = NULL;
    int rc;
    if (tanh_form)
        rc = formula_node(ctx, g, "Mul", (const char *[]){ x, x }, 2, NULL, &t) ||
             formula_node(ctx, g, "Mul", (const char *[]){ t, x }, 2, NULL, &t) ||
             formula_node(ctx, g, "Mul", (const char *[]){ t, onnx_scalar(ctx, g, GELU_KAPPA) }, 2, NULL, &t) ||
             formula_node(ctx, g, "Add", (const char *[]){ x, t }, 2, NULL, &t) ||
             formula_node(ctx, g, "Mul", (const char *[]){ t, onnx_scalar(ctx, g, GELU_SQRT_2_OVER_PI) }, 2, NULL, &t) ||
             formula_node(ctx, g, "Tanh", (const char *[]){ t }, 1, NULL, &t);
    else
        rc = formula_node(ctx, g, "Mul", (const char *[]){ x, onnx_scalar(ctx, g, GELU_SQRT1_2) }, 2, NULL, &t) ||
             formula_node(ctx, g, "Erf", (const char *[]){ t }, 1, NULL, &t);
    /* 0.5 x (1 + erf(...)), or 0.5 x (1 + tanh(...)) */
    rc = rc || formula_node(ctx, g, "Add", (const char *[]){ t, onnx_scalar(ctx, g, 1.0f) }, 2, NULL, &t) ||
         formula_node(ctx, g, "Mul", (const char *[]){ x, t }, 2, NULL, &t) ||
         formula_node(ctx, g, "Mul", (const char *[]){ t, onnx_scalar(ctx, g, 0.5f) }, 2, output, &t);
    return rc ? -1 : 0;
}
