/* net.c: building, initializing and running a sequential network of layer plugins. */
#include "net.h"

#include <stdlib.h>
#include <string.h>

#include "crash.h"
#include "device.h"

static int shape_ok(rx_shape s)
{
    if (s.ndim < 1 || s.ndim > RX_MAX_DIMS - 1) return 0;
    for (int i = 0; i < s.ndim; i++)
        if (s.d[i] < 1) return 0;
    return 1;
}

void shape_format(rx_shape s, char *buf, size_t len)
{
    size_t used = (size_t)snprintf(buf, len, "(");
    for (int i = 0; i < s.ndim && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s%lld", i ? ", " : "", (long long)s.d[i]);
    if (used < len) snprintf(buf + used, len - used, ")");
}

/* (N, s...) */
static rx_shape batched(int64_t n, rx_shape s)
{
    rx_shape b = { .ndim = s.ndim + 1, .d = { n } };
    for (int i = 0; i < s.ndim; i++) b.d[i + 1] = s.d[i];
    return b;
}

const char *layer_info_problem(const rx_layer_info *info)
{
    if (!shape_ok(info->out)) return "create reported an invalid output shape";
    if (info->ntensors < 0 || info->ntensors > RX_MAX_TENSORS) return "create reported an invalid tensor count";
    for (int t = 0; t < info->ntensors; t++) {
        const rx_tensor_decl *d = &info->tensors[t];
        if (!d->name || !*d->name) return "create declared a tensor without a name";
        if (d->shape.ndim < 1 || d->shape.ndim > RX_MAX_DIMS) return "create declared a tensor of invalid rank";
        for (int i = 0; i < d->shape.ndim; i++)
            if (d->shape.d[i] < 1) return "create declared a tensor with an empty dimension";
    }
    return NULL;
}

int net_build(net *nt, rx_ctx *ctx, const config *c, rx_shape in, int64_t max_batch, char *err)
{
    memset(nt, 0, sizeof *nt);
    nt->device = ctx->device;
    nt->max_batch = max_batch;
    nt->in = in;
    nt->layers = calloc((size_t)c->nlayers, sizeof *nt->layers);
    if (!nt->layers) goto oom;
    nt->n = c->nlayers;

    /* Shapes first: every layer created, so that one allocation can hold all parameters. */
    rx_shape shape = in;
    size_t max_act = (size_t)rx_numel(in);
    for (int i = 0; i < nt->n; i++) {
        layer *l = &nt->layers[i];
        l->use = &c->layers[i];
        l->in = shape;
        ctx->err[0] = '\0';
        crash_enter(l->use->where, "create");
        int created = l->use->pl.desc->layer.create(&l->self, ctx, l->use->args, shape, &l->info);
        crash_leave();
        if (created != 0) {
            char s[96];
            shape_format(shape, s, sizeof s);
            snprintf(err, ERR_LEN, "%s: %s: %s (input shape %s)", c->file, l->use->where,
                     ctx->err[0] ? ctx->err : "create failed", s);
            return -1;
        }
        const char *why = layer_info_problem(&l->info);
        if (why) {
            snprintf(err, ERR_LEN, "%s: %s: plugin error: %s", c->file, l->use->where, why);
            return -1;
        }
        if (!l->use->pl.desc->layer.forward[nt->device]) {
            snprintf(err, ERR_LEN, "%s: %s: the plugin has no %s implementation", c->file, l->use->where,
                     device_name(nt->device));
            return -1;
        }
        for (int t = 0; t < l->info.ntensors; t++) nt->nparams += (size_t)rx_numel(l->info.tensors[t].shape);
        size_t ws = l->info.workspace_bytes * (size_t)max_batch;
        if (ws > nt->workspace_bytes) nt->workspace_bytes = ws;
        shape = l->info.out;
        if ((size_t)rx_numel(shape) > max_act) max_act = (size_t)rx_numel(shape);
    }
    nt->out = shape;

    /* Then memory, all of it now, none per batch. */
    nt->params = device_alloc(nt->device, nt->nparams * sizeof(float));
    nt->grads = device_alloc(nt->device, nt->nparams * sizeof(float));
    nt->workspace = device_alloc(nt->device, nt->workspace_bytes);
    for (int k = 0; k < 2; k++) nt->dbuf[k] = device_alloc(nt->device, max_act * (size_t)max_batch * sizeof(float));
    if (!nt->params || !nt->grads || !nt->workspace || !nt->dbuf[0] || !nt->dbuf[1]) goto oom;
    size_t offset = 0;
    for (int i = 0; i < nt->n; i++) {
        layer *l = &nt->layers[i];
        int nt_ = l->info.ntensors;
        l->w = calloc((size_t)(nt_ ? nt_ : 1), sizeof *l->w);
        l->dw = calloc((size_t)(nt_ ? nt_ : 1), sizeof *l->dw);
        l->out = device_alloc(nt->device, (size_t)rx_numel(l->info.out) * (size_t)max_batch * sizeof(float));
        l->state = device_alloc(nt->device, l->info.state_bytes * (size_t)max_batch);
        if (!l->w || !l->dw || !l->out || !l->state) goto oom;
        for (int t = 0; t < nt_; t++) {
            rx_shape s = l->info.tensors[t].shape;
            l->w[t] = (rx_tensor){ .data = nt->params + offset, .shape = s, .device = nt->device };
            l->dw[t] = (rx_tensor){ .data = nt->grads + offset, .shape = s, .device = nt->device };
            offset += (size_t)rx_numel(s);
        }
    }
    ctx->workspace = nt->workspace;
    ctx->workspace_bytes = nt->workspace_bytes;
    return 0;
oom:
    snprintf(err, ERR_LEN, "%s: out of memory building the network (batch %lld)", c->file, (long long)max_batch);
    return -1;
}

void net_free(net *nt)
{
    for (int i = 0; i < nt->n; i++) {
        layer *l = &nt->layers[i];
        if (l->use && l->use->pl.desc->layer.destroy) l->use->pl.desc->layer.destroy(l->self);
        free(l->w);
        free(l->dw);
        device_free(nt->device, l->out);
        device_free(nt->device, l->state);
    }
    free(nt->layers);
    device_free(nt->device, nt->params);
    device_free(nt->device, nt->grads);
    device_free(nt->device, nt->workspace);
    for (int k = 0; k < 2; k++) device_free(nt->device, nt->dbuf[k]);
    memset(nt, 0, sizeof *nt);
}

int net_init_params(net *nt, uint64_t seed, char *err)
{
    float *host = malloc((nt->nparams ? nt->nparams : 1) * sizeof(float));
    if (!host) {
        snprintf(err, ERR_LEN, "out of memory initializing %zu parameters", nt->nparams);
        return -1;
    }
    rx_rng rng = rx_rng_stream(seed, 0x1417);
    size_t at = 0;
    for (int i = 0; i < nt->n; i++)
        for (int t = 0; t < nt->layers[i].info.ntensors; t++) {
            const rx_tensor_decl *d = &nt->layers[i].info.tensors[t];
            size_t n = (size_t)rx_numel(d->shape);
            for (size_t k = 0; k < n; k++) {
                switch (d->init) {
                case RX_INIT_ZEROS: host[at + k] = 0.0f; break;
                case RX_INIT_ONES: host[at + k] = 1.0f; break;
                case RX_INIT_UNIFORM: host[at + k] = d->scale * (2.0f * rx_rng_uniform(&rng) - 1.0f); break;
                }
            }
            at += n;
        }
    host_to_device(nt->device, nt->params, host, nt->nparams * sizeof(float));
    free(host);
    return 0;
}

void net_zero_grads(net *nt)
{
    device_zero(nt->device, nt->grads, nt->nparams * sizeof(float));
}

static int layer_failed(const layer *l, const rx_ctx *ctx, const char *op, char *err)
{
    snprintf(err, ERR_LEN, "%s: %s failed: %s", l->use->where, op, ctx->err[0] ? ctx->err : "no reason given");
    return -1;
}

int net_forward(net *nt, rx_ctx *ctx, const rx_tensor *x, rx_tensor *logits, char *err)
{
    int64_t n = x->shape.d[0];
    rx_tensor in = *x;
    for (int i = 0; i < nt->n; i++) {
        layer *l = &nt->layers[i];
        rx_tensor out = { .data = l->out, .shape = batched(n, l->info.out), .device = nt->device };
        ctx->err[0] = '\0';
        crash_enter(l->use->where, "forward");
        int rc = l->use->pl.desc->layer.forward[nt->device](l->self, ctx, &in, l->w, &out, l->state);
        crash_leave();
        if (rc != 0) return layer_failed(l, ctx, "forward", err);
        in = out;
    }
    *logits = in;
    return 0;
}

int net_backward(net *nt, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *dlogits, char *err)
{
    int64_t n = x->shape.d[0];
    rx_tensor dy = *dlogits, dx;
    int k = 0;
    for (int i = nt->n - 1; i >= 0; i--) {
        layer *l = &nt->layers[i];
        rx_tensor in = i > 0 ? (rx_tensor){ .data = nt->layers[i - 1].out, .shape = batched(n, l->in), .device = nt->device }
                             : *x;
        rx_tensor out = { .data = l->out, .shape = batched(n, l->info.out), .device = nt->device };
        /* The first layer's input gradient is never needed: skip it. */
        dx = (rx_tensor){ .data = nt->dbuf[k], .shape = batched(n, l->in), .device = nt->device };
        ctx->err[0] = '\0';
        crash_enter(l->use->where, "backward");
        int rc = l->use->pl.desc->layer.backward[nt->device](l->self, ctx, &in, &out, &dy, l->w, l->state,
                                                              i > 0 ? &dx : NULL, l->dw);
        crash_leave();
        if (rc != 0) return layer_failed(l, ctx, "backward", err);
        dy = dx;
        k ^= 1;
    }
    return 0;
}

void net_tensor_name(const net *nt, int index, int tensor, char *buf, size_t len)
{
    const layer *l = &nt->layers[index];
    snprintf(buf, len, "%d.%s", l->use->index, l->info.tensors[tensor].name);
}
