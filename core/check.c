/* check.c: the checks behind `runexp check` (see check.h).
 *
 * Every buffer handed to the plugin is filled with NaN first and followed by guard values, so
 * an output left unwritten or a write past the end is caught, not just a wrong number. Inputs
 * are uniform in [-1, 1]; a probe whose left and right differences disagree has crossed a
 * kink (relu at 0, a tie in max-pool) and is skipped, as Caffe's gradient checker does. Stochastic layers see the same random numbers in every
 * forward: the context's RNG is rewound before each one. */
#include "check.h"

#include <math.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "device.h"
#include "net.h"

#define GUARD(n) ((n) + 16)       /* floats after each buffer: overruns up to its own size are caught */
#define GUARD_VALUE 1234.5678f
#define EPS 1e-2                  /* finite-difference step: large enough to rise above rounding */
#define EPS_RETRY 1e-1            /* a disagreeing probe's second step (see gradient_check) */
#define MAX_PROBES 48             /* entries of each tensor checked by finite differences */
/* A gradient passes when |analytic - numeric| <= REL * max(|a|, |n|) + ABS. */
#define REL 1e-2
#define ABS 1e-3

typedef struct buffer {
    float *data;
    size_t n;       /* usable floats; GUARD(n) more follow */
} buffer;

typedef struct harness {
    const plugin_use *u;
    const rx_plugin *d;
    const check_options *o;
    void *self;
    rx_ctx ctx;
    rx_rng rng0;                 /* rewound to before every forward */
    rx_layer_info info;
    int64_t n;                   /* batch */
    buffer x, y, dy, dx, state;
    int32_t *labels;             /* (batch), for a loss */
    buffer w[RX_MAX_TENSORS], dw[RX_MAX_TENSORS];
    int failures;
} harness;

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int buffer_alloc(buffer *b, size_t n)
{
    b->n = n;
    b->data = malloc((n + GUARD(n)) * sizeof(float));
    if (!b->data) return -1;
    for (size_t i = 0; i < n + GUARD(n); i++) b->data[i] = i < n ? NAN : GUARD_VALUE;
    return 0;
}

static void buffer_fill(buffer *b, float v)
{
    for (size_t i = 0; i < b->n; i++) b->data[i] = v;
}

static bool guard_intact(const buffer *b)
{
    for (size_t i = b->n; i < b->n + GUARD(b->n); i++)
        if (b->data[i] != GUARD_VALUE) return false;
    return true;
}

static size_t count_nonfinite(const buffer *b)
{
    size_t bad = 0;
    for (size_t i = 0; i < b->n; i++) bad += !isfinite(b->data[i]);
    return bad;
}

static rx_tensor tensor_of(const buffer *b, int64_t n, rx_shape per_sample)
{
    rx_tensor t = { .data = b->data, .shape = { .ndim = per_sample.ndim + 1, .d = { n } }, .device = RX_CPU };
    for (int i = 0; i < per_sample.ndim; i++) t.shape.d[i + 1] = per_sample.d[i];
    return t;
}

