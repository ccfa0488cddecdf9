/* test_parts.c: the per_sample promise (runexp.h, ABI 4), checked directly on every in-tree layer
 * that makes it and on the prelu example. A batch's forward and backward are run whole, then
 * again as consecutive parts the way the host runs them on several threads at once: each part a
 * batch of its own, all parts at the same time (a thread each), with ctx->threads = 1, a workspace of
 * exactly the part's size (its guard bytes must stay untouched), a state, y, dx and dw of its own,
 * and the rng where the whole batch's forward reached the part's first sample. The parts' y, dx
 * and state must be the whole batch's rows, each part must draw as many numbers per sample as the
 * whole batch, and the parts' dw must add up to the whole batch's. Every layer of the build is
 * either in the table or known to see the batch (batchnorm), which must not make the promise. */
#include "helpers.h"

#include <dirent.h>
#include <math.h>
#include <pthread.h>

#include "net.h"

enum { BATCH = 5, MAX_KV = 4, GUARD = 64 };

typedef struct kv {
    const char *key, *value;
} kv;

typedef struct parts_row {
    const char *dir;   /* plugin folder */
    const char *name;
    kv args[MAX_KV];   /* beside the defaults */
    rx_shape in;       /* per sample */
    bool bits;         /* y and dx the same bits as the whole batch's (else within Y_TOL) */
} parts_row;

/* y and dx of a layer whose products go through SGEMM (conv2d, linear): a part is an SGEMM with
 * fewer columns (Winograd: fewer samples' tiles side by side), which OpenBLAS need not round as
 * the whole batch's (here they were the same bits); relative to the tensor's largest magnitude.
 * dW adds the samples in another order: at most 1.2e-7 of the largest here, and 2.8e-6 for
 * Winograd, whose parts each take their dU through G^T dU G (its 1/6 and 1/24 are inexact). */
#define Y_TOL 1e-6
#define DW_TOL 1e-5

#define PLUGINS RX_BUILD_DIR "/plugins"
#define EXAMPLES RX_BUILD_DIR "/examples"
#define S(...) { (int)(sizeof((int64_t[]){ __VA_ARGS__ }) / sizeof(int64_t)), { __VA_ARGS__ } }

static const parts_row table[] = {
    /* conv2d, im2col: padding, stride 2, 1x1 (col is x itself) */
    { PLUGINS, "conv2d", { { "out", "3" }, { "kernel", "3" } }, S(2, 5, 6), false },
    { PLUGINS, "conv2d", { { "out", "2" }, { "kernel", "3" }, { "stride", "2" }, { "padding", "1" } }, S(3, 6, 5),
      false },
    { PLUGINS, "conv2d", { { "out", "2" }, { "kernel", "1" }, { "bias", "false" } }, S(2, 4, 4), false },
    /* conv2d, Winograd: padding 0, 1 and 2, and groups of 4 samples (16 tiles each), which the
     * parts cut differently */
    { PLUGINS, "conv2d", { { "out", "8" }, { "kernel", "3" } }, S(8, 5, 6), false },
    { PLUGINS, "conv2d", { { "out", "9" }, { "kernel", "3" }, { "padding", "1" } }, S(8, 8, 8), false },
    { PLUGINS, "conv2d", { { "out", "8" }, { "kernel", "3" }, { "padding", "2" } }, S(8, 7, 5), false },
    { PLUGINS, "conv2d", { { "out", "8" }, { "kernel", "3" }, { "padding", "1" }, { "bias", "false" } },
      S(8, 16, 16), false },
    { PLUGINS, "linear", { { "out", "4" } }, S(2, 3, 2), false },
    { PLUGINS, "linear", { { "out", "3" }, { "bias", "false" } }, S(7), false },
    { PLUGINS, "linear", { { "out", "32" } }, S(128), false },
    { PLUGINS, "relu", { { 0 } }, S(3, 4, 5), true },
    /* maxpool: 2x2 (its vector runs), overlapping windows, one window a plane, any window */
    { PLUGINS, "maxpool", { { 0 } }, S(4, 8, 8), true },
    { PLUGINS, "maxpool", { { "size", "3" }, { "stride", "2" } }, S(2, 5, 5), true },
    { PLUGINS, "maxpool", { { "size", "3" } }, S(4, 3, 3), true },
    { PLUGINS, "maxpool", { { "size", "2" }, { "stride", "3" } }, S(2, 8, 7), true },
    { PLUGINS, "flatten", { { 0 } }, S(3, 2, 4), true },
    { PLUGINS, "dropout", { { "p", "0.5" } }, S(4, 5), true },
    { PLUGINS, "dropout", { { "p", "0.3" } }, S(3, 8, 8), true },
    { PLUGINS, "gelu", { { "approximate", "none" } }, S(2, 3, 4), true },
    { PLUGINS, "gelu", { { "approximate", "tanh" } }, S(2, 3, 4), true },
    { PLUGINS, "scale", { { "by", "-2.5" } }, S(3, 2, 2), true },
    { PLUGINS, "global_pool", { { "mode", "max" } }, S(3, 5, 4), true },
    { PLUGINS, "global_pool", { { "mode", "avg" } }, S(3, 5, 4), true },
    { EXAMPLES, "prelu", { { 0 } }, S(3, 4, 4), true },
    { EXAMPLES, "prelu", { { "per_channel", "false" } }, S(2, 3), true },
};

