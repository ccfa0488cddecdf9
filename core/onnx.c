/* onnx.c: an ONNX graph built node by node and the model around it, in protobuf's wire format
 * (see onnx.h). Field numbers are those of onnx.proto as the IR spec publishes them; proto2's
 * repeated numbers are written one field each (unpacked), which every reader accepts. */
#include "onnx.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protobuf.h"
#include "script.h"

/* ModelProto, GraphProto, NodeProto, AttributeProto, TensorProto, ValueInfoProto, TypeProto. */
enum { MODEL_IR_VERSION = 1, MODEL_PRODUCER_NAME = 2, MODEL_PRODUCER_VERSION = 3,
       MODEL_GRAPH = 7, MODEL_OPSET_IMPORT = 8 };
enum { OPSET_DOMAIN = 1, OPSET_VERSION = 2 };
enum { GRAPH_NODE = 1, GRAPH_NAME = 2, GRAPH_INITIALIZER = 5, GRAPH_INPUT = 11, GRAPH_OUTPUT = 12 };
enum { NODE_INPUT = 1, NODE_OUTPUT = 2, NODE_OP_TYPE = 4, NODE_ATTRIBUTE = 5 };
enum { ATTR_NAME = 1, ATTR_F = 2, ATTR_I = 3, ATTR_S = 4, ATTR_INTS = 8, ATTR_TYPE = 20 };
enum { ATTR_TYPE_FLOAT = 1, ATTR_TYPE_INT = 2, ATTR_TYPE_STRING = 3, ATTR_TYPE_INTS = 7 };
enum { TENSOR_DIMS = 1, TENSOR_DATA_TYPE = 2, TENSOR_NAME = 8, TENSOR_RAW_DATA = 9 };
enum { DTYPE_FLOAT = 1, DTYPE_INT64 = 7 };
enum { VALUE_NAME = 1, VALUE_TYPE = 2, TYPE_TENSOR = 1, TENSOR_TYPE_ELEM = 1, TENSOR_TYPE_SHAPE = 2,
       SHAPE_DIM = 1, DIM_VALUE = 1, DIM_PARAM = 2 };

void onnx_graph_free(onnx_graph *g)
{
    sb_free(&g->body);
    for (int i = 0; i < g->nnames; i++) free(g->names[i]);
    free(g->names);
    memset(g, 0, sizeof *g);
}

const char *onnx_keep_name(onnx_graph *g, const char *name)
{
    if (g->nnames == g->capnames) {
        int cap = g->capnames ? 2 * g->capnames : 64;
        char **names = realloc(g->names, sizeof *names * (size_t)cap);
        if (!names) return g->oom = true, NULL;
        g->names = names;
        g->capnames = cap;
    }
    char *copy = strdup(name);
    if (!copy) return g->oom = true, NULL;
    g->names[g->nnames++] = copy;
    return copy;
}

static const char *new_temp(onnx_graph *g)
{
    char name[96];
    snprintf(name, sizeof name, "%s.t%d", g->prefix, ++g->temps);
    return onnx_keep_name(g, name);
}

static void attribute(strbuf *b, const rx_onnx_attr *a)
{
    pb_field_string(b, ATTR_NAME, a->name ? a->name : "");
    switch (a->type) {
    case RX_ATTR_INT:
        pb_field_varint(b, ATTR_I, (uint64_t)a->i);
        pb_field_varint(b, ATTR_TYPE, ATTR_TYPE_INT);
        break;
    case RX_ATTR_FLOAT:
        pb_field_float(b, ATTR_F, a->f);
        pb_field_varint(b, ATTR_TYPE, ATTR_TYPE_FLOAT);
        break;
    case RX_ATTR_INTS:
        for (int k = 0; k < a->nints && k < RX_ONNX_MAX_INTS; k++) pb_field_varint(b, ATTR_INTS, (uint64_t)a->ints[k]);
        pb_field_varint(b, ATTR_TYPE, ATTR_TYPE_INTS);
        break;
    case RX_ATTR_STRING:
        pb_field_string(b, ATTR_S, a->s ? a->s : "");
        pb_field_varint(b, ATTR_TYPE, ATTR_TYPE_STRING);
        break;
    }
}

/* NodeProto: inputs, outputs, op_type, attributes; appended to the graph as field 1. */
static int add_node(onnx_graph *g, const char *op_type, const char *const *inputs, int ninputs,
                    const char *const *outputs, int noutputs, const rx_onnx_attr *attrs, int nattrs)
{
    strbuf node = { 0 };
    for (int i = 0; i < ninputs; i++) pb_field_string(&node, NODE_INPUT, inputs[i] ? inputs[i] : "");
    for (int i = 0; i < noutputs; i++) pb_field_string(&node, NODE_OUTPUT, outputs[i] ? outputs[i] : "");
    pb_field_string(&node, NODE_OP_TYPE, op_type ? op_type : "");
    for (int i = 0; i < nattrs; i++) {
        strbuf a = { 0 };
        attribute(&a, &attrs[i]);
        pb_field_message(&node, NODE_ATTRIBUTE, &a);
        sb_free(&a);
    }
    pb_field_message(&g->body, GRAPH_NODE, &node);
    sb_free(&node);
    return g->body.oom ? -1 : 0;
}

int onnx_node(onnx_graph *g, const char *op_type, const char *const *inputs, int ninputs, const char *output,
              const rx_onnx_attr *attrs, int nattrs)
{
    return add_node(g, op_type, inputs, ninputs, &output, 1, attrs, nattrs);
}

