/* onnx_nodes.h: what the in-tree layers' export_onnx operations do alike with the host's ONNX
 * builder (rx_onnx, runexp.h): add a node and say so when it cannot, add a scalar constant. */
#ifndef RX_COMMON_ONNX_NODES_H
#define RX_COMMON_ONNX_NODES_H

#include <stdbool.h>

#include "runexp.h"

/* op(inputs) -> output with attributes; 0, or -1 after rx_fail. */
int onnx_op(rx_ctx *ctx, rx_onnx *g, const char *op, const char *const *inputs, int ninputs, const char *output,
            const rx_onnx_attr *attrs, int nattrs);
/* op(g->input) -> g->output, no attributes: the whole export of a one-operator layer. */
int onnx_unary(rx_ctx *ctx, rx_onnx *g, const char *op);
/* A float32 scalar constant's name, or NULL after rx_fail. */
const char *onnx_scalar(rx_ctx *ctx, rx_onnx *g, float v);
/* A fresh value name, or NULL after rx_fail. */
const char *onnx_temp(rx_ctx *ctx, rx_onnx *g);
/* GELU of value x into output, from Erf (or Tanh, tanh_form), Mul and Add, since opset 17 has no
 * Gelu: 0.5 x (1 + erf(x / sqrt(2))), or gelu_math.h's tanh form. 0, or -1 after rx_fail. */
int onnx_gelu(rx_ctx *ctx, rx_onnx *g, const char *x, const char *output, bool tanh_form);

#endif
