/* net.c: building, initializing and running a sequential network of layer plugins. */
#include "net.h"

#include <math.h>
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

/* Checks the layer's tensor rules (lr_scale = {bias = ...}) against the tensors it declared. */
static int check_rules(const config *c, const layer *l, char *err)
{
    const plugin_use *u = l->use;
    for (int i = 0; i < u->nrules; i++) {
        const char *name = u->rules[i].tensor;
        if (strcmp(name, "*") == 0) continue;
        int found = -1;
        char have[256] = "";
        size_t used = 0;
        for (int t = 0; t < l->info.ntensors; t++) {
            if (l->info.tensors[t].buffer) continue;
            if (strcmp(l->info.tensors[t].name, name) == 0) found = t;
            used += (size_t)snprintf(have + used, sizeof have - used, "%s%s", used ? ", " : "", l->info.tensors[t].name);
        }
        if (found < 0) {
            snprintf(err, ERR_LEN, "%s: %s: a training rule names tensor '%s', which this layer does not train (it has: %s)",
                     c->file, u->where, name, used ? have : "no tensors");
            return -1;
        }
    }
    return 0;
}

/* The steps: each layer, with BEGIN before the layers that open residual blocks and END after
 * those that close them; the shapes of each block's ends must agree. */
static int build_steps(net *nt, const config *c, char *err)
{
    int n = 0;
    for (int i = 0; i < nt->n; i++) n += 1 + nt->layers[i].use->opens + nt->layers[i].use->closes;
    nt->steps = calloc((size_t)n, sizeof *nt->steps);
    if (!nt->steps) return snprintf(err, ERR_LEN, "%s: out of memory building the network", c->file), -1;
    int open[64], depth = 0;
    for (int i = 0; i < nt->n; i++) {
        const layer *l = &nt->layers[i];
        for (int k = 0; k < l->use->opens; k++) {
            if (depth == 64) return snprintf(err, ERR_LEN, "%s: residual blocks nested too deep", c->file), -1;
            open[depth++] = nt->nsteps;
            nt->steps[nt->nsteps++] = (net_step){ .kind = STEP_BEGIN, .layer = i, .shape = l->in };
        }
        nt->steps[nt->nsteps++] = (net_step){ .kind = STEP_LAYER, .layer = i };
        for (int k = 0; k < l->use->closes; k++) {
            const net_step *b = &nt->steps[open[--depth]];
            if (rx_numel(b->shape) != rx_numel(l->info.out) || b->shape.ndim != l->info.out.ndim ||
                memcmp(b->shape.d, l->info.out.d, sizeof(int64_t) * (size_t)b->shape.ndim) != 0) {
                char in[96], out[96];
                shape_format(b->shape, in, sizeof in);
                shape_format(l->info.out, out, sizeof out);
                snprintf(err, ERR_LEN, "%s: the residual block from %s to %s: its layers turn %s into %s, but "
                         "y = x + f(x) needs f(x) shaped like x", c->file, nt->layers[b->layer].use->where,
                         l->use->where, in, out);
                return -1;
            }
            nt->steps[nt->nsteps++] = (net_step){ .kind = STEP_END, .layer = i, .shape = l->info.out };
        }
    }
    return 0;
}

