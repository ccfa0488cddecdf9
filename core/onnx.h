/* onnx.h: an ONNX model (https://onnx.ai/onnx/repo-docs/IR.html) built node by node and written
 * in protobuf's wire format (protobuf.h), with field numbers from ONNX's published IR spec. The
 * graph is what `runexp export` fills: it hands layer plugins an rx_onnx builder (runexp.h) whose
 * functions land here, and adds the initializers, the normalization and residual sums itself. */
#ifndef RUNEXP_ONNX_H
#define RUNEXP_ONNX_H

#include "files.h"
#include "runexp.h"

/* The opsets `runexp export --opset` accepts: 17 (the first with everything the in-tree layers
 * need in the form they use) up to the newest this file knows the IR version for. */
#define ONNX_OPSET_MIN 17
#define ONNX_OPSET_MAX 22

typedef struct onnx_graph {
    strbuf body;           /* GraphProto fields so far: nodes and initializers, in the order added */
    char **names;          /* every name handed out (temporaries, constants), freed with the graph */
    int nnames, capnames;
    int temps;             /* temporaries named so far, for unique names */
    char prefix[64];       /* the layer being exported (its checkpoint path), for temporaries' names */
    bool same;             /* the layer called rx_onnx.same: its output is its input */
    bool oom;              /* a name could not be allocated */
} onnx_graph;

void onnx_graph_free(onnx_graph *g);
/* A copy of name that lives as long as g; NULL (and g->oom) when out of memory. */
const char *onnx_keep_name(onnx_graph *g, const char *name);
/* A builder for one layer, whose functions add to g: opset, in, input and output set; tensors
 * left for the caller. Resets g->same; temporaries are named "<prefix>.tK". */
void onnx_builder(onnx_graph *g, rx_onnx *b, int opset, const char *prefix);

/* The builder's operations, for the host's own nodes (see rx_onnx in runexp.h). */
int onnx_node(onnx_graph *g, const char *op_type, const char *const *inputs, int ninputs, const char *output,
              const rx_onnx_attr *attrs, int nattrs);
const char *onnx_constant(onnx_graph *g, rx_shape shape, const float *data);
/* A float32 initializer named `name`. */
void onnx_initializer(onnx_graph *g, const char *name, rx_shape shape, const float *data);

/* The model around g: one float32 input named input shaped (N, in...) and one output named
 * output shaped (N, out...), the batch a symbolic "N", declaring opset `opset` of the default
 * domain. Appends the ModelProto's bytes to model; -1 when out of memory (err says so). */
int onnx_model(const onnx_graph *g, int opset, const char *input, rx_shape in, const char *output, rx_shape out,
               strbuf *model, char *err);

#endif