static void report(harness *h, const char *what, const char *verdict, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void report(harness *h, const char *what, const char *verdict, const char *fmt, ...)
{
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    fprintf(h->o->out, "  %-28s %-5s %s\n", what, verdict, detail);
    h->failures += strcmp(verdict, "FAIL") == 0;
}

static void fill_uniform(float *v, size_t n, rx_rng *rng, float scale)
{
    for (size_t i = 0; i < n; i++) v[i] = scale * (2.0f * rx_rng_uniform(rng) - 1.0f);
}

/* ---- Layers ---- */

static int layer_forward(harness *h)
{
    rx_tensor x = tensor_of(&h->x, h->n, h->o->in), y = tensor_of(&h->y, h->n, h->info.out);
    rx_tensor w[RX_MAX_TENSORS];
    for (int t = 0; t < h->info.ntensors; t++)
        w[t] = (rx_tensor){ .data = h->w[t].data, .shape = h->info.tensors[t].shape, .device = RX_CPU };
    h->ctx.rng = h->rng0;
    h->ctx.err[0] = '\0';
    return h->d->layer.forward[RX_CPU](h->self, &h->ctx, &x, w, &y, h->state.data);
}

static int layer_backward(harness *h, bool want_dx)
{
    rx_tensor x = tensor_of(&h->x, h->n, h->o->in), y = tensor_of(&h->y, h->n, h->info.out);
    rx_tensor dy = tensor_of(&h->dy, h->n, h->info.out), dx = tensor_of(&h->dx, h->n, h->o->in);
    rx_tensor w[RX_MAX_TENSORS], dw[RX_MAX_TENSORS];
    for (int t = 0; t < h->info.ntensors; t++) {
        w[t] = (rx_tensor){ .data = h->w[t].data, .shape = h->info.tensors[t].shape, .device = RX_CPU };
        dw[t] = (rx_tensor){ .data = h->dw[t].data, .shape = h->info.tensors[t].shape, .device = RX_CPU };
    }
    h->ctx.err[0] = '\0';
    return h->d->layer.backward[RX_CPU](h->self, &h->ctx, &x, &y, &dy, w, h->state.data, want_dx ? &dx : NULL, dw);
}

/* L = sum(y * dy), in double: its gradient wrt x is dx, wrt w is dw. */
static double layer_objective(harness *h)
{
    if (layer_forward(h) != 0) return NAN;
    double l = 0;
    for (size_t i = 0; i < h->y.n; i++) l += (double)h->y.data[i] * (double)h->dy.data[i];
    return l;
}

/* A probe's verdict: the central difference, or NAN when the left and right differences
 * disagree, which means the step crossed a kink and the probe says nothing. */
static double central_difference(double left, double mid, double right, double step_left, double step_right)
{
    double l = (mid - left) / step_left, r = (right - mid) / step_right;
    if (fabs(l - r) > 4 * (REL * fmax(fabs(l), fabs(r)) + ABS)) return NAN;
    return (right - left) / (step_left + step_right);
}

/* The central difference of objective(h) at v[i] with this step, or NAN at a kink. */
static double probe(harness *h, float *v, size_t i, double mid, double step, double (*objective)(harness *))
{
    float keep = v[i];
    v[i] = keep + (float)step;
    double right = objective(h), step_right = (double)v[i] - keep; /* the steps float arithmetic took */
    v[i] = keep - (float)step;
    double left = objective(h), step_left = keep - (double)v[i];
    v[i] = keep;
    return central_difference(left, mid, right, step_left, step_right);
}

/* Central differences on up to MAX_PROBES entries of v against the analytic gradient g;
 * objective(h) is the scalar whose gradient g is. A probe that disagrees is tried once more
 * with a step ten times larger: fast algorithms round more (Winograd's transforms change the
 * rounding of a whole tile when one input moves), enough to swamp a difference over 1e-2 on a
 * large layer, while a wrong gradient disagrees at both steps. */
static void gradient_check(harness *h, const char *what, float *v, size_t n, const float *g,
                           double (*objective)(harness *), rx_rng *rng)
{
    size_t probes = n < MAX_PROBES ? n : MAX_PROBES, bad = 0, kinks = 0, worst_i = 0;
    double worst = -1, worst_a = 0, worst_n = 0;
    double mid = objective(h);
    for (size_t k = 0; k < probes; k++) {
        size_t i = n <= MAX_PROBES ? k : (size_t)rx_rng_below(rng, n);
        double numeric = probe(h, v, i, mid, EPS, objective), analytic = g[i];
        if (isnan(numeric)) {
            kinks++;
            continue;
        }
        double err = fabs(analytic - numeric);
        if (!(err <= REL * fmax(fabs(analytic), fabs(numeric)) + ABS)) {
            double again = probe(h, v, i, mid, EPS_RETRY, objective);
            if (!isnan(again) && fabs(analytic - again) < err) {
                numeric = again;
                err = fabs(analytic - again);
            }
        }
        if (!(err <= REL * fmax(fabs(analytic), fabs(numeric)) + ABS)) bad++;
        if (!(err <= worst)) {
            worst = err;
            worst_i = i;
            worst_a = analytic;
            worst_n = numeric;
        }
    }
    if (bad)
        report(h, what, "FAIL", "%zu of %zu entries differ; worst [%zu]: backward %.6g, finite difference %.6g",
               bad, probes - kinks, worst_i, worst_a, worst_n);
    else if (kinks * 2 > probes)
        report(h, what, "FAIL", "%zu of %zu probes crossed a kink: the gradient could not be checked", kinks, probes);
    else
        report(h, what, "pass", "%zu entries (%zu at a kink, skipped), worst difference %.2g", probes - kinks,
               kinks, worst < 0 ? 0 : worst);
}

static bool same_floats(const buffer *a, const float *b)
{
    return memcmp(a->data, b, a->n * sizeof(float)) == 0;
}

/* Largest |a - b| / (|b| + 1e-3) over n values: the relative error, safe near zero. */
static double max_relative_error(const float *a, const float *b, size_t n)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]) / (fabs((double)b[i]) + 1e-3);
        if (!(e <= worst)) worst = e; /* NaN counts as the worst */
    }
    return worst;
}