/* The optimizer's groups: trained tensors in model order, runs of equal settings merged. */
static int build_groups(net *nt, const config *c)
{
    size_t offset = 0, cap = 0;
    for (int i = 0; i < nt->n; i++) cap += (size_t)nt->layers[i].info.ntensors;
    nt->groups = calloc(cap ? cap : 1, sizeof *nt->groups);
    if (!nt->groups) return -1;
    for (int i = 0; i < nt->n; i++) {
        const layer *l = &nt->layers[i];
        for (int t = 0; t < l->info.ntensors; t++) {
            const rx_tensor_decl *d = &l->info.tensors[t];
            size_t n = (size_t)rx_numel(d->shape);
            tensor_rule rule;
            config_tensor_rule(c, l->use, d->name, &rule);
            if (!d->buffer && !rule.frozen) {
                param_group g = { offset, n, (float)rule.lr_scale, (float)rule.weight_decay, rule.train_epochs };
                param_group *last = nt->ngroups ? &nt->groups[nt->ngroups - 1] : NULL;
                if (last && last->offset + last->n == offset && last->lr_scale == g.lr_scale &&
                    last->weight_decay == g.weight_decay && last->train_epochs == g.train_epochs)
                    last->n += n;
                else
                    nt->groups[nt->ngroups++] = g;
            }
            offset += n;
        }
    }
    return 0;
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
        if (plugin_use_check_device(c, l->use, nt->device, err) != 0) return -1;
        if (check_rules(c, l, err) != 0) return -1;
        if (strcmp(l->use->init, "dirac") == 0 &&
            (!l->info.ntensors || l->info.tensors[0].shape.ndim != 4 || l->info.tensors[0].shape.d[2] % 2 == 0 ||
             l->info.tensors[0].shape.d[3] % 2 == 0)) {
            snprintf(err, ERR_LEN, "%s: %s: init = \"dirac\" is for a convolution with an odd kernel", c->file, l->use->where);
            return -1;
        }
        if (strcmp(l->use->init, "whiten") == 0) {
            const rx_shape *w = l->info.ntensors ? &l->info.tensors[0].shape : NULL;
            int64_t k = w && w->ndim == 4 ? w->d[2] : 0;
            if (i != 0 || in.ndim != 3 || !w || w->ndim != 4 || w->d[3] != k || w->d[1] != in.d[0] || in.d[0] * k * k > 64 ||
                w->d[0] != 2 * in.d[0] * k * k) {
                snprintf(err, ERR_LEN, "%s: %s: init = \"whiten\" is for the first layer, a convolution with a square "
                         "kernel k and 2 * C * k * k outputs for C input channels (e.g. 24 for 3 channels and k = 2)",
                         c->file, l->use->where);
                return -1;
            }
        }
        for (int t = 0; t < l->info.ntensors; t++) nt->nparams += (size_t)rx_numel(l->info.tensors[t].shape);
        size_t ws = l->info.workspace_bytes * (size_t)max_batch;
        if (ws > nt->workspace_bytes) nt->workspace_bytes = ws;
        shape = l->info.out;
        if ((size_t)rx_numel(shape) > max_act) max_act = (size_t)rx_numel(shape);
    }
    nt->out = shape;
    if (build_steps(nt, c, err) != 0) return -1;
    if (build_groups(nt, c) != 0) goto oom;

    /* Then memory, all of it now, none per batch. */
    nt->params = device_alloc(nt->device, nt->nparams * sizeof(float));
    nt->grads = device_alloc(nt->device, nt->nparams * sizeof(float));
    nt->workspace = device_alloc(nt->device, nt->workspace_bytes);
    for (int k = 0; k < 2; k++) nt->dbuf[k] = device_alloc(nt->device, max_act * (size_t)max_batch * sizeof(float));
    if (!nt->params || !nt->grads || !nt->workspace || !nt->dbuf[0] || !nt->dbuf[1]) goto oom;
    for (int i = 0; i < nt->nsteps; i++) {
        net_step *st = &nt->steps[i];
        if (st->kind != STEP_END) continue;
        size_t bytes = (size_t)rx_numel(st->shape) * (size_t)max_batch * sizeof(float);
        st->out = device_alloc(nt->device, bytes);
        st->dskip = device_alloc(nt->device, bytes);
        if (!st->out || !st->dskip) goto oom;
    }
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
    for (int i = 0; i < nt->nsteps; i++) {
        device_free(nt->device, nt->steps[i].out);
        device_free(nt->device, nt->steps[i].dskip);
    }
    free(nt->steps);
    free(nt->groups);
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
            /* dirac: output channel o < C passes input channel o through (torch.nn.init.dirac_). */
            if (t == 0 && strcmp(nt->layers[i].use->init, "dirac") == 0) {
                const int64_t *s = d->shape.d, per = s[1] * s[2] * s[3];
                for (int64_t o = 0; o < s[0] && o < s[1]; o++) {
                    memset(host + at + o * per, 0, sizeof(float) * (size_t)per);
                    host[at + o * per + (o * s[2] + s[2] / 2) * s[3] + s[3] / 2] = 1.0f;
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
    rx_tensor in = *x, kept[64];
    int depth = 0;
    for (int i = 0; i < nt->nsteps; i++) {
        net_step *st = &nt->steps[i];
        if (st->kind == STEP_BEGIN) {
            kept[depth++] = in;
            continue;
        }
        if (st->kind == STEP_END) {
            const rx_tensor *skip = &kept[--depth];
            size_t len = (size_t)rx_numel(in.shape);
            device_copy(nt->device, st->out, in.data, len * sizeof(float));
            device_axpby(nt->device, ctx, len, 1.0f, skip->data, 1.0f, st->out);
            in.data = st->out;
            continue;
        }
        layer *l = &nt->layers[st->layer];
        rx_tensor out = { .data = l->out, .shape = batched(n, l->info.out), .device = nt->device };
        l->x = in.data;
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

int net_backward(net *nt, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *dlogits, int first, char *err)
{
    if (first >= nt->n) return 0;
    int64_t n = x->shape.d[0];
    rx_tensor dy = *dlogits;
    const net_step *ends[64];
    int depth = 0, k = 0;
    bool have_dy = true; /* false once layer `first` is done: its input gradient is never needed */
    for (int i = nt->nsteps - 1; i >= 0 && have_dy; i--) {
        const net_step *st = &nt->steps[i];
        if (st->kind == STEP_END) { /* dy goes both ways: into the block and around it */
            device_copy(nt->device, st->dskip, dy.data, (size_t)rx_numel(dy.shape) * sizeof(float));
            ends[depth++] = st;
            continue;
        }
        if (st->kind == STEP_BEGIN) {
            const net_step *end = ends[--depth];
            device_axpby(nt->device, ctx, (size_t)rx_numel(dy.shape), 1.0f, end->dskip, 1.0f, dy.data);
            continue;
        }
        layer *l = &nt->layers[st->layer];
        rx_tensor in = { .data = (float *)l->x, .shape = batched(n, l->in), .device = nt->device };
        rx_tensor out = { .data = l->out, .shape = batched(n, l->info.out), .device = nt->device };
        rx_tensor dx = { .data = nt->dbuf[k], .shape = batched(n, l->in), .device = nt->device };
        bool need_dx = st->layer > first;
        ctx->err[0] = '\0';
        crash_enter(l->use->where, "backward");
        int rc = l->use->pl.desc->layer.backward[nt->device](l->self, ctx, &in, &out, &dy, l->w, l->state,
                                                              need_dx ? &dx : NULL, l->dw);
        crash_leave();
        if (rc != 0) return layer_failed(l, ctx, "backward", err);
        have_dy = need_dx;
        dy = dx;
        k ^= 1;
    }
    return 0;
}

int net_first_trained(const net *nt, int64_t epoch)
{
    for (int i = 0; i < nt->n; i++) {
        const layer *l = &nt->layers[i];
        for (int t = 0; t < l->info.ntensors; t++) {
            const size_t at = (size_t)(l->w[t].data - nt->params);
            for (int k = 0; k < nt->ngroups; k++) {
                const param_group *g = &nt->groups[k];
                if (group_trains(g, epoch) && at >= g->offset && at < g->offset + g->n) return i;
            }
        }
    }
    return nt->n;
}

void net_tensor_name(const net *nt, int index, int tensor, char *buf, size_t len)
{
    const layer *l = &nt->layers[index];
    snprintf(buf, len, "%s.%s", l->use->path, l->info.tensors[tensor].name);
}

int net_whitening_layer(const net *nt)
{
    for (int i = 0; i < nt->n; i++)
        if (strcmp(nt->layers[i].use->init, "whiten") == 0) return i;
    return -1;
}

/* Eigenvalues (into val) and eigenvectors (columns of vec) of the symmetric d x d matrix a, by
 * cyclic Jacobi rotations: exact enough and short for the 12 x 12 of a 2 x 2 x 3 patch. */
static void symmetric_eigen(double *a, int d, double *val, double *vec)
{
    for (int i = 0; i < d * d; i++) vec[i] = i % (d + 1) == 0;
    for (int sweep = 0; sweep < 100; sweep++) {
        double off = 0;
        for (int p = 0; p < d; p++)
            for (int q = p + 1; q < d; q++) off += a[p * d + q] * a[p * d + q];
        if (off < 1e-30) break;
        for (int p = 0; p < d; p++)
            for (int q = p + 1; q < d; q++) {
                double apq = a[p * d + q];
                if (fabs(apq) < 1e-300) continue;
                double theta = (a[q * d + q] - a[p * d + p]) / (2 * apq);
                double t = (theta >= 0 ? 1 : -1) / (fabs(theta) + sqrt(theta * theta + 1));
                double c = 1 / sqrt(t * t + 1), s = t * c;
                for (int k = 0; k < d; k++) { /* columns p and q */
                    double akp = a[k * d + p], akq = a[k * d + q];
                    a[k * d + p] = c * akp - s * akq;
                    a[k * d + q] = s * akp + c * akq;
                }
                for (int k = 0; k < d; k++) { /* rows p and q */
                    double apk = a[p * d + k], aqk = a[q * d + k];
                    a[p * d + k] = c * apk - s * aqk;
                    a[q * d + k] = s * apk + c * aqk;
                }
                for (int k = 0; k < d; k++) {
                    double vkp = vec[k * d + p], vkq = vec[k * d + q];
                    vec[k * d + p] = c * vkp - s * vkq;
                    vec[k * d + q] = s * vkp + c * vkq;
                }
            }
    }
    for (int i = 0; i < d; i++) val[i] = a[i * d + i];
}

int net_init_whitening(net *nt, const float *images, int64_t n, double eps, char *err)
{
    int li = net_whitening_layer(nt);
    if (li < 0) return 0;
    layer *l = &nt->layers[li];
    const int C = (int)nt->in.d[0], H = (int)nt->in.d[1], W = (int)nt->in.d[2];
    const int k = (int)l->info.tensors[0].shape.d[2], d = C * k * k;
    double *m = calloc((size_t)(d * d), sizeof *m), *val = malloc(sizeof *val * (size_t)d);
    double *vec = malloc(sizeof *vec * (size_t)(d * d)), *p = malloc(sizeof *p * (size_t)d);
    float *w = malloc(sizeof *w * (size_t)(2 * d * d));
    if (!m || !val || !vec || !p || !w) {
        free(m), free(val), free(vec), free(p), free(w);
        return snprintf(err, ERR_LEN, "out of memory computing the whitening layer"), -1;
    }
    /* The second moment of every k x k patch (stride 1), laid out as the weights are (c, ky, kx). */
    int64_t count = 0;
    for (int64_t s = 0; s < n; s++) {
        const float *img = images + s * C * H * W;
        for (int y = 0; y + k <= H; y++)
            for (int x = 0; x + k <= W; x++, count++) {
                for (int c = 0, j = 0; c < C; c++)
                    for (int ky = 0; ky < k; ky++)
                        for (int kx = 0; kx < k; kx++) p[j++] = img[(c * H + y + ky) * W + x + kx];
                for (int i = 0; i < d; i++)
                    for (int j = i; j < d; j++) m[i * d + j] += p[i] * p[j];
            }
    }
    for (int i = 0; i < d; i++)
        for (int j = i; j < d; j++) m[j * d + i] = m[i * d + j] /= (double)(count ? count : 1);
    symmetric_eigen(m, d, val, vec);
    /* Largest eigenvalue first, as airbench orders them; then the same filters negated. */
    int order[64];
    for (int i = 0; i < d; i++) order[i] = i;
    for (int i = 1; i < d; i++)
        for (int j = i; j > 0 && val[order[j]] > val[order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    for (int o = 0; o < d; o++) {
        int e = order[o];
        double scale = 1 / sqrt((val[e] > 0 ? val[e] : 0) + eps);
        for (int j = 0; j < d; j++) {
            w[o * d + j] = (float)(vec[j * d + e] * scale);
            w[(o + d) * d + j] = -w[o * d + j];
        }
    }
    host_to_device(nt->device, l->w[0].data, w, sizeof *w * (size_t)(2 * d * d));
    free(m), free(val), free(vec), free(p), free(w);
    return 0;
}