/* In-tree layers whose samples meet (batch statistics): never per_sample. */
static const char *const batch_layers[] = { "batchnorm" };

/* How the batch of BATCH is cut: part i is [cuts[i], cuts[i + 1]). */
typedef struct cuts {
    int n;
    int64_t at[BATCH + 1];
} cuts;

static const cuts splits[] = { { 2, { 0, 2, BATCH } }, { 3, { 0, 1, 4, BATCH } } };

/* The row's argument KEY = VALUE, read as the plugin's parameter type. */
static void rig_set(rig *r, const kv *a)
{
    rx_value *v = rig_arg(r, a->key);
    switch (r->desc->params[plugin_param_index(r->desc, a->key)].type) {
    case RX_INT: v->i = atoll(a->value); break;
    case RX_NUM: v->num = atof(a->value); break;
    case RX_BOOL: v->b = strcmp(a->value, "true") == 0; break;
    case RX_STR: v->s = a->value; break;
    case RX_NUMS: fail_msg("%s: a list argument (%s) in the table", r->desc->name, a->key);
    }
}

/* The row's layer, created for a batch of BATCH with x, w and dy drawn; training as given. */
static void rig_row(rig *r, const parts_row *row, bool training)
{
    rig_open_from(r, row->dir, row->name, 7);
    for (int i = 0; i < MAX_KV && row->args[i].key; i++) rig_set(r, &row->args[i]);
    rig_build(r, row->in, BATCH);
    tensor_uniform(&r->rng, &r->dy, -1.0f, 1.0f);
    r->ctx.training = training;
}

/* Numbers drawn from `from` to `to` (net.h's count, the host's own); a state moved other than by
 * draws would count as some vast number, which no layer here draws. */
static uint64_t draws_between(rx_rng from, rx_rng to)
{
    const uint64_t n = rng_draws_between(from.s, to.s);
    if (n > (1u << 24)) fail_msg("the rng moved by no whole number of draws");
    return n;
}

/* r moved on by `draws` numbers (net.h). */
static rx_rng rng_after(rx_rng r, uint64_t draws)
{
    r.s = rng_skip(r.s, draws);
    return r;
}

/* One part's buffers, as the host lends them to a part. */
typedef struct part {
    const rig *r;           /* the layer, its self and w, shared by every part */
    int64_t first, n;
    rx_ctx ctx;
    rx_tensor x, y, dy, dx; /* x and dy: the whole batch's rows; y and dx of its own */
    rx_tensor dw[RX_MAX_TENSORS];
    unsigned char *workspace; /* workspace_bytes * n, then GUARD bytes that must stay 0xA5 */
    void *state;
    int rc;
} part;