/* Runs the same forward and backward on the GPU and compares y, dx and every dw with the CPU's
 * (y1, dx1, dw1). Bound: a relative error of 1e-3, room for a different summation order in
 * cuBLAS and in reductions, far below what a wrong index or a missing term gives. */
static void compare_devices(harness *h, const float *y1, const float *dx1, const float *dw1)
{
    if (!h->d->layer.forward[RX_CUDA]) {
        report(h, "cpu vs cuda", "skip", "the plugin has no CUDA path");
        return;
    }
    char why[ERR_LEN];
    if (!device_usable(RX_CUDA, why)) {
        report(h, "cpu vs cuda", "skip", "%s", why);
        return;
    }
    rx_ctx ctx = h->ctx;
    ctx.device = RX_CUDA;
    if (device_open_context(RX_CUDA, &ctx, why) != 0) {
        report(h, "cpu vs cuda", "FAIL", "%s", why);
        return;
    }
    size_t nx = h->x.n, ny = h->y.n, ns = h->state.n * sizeof(float), nwk = h->info.workspace_bytes * (size_t)h->n;
    float *x = device_alloc(RX_CUDA, nx * 4), *y = device_alloc(RX_CUDA, ny * 4), *dy = device_alloc(RX_CUDA, ny * 4);
    float *dx = device_alloc(RX_CUDA, nx * 4), *host = malloc((nx + ny + 1) * sizeof(float));
    void *state = device_alloc(RX_CUDA, ns), *work = device_alloc(RX_CUDA, nwk);
    rx_tensor w[RX_MAX_TENSORS], dw[RX_MAX_TENSORS];
    bool ok = x && y && dy && dx && host && state && work;
    for (int t = 0; t < h->info.ntensors; t++) {
        size_t n = h->w[t].n;
        w[t] = (rx_tensor){ .data = device_alloc(RX_CUDA, n * 4), .shape = h->info.tensors[t].shape, .device = RX_CUDA };
        dw[t] = (rx_tensor){ .data = device_alloc(RX_CUDA, n * 4), .shape = h->info.tensors[t].shape, .device = RX_CUDA };
        ok = ok && w[t].data && dw[t].data;
        if (ok) host_to_device(RX_CUDA, w[t].data, h->w[t].data, n * 4);
    }
    double ey = 0, edx = 0, edw = 0;
    if (ok) {
        host_to_device(RX_CUDA, x, h->x.data, nx * 4);
        host_to_device(RX_CUDA, dy, h->dy.data, ny * 4);
        rx_tensor tx = tensor_of(&h->x, h->n, h->o->in), ty = tensor_of(&h->y, h->n, h->info.out);
        rx_tensor tdy = ty, tdx = tx;
        tx.data = x, ty.data = y, tdy.data = dy, tdx.data = dx;
        tx.device = ty.device = tdy.device = tdx.device = RX_CUDA;
        ctx.workspace = work;
        ctx.workspace_bytes = nwk;
        ctx.rng = h->rng0;
        ok = h->d->layer.forward[RX_CUDA](h->self, &ctx, &tx, w, &ty, state) == 0 &&
             h->d->layer.backward[RX_CUDA](h->self, &ctx, &tx, &ty, &tdy, w, state, &tdx, dw) == 0;
    }
    if (ok) {
        device_to_host(RX_CUDA, host, y, ny * 4);
        ey = max_relative_error(host, y1, ny);
        device_to_host(RX_CUDA, host, dx, nx * 4);
        edx = max_relative_error(host, dx1, nx);
        for (int t = 0, at = 0; t < h->info.ntensors; at += (int)h->w[t].n, t++) {
            float *back = malloc(h->w[t].n * sizeof(float));
            if (!back) continue;
            device_to_host(RX_CUDA, back, dw[t].data, h->w[t].n * 4);
            edw = fmax(edw, max_relative_error(back, dw1 + at, h->w[t].n));
            free(back);
        }
    }
    if (!ok) report(h, "cpu vs cuda", "FAIL", "the CUDA path failed: %s", ctx.err[0] ? ctx.err : "out of GPU memory");
    else if (ey > 1e-3 || edx > 1e-3 || edw > 1e-3)
        report(h, "cpu vs cuda", "FAIL", "relative error y %.2g, dx %.2g, dw %.2g (bound 1e-3)", ey, edx, edw);
    else report(h, "cpu vs cuda", "pass", "relative error y %.2g, dx %.2g, dw %.2g (bound 1e-3)", ey, edx, edw);
    for (int t = 0; t < h->info.ntensors; t++) {
        device_free(RX_CUDA, w[t].data);
        device_free(RX_CUDA, dw[t].data);
    }
    device_free(RX_CUDA, x);
    device_free(RX_CUDA, y);
    device_free(RX_CUDA, dy);
    device_free(RX_CUDA, dx);
    device_free(RX_CUDA, state);
    device_free(RX_CUDA, work);
    free(host);
    device_close_context(RX_CUDA, &ctx);
}

