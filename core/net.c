/* net.c: building and running a sequential network of layer plugins (its initialization: init.c). */
#include "net.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "crash.h"
#include "device.h"

/* Samples [first, first + count) of a batch of n, and what their calls use: a context (the
 * caller's for the whole batch; a lane's own, with one thread), the gradients they add into, and
 * where a failure is written. offset and whole place them in the batch whose random numbers
 * stochastic layers draw (with ranks, the batch of every rank: see forward_part). */
typedef struct net_part {
    int64_t first, count, offset, whole;
    rx_ctx *ctx;
    rx_ctx own;               /* a lane's context: one thread, the lane's slice of the workspace */
    float *grads;
    size_t dbuf_at;           /* where its slice of backward's two buffers starts (floats) */
    char *err, own_err[ERR_LEN];
    float *top;               /* after forward: the batch's logits buffer (the part's rows are in it) */
    int rc;                   /* a lane's outcome: 0, or -1 with err */
} net_part;

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

/* Whether a per-sample (or per-thread) byte count a layer declared (state, workspace) can be
 * meant: no more than a tensor of CHECKED_MAX_ELEMENTS floats. */
static bool per_sample_ok(size_t bytes)
{
    return bytes <= (size_t)CHECKED_MAX_ELEMENTS * sizeof(float);
}