/* Rows [first, first + n) of t, a view. */
static rx_tensor rows_of(const rx_tensor *t, int64_t first, int64_t n)
{
    rx_tensor v = *t;
    v.shape.d[0] = n;
    v.data = t->data + (size_t)first * (size_t)(rx_numel(t->shape) / t->shape.d[0]);
    return v;
}

/* A tensor of t's shape with n rows, every entry NaN (so that an entry left unwritten shows). */
static rx_tensor nan_rows(const rx_tensor *t, int64_t n)
{
    rx_shape s = t->shape;
    s.d[0] = n;
    rx_tensor v = tensor_new(s);
    for (int64_t i = 0; i < rx_numel(s); i++) v.data[i] = NAN;
    return v;
}

static void part_open(part *p, const rig *r, int64_t first, int64_t n, uint64_t per_sample_draws, rx_rng start)
{
    memset(p, 0, sizeof *p);
    p->r = r;
    p->first = first;
    p->n = n;
    const size_t bytes = r->info.workspace_bytes * (size_t)n + r->info.workspace_thread_bytes;  /* one thread */
    p->workspace = malloc(bytes + GUARD);
    assert_non_null(p->workspace);
    memset(p->workspace + bytes, 0xA5, GUARD);
    p->ctx = (rx_ctx){ .device = RX_CPU, .training = r->ctx.training, .threads = 1,
                       .rng = rng_after(start, (uint64_t)first * per_sample_draws),
                       .workspace = bytes ? p->workspace : NULL, .workspace_bytes = bytes };
    p->state = r->info.state_bytes ? calloc(r->info.state_bytes, (size_t)n) : NULL;
    assert_true(p->state || !r->info.state_bytes);
    p->x = rows_of(&r->x, first, n);
    p->dy = rows_of(&r->dy, first, n);
    p->y = nan_rows(&r->y, n);
    p->dx = nan_rows(&r->dx, n);
    for (int i = 0; i < r->info.ntensors; i++) p->dw[i] = tensor_new(r->dw[i].shape);
}

static void part_close(part *p, const rig *r)
{
    free(p->workspace);
    free(p->state);
    free(p->y.data);
    free(p->dx.data);
    for (int i = 0; i < r->info.ntensors; i++) free(p->dw[i].data);
}

static float max_abs(const float *v, int64_t n)
{
    float m = 0.0f;
    for (int64_t i = 0; i < n; i++) m = fmaxf(m, fabsf(v[i]));
    return m;
}

/* got (n) against want (n): the same bits, or within tol of want's largest magnitude. */
static void expect_close(const float *got, const float *want, int64_t n, bool bits, double tol, const char *what,
                         const char *where)
{
    const double bound = tol * max_abs(want, n);
    for (int64_t i = 0; i < n; i++) {
        const bool same = bits ? memcmp(&got[i], &want[i], sizeof(float)) == 0 : fabs(got[i] - want[i]) <= bound;
        if (!same)
            fail_msg("%s: %s[%lld] is %.9g in parts, %.9g in the whole batch (%s)", where, what, (long long)i, got[i],
                     want[i], bits ? "the same bits expected" : "beyond the tolerance");
    }
}

static void *part_forward(void *arg)
{
    part *p = arg;
    p->rc = p->r->desc->layer.forward[RX_CPU](p->r->self, &p->ctx, &p->x, p->r->w, &p->y, p->state);
    return NULL;
}

static void *part_backward(void *arg)
{
    part *p = arg;
    p->rc = p->r->desc->layer.backward[RX_CPU](p->r->self, &p->ctx, &p->x, &p->y, &p->dy, p->r->w, p->state, &p->dx,
                                               p->dw);
    return NULL;
}

/* OP on every part at once, a thread each (POSIX threads, which a race detector follows, where
 * it would take OpenMP's own synchronization for races); each call's failure in its rc. */