static int check_layer(harness *h, char *err)
{
    const check_options *o = h->o;
    char in[96], out[96];
    shape_format(o->in, in, sizeof in);
    if (h->d->layer.create(&h->self, &h->ctx, h->u->args, o->in, &h->info) != 0) {
        snprintf(err, ERR_LEN, "%s: create refused the input %s: %s", h->d->name, in, h->ctx.err);
        return -1;
    }
    const char *problem = layer_info_problem(&h->info);
    if (problem) {
        report(h, "create", "FAIL", "%s", problem);
        return 0;
    }
    shape_format(h->info.out, out, sizeof out);
    char tensors[256] = "";
    size_t used = 0;
    for (int t = 0; t < h->info.ntensors && used < sizeof tensors; t++) {
        char s[64];
        shape_format(h->info.tensors[t].shape, s, sizeof s);
        used += (size_t)snprintf(tensors + used, sizeof tensors - used, ", %s %s", h->info.tensors[t].name, s);
    }
    report(h, "create", "pass", "%s -> %s%s", in, out, tensors);

    /* Buffers, all with guards. */
    rx_rng rng = rx_rng_stream(o->seed, 0xC4EC);
    size_t nx = (size_t)(h->n * rx_numel(o->in)), ny = (size_t)(h->n * rx_numel(h->info.out));
    void *workspace = malloc(h->info.workspace_bytes * (size_t)h->n + 64);
    int rc = buffer_alloc(&h->x, nx) | buffer_alloc(&h->y, ny) | buffer_alloc(&h->dy, ny) | buffer_alloc(&h->dx, nx) |
             buffer_alloc(&h->state, (h->info.state_bytes * (size_t)h->n + sizeof(float) - 1) / sizeof(float));
    for (int t = 0; t < h->info.ntensors; t++) {
        size_t nw = (size_t)rx_numel(h->info.tensors[t].shape);
        rc |= buffer_alloc(&h->w[t], nw) | buffer_alloc(&h->dw[t], nw);
        /* Buffers (running statistics) start as declared: a random running variance could be < 0. */
        if (rc == 0 && h->info.tensors[t].buffer) buffer_fill(&h->w[t], h->info.tensors[t].init == RX_INIT_ONES ? 1.0f : 0.0f);
        else if (rc == 0) fill_uniform(h->w[t].data, nw, &rng, 0.5f);
    }
    if (rc != 0 || !workspace) {
        free(workspace);
        snprintf(err, ERR_LEN, "out of memory for the checks");
        return -1;
    }
    h->ctx.workspace = workspace;
    h->ctx.workspace_bytes = h->info.workspace_bytes * (size_t)h->n;
    fill_uniform(h->x.data, nx, &rng, 1.0f);
    fill_uniform(h->dy.data, ny, &rng, 1.0f);

    /* Forward writes every output and nothing more. */
    h->ctx.training = true;
    if (layer_forward(h) != 0) {
        report(h, "forward", "FAIL", "returned an error: %s", h->ctx.err);
        free(workspace);
        return 0;
    }
    size_t unwritten = count_nonfinite(&h->y);
    if (!guard_intact(&h->y)) report(h, "forward writes y", "FAIL", "wrote past the end of y (N, %s)", out + 1);
    else if (unwritten) report(h, "forward writes y", "FAIL", "%zu of %zu outputs unwritten or not finite", unwritten, ny);
    else report(h, "forward writes y", "pass", "%zu outputs, all finite", ny);

    /* Backward writes every input gradient and adds into the parameter gradients. */
    for (int t = 0; t < h->info.ntensors; t++) buffer_fill(&h->dw[t], 0);
    if (layer_backward(h, true) != 0) {
        report(h, "backward", "FAIL", "returned an error: %s", h->ctx.err);
        free(workspace);
        return 0;
    }
    size_t dx_bad = count_nonfinite(&h->dx);
    bool guards = guard_intact(&h->dx);
    for (int t = 0; t < h->info.ntensors; t++) guards &= guard_intact(&h->dw[t]) && count_nonfinite(&h->dw[t]) == 0;
    if (!guards) report(h, "backward writes dx, dw", "FAIL", "wrote past the end of dx or a dw, or left a dw not finite");
    else if (dx_bad) report(h, "backward writes dx, dw", "FAIL", "%zu of %zu input gradients unwritten or not finite", dx_bad, nx);
    else report(h, "backward writes dx, dw", "pass", "%zu input gradients, %d parameter tensors", nx, h->info.ntensors);

    /* Keep the first results, for the checks that follow. */
    size_t total_w = 0;
    for (int t = 0; t < h->info.ntensors; t++) total_w += h->dw[t].n;
    float *y1 = malloc((ny + nx + total_w + 1) * sizeof(float));
    if (!y1) {
        free(workspace);
        snprintf(err, ERR_LEN, "out of memory for the checks");
        return -1;
    }
    float *dx1 = y1 + ny, *dw1 = dx1 + nx;
    memcpy(y1, h->y.data, ny * sizeof(float));
    memcpy(dx1, h->dx.data, nx * sizeof(float));
    for (int t = 0, at = 0; t < h->info.ntensors; at += (int)h->dw[t].n, t++)
        memcpy(dw1 + at, h->dw[t].data, h->dw[t].n * sizeof(float));

    if (h->info.ntensors > 0) {
        /* A second backward must add the same amount again: dw doubles. */
        bool doubled = layer_backward(h, true) == 0;
        for (int t = 0, at = 0; doubled && t < h->info.ntensors; at += (int)h->dw[t].n, t++)
            for (size_t i = 0; i < h->dw[t].n && doubled; i++)
                doubled = fabsf(h->dw[t].data[i] - 2 * dw1[at + i]) <= 1e-5f * (1 + fabsf(2 * dw1[at + i]));
        report(h, "backward adds into dw", doubled ? "pass" : "FAIL", "%s",
               doubled ? "a second backward doubled every dw" : "a second backward did not double dw (it must add, not write)");
        /* dx = NULL: the host asks for no input gradient below the first layer. */
        for (int t = 0; t < h->info.ntensors; t++) buffer_fill(&h->dw[t], 0);
        bool null_ok = layer_backward(h, false) == 0;
        for (int t = 0, at = 0; null_ok && t < h->info.ntensors; at += (int)h->dw[t].n, t++)
            null_ok = memcmp(h->dw[t].data, dw1 + at, h->dw[t].n * sizeof(float)) == 0;
        report(h, "backward with dx = NULL", null_ok ? "pass" : "FAIL", "%s",
               null_ok ? "same dw, no input gradient" : "failed, or gave another dw");
    } else {
        bool null_ok = layer_backward(h, false) == 0;
        report(h, "backward with dx = NULL", null_ok ? "pass" : "FAIL", "%s", null_ok ? "accepted" : h->ctx.err);
    }

    /* Determinism: the same inputs give the same bits. */
    bool same = layer_forward(h) == 0 && same_floats(&h->y, y1);
    for (int t = 0; t < h->info.ntensors; t++) buffer_fill(&h->dw[t], 0);
    same = same && layer_backward(h, true) == 0 && same_floats(&h->dx, dx1);
    for (int t = 0, at = 0; same && t < h->info.ntensors; at += (int)h->dw[t].n, t++)
        same = memcmp(h->dw[t].data, dw1 + at, h->dw[t].n * sizeof(float)) == 0;
    report(h, "determinism", same ? "pass" : "FAIL", "%s",
           same ? "forward and backward repeat bit for bit" : "a repeat gave other numbers");

    /* Finite differences, against the first backward's gradients. */
    gradient_check(h, "gradient wrt input", h->x.data, nx, dx1, layer_objective, &rng);
    for (int t = 0, at = 0; t < h->info.ntensors; at += (int)h->dw[t].n, t++) {
        char what[64];
        snprintf(what, sizeof what, "gradient wrt %s", h->info.tensors[t].name);
        if (h->info.tensors[t].buffer) report(h, what, "skip", "a buffer: saved, never trained");
        else gradient_check(h, what, h->w[t].data, h->w[t].n, dw1 + at, layer_objective, &rng);
    }

    compare_devices(h, y1, dx1, dw1);

    /* Speed: forward and backward, repeated for about 0.2 s. */
    int reps = 0;
    double t0 = now_seconds(), tf = 0, tb = 0;
    while (now_seconds() - t0 < 0.2 && reps < 10000) {
        double a = now_seconds();
        layer_forward(h);
        double b = now_seconds();
        layer_backward(h, true);
        tf += b - a;
        tb += now_seconds() - b;
        reps++;
    }
    report(h, "speed", "info", "forward %.3g ms, backward %.3g ms, batch %lld", 1e3 * tf / reps, 1e3 * tb / reps,
           (long long)h->n);
    free(y1);
    free(workspace);
    return 0;
}