/* TensorProto: dims, type, name, the values as raw little-endian bytes. */
static void tensor(onnx_graph *g, const char *name, int dtype, int ndim, const int64_t *dims, const void *data,
                   size_t bytes)
{
    strbuf t = { 0 };
    for (int i = 0; i < ndim; i++) pb_field_varint(&t, TENSOR_DIMS, (uint64_t)dims[i]);
    pb_field_varint(&t, TENSOR_DATA_TYPE, (uint64_t)dtype);
    pb_field_string(&t, TENSOR_NAME, name);
    pb_field_bytes(&t, TENSOR_RAW_DATA, data, bytes);
    pb_field_message(&g->body, GRAPH_INITIALIZER, &t);
    sb_free(&t);
}

void onnx_initializer(onnx_graph *g, const char *name, rx_shape shape, const float *data)
{
    tensor(g, name, DTYPE_FLOAT, shape.ndim, shape.d, data, (size_t)rx_numel(shape) * sizeof(float));
}

const char *onnx_constant(onnx_graph *g, rx_shape shape, const float *data)
{
    const char *name = new_temp(g);
    if (name) onnx_initializer(g, name, shape, data);
    return g->body.oom ? NULL : name;
}

static const char *onnx_ints(onnx_graph *g, int n, const int64_t *values)
{
    const char *name = new_temp(g);
    const int64_t dims[1] = { n };
    if (name) tensor(g, name, DTYPE_INT64, 1, dims, values, (size_t)n * sizeof(int64_t));
    return g->body.oom ? NULL : name;
}

/* ---- The rx_onnx a plugin sees: each function finds the graph in b->host ---- */

static int b_node(rx_onnx *b, const char *op_type, const char *const *inputs, int ninputs,
                  const char *const *outputs, int noutputs, const rx_onnx_attr *attrs, int nattrs)
{
    return add_node(b->host, op_type, inputs, ninputs, outputs, noutputs, attrs, nattrs);
}

static const char *b_constant(rx_onnx *b, rx_shape shape, const float *data)
{
    return onnx_constant(b->host, shape, data);
}

static const char *b_ints(rx_onnx *b, int n, const int64_t *values) { return onnx_ints(b->host, n, values); }
static const char *b_temp(rx_onnx *b) { return new_temp(b->host); }
static void b_same(rx_onnx *b) { ((onnx_graph *)b->host)->same = true; }

void onnx_builder(onnx_graph *g, rx_onnx *b, int opset, const char *prefix)
{
    snprintf(g->prefix, sizeof g->prefix, "%s", prefix);
    g->same = false;
    *b = (rx_onnx){ .host = g, .opset = opset, .node = b_node, .constant = b_constant, .ints = b_ints,
                    .temp = b_temp, .same = b_same };
}

/* ---- The model ---- */

/* ValueInfoProto of a float32 tensor (N, s...), N symbolic. */
static void value_info(strbuf *graph, int field, const char *name, rx_shape s)
{
    strbuf shape = { 0 }, dim = { 0 }, tt = { 0 }, type = { 0 }, info = { 0 };
    pb_field_string(&dim, DIM_PARAM, "N");
    pb_field_message(&shape, SHAPE_DIM, &dim);
    for (int i = 0; i < s.ndim; i++) {
        dim.len = 0;
        pb_field_varint(&dim, DIM_VALUE, (uint64_t)s.d[i]);
        pb_field_message(&shape, SHAPE_DIM, &dim);
    }
    pb_field_varint(&tt, TENSOR_TYPE_ELEM, DTYPE_FLOAT);
    pb_field_message(&tt, TENSOR_TYPE_SHAPE, &shape);
    pb_field_message(&type, TYPE_TENSOR, &tt);
    pb_field_string(&info, VALUE_NAME, name);
    pb_field_message(&info, VALUE_TYPE, &type);
    pb_field_message(graph, field, &info);
    strbuf *all[] = { &shape, &dim, &tt, &type, &info };
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) sb_free(all[i]);
}

/* The IR version each opset came with (onnx/onnx docs/Versioning.md): a reader checks both. */
static int ir_version(int opset)
{
    return opset <= 18 ? 8 : opset <= 20 ? 9 : 10;
}

int onnx_model(const onnx_graph *g, int opset, const char *input, rx_shape in, const char *output, rx_shape out,
               strbuf *model, char *err)
{
    strbuf graph = { 0 }, ops = { 0 };
    sb_append(&graph, g->body.s ? g->body.s : "", g->body.len);
    if (g->body.oom || g->oom) graph.oom = true;
    pb_field_string(&graph, GRAPH_NAME, "runexp");
    value_info(&graph, GRAPH_INPUT, input, in);
    value_info(&graph, GRAPH_OUTPUT, output, out);
    pb_field_string(&ops, OPSET_DOMAIN, "");
    pb_field_varint(&ops, OPSET_VERSION, (uint64_t)opset);
    pb_field_varint(model, MODEL_IR_VERSION, (uint64_t)ir_version(opset));
    pb_field_string(model, MODEL_PRODUCER_NAME, "runexp");
    pb_field_string(model, MODEL_PRODUCER_VERSION, RUNEXP_VERSION);
    pb_field_message(model, MODEL_OPSET_IMPORT, &ops);
    pb_field_message(model, MODEL_GRAPH, &graph);
    sb_free(&graph);
    sb_free(&ops);
    if (model->oom) return snprintf(err, ERR_LEN, "out of memory writing the ONNX model"), -1;
    return 0;
}