static void parts_at_once(part *parts, int nparts, void *(*op)(void *), const char *what)
{
    pthread_t threads[BATCH];
    for (int i = 0; i < nparts; i++) assert_int_equal(pthread_create(&threads[i], NULL, op, &parts[i]), 0);
    for (int i = 0; i < nparts; i++) assert_int_equal(pthread_join(threads[i], NULL), 0);
    for (int i = 0; i < nparts; i++)
        if (parts[i].rc != 0) fail_msg("%s: %s of a part failed: %s", parts[i].r->desc->name, what, parts[i].ctx.err);
}

/* One part against the whole batch's rows: y, dx, state, its workspace's guard and its draws. */
static void part_expect_rows(const part *p, const rig *r, const parts_row *row, uint64_t per, rx_rng start,
                             const char *where)
{
    const size_t state = r->info.state_bytes;
    const rx_tensor y = rows_of(&r->y, p->first, p->n), dx = rows_of(&r->dx, p->first, p->n);
    expect_close(p->y.data, y.data, rx_numel(y.shape), row->bits, Y_TOL, "y", where);
    expect_close(p->dx.data, dx.data, rx_numel(dx.shape), row->bits, Y_TOL, "dx", where);
    if (state && memcmp(p->state, (const char *)r->state + (size_t)p->first * state, state * (size_t)p->n) != 0)
        fail_msg("%s: the state of samples [%lld, %lld) is not the whole batch's at sample * state_bytes", where,
                 (long long)p->first, (long long)(p->first + p->n));
    const unsigned char *guard = p->workspace + p->ctx.workspace_bytes;
    for (int i = 0; i < GUARD; i++)
        if (guard[i] != 0xA5) fail_msg("%s: wrote past its workspace of %zu bytes", where, p->ctx.workspace_bytes);
    const uint64_t drawn = draws_between(rng_after(start, (uint64_t)p->first * per), p->ctx.rng);
    if (drawn != per * (uint64_t)p->n)
        fail_msg("%s: a part of %lld samples drew %llu numbers, the whole batch %llu per sample", where,
                 (long long)p->n, (unsigned long long)drawn, (unsigned long long)per);
}

/* The row cut as `c`: every part against the whole batch, and the parts' dw summed against its dw. */
static void expect_parts_agree(const parts_row *row, bool training, const cuts *c)
{
    char where[256];
    int len = snprintf(where, sizeof where, "%s", row->name);
    for (int i = 0; i < MAX_KV && row->args[i].key; i++)
        len += snprintf(where + len, sizeof where - (size_t)len, " %s=%s", row->args[i].key, row->args[i].value);
    snprintf(where + len, sizeof where - (size_t)len, ", %d parts, %s", c->n, training ? "training" : "evaluation");
    rig r;
    rig_row(&r, row, training);
    if (!r.info.per_sample) fail_msg("%s: create does not declare per_sample", where);
    const rx_rng start = r.ctx.rng;
    rig_forward(&r);
    const uint64_t draws = draws_between(start, r.ctx.rng);
    if (draws % BATCH) fail_msg("%s: drew %llu numbers for %d samples", where, (unsigned long long)draws, BATCH);
    rig_backward(&r, true);

    part parts[BATCH];
    for (int i = 0; i < c->n; i++) part_open(&parts[i], &r, c->at[i], c->at[i + 1] - c->at[i], draws / BATCH, start);
    parts_at_once(parts, c->n, part_forward, "forward");
    parts_at_once(parts, c->n, part_backward, "backward");
    for (int i = 0; i < c->n; i++) part_expect_rows(&parts[i], &r, row, draws / BATCH, start, where);
    for (int t = 0; t < r.info.ntensors; t++) {
        const int64_t n = rx_numel(r.dw[t].shape);
        float *sum = floats(n);
        for (int i = 0; i < c->n; i++)
            for (int64_t j = 0; j < n; j++) sum[j] += parts[i].dw[t].data[j];
        expect_close(sum, r.dw[t].data, n, false, DW_TOL, r.info.tensors[t].name, where);
        free(sum);
    }
    for (int i = 0; i < c->n; i++) part_close(&parts[i], &r);
    rig_free(&r);
}