/* ---- Losses ---- */

static double loss_mean(harness *h, bool with_grad)
{
    rx_tensor logits = tensor_of(&h->x, h->n, h->o->in), dl = tensor_of(&h->dx, h->n, h->o->in);
    h->ctx.err[0] = '\0';
    if (h->d->loss.forward[RX_CPU](h->self, &h->ctx, &logits, h->labels, h->y.data,
                                   with_grad ? &dl : NULL) != 0)
        return NAN;
    double l = 0;
    for (int64_t i = 0; i < h->n; i++) l += h->y.data[i];
    return l / (double)h->n;
}

static double loss_objective(harness *h)
{
    return loss_mean(h, false);
}

static int check_loss(harness *h, char *err)
{
    const check_options *o = h->o;
    char in[96];
    shape_format(o->in, in, sizeof in);
    if (o->in.ndim != 1) {
        snprintf(err, ERR_LEN, "%s: a loss is checked on 1-D logits, e.g. --shape=10; got %s", h->d->name, in);
        return -1;
    }
    int classes = (int)o->in.d[0];
    if (h->d->loss.create(&h->self, &h->ctx, h->u->args, o->in, classes) != 0) {
        snprintf(err, ERR_LEN, "%s: create refused the logits %s: %s", h->d->name, in, h->ctx.err);
        return -1;
    }
    report(h, "create", "pass", "logits %s, %d classes", in, classes);
    rx_rng rng = rx_rng_stream(o->seed, 0xC4EC);
    size_t nx = (size_t)(h->n * classes);
    h->labels = malloc((size_t)h->n * sizeof *h->labels);
    if (buffer_alloc(&h->x, nx) | buffer_alloc(&h->dx, nx) | buffer_alloc(&h->y, (size_t)h->n) || !h->labels) {
        snprintf(err, ERR_LEN, "out of memory for the checks");
        return -1;
    }
    fill_uniform(h->x.data, nx, &rng, 3.0f);
    for (int64_t i = 0; i < h->n; i++) h->labels[i] = (int32_t)rx_rng_below(&rng, (uint64_t)classes);

    double mean = loss_mean(h, true);
    bool written = isfinite(mean) && guard_intact(&h->y) && guard_intact(&h->dx) && count_nonfinite(&h->dx) == 0;
    if (written) report(h, "forward writes losses, grad", "pass", "mean loss %.6g", mean);
    else report(h, "forward writes losses, grad", "FAIL", "a loss or gradient unwritten, not finite, or past the end");
    float *g = malloc(nx * sizeof(float));
    if (!g) return snprintf(err, ERR_LEN, "out of memory for the checks"), -1;
    memcpy(g, h->dx.data, nx * sizeof(float));
    bool same = loss_mean(h, false) == mean;
    report(h, "forward with dlogits = NULL", same ? "pass" : "FAIL", "%s", same ? "same losses" : "other losses, or failed");
    bool repeat = loss_mean(h, true) == mean && same_floats(&h->dx, g);
    report(h, "determinism", repeat ? "pass" : "FAIL", "%s",
           repeat ? "losses and gradient repeat bit for bit" : "a repeat gave other numbers");

    gradient_check(h, "gradient wrt logits", h->x.data, nx, g, loss_objective, &rng);
    free(g);
    return 0;
}