const char *layer_info_problem(const rx_layer_info *info, char *buf, size_t len)
{
    int64_t n;
    char s[96];
    if (!shape_ok(info->out)) return "create reported an invalid output shape";
    shape_format(info->out, s, sizeof s);
    if (!checked_numel(info->out, &n))
        return snprintf(buf, len, "create reported the output shape %s: past the bounds of a size (a dimension "
                        "over 2^31 - 1, or over 2^40 elements)", s), buf;
    if (info->ntensors < 0 || info->ntensors > RX_MAX_TENSORS) return "create reported an invalid tensor count";
    for (int t = 0; t < info->ntensors; t++) {
        const rx_tensor_decl *d = &info->tensors[t];
        if (!d->name || !*d->name) return "create declared a tensor without a name";
        if (d->shape.ndim < 1 || d->shape.ndim > RX_MAX_DIMS) return "create declared a tensor of invalid rank";
        for (int i = 0; i < d->shape.ndim; i++)
            if (d->shape.d[i] < 1) return "create declared a tensor with an empty dimension";
        if (d->init < RX_INIT_ZEROS || d->init > RX_INIT_CONSTANT)
            return snprintf(buf, len, "create declared tensor '%s' with init %d, which is none of rx_init's",
                            d->name, (int)d->init), buf;
        if (!isfinite(d->scale))
            return snprintf(buf, len, "create declared tensor '%s' with scale %g, not a finite number", d->name,
                            (double)d->scale), buf;
        shape_format(d->shape, s, sizeof s);
        if (!checked_numel(d->shape, &n))
            return snprintf(buf, len, "create declared tensor '%s' of shape %s: past the bounds of a size (a "
                            "dimension over 2^31 - 1, or over 2^40 elements)", d->name, s), buf;
    }
    if (!per_sample_ok(info->state_bytes) || !per_sample_ok(info->workspace_bytes))
        return snprintf(buf, len, "create declared state_bytes = %zu and workspace_bytes = %zu per sample: more "
                        "than 4 TiB a sample cannot be meant", info->state_bytes, info->workspace_bytes), buf;
    if (!per_sample_ok(info->workspace_thread_bytes))
        return snprintf(buf, len, "create declared workspace_thread_bytes = %zu: more than 4 TiB a thread cannot "
                        "be meant", info->workspace_thread_bytes), buf;
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

/* The optimizer's groups: trained tensors in model order, runs of equal settings merged unless
 * the optimizer steps each tensor on its own (rx_optim_ops.per_tensor). */
static int build_groups(net *nt, const config *c)
{
    const bool per_tensor = c->optim.pl.desc && c->optim.pl.desc->optim.per_tensor;
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
                param_group g = { offset, n, (float)rule.lr_scale, (float)rule.weight_decay, rule.train_epochs,
                                  per_tensor ? d->shape : (rx_shape){ 0 } };
                param_group *last = nt->ngroups ? &nt->groups[nt->ngroups - 1] : NULL;
                if (!per_tensor && last && last->offset + last->n == offset && last->lr_scale == g.lr_scale &&
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

/* Creates layer i of the network, c's model layer `use`, for per-sample inputs of shape `in` and
 * checks what it reports: its shapes and tensors, its device, the config's training rules and
 * init for it. */
static int create_layer(net *nt, rx_ctx *ctx, const config *c, int i, int use, rx_shape in, char *err)
{
    layer *l = &nt->layers[i];
    l->use = &c->layers[use];
    l->in = in;
    ctx->err[0] = '\0';
    crash_enter(l->use->where, "create");
    int created = l->use->pl.desc->layer.create(&l->self, ctx, l->use->args, in, &l->info);
    crash_leave();
    if (created != 0) {
        char s[96];
        shape_format(in, s, sizeof s);
        return errorf(err, "%s: %s: %s (input shape %s)", c->file, l->use->where, ctx->err[0] ? ctx->err : "create failed", s);
    }
    char buf[256];
    const char *why = layer_info_problem(&l->info, buf, sizeof buf);
    if (why) return errorf(err, "%s: %s: plugin error: %s", c->file, l->use->where, why);
    if (plugin_use_check_device(c, l->use, nt->device, err) != 0) return -1;
    if (check_rules(c, l, err) != 0) return -1;
    return init_check_layer(c, l, i, nt->in, err);
}

/* The batch size every buffer of the network is sized for, as messages name it. */
static size_origin batch_origin(const net *nt, const config *c)
{
    return (size_origin){ c->file, "data.batch_size", (long long)nt->max_batch };
}

/* One lane per thread on the CPU when every layer declared per_sample (runexp.h), else 1; never
 * more lanes than samples in the largest batch. */
enum { MAX_LANES = 1024 };
static int net_lanes(const net *nt, const rx_ctx *ctx)
{
    if (nt->device != RX_CPU || ctx->threads < 2) return 1;
    for (int i = 0; i < nt->n; i++)
        if (!nt->layers[i].info.per_sample) return 1;
    int64_t lanes = ctx->threads < MAX_LANES ? ctx->threads : MAX_LANES;
    return (int)(nt->max_batch < lanes ? nt->max_batch : lanes);
}

/* Whether model layer a, just before b, may run just after it with the same results
 * (runexp.h: RX_TRAIT_MONOTONE before RX_TRAIT_MAX_POOL, no residual block edge at either). */
static bool runs_after(const plugin_use *a, const plugin_use *b)
{
    return (a->pl.desc->layer.traits & RX_TRAIT_MONOTONE) && (b->pl.desc->layer.traits & RX_TRAIT_MAX_POOL) &&
           !a->opens && !a->closes && !b->opens && !b->closes;
}

/* Every layer created in turn, each on the shape the one before makes, layer i being model
 * layer order[i]: the shapes, and how much memory net_allocate will need, with nothing allocated
 * on the device yet. */
static int create_layers(net *nt, rx_ctx *ctx, const config *c, const int *order, char *err)
{
    rx_shape shape = nt->in;
    for (int i = 0; i < nt->n; i++) {
        layer *l = &nt->layers[i];
        if (create_layer(nt, ctx, c, i, order[i], shape, err) != 0) return -1;
        for (int t = 0; t < l->info.ntensors; t++)
            if (!checked_add(nt->nparams, (size_t)rx_numel(l->info.tensors[t].shape), &nt->nparams) ||
                nt->nparams > (size_t)CHECKED_MAX_ELEMENTS)
                return errorf(err, "%s: %s: the model's parameters pass 2^40 (4 TiB of floats): no model that large "
                              "can be meant", c->file, l->use->where);
        shape = l->info.out;
    }
    nt->out = shape;
    return 0;
}

/* The network: its layers in the model's order but for a monotone layer before a max-pool,
 * which runs after it (runs_after: the tutorial's relu then works on a quarter of the values,
 * with the same bits), then its steps and the optimizer's groups. */
static int net_create(net *nt, rx_ctx *ctx, const config *c, char *err)
{
    nt->layers = calloc((size_t)c->nlayers, sizeof *nt->layers);
    int *order = malloc(sizeof *order * (size_t)(c->nlayers ? c->nlayers : 1));
    if (!nt->layers || !order)
        return free(order), errorf(err, "%s: out of memory building the network (batch %lld)", c->file, (long long)nt->max_batch);
    nt->n = c->nlayers;
    for (int i = 0; i < nt->n; i++) order[i] = i;
    for (int i = 0; i + 1 < nt->n; i++) /* a moved layer is looked at again: it passes a run of pools */
        if (runs_after(&c->layers[order[i]], &c->layers[order[i + 1]])) {
            int moved = order[i];
            order[i] = order[i + 1], order[i + 1] = moved;
        }
    int rc = create_layers(nt, ctx, c, order, err);
    free(order);
    if (rc != 0) return -1;
    nt->lanes = net_lanes(nt, ctx);
    nt->threads = nt->device != RX_CPU ? 0 : ctx->threads > 1 ? ctx->threads : 1;
    if (build_steps(nt, c, err) != 0) return -1;
    if (build_groups(nt, c) != 0)
        return errorf(err, "%s: out of memory building the network (batch %lld)", c->file, (long long)nt->max_batch);
    return 0;
}

/* One more buffer of the plan: batch x per x elem bytes, added to *total; what names it. */
static int plan_part(const net *nt, const config *c, int64_t per, size_t elem, const char *what, size_t *total,
                     char *err)
{
    size_t bytes;
    size_origin o = batch_origin(nt, c);
    if (!checked_bytes(nt->max_batch, per, elem, &bytes) || !checked_add(*total, bytes, total) ||
        *total > CHECKED_MAX_BYTES)
        return size_error(err, &o, (double)nt->max_batch * (double)per * (double)elem, "%s (batch x %lld x %zu bytes)",
                          what, (long long)per, elem);
    return 0;
}

/* A layer's workspace_thread_bytes for each of the call's threads, added to *total; what names it. */
static int plan_threads(const net *nt, const config *c, size_t per_thread, const char *what, size_t *total, char *err)
{
    size_t bytes;
    if (!checked_mul(per_thread, (size_t)nt->threads, &bytes) || !checked_add(*total, bytes, total) ||
        *total > CHECKED_MAX_BYTES) {
        size_origin o = batch_origin(nt, c);
        return size_error(err, &o, (double)*total + (double)per_thread * nt->threads,
                          "%s (batch x per sample, and %d threads x %zu bytes)", what, nt->threads, per_thread);
    }
    return 0;
}

/* With lanes: each lane's slice of the workspace (the most any layer asks for the largest part,
 * ceil(max_batch / lanes) samples on one thread, rounded up to 64 bytes: every slice starts on a
 * cache line) and of backward's two buffers, and lanes 1 on's gradients. The slices are fixed per
 * lane, not per layer: lanes run different layers at once. */
static void plan_lanes(net *nt, size_t max_act, size_t *total)
{
    size_t ws = 0, lanes = (size_t)nt->lanes, part = ((size_t)nt->max_batch + lanes - 1) / lanes;
    nt->lane_dbuf = part * max_act; /* backward's buffers likewise, in slices of the widest layer */
    if (lanes * nt->lane_dbuf > nt->dbuf_floats) {
        *total += 2 * (lanes * nt->lane_dbuf - nt->dbuf_floats) * sizeof(float);
        nt->dbuf_floats = lanes * nt->lane_dbuf;
    }
    for (int i = 0; i < nt->n; i++) { /* within net_plan's sums: a part is no larger than the batch */
        const rx_layer_info *info = &nt->layers[i].info;
        const size_t lane = info->workspace_bytes * part + info->workspace_thread_bytes;
        if (lane > ws) ws = lane;
    }
    nt->lane_workspace = (ws + 63) / 64 * 64;
    if (lanes * nt->lane_workspace > nt->workspace_bytes) {
        *total += lanes * nt->lane_workspace - nt->workspace_bytes;
        nt->workspace_bytes = lanes * nt->lane_workspace;
    }
    /* nparams <= 2^40 (net_create), lanes <= the thread count's bound: no overflow */
    *total += (lanes - 1) * nt->nparams * sizeof(float);
}

/* Every size net_allocate asks for, checked, and the largest workspace: the parameters and their
 * gradients, the workspace, backward's two buffers, each residual block's two and each layer's
 * output and state, for the largest batch. Their sum must fit a size and, on the CPU, the
 * machine's memory; then no size net_allocate computes can wrap, as each is part of the sum.
 * Each layer's workspace is checked alone and only the largest counted: one buffer serves them
 * all (summed, airbench94's Winograd layers made 38 GiB of it, refused on a 24 GiB machine). */
static int net_plan(net *nt, const config *c, char *err)
{
    size_t total = nt->nparams * 2 * sizeof(float); /* net_create keeps nparams within 2^40 */
    int64_t max_act = rx_numel(nt->in);
    char what[160];
    for (int i = 0; i < nt->n; i++) {
        const layer *l = &nt->layers[i];
        int64_t out = rx_numel(l->info.out);
        max_act = out > max_act ? out : max_act;
        snprintf(what, sizeof what, "%s's workspace", l->use->where);
        size_t ws = 0;  /* checked alone: the layers share one workspace, the largest of them */
        if (plan_part(nt, c, (int64_t)l->info.workspace_bytes, 1, what, &ws, err) != 0 ||
            plan_threads(nt, c, l->info.workspace_thread_bytes, what, &ws, err) != 0)
            return -1;
        if (ws > nt->workspace_bytes) nt->workspace_bytes = ws;
        snprintf(what, sizeof what, "%s's output", l->use->where);
        if (plan_part(nt, c, out, sizeof(float), what, &total, err) != 0) return -1;
        snprintf(what, sizeof what, "%s's state", l->use->where);
        if (plan_part(nt, c, (int64_t)l->info.state_bytes, 1, what, &total, err) != 0) return -1;
    }
    for (int i = 0; i < nt->nsteps; i++)
        if (nt->steps[i].kind == STEP_END &&
            plan_part(nt, c, 2 * rx_numel(nt->steps[i].shape), sizeof(float), "a residual block's sum and gradient",
                      &total, err) != 0)
            return -1;
    if (plan_part(nt, c, 2 * max_act, sizeof(float), "backward's two gradient buffers", &total, err) != 0) return -1;
    const double with_workspace = (double)total + (double)nt->workspace_bytes;
    if (!checked_add(total, nt->workspace_bytes, &total) || total > CHECKED_MAX_BYTES) {
        size_origin o = batch_origin(nt, c);
        return size_error(err, &o, with_workspace, "%s", "the network's memory with the layers' shared workspace");
    }
    nt->dbuf_floats = (size_t)max_act * (size_t)nt->max_batch;
    size_origin o = batch_origin(nt, c);
    if (nt->lanes > 1) plan_lanes(nt, (size_t)max_act, &total);
    if (nt->device == RX_CPU && total > checked_host_memory())
        return size_error(err, &o, (double)total, "the network's memory (parameters, activations, gradients, state)");
    return 0;
}

/* device_alloc of a size net_plan checked, or NULL with the message: what, and how much. */
static void *net_alloc(const net *nt, const config *c, size_t bytes, const char *what, char *err)
{
    void *p = device_alloc(nt->device, bytes);
    size_origin o = batch_origin(nt, c);
    if (!p) size_error(err, &o, (double)bytes, "%s", what);
    return p;
}

/* Each layer's output and state for the largest batch, and its tensors as views into the flat
 * parameters and gradients. */
static int allocate_layers(net *nt, const config *c, char *err)
{
    size_t offset = 0;
    char what[160];
    for (int i = 0; i < nt->n; i++) {
        layer *l = &nt->layers[i];
        int count = l->info.ntensors;
        l->w = calloc((size_t)(count ? count : 1), sizeof *l->w);
        l->dw = calloc((size_t)(count ? count : 1), sizeof *l->dw);
        if (!l->w || !l->dw) return errorf(err, "%s: %s: out of memory for its tensors' views", c->file, l->use->where);
        snprintf(what, sizeof what, "%s's output", l->use->where);
        l->out = net_alloc(nt, c, (size_t)rx_numel(l->info.out) * (size_t)nt->max_batch * sizeof(float), what, err);
        snprintf(what, sizeof what, "%s's state", l->use->where);
        if (l->out) l->state = net_alloc(nt, c, l->info.state_bytes * (size_t)nt->max_batch, what, err);
        if (!l->out || !l->state) return -1;
        for (int t = 0; t < count; t++) {
            rx_shape s = l->info.tensors[t].shape;
            l->w[t] = (rx_tensor){ .data = nt->params + offset, .shape = s, .device = nt->device };
            l->dw[t] = (rx_tensor){ .data = nt->grads + offset, .shape = s, .device = nt->device };
            offset += (size_t)rx_numel(s);
        }
    }
    return 0;
}

/* All the memory the created network runs in, now, none per batch; every size was checked by
 * net_plan. */
static int net_allocate(net *nt, const config *c, char *err)
{
    size_t batch = (size_t)nt->max_batch;
    nt->params = net_alloc(nt, c, nt->nparams * sizeof(float), "the parameters", err);
    if (nt->params) nt->grads = net_alloc(nt, c, nt->nparams * sizeof(float), "the parameters' gradients", err);
    if (nt->grads) { /* not zeroed: layers write their scratch before reading it, so pages no call uses cost nothing */
        size_origin o = batch_origin(nt, c);
        nt->workspace = device_alloc_scratch(nt->device, nt->workspace_bytes);
        if (!nt->workspace) size_error(err, &o, (double)nt->workspace_bytes, "%s", "the layers' shared workspace");
    }
    if (nt->workspace && nt->lanes > 1) {
        nt->lane_grads = net_alloc(nt, c, (size_t)(nt->lanes - 1) * nt->nparams * sizeof(float), "the lanes' gradients", err);
        nt->parts = nt->lane_grads ? calloc((size_t)nt->lanes, sizeof *nt->parts) : NULL;
        if (nt->lane_grads && !nt->parts) errorf(err, "%s: out of memory for the lanes", c->file);
        if (!nt->parts) return -1;
    }
    for (int k = 0; k < 2 && nt->workspace; k++)
        nt->dbuf[k] = net_alloc(nt, c, nt->dbuf_floats * sizeof(float), "backward's gradient buffers", err);
    bool ok = nt->dbuf[0] && nt->dbuf[1];
    for (int i = 0; ok && i < nt->nsteps; i++) {
        net_step *st = &nt->steps[i];
        if (st->kind != STEP_END) continue;
        size_t bytes = (size_t)rx_numel(st->shape) * batch * sizeof(float);
        st->out = net_alloc(nt, c, bytes, "a residual block's sum", err);
        if (st->out) st->dskip = net_alloc(nt, c, bytes, "a residual block's gradient", err);
        ok = st->out && st->dskip;
    }
    return ok ? allocate_layers(nt, c, err) : -1;
}

int net_build(net *nt, rx_ctx *ctx, const config *c, rx_shape in, int64_t max_batch, char *err)
{
    memset(nt, 0, sizeof *nt);
    nt->device = ctx->device;
    nt->max_batch = max_batch;
    nt->in = in;
    int64_t numel;
    if (!checked_numel(in, &numel) || in.ndim > RX_MAX_DIMS - 1) {
        char s[96];
        shape_format(in, s, sizeof s);
        return errorf(err, "%s: the network's input shape %s: each dimension must be 1 to 2^31 - 1, and 2^40 "
                      "elements in all at most", c->file, s);
    }
    if (net_create(nt, ctx, c, err) != 0 || net_plan(nt, c, err) != 0 || net_allocate(nt, c, err) != 0) return -1;
    ctx->workspace = nt->workspace;
    ctx->workspace_bytes = nt->workspace_bytes;
    return 0;
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
    device_free(nt->device, nt->lane_grads);
    free(nt->parts);
    for (int k = 0; k < 2; k++) device_free(nt->device, nt->dbuf[k]);
    memset(nt, 0, sizeof *nt);
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

/* ---- Running the network: the whole batch in one part, or one part per lane at once ---- */

/* The rows of sample `first` on, in a batch-major buffer of per-sample shape s. */
static float *rows(const float *base, int64_t first, rx_shape s)
{
    return (float *)base + (size_t)first * (size_t)rx_numel(s);
}

static void part_place(const net *nt, net_part *p, int64_t n)
{
    p->offset = nt->part_offset + p->first;
    p->whole = nt->part_batch > 0 ? nt->part_batch : n;
}

/* The whole batch of n, with the caller's context (the whole workspace), gradients and error. */
static net_part whole_part(const net *nt, rx_ctx *ctx, int64_t n, char *err)
{
    net_part p = { .first = 0, .count = n, .ctx = ctx, .grads = nt->grads, .dbuf_at = 0, .err = err };
    part_place(nt, &p, n);
    return p;
}

/* Lane k of `lanes` over a batch of n: consecutive parts whose sizes differ by one at most. Its
 * slices of the workspace and of backward's buffers are fixed per lane, not per layer, as lanes
 * run different layers at once (net_plan sized them for the largest part and layer). */
static void lane_start(net *nt, const rx_ctx *ctx, int k, int lanes, int64_t n)
{
    net_part *p = &nt->parts[k];
    p->first = n * k / lanes;
    p->count = n * (k + 1) / lanes - p->first;
    part_place(nt, p, n);
    p->own = *ctx;
    p->own.threads = 1;
    p->own.err[0] = '\0';
    p->own.workspace = (char *)nt->workspace + (size_t)k * nt->lane_workspace;
    p->own.workspace_bytes = nt->lane_workspace;
    p->ctx = &p->own;
    p->grads = k == 0 ? nt->grads : nt->lane_grads + (size_t)(k - 1) * nt->nparams;
    p->dbuf_at = (size_t)k * nt->lane_dbuf;
    p->err = p->own_err;
    p->err[0] = '\0';
}

/* The lanes a batch of n runs in: the net's, or fewer for a batch of fewer samples. */
int net_lanes_for(const net *nt, int64_t n)
{
    return n < nt->lanes ? (int)(n > 0 ? n : 1) : nt->lanes;
}

/* splitmix64 (rx_rng_next) steps its state by RX_RNG_STEP per number drawn; the inverse counts them. */
#define RX_RNG_STEP 0x9E3779B97F4A7C15ull
#define RX_RNG_STEP_INVERSE 0xF1DE83E19937733Dull

uint64_t rng_draws_between(uint64_t from, uint64_t to)
{
    return (to - from) * RX_RNG_STEP_INVERSE;
}

uint64_t rng_skip(uint64_t s, uint64_t draws)
{
    return s + draws * RX_RNG_STEP;
}

/* Layer l's state for the part of a batch from sample `first` on: per sample, in sample order. */
static void *state_rows(const layer *l, int64_t first)
{
    return (char *)l->state + (size_t)first * l->info.state_bytes;
}

static int forward_layer(const layer *l, rx_device d, rx_ctx *ctx, const rx_tensor *in, rx_tensor *out, void *state,
                         char *err)
{
    ctx->err[0] = '\0';
    crash_enter(l->use->where, "forward");
    int rc = l->use->pl.desc->layer.forward[d](l->self, ctx, in, l->w, out, state);
    crash_leave();
    return rc != 0 ? layer_failed(l, ctx, "forward", err) : 0;
}

/* A layer's training forward on a part of the batch whose numbers it draws (p->whole samples,
 * of which the part's begin at p->offset). A layer that drew numbers drew them per sample
 * (dropout: one per element), so the whole batch's forward would have given this part the draws
 * from offset x per-sample on: it runs again from there, and the state is left where the whole
 * batch's forward leaves it. So results do not depend on how the batch is cut (ranks, lanes). */
static int forward_part(const net *nt, const layer *l, net_part *p, const rx_tensor *in, rx_tensor *out)
{
    rx_ctx *ctx = p->ctx;
    uint64_t start = ctx->rng.s;
    void *state = state_rows(l, p->first);
    if (forward_layer(l, nt->device, ctx, in, out, state, p->err) != 0) return -1;
    uint64_t draws = rng_draws_between(start, ctx->rng.s), n = (uint64_t)in->shape.d[0];
    if (draws == 0) return 0;
    if (draws % n)
        return errorf(p->err, "%s: drew %llu random numbers for %llu samples, not the same number for each, so its "
                      "batch cannot be split over ranks or threads", l->use->where, (unsigned long long)draws,
                      (unsigned long long)n);
    uint64_t per = draws / n;
    if (p->offset > 0) {
        ctx->rng.s = rng_skip(start, (uint64_t)p->offset * per);
        if (forward_layer(l, nt->device, ctx, in, out, state, p->err) != 0) return -1;
    }
    ctx->rng.s = rng_skip(start, (uint64_t)p->whole * per);
    return 0;
}

/* Where every layer's input begins for a batch from x (the input, a layer's output or a residual
 * sum), for backward: set before any part runs, as a lane may reach a layer's backward before
 * another lane has run its forward. */
static void bind_inputs(net *nt, const float *x)
{
    for (int i = 0; i < nt->nsteps; i++) {
        const net_step *st = &nt->steps[i];
        if (st->kind == STEP_END) x = st->out;
        if (st->kind != STEP_LAYER) continue;
        nt->layers[st->layer].x = x;
        x = nt->layers[st->layer].out;
    }
}

/* Forward of part p, from the batch's input x. */
static int forward_rows(net *nt, net_part *p, const float *x)
{
    rx_tensor in = { .data = rows(x, p->first, nt->in), .shape = batched(p->count, nt->in), .device = nt->device };
    rx_tensor kept[64];
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
            float *sum = rows(st->out, p->first, st->shape);
            device_copy(nt->device, sum, in.data, len * sizeof(float));
            device_axpby(nt->device, p->ctx, len, 1.0f, skip->data, 1.0f, sum);
            in.data = sum;
            continue;
        }
        layer *l = &nt->layers[st->layer];
        rx_tensor out = { .data = rows(l->out, p->first, l->info.out), .shape = batched(p->count, l->info.out),
                          .device = nt->device };
        bool cut = p->ctx->training && (p->offset > 0 || p->count < p->whole);
        if ((cut ? forward_part(nt, l, p, &in, &out)
                 : forward_layer(l, nt->device, p->ctx, &in, &out, state_rows(l, p->first), p->err)) != 0)
            return -1;
        in = out;
    }
    p->top = in.data;
    return 0;
}

/* After the lanes: the first failure (in lane order) into err, and the random numbers' state
 * every lane left alike into the caller's context. */
static int lanes_done(net *nt, rx_ctx *ctx, int lanes, char *err)
{
    ctx->rng = nt->parts[0].own.rng;
    for (int k = 0; k < lanes; k++)
        if (nt->parts[k].rc != 0) return errorf(err, "%s", nt->parts[k].err);
    return 0;
}

int net_forward_drawing(net *nt, rx_ctx *ctx, const rx_tensor *x, net_draw draw, void *arg, rx_tensor *logits,
                        char *err)
{
    int64_t n = x->shape.d[0];
    int lanes = net_lanes_for(nt, n);
    float *top;
    bind_inputs(nt, x->data);
    if (lanes == 1) {
        net_part p = whole_part(nt, ctx, n, err);
        if ((draw && draw(arg, ctx, 0, n, err) != 0) || forward_rows(nt, &p, x->data) != 0) return -1;
        top = p.top;
    } else {
#pragma omp parallel for num_threads(lanes) schedule(static, 1)
        for (int k = 0; k < lanes; k++) {
            net_part *p = &nt->parts[k];
            lane_start(nt, ctx, k, lanes, n);
            p->rc = draw ? draw(arg, p->ctx, p->first, p->count, p->err) : 0;
            if (p->rc == 0) p->rc = forward_rows(nt, p, x->data);
        }
        if (lanes_done(nt, ctx, lanes, err) != 0) return -1;
        top = nt->parts[0].top;
    }
    *logits = (rx_tensor){ .data = top, .shape = batched(n, nt->out), .device = nt->device };
    return 0;
}

int net_forward(net *nt, rx_ctx *ctx, const rx_tensor *x, rx_tensor *logits, char *err)
{
    return net_forward_drawing(nt, ctx, x, NULL, NULL, logits, err);
}

/* Layer l's backward on part p: dy in, dx (unless NULL) out, into the part's gradients. */
static int backward_layer(const net *nt, const layer *l, net_part *p, const rx_tensor *dy, rx_tensor *dx)
{
    rx_tensor in = { .data = rows(l->x, p->first, l->in), .shape = batched(p->count, l->in), .device = nt->device };
    rx_tensor out = { .data = rows(l->out, p->first, l->info.out), .shape = batched(p->count, l->info.out),
                      .device = nt->device };
    rx_tensor dw[RX_MAX_TENSORS];
    for (int t = 0; t < l->info.ntensors; t++) {
        dw[t] = l->dw[t];
        dw[t].data = p->grads + (l->dw[t].data - nt->grads);
    }
    p->ctx->err[0] = '\0';
    crash_enter(l->use->where, "backward");
    int rc = l->use->pl.desc->layer.backward[nt->device](l->self, p->ctx, &in, &out, dy, l->w,
                                                          state_rows(l, p->first), dx, dw);
    crash_leave();
    return rc != 0 ? layer_failed(l, p->ctx, "backward", p->err) : 0;
}

/* Backward of part p from its rows of dlogits. */
static int backward_rows(net *nt, net_part *p, const float *dlogits, int first)
{
    rx_tensor dy = { .data = rows(dlogits, p->first, nt->out), .shape = batched(p->count, nt->out),
                     .device = nt->device };
    const net_step *ends[64];
    int depth = 0, k = 0;
    bool have_dy = true; /* false once layer `first` is done: its input gradient is never needed */
    for (int i = nt->nsteps - 1; i >= 0 && have_dy; i--) {
        const net_step *st = &nt->steps[i];
        if (st->kind == STEP_END) { /* dy goes both ways: into the block and around it */
            device_copy(nt->device, rows(st->dskip, p->first, st->shape), dy.data,
                        (size_t)rx_numel(dy.shape) * sizeof(float));
            ends[depth++] = st;
            continue;
        }
        if (st->kind == STEP_BEGIN) {
            const net_step *end = ends[--depth];
            device_axpby(nt->device, p->ctx, (size_t)rx_numel(dy.shape), 1.0f, rows(end->dskip, p->first, end->shape),
                         1.0f, dy.data);
            continue;
        }
        layer *l = &nt->layers[st->layer];
        rx_tensor dx = { .data = nt->dbuf[k] + p->dbuf_at, .shape = batched(p->count, l->in), .device = nt->device };
        bool need_dx = st->layer > first;
        if (backward_layer(nt, l, p, &dy, need_dx ? &dx : NULL) != 0) return -1;
        have_dy = need_dx;
        dy = dx;
        k ^= 1;
    }
    return 0;
}

/* The lanes' gradients summed into grads over [begin, end), in lane order (so the same lane
 * count gives the same bits), zeroing the lanes' as it reads them: they start the next backward
 * at zero (net_alloc zeroed them first). */
static void sum_lane_grads(net *nt, int lanes, size_t begin, size_t end)
{
    float *restrict grads = nt->grads;
    for (int k = 1; k < lanes; k++) { /* a lane at a time: one vectorized pass each */
        float *restrict lane = nt->lane_grads + (size_t)(k - 1) * nt->nparams;
        for (size_t j = begin; j < end; j++) {
            grads[j] += lane[j];
            lane[j] = 0;
        }
    }
}

/* Where range k of `of` nearly equal ranges of the parameters begins. With whole_groups a cut
 * inside a parameter group moves to its end, so that no range splits a group. */
static size_t param_cut(const net *nt, int k, int of, bool whole_groups)
{
    size_t cut = nt->nparams * (size_t)k / (size_t)of;
    for (int i = 0; whole_groups && i < nt->ngroups; i++) {
        const param_group *g = &nt->groups[i];
        if (cut > g->offset && cut < g->offset + g->n) cut = g->offset + g->n; /* groups never overlap */
    }
    return cut;
}

/* The lanes at once, then their gradients summed, every thread a range of them. In a training
 * step (h set) each lane draws its rows of x (with h->load), runs its forward and the loss
 * before its backward, and each range is updated once summed, unless a lane failed (its error
 * is the run's); otherwise each lane runs its backward from dlogits alone. */
static void run_lanes(net *nt, rx_ctx *ctx, const float *x, const float *dlogits, int first, const net_hooks *h,
                      int lanes, int64_t n)
{
    bool all_ok = true;
#pragma omp parallel num_threads(lanes)
    {
#pragma omp for schedule(static, 1) reduction(&& : all_ok)
        for (int k = 0; k < lanes; k++) {
            net_part *p = &nt->parts[k];
            lane_start(nt, ctx, k, lanes, n);
            p->rc = h && h->load ? h->load(h->arg, p->ctx, p->first, p->count, p->err) : 0;
            if (p->rc == 0 && h) p->rc = forward_rows(nt, p, x);
            if (p->rc == 0 && h) p->rc = h->loss(h->arg, p->ctx, p->first, p->count, p->top, p->err);
            if (p->rc == 0 && first < nt->n) p->rc = backward_rows(nt, p, dlogits, first);
            all_ok = all_ok && p->rc == 0;
        }
        const bool whole_groups = h && h->whole_groups;
#pragma omp for schedule(static, 1)
        for (int k = 0; k < lanes; k++) {
            net_part *p = &nt->parts[k];
            size_t begin = param_cut(nt, k, lanes, whole_groups), end = param_cut(nt, k + 1, lanes, whole_groups);
            sum_lane_grads(nt, lanes, begin, end);
            if (h && all_ok) p->rc = h->update(h->arg, p->ctx, begin, end, p->err);
        }
    }
}

int net_backward(net *nt, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *dlogits, int first, char *err)
{
    if (first >= nt->n) return 0;
    int64_t n = x->shape.d[0];
    int lanes = net_lanes_for(nt, n);
    if (lanes == 1) {
        net_part p = whole_part(nt, ctx, n, err);
        return backward_rows(nt, &p, dlogits->data, first);
    }
    run_lanes(nt, ctx, NULL, dlogits->data, first, NULL, lanes, n);
    return lanes_done(nt, ctx, lanes, err);
}

int net_train_lanes(net *nt, rx_ctx *ctx, const rx_tensor *x, int first, const net_hooks *h, char *err)
{
    int64_t n = x->shape.d[0];
    int lanes = net_lanes_for(nt, n);
    bind_inputs(nt, x->data);
    run_lanes(nt, ctx, x->data, h->dlogits, first, h, lanes, n);
    return lanes_done(nt, ctx, lanes, err);
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