/* Every row, in training and in evaluation, cut in two and in three (a part of one sample). */
static void test_parts_match_the_whole_batch(void **state)
{
    const size_t rows = sizeof table / sizeof table[0];
    for (size_t i = 0; i < rows; i++)
        for (int training = 0; training < 2; training++)
            for (size_t s = 0; s < sizeof splits / sizeof splits[0]; s++)
                expect_parts_agree(&table[i], training, &splits[s]);
    print_message("%zu rows passed\n", rows);
}

/* Dropout draws one number per element, so a part's mask is the whole batch's rows only from
 * the rng the whole batch's forward reached at the part's first sample: from the batch's own
 * start, the last part's mask is another. */
static void test_dropout_part_draws_from_its_offset(void **state)
{
    const parts_row row = { PLUGINS, "dropout", { { "p", "0.5" } }, S(4, 5), true };
    rig r;
    rig_row(&r, &row, true);
    const rx_rng start = r.ctx.rng;
    rig_forward(&r);
    assert_int_equal(draws_between(start, r.ctx.rng), BATCH * 20);
    part p;
    part_open(&p, &r, 2, BATCH - 2, 0, start);  /* 0 draws per sample: from the batch's start */
    assert_int_equal(r.desc->layer.forward[RX_CPU](r.self, &p.ctx, &p.x, r.w, &p.y, p.state), 0);
    assert_memory_not_equal(p.state, (const char *)r.state + 2 * r.info.state_bytes, 3 * r.info.state_bytes);
    part_close(&p, &r);
    part_open(&p, &r, 2, BATCH - 2, 20, start);
    assert_int_equal(r.desc->layer.forward[RX_CPU](r.self, &p.ctx, &p.x, r.w, &p.y, p.state), 0);
    assert_memory_equal(p.state, (const char *)r.state + 2 * r.info.state_bytes, 3 * r.info.state_bytes);
    assert_memory_equal(p.y.data, r.y.data + 2 * 20, sizeof(float) * 3 * 20);
    part_close(&p, &r);
    rig_free(&r);
}

/* Batchnorm normalizes with the batch's statistics in training: never per_sample. */
static void test_batchnorm_sees_the_batch(void **state)
{
    const rx_shape shapes[] = { S(3, 4, 5), S(4) };
    for (int i = 0; i < 2; i++) {
        rig r;
        rig_open(&r, "batchnorm", 7);
        rig_alloc(&r, shapes[i], 2);
        assert_false(r.info.per_sample);
        rig_free(&r);
    }
}

static bool in_table(const char *name)
{
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(table[i].dir, PLUGINS) == 0 && strcmp(table[i].name, name) == 0) return true;
    return false;
}

/* Every layer of the build is in the table or in batch_layers: a new layer is decided on. */
static void test_every_layer_decided(void **state)
{
    DIR *d = opendir(PLUGINS "/layers");
    assert_non_null(d);
    int seen = 0;
    for (struct dirent *e; (e = readdir(d));) {
        const size_t len = strlen(e->d_name);
        if (len < 4 || strcmp(e->d_name + len - 3, ".so") != 0) continue;
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(len - 3), e->d_name);
        bool batch = false;
        for (size_t i = 0; i < sizeof batch_layers / sizeof batch_layers[0]; i++)
            batch |= strcmp(name, batch_layers[i]) == 0;
        if (!batch && !in_table(name))
            fail_msg("layer %s is neither in test_parts.c's table nor in its batch_layers: does it declare per_sample?",
                     name);
        seen++;
    }
    closedir(d);
    assert_true(seen > 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parts_match_the_whole_batch),
        cmocka_unit_test(test_dropout_part_draws_from_its_offset),
        cmocka_unit_test(test_batchnorm_sees_the_batch),
        cmocka_unit_test(test_every_layer_decided),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