static int check_in_process(const plugin_use *u, const check_options *o, char *err)
{
    harness h = { .u = u, .d = u->pl.desc, .o = o, .n = o->batch };
    h.ctx = (rx_ctx){ .device = RX_CPU, .training = true, .threads = 1 };
    h.rng0 = h.ctx.rng = rx_rng_stream(o->seed, 0xD0);
    fprintf(o->out, "runexp check %s (%s)\n", h.d->name, u->pl.file);
    int params = plugin_param_count(h.d);
    bool is_layer = h.d->kind == RX_LAYER, is_loss = h.d->kind == RX_LOSS;
    bool cpu = (is_layer && h.d->layer.forward[RX_CPU]) || (is_loss && h.d->loss.forward[RX_CPU]);
    bool cuda = (is_layer && h.d->layer.forward[RX_CUDA]) || (is_loss && h.d->loss.forward[RX_CUDA]);
    report(&h, "descriptor", "pass", "ABI %u, kind %s, %d parameter%s, devices:%s%s", h.d->abi,
           plugin_kind_name(h.d->kind), params, params == 1 ? "" : "s", cpu ? " cpu" : "", cuda ? " cuda" : "");
    int rc = -1;
    if (is_layer && cpu) rc = check_layer(&h, err);
    else if (is_loss && cpu) rc = check_loss(&h, err);
    else snprintf(err, ERR_LEN, "%s: only layers and losses with a CPU path can be checked", h.d->name);
    if (h.self) {
        if (h.d->kind == RX_LAYER && h.d->layer.destroy) h.d->layer.destroy(h.self);
        if (h.d->kind == RX_LOSS && h.d->loss.destroy) h.d->loss.destroy(h.self);
    }
    free(h.x.data);
    free(h.y.data);
    free(h.dy.data);
    free(h.dx.data);
    free(h.state.data);
    free(h.labels);
    for (int t = 0; t < RX_MAX_TENSORS; t++) {
        free(h.w[t].data);
        free(h.dw[t].data);
    }
    if (rc != 0) return -1;
    fprintf(o->out, "%s: %d check%s failed\n", h.d->name, h.failures, h.failures == 1 ? "" : "s");
    return h.failures;
}

/* The checks run in a child process, so a plugin that crashes (a write far past a buffer, a
 * NULL dereference) is reported as a failure of the check it was in, not a crash of runexp. */
int check_plugin(const plugin_use *u, const check_options *o, char *err)
{
    fflush(o->out);
    int pipefd[2];
    if (pipe(pipefd) != 0) return check_in_process(u, o, err);
    pid_t pid = fork();
    if (pid < 0) {
        close(pipefd[0]);
        close(pipefd[1]);
        return check_in_process(u, o, err);
    }
    if (pid == 0) {
        close(pipefd[0]);
        char child_err[ERR_LEN] = "";
        int failures = check_in_process(u, o, child_err);
        fflush(o->out);
        if (failures < 0 && write(pipefd[1], child_err, strlen(child_err)) < 0) _exit(255);
        _exit(failures < 0 ? 255 : failures > 250 ? 250 : failures);
    }
    close(pipefd[1]);
    ssize_t got = read(pipefd[0], err, ERR_LEN - 1);
    err[got > 0 ? got : 0] = '\0';
    close(pipefd[0]);
    int status;
    if (waitpid(pid, &status, 0) != pid) return snprintf(err, ERR_LEN, "lost the check process"), -1;
    if (WIFSIGNALED(status)) {
        fprintf(o->out, "  %-28s %-5s the plugin crashed the checks with signal %d (%s): the row after the last\n"
                "  %-28s %-5s one printed; a write past a buffer or a bad pointer is the usual cause\n",
                "crash", "FAIL", WTERMSIG(status), strsignal(WTERMSIG(status)), "", "");
        fprintf(o->out, "%s: the checks crashed\n", u->pl.desc->name);
        return 1;
    }
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 255;
    return code == 255 ? -1 : code;
}
