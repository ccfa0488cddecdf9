/* check.c: the checks behind `runexp check` (see check.h).
 *
 * Every buffer handed to the plugin is filled with NaN first and followed by guard values, so
 * an output left unwritten or a write past the end is caught, not just a wrong number. Inputs
 * are uniform in [-1, 1] (or the options' scale); a probe whose left and right differences
 * disagree has crossed a kink (relu at 0, a tie in max-pool) and is skipped, as Caffe's gradient
 * checker does. Stochastic layers see the same random numbers in every forward: the context's
 * RNG is rewound before each one. Every check but the speed runs in training and again in
 * evaluation, where rows start with "eval: ". */
#include "check.h"

#include <cblas.h>
#include <math.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "checked.h"
#include "device.h"
#include "net.h"

#define GUARD(n) ((n) + 16)       /* floats after each buffer: overruns up to its own size are caught */
#define GUARD_VALUE 1234.5678f
#define BUFFER_GRAD_MARK 7.0f     /* a buffer's gradient holds this across a backward: none is asked for */
#define EPS 1e-2                  /* finite-difference step: large enough to rise above rounding */
#define EPS_RETRY 1e-1            /* a disagreeing probe's other steps (see gradient_check) */
#define EPS_FINE 1e-3
#define MAX_PROBES 48             /* entries of each tensor checked by finite differences */
/* A gradient passes when |analytic - numeric| <= REL * max(|a|, |n|) + ABS. */
#define REL 1e-2
#define ABS 1e-3
/* CPU vs CUDA, unless the options say otherwise: a relative error of 1e-3, room for a different
 * summation order in cuBLAS and in reductions, far below what a wrong index or a missing term
 * gives. */
#define DEVICE_BOUND 1e-3
/* A per_sample layer's parts against its whole batch, in units of the largest value: rounding
 * only (Winograd groups samples by part, so its sums may round differently: up to 3e-6 seen),
 * far below what a sample reaching another gives. */
#define PARTS_BOUND 1e-5

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
    rx_rng rng;                  /* the checks' own: inputs, parameters, which entries to probe */
    rx_layer_info info;
    int64_t n;                   /* batch */
    buffer x, y, dy, dx, state;
    int32_t *labels;             /* (batch), for a loss */
    buffer w[RX_MAX_TENSORS], dw[RX_MAX_TENSORS];
    void *workspace;
    const char *prefix;          /* before each row's name: "eval: " in evaluation */
    int failures;
} harness;

/* One pass's first results, kept for the checks after it: y (N, out...), dx (N, in...), then
 * every tensor and every tensor's gradient, each set flat in declaration order. */
typedef struct results {
    float *y, *dx, *w, *dw;      /* y is the one allocation */
} results;

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

/* A batch of n samples of shape per_sample at data, on the CPU. */
static rx_tensor tensor_of(float *data, int64_t n, rx_shape per_sample)
{
    rx_tensor t = { .data = data, .shape = { .ndim = per_sample.ndim + 1, .d = { n } }, .device = RX_CPU };
    for (int i = 0; i < per_sample.ndim; i++) t.shape.d[i + 1] = per_sample.d[i];
    return t;
}

static void report(harness *h, const char *what, const char *verdict, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void report(harness *h, const char *what, const char *verdict, const char *fmt, ...)
{
    char detail[512], name[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    snprintf(name, sizeof name, "%s%s", h->prefix ? h->prefix : "", what);
    fprintf(h->o->out, "  %-32s %-5s %s\n", name, verdict, detail);
    h->failures += strcmp(verdict, "FAIL") == 0;
}

static void fill_uniform(float *v, size_t n, rx_rng *rng, float scale)
{
    for (size_t i = 0; i < n; i++) v[i] = scale * (2.0f * rx_rng_uniform(rng) - 1.0f);
}

static float input_scale(const check_options *o)
{
    return o->input_scale > 0 ? o->input_scale : 1.0f;
}

/* ---- A layer's tensors, as one flat set ---- */

static size_t tensors_total(const harness *h)
{
    size_t n = 0;
    for (int t = 0; t < h->info.ntensors; t++) n += h->w[t].n;
    return n;
}

static void tensors_save(const harness *h, const buffer *set, float *flat)
{
    for (int t = 0; t < h->info.ntensors; flat += set[t].n, t++) memcpy(flat, set[t].data, set[t].n * sizeof(float));
}

/* Views of the layer's tensors: each of set's buffers, or (set NULL) consecutive in flat. */
static void tensor_views(const harness *h, const buffer *set, float *flat, rx_tensor *out)
{
    for (int t = 0; t < h->info.ntensors; t++) {
        out[t] = (rx_tensor){ .data = set ? set[t].data : flat, .shape = h->info.tensors[t].shape, .device = RX_CPU };
        flat += h->w[t].n;
    }
}

static bool tensors_equal(const harness *h, const buffer *set, const float *flat)
{
    for (int t = 0; t < h->info.ntensors; flat += set[t].n, t++)
        if (memcmp(flat, set[t].data, set[t].n * sizeof(float)) != 0) return false;
    return true;
}

static void grads_zero(harness *h)
{
    for (int t = 0; t < h->info.ntensors; t++) buffer_fill(&h->dw[t], 0);
}

static int results_take(const harness *h, results *r)
{
    size_t nw = tensors_total(h);
    r->y = malloc((h->y.n + h->dx.n + 2 * nw + 1) * sizeof(float));
    if (!r->y) return -1;
    r->dx = r->y + h->y.n;
    r->w = r->dx + h->dx.n;
    r->dw = r->w + nw;
    memcpy(r->y, h->y.data, h->y.n * sizeof(float));
    memcpy(r->dx, h->dx.data, h->dx.n * sizeof(float));
    tensors_save(h, h->w, r->w);
    tensors_save(h, h->dw, r->dw);
    return 0;
}

/* ---- Layers ---- */

static int layer_forward(harness *h)
{
    rx_tensor x = tensor_of(h->x.data, h->n, h->o->in), y = tensor_of(h->y.data, h->n, h->info.out);
    rx_tensor w[RX_MAX_TENSORS];
    tensor_views(h, h->w, NULL, w);
    h->ctx.rng = h->rng0;
    h->ctx.err[0] = '\0';
    return h->d->layer.forward[RX_CPU](h->self, &h->ctx, &x, w, &y, h->state.data);
}

static int layer_backward(harness *h, bool want_dx)
{
    rx_tensor x = tensor_of(h->x.data, h->n, h->o->in), y = tensor_of(h->y.data, h->n, h->info.out);
    rx_tensor dy = tensor_of(h->dy.data, h->n, h->info.out), dx = tensor_of(h->dx.data, h->n, h->o->in);
    rx_tensor w[RX_MAX_TENSORS], dw[RX_MAX_TENSORS];
    tensor_views(h, h->w, NULL, w);
    tensor_views(h, h->dw, NULL, dw);
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

static bool gradient_close(double analytic, double numeric)
{
    return fabs(analytic - numeric) <= REL * fmax(fabs(analytic), fabs(numeric)) + ABS;
}

/* Central differences on the options' number of entries of v (MAX_PROBES unless they say
 * otherwise) against the analytic gradient g; objective(h) is the scalar whose gradient g is. A
 * probe that disagrees is tried again with a step ten times larger and one ten times smaller, and
 * the closest of the three counts: fast algorithms round more (Winograd's transforms change the
 * rounding of a whole tile when one input moves), enough to swamp a difference over 1e-2 on a
 * large layer; and a kink crossed by a sliver of the step bends the difference too little to be
 * seen as a kink but enough to fail. A wrong gradient disagrees at every step. */
static void gradient_check(harness *h, const char *what, float *v, size_t n, const float *g,
                           double (*objective)(harness *))
{
    size_t limit = h->o->probes == CHECK_EVERY_ENTRY ? n : h->o->probes > 0 ? (size_t)h->o->probes : MAX_PROBES;
    size_t probes = n < limit ? n : limit, bad = 0, kinks = 0, worst_i = 0;
    double worst = -1, worst_a = 0, worst_n = 0;
    double mid = objective(h);
    for (size_t k = 0; k < probes; k++) {
        size_t i = probes == n ? k : (size_t)rx_rng_below(&h->rng, n);
        double numeric = probe(h, v, i, mid, EPS, objective), analytic = g[i];
        if (isnan(numeric)) {
            kinks++;
            continue;
        }
        for (int retry = 0; retry < 2 && !gradient_close(analytic, numeric); retry++) {
            double again = probe(h, v, i, mid, retry ? EPS_FINE : EPS_RETRY, objective);
            if (!isnan(again) && fabs(analytic - again) < fabs(analytic - numeric)) numeric = again;
        }
        bad += !gradient_close(analytic, numeric);
        if (!(fabs(analytic - numeric) <= worst)) {
            worst = fabs(analytic - numeric);
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

/* Largest |a - b| / (|b| + 1e-3) over n values: the relative error, safe near zero. The same
 * bits count as no error (a NaN the CPU also gives); any other NaN as an infinite one. */
static double max_relative_error(const float *a, const float *b, size_t n)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        if (memcmp(&a[i], &b[i], sizeof(float)) == 0) continue;
        double e = fabs((double)a[i] - b[i]) / (fabs((double)b[i]) + 1e-3);
        if (isnan(e)) return INFINITY;
        if (e > worst) worst = e;
    }
    return worst;
}

/* Largest |a - b| over the largest |b|: an error scaled by the values' size, for sums whose
 * rounding depends on how they were grouped (entries near zero would inflate a per-entry ratio). */
static double max_scaled_error(const float *a, const float *b, size_t n)
{
    double worst = 0, scale = 1e-30;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= worst)) worst = d; /* a NaN wins */
        if (fabs((double)b[i]) > scale) scale = fabs((double)b[i]);
    }
    return worst / scale;
}

/* ---- One pass over a layer, in training or in evaluation ---- */

/* Forward writes every output and nothing more. False when it failed outright. */
static bool check_forward_writes(harness *h)
{
    buffer_fill(&h->y, NAN);
    if (layer_forward(h) != 0) {
        report(h, "forward", "FAIL", "returned an error: %s", h->ctx.err);
        return false;
    }
    char out[96];
    shape_format(h->info.out, out, sizeof out);
    size_t unwritten = count_nonfinite(&h->y);
    if (!guard_intact(&h->y)) report(h, "forward writes y", "FAIL", "wrote past the end of y (N, %s)", out + 1);
    else if (unwritten) report(h, "forward writes y", "FAIL", "%zu of %zu outputs unwritten or not finite", unwritten, h->y.n);
    else report(h, "forward writes y", "pass", "%zu outputs, all finite", h->y.n);
    return true;
}

/* Backward writes every input gradient, keeps within dx and dw, and leaves the gradients of the
 * buffers (which no one asks for) as they were. False when it failed outright. */
static bool check_backward_writes(harness *h)
{
    grads_zero(h);
    for (int t = 0; t < h->info.ntensors; t++)
        if (h->info.tensors[t].buffer) buffer_fill(&h->dw[t], BUFFER_GRAD_MARK);
    buffer_fill(&h->dx, NAN);
    if (layer_backward(h, true) != 0) {
        report(h, "backward", "FAIL", "returned an error: %s", h->ctx.err);
        return false;
    }
    size_t dx_bad = count_nonfinite(&h->dx);
    bool guards = guard_intact(&h->dx), marks = true;
    for (int t = 0; t < h->info.ntensors; t++) {
        guards &= guard_intact(&h->dw[t]) && count_nonfinite(&h->dw[t]) == 0;
        for (size_t i = 0; h->info.tensors[t].buffer && i < h->dw[t].n; i++) marks &= h->dw[t].data[i] == BUFFER_GRAD_MARK;
        if (h->info.tensors[t].buffer) buffer_fill(&h->dw[t], 0);
    }
    const char *what = "backward writes dx, dw";
    if (!guards) report(h, what, "FAIL", "wrote past the end of dx or a dw, or left a dw not finite");
    else if (!marks) report(h, what, "FAIL", "changed the gradient of a buffer: none is asked for");
    else if (dx_bad) report(h, what, "FAIL", "%zu of %zu input gradients unwritten or not finite", dx_bad, h->dx.n);
    else report(h, what, "pass", "%zu input gradients, %d parameter tensors", h->dx.n, h->info.ntensors);
    return true;
}

/* A second backward must add the same amount again (dw doubles), and dx = NULL (the host asks
 * for no input gradient below the first layer) must give the same dw. */
static void check_backward_adds(harness *h, const results *first)
{
    if (h->info.ntensors == 0) {
        bool null_ok = layer_backward(h, false) == 0;
        report(h, "backward with dx = NULL", null_ok ? "pass" : "FAIL", "%s", null_ok ? "accepted" : h->ctx.err);
        return;
    }
    bool doubled = layer_backward(h, true) == 0;
    const float *once = first->dw;
    for (int t = 0; doubled && t < h->info.ntensors; once += h->dw[t].n, t++)
        for (size_t i = 0; i < h->dw[t].n && doubled; i++)
            doubled = fabsf(h->dw[t].data[i] - 2 * once[i]) <= 1e-5f * (1 + fabsf(2 * once[i]));
    report(h, "backward adds into dw", doubled ? "pass" : "FAIL", "%s",
           doubled ? "a second backward doubled every dw" : "a second backward did not double dw (it must add, not write)");
    grads_zero(h);
    bool null_ok = layer_backward(h, false) == 0 && tensors_equal(h, h->dw, first->dw);
    report(h, "backward with dx = NULL", null_ok ? "pass" : "FAIL", "%s",
           null_ok ? "same dw, no input gradient" : "failed, or gave another dw");
}

/* The same inputs give the same bits. */
static void check_determinism(harness *h, const results *first)
{
    bool same = layer_forward(h) == 0 && same_floats(&h->y, first->y);
    grads_zero(h);
    same = same && layer_backward(h, true) == 0 && same_floats(&h->dx, first->dx) && tensors_equal(h, h->dw, first->dw);
    report(h, "determinism", same ? "pass" : "FAIL", "%s",
           same ? "forward and backward repeat bit for bit" : "a repeat gave other numbers");
}

/* Finite differences, against the pass's first gradients. */
static void check_gradients(harness *h, const results *first)
{
    gradient_check(h, "gradient wrt input", h->x.data, h->x.n, first->dx, layer_objective);
    const float *g = first->dw;
    for (int t = 0; t < h->info.ntensors; g += h->dw[t].n, t++) {
        char what[64];
        snprintf(what, sizeof what, "gradient wrt %s", h->info.tensors[t].name);
        if (h->info.tensors[t].buffer) report(h, what, "skip", "a buffer: saved, never trained");
        else gradient_check(h, what, h->w[t].data, h->w[t].n, g, layer_objective);
    }
}

/* In evaluation the buffers are read only: every forward and backward of the pass left them as
 * they were at its start (w0). */
static void check_buffers_kept(harness *h, const float *w0)
{
    char names[128] = "";
    size_t used = 0;
    for (int t = 0; t < h->info.ntensors && used < sizeof names; t++)
        if (h->info.tensors[t].buffer)
            used += (size_t)snprintf(names + used, sizeof names - used, "%s%s", used ? ", " : "", h->info.tensors[t].name);
    if (!used) return;
    if (tensors_equal(h, h->w, w0)) report(h, "buffers kept", "pass", "%s as they were, bit for bit", names);
    else report(h, "buffers kept", "FAIL", "evaluation changed %s: buffers are read only then", names);
}

/* ---- CPU vs CUDA ---- */

/* The bound for this pass; negative: the same bits. */
static double device_bound(const check_options *o, bool training)
{
    double b = !training && o->device_bound_eval != 0 ? o->device_bound_eval : o->device_bound;
    return b != 0 ? b : DEVICE_BOUND;
}

/* Whether the CUDA side can be compared; if not, the skip row is written. */
static bool cuda_comparable(harness *h, const char *what, bool has_cuda_path)
{
    char why[ERR_LEN];
    if (!has_cuda_path) report(h, what, "skip", "the plugin has no CUDA path");
    else if (!device_usable(RX_CUDA, why)) report(h, what, "skip", "%s", why);
    else return true;
    return false;
}

/* The layer's buffers on the GPU. */
typedef struct gpu_side {
    rx_ctx ctx;
    float *x, *y, *dy, *dx;
    void *state, *work;
    rx_tensor w[RX_MAX_TENSORS], dw[RX_MAX_TENSORS];
} gpu_side;

/* Copies of x, dy, the state and the tensors as they are now, with dw zero; false when out of
 * memory. */
static bool gpu_alloc(harness *h, gpu_side *g)
{
    size_t nx = h->x.n * sizeof(float), ny = h->y.n * sizeof(float);
    g->x = device_alloc(RX_CUDA, nx), g->dx = device_alloc(RX_CUDA, nx);
    g->y = device_alloc(RX_CUDA, ny), g->dy = device_alloc(RX_CUDA, ny);
    g->state = device_alloc(RX_CUDA, h->info.state_bytes * (size_t)h->n);
    g->work = device_alloc(RX_CUDA, h->ctx.workspace_bytes);
    bool ok = g->x && g->dx && g->y && g->dy && g->state && g->work;
    for (int t = 0; t < h->info.ntensors; t++) {
        size_t bytes = h->w[t].n * sizeof(float);
        g->w[t] = (rx_tensor){ .data = device_alloc(RX_CUDA, bytes), .shape = h->info.tensors[t].shape, .device = RX_CUDA };
        g->dw[t] = (rx_tensor){ .data = device_alloc(RX_CUDA, bytes), .shape = h->info.tensors[t].shape, .device = RX_CUDA };
        ok = ok && g->w[t].data && g->dw[t].data;
        if (ok) host_to_device(RX_CUDA, g->w[t].data, h->w[t].data, bytes);
    }
    if (!ok) return false;
    host_to_device(RX_CUDA, g->x, h->x.data, nx);
    host_to_device(RX_CUDA, g->dy, h->dy.data, ny);
    /* The CPU's state as it is, so that what a layer leaves unwritten (batchnorm uses 2C floats
     * of N * 2C) compares equal. */
    host_to_device(RX_CUDA, g->state, h->state.data, h->info.state_bytes * (size_t)h->n);
    g->ctx.workspace = g->work;
    g->ctx.workspace_bytes = h->ctx.workspace_bytes;
    return true;
}

static void gpu_free(const harness *h, gpu_side *g)
{
    for (int t = 0; t < h->info.ntensors; t++) {
        device_free(RX_CUDA, g->w[t].data);
        device_free(RX_CUDA, g->dw[t].data);
    }
    device_free(RX_CUDA, g->x);
    device_free(RX_CUDA, g->y);
    device_free(RX_CUDA, g->dy);
    device_free(RX_CUDA, g->dx);
    device_free(RX_CUDA, g->state);
    device_free(RX_CUDA, g->work);
    device_close_context(RX_CUDA, &g->ctx);
}

/* Forward, backward, and a second backward with dx = NULL, so dw holds the gradient twice
 * over: on the CPU (from zeroed dw), then on the GPU on the same inputs. */
static bool run_both(harness *h, gpu_side *g)
{
    grads_zero(h);
    if (layer_forward(h) != 0 || layer_backward(h, true) != 0 || layer_backward(h, false) != 0) return false;
    rx_tensor x = tensor_of(h->x.data, h->n, h->o->in), y = tensor_of(h->y.data, h->n, h->info.out), dy = y, dx = x;
    x.data = g->x, y.data = g->y, dy.data = g->dy, dx.data = g->dx;
    x.device = y.device = dy.device = dx.device = RX_CUDA;
    g->ctx.rng = h->rng0;
    g->ctx.training = h->ctx.training;
    const rx_layer_ops *l = &h->d->layer;
    return l->forward[RX_CUDA](h->self, &g->ctx, &x, g->w, &y, g->state) == 0 &&
           l->backward[RX_CUDA](h->self, &g->ctx, &x, &y, &dy, g->w, g->state, &dx, g->dw) == 0 &&
           l->backward[RX_CUDA](h->self, &g->ctx, &x, &y, &dy, g->w, g->state, NULL, g->dw) == 0;
}

/* The error between n floats on the GPU and the CPU's: the relative error, or with `bits`
 * none for the same bits and an infinite one otherwise. scratch holds n floats. */
static double gpu_error(const void *gpu, const float *cpu, size_t n, bool bits, float *scratch)
{
    device_to_host(RX_CUDA, scratch, gpu, n * sizeof(float));
    if (bits) return memcmp(scratch, cpu, n * sizeof(float)) == 0 ? 0 : INFINITY;
    return max_relative_error(scratch, cpu, n);
}

/* Compares y, dx, dw, the tensors after the pass (which a training forward may update: the
 * buffers) and, if asked, the state. Buffers' gradients, and tensors nothing may change, must
 * keep their bits. */
static void compare_results(harness *h, const char *what, gpu_side *g, double bound)
{
    bool bits = bound < 0;
    size_t nstate = h->o->compare_state ? h->info.state_bytes * (size_t)h->n / sizeof(float) : 0;
    size_t most = h->x.n > h->y.n ? h->x.n : h->y.n;
    most = most > nstate ? most : nstate;
    for (int t = 0; t < h->info.ntensors; t++) most = most > h->w[t].n ? most : h->w[t].n;
    float *scratch = malloc((most + 1) * sizeof(float));
    if (!scratch) {
        report(h, what, "FAIL", "out of memory for the comparison");
        return;
    }
    double ey = gpu_error(g->y, h->y.data, h->y.n, bits, scratch), edw = 0, ew = 0;
    double edx = gpu_error(g->dx, h->dx.data, h->dx.n, bits, scratch);
    double es = nstate ? gpu_error(g->state, h->state.data, nstate, bits, scratch) : 0;
    for (int t = 0; t < h->info.ntensors; t++) {
        bool buf = h->info.tensors[t].buffer;
        edw = fmax(edw, gpu_error(g->dw[t].data, h->dw[t].data, h->dw[t].n, bits || buf, scratch));
        ew = fmax(ew, gpu_error(g->w[t].data, h->w[t].data, h->w[t].n, bits || !buf || !h->ctx.training, scratch));
    }
    free(scratch);
    char failed[ERR_LEN];
    if (device_check(RX_CUDA, failed) != 0) {
        report(h, what, "FAIL", "%s", failed);
        return;
    }
    char limit[48] = "the same bits", state[48] = "";
    if (!bits) snprintf(limit, sizeof limit, "%g", bound);
    if (nstate) snprintf(state, sizeof state, ", state %.2g", es);
    bool pass = fmax(fmax(ey, edx), fmax(fmax(edw, ew), es)) <= (bits ? 0 : bound);
    report(h, what, pass ? "pass" : "FAIL", "relative error y %.2g, dx %.2g, dw %.2g, tensors %.2g%s (bound %s)",
           ey, edx, edw, ew, state, limit);
}

/* The same forward and backward on the GPU, against the CPU's; `what` names the row. */
static void compare_devices(harness *h, const char *what)
{
    if (h->o->cpu_only) {
        report(h, what, "skip", "these arguments run on the CPU only");
        return;
    }
    if (!cuda_comparable(h, what, h->d->layer.forward[RX_CUDA] != NULL)) return;
    gpu_side g = { .ctx = h->ctx };
    g.ctx.device = RX_CUDA;
    char why[ERR_LEN];
    if (device_open_context(RX_CUDA, &g.ctx, why) != 0) {
        report(h, what, "FAIL", "%s", why);
        return;
    }
    if (!gpu_alloc(h, &g)) report(h, what, "FAIL", "out of GPU memory");
    else if (!run_both(h, &g))
        report(h, what, "FAIL", "forward or backward failed: %s", g.ctx.err[0] ? g.ctx.err : h->ctx.err);
    else compare_results(h, what, &g, device_bound(h->o, h->ctx.training));
    gpu_free(h, &g);
}

/* The devices again on x drawn from five values (ties everywhere) with a NaN in every 50: a
 * layer that selects (a max) must pick the same entries on both. x is restored after. */
static void compare_on_ties(harness *h)
{
    float *x0 = malloc((h->x.n + 1) * sizeof(float));
    if (!x0) {
        report(h, "cpu vs cuda, ties", "FAIL", "out of memory for the comparison");
        return;
    }
    memcpy(x0, h->x.data, h->x.n * sizeof(float));
    for (size_t i = 0; i < h->x.n; i++) h->x.data[i] = (float)rx_rng_below(&h->rng, 5) - 2.0f;
    for (size_t k = 0; k < h->x.n / 50 + 1; k++) h->x.data[rx_rng_below(&h->rng, h->x.n)] = NAN;
    compare_devices(h, "cpu vs cuda, ties");
    memcpy(h->x.data, x0, h->x.n * sizeof(float));
    free(x0);
}

/* The workspace a call on `samples` samples gets: the checks run on one thread (layer_plan
 * checked the whole batch's). */
static size_t layer_workspace(const harness *h, int64_t samples)
{
    return h->info.workspace_bytes * (size_t)samples + h->info.workspace_thread_bytes;
}

/* ---- per_sample: the batch in two parts ---- */

/* Samples [first, first + count) alone, as the host's lanes run them: one thread, the workspace
 * of count samples, the part's rows of x, dy and the state, random numbers from where the whole
 * batch's draws (per_draws a sample) reached its first sample. y and dx get the part's rows; dw
 * (every tensor's, flat) is added into. */
static int part_pass(harness *h, int64_t first, int64_t count, uint64_t per_draws, float *y, float *dx, float *dw)
{
    const size_t in = (size_t)first * (size_t)rx_numel(h->o->in), out = (size_t)first * (size_t)rx_numel(h->info.out);
    rx_tensor x = tensor_of(h->x.data + in, count, h->o->in), yt = tensor_of(y + out, count, h->info.out);
    rx_tensor dyt = tensor_of(h->dy.data + out, count, h->info.out), dxt = tensor_of(dx + in, count, h->o->in);
    rx_tensor w[RX_MAX_TENSORS], dwt[RX_MAX_TENSORS];
    tensor_views(h, h->w, NULL, w);
    tensor_views(h, NULL, dw, dwt);
    rx_ctx ctx = h->ctx;
    ctx.threads = 1;
    ctx.rng.s = rng_skip(h->rng0.s, (uint64_t)first * per_draws);
    ctx.workspace_bytes = layer_workspace(h, count);
    void *state = (char *)h->state.data + (size_t)first * h->info.state_bytes;
    int rc = h->d->layer.forward[RX_CPU](h->self, &ctx, &x, w, &yt, state);
    if (rc == 0) rc = h->d->layer.backward[RX_CPU](h->self, &ctx, &x, &yt, &dyt, w, state, &dxt, dwt);
    if (rc != 0) snprintf(h->ctx.err, sizeof h->ctx.err, "%s", ctx.err);
    return rc;
}

/* A layer that declared per_sample, run on the batch cut in two, must give the whole batch's y
 * and dx (to rounding: an algorithm may group samples) and dw that adds up to the whole batch's,
 * having drawn the same count of random numbers for every sample. */
static void check_parts(harness *h, const results *whole)
{
    if (!h->info.per_sample || h->n < 2) return;
    const char *what = "per_sample: two parts";
    float *y = malloc((h->y.n + h->dx.n + tensors_total(h) + 1) * sizeof(float));
    if (!y) {
        report(h, what, "FAIL", "out of memory for the check");
        return;
    }
    float *dx = y + h->y.n, *dw = dx + h->dx.n;
    memset(dw, 0, tensors_total(h) * sizeof(float));
    uint64_t draws = layer_forward(h) == 0 ? rng_draws_between(h->rng0.s, h->ctx.rng.s) : 0;
    int64_t a = h->n / 2;
    if (draws % (uint64_t)h->n)
        report(h, what, "FAIL", "drew %llu random numbers for %lld samples, not the same number for each",
               (unsigned long long)draws, (long long)h->n);
    else if (part_pass(h, 0, a, draws / (uint64_t)h->n, y, dx, dw) != 0 ||
             part_pass(h, a, h->n - a, draws / (uint64_t)h->n, y, dx, dw) != 0)
        report(h, what, "FAIL", "a part failed: %s", h->ctx.err);
    else {
        double e = fmax(max_scaled_error(y, whole->y, h->y.n), max_scaled_error(dx, whole->dx, h->dx.n));
        e = fmax(e, max_scaled_error(dw, whole->dw, tensors_total(h)));
        report(h, what, e <= PARTS_BOUND ? "pass" : "FAIL", "%lld and %lld samples, one thread each: y, dx and dw "
               "%s the whole batch's (largest error %.2g of the largest value)", (long long)a, (long long)(h->n - a),
               e <= PARTS_BOUND ? "match" : "differ from", e);
    }
    free(y);
}

/* ---- Traits: what lets the host run layers in another order (runexp.h) ---- */

/* forward, then y copied out (n floats). */
static bool forward_into(harness *h, float *y)
{
    if (layer_forward(h) != 0) return false;
    memcpy(y, h->y.data, h->y.n * sizeof(float));
    return true;
}

/* x[i] of a ramp of n points from -2 to 2 through 0 (reversed: from the top down). */
static float ramp(size_t i, size_t n, bool reversed)
{
    return (float)(4.0 * ((double)(reversed ? n - 1 - i : i) - (double)(n / 2)) / (double)n);
}

/* RX_TRAIT_MONOTONE: no tensors, y shaped as x, and one non-decreasing f of each element: a ramp
 * gives non-decreasing outputs, the ramp reversed gives them reversed, and backward with dy = 1
 * gives dx >= 0, and 0 wherever f is flat (equal outputs of distinct inputs). NULL when the
 * layer keeps the promise, else what it broke, in why. */
static const char *monotone_broken(harness *h, float *scratch, char *why, size_t len)
{
    const size_t n = h->x.n;
    if (h->info.ntensors != 0 || h->y.n != n) return "declares tensors or changes the shape: not one function of each element";
    float *y = scratch, *back = scratch + n;
    for (size_t i = 0; i < n; i++) h->x.data[i] = ramp(i, n, true);
    if (!forward_into(h, back)) return snprintf(why, len, "forward failed: %s", h->ctx.err), why;
    for (size_t i = 0; i < n; i++) h->x.data[i] = ramp(i, n, false), h->dy.data[i] = 1.0f;
    if (!forward_into(h, y) || layer_backward(h, true) != 0) return snprintf(why, len, "failed: %s", h->ctx.err), why;
    const float *x = h->x.data, *g = h->dx.data;
    for (size_t i = 0; i < n; i++) {
        if (back[n - 1 - i] != y[i])
            return snprintf(why, len, "not elementwise: x = %g gives %g at entry %zu, %g at entry %zu", x[i], y[i], i,
                            back[n - 1 - i], n - 1 - i), why;
        if (i > 0 && !(y[i] >= y[i - 1]))
            return snprintf(why, len, "decreasing: f(%g) = %g, f(%g) = %g", x[i - 1], y[i - 1], x[i], y[i]), why;
    }
    for (size_t i = 0; i < n; i++) {
        const bool flat = (i > 0 && y[i - 1] == y[i]) || (i + 1 < n && y[i + 1] == y[i]);
        if (!(g[i] >= 0) || (flat && g[i] != 0))
            return snprintf(why, len, "gradient %g at x = %g, where f is %s", g[i], x[i], flat ? "flat" : "rising"), why;
    }
    return NULL;
}

/* RX_TRAIT_MAX_POOL, as the host uses it: with r = relu, layer(r(x)) = r(layer(x)), and the input
 * gradients agree, r'(x) * backward(r(x), dy) = backward(x, r'(y) * dy). NULL, or what broke. */
static const char *max_pool_broken(harness *h, const float *x0, const float *dy0, float *scratch, char *why,
                                   size_t len)
{
    const size_t nx = h->x.n, ny = h->y.n;
    float *ya = scratch, *dxa = ya + ny, *yb = dxa + nx;
    for (size_t i = 0; i < nx; i++) h->x.data[i] = x0[i] > 0 ? x0[i] : 0.0f; /* relu first */
    if (!forward_into(h, ya) || layer_backward(h, true) != 0) return snprintf(why, len, "failed: %s", h->ctx.err), why;
    for (size_t i = 0; i < nx; i++) dxa[i] = x0[i] > 0 ? h->dx.data[i] : 0.0f;
    memcpy(h->x.data, x0, nx * sizeof(float)); /* relu after */
    if (!forward_into(h, yb)) return snprintf(why, len, "forward failed: %s", h->ctx.err), why;
    for (size_t j = 0; j < ny; j++) h->dy.data[j] = yb[j] > 0 ? dy0[j] : 0.0f;
    if (layer_backward(h, true) != 0) return snprintf(why, len, "backward failed: %s", h->ctx.err), why;
    for (size_t j = 0; j < ny; j++)
        if (ya[j] != (yb[j] > 0 ? yb[j] : 0.0f))
            return snprintf(why, len, "y[%zu] is %g with relu first, relu(%g) with relu after", j, ya[j], yb[j]), why;
    for (size_t i = 0; i < nx; i++)
        if (dxa[i] != h->dx.data[i])
            return snprintf(why, len, "dx[%zu] is %g with relu first, %g with relu after", i, dxa[i], h->dx.data[i]), why;
    return NULL;
}

/* The traits the layer declared, each checked on the harness's x and dy, which are then as before. */
static void check_traits(harness *h)
{
    const unsigned traits = h->d->layer.traits;
    if (!(traits & (RX_TRAIT_MONOTONE | RX_TRAIT_MAX_POOL))) return;
    const size_t nx = h->x.n, ny = h->y.n;
    float *saved = malloc((2 * nx + 2 * ny + nx + ny + 1) * sizeof(float)), *scratch = saved ? saved + nx + ny : NULL;
    if (!saved) { report(h, "traits", "FAIL", "out of memory for the check"); return; }
    memcpy(saved, h->x.data, nx * sizeof(float));
    memcpy(saved + nx, h->dy.data, ny * sizeof(float));
    char why[256];
    const char *broken;
    if (traits & RX_TRAIT_MONOTONE) {
        broken = monotone_broken(h, scratch, why, sizeof why);
        if (broken) report(h, "trait: monotone", "FAIL", "%s", broken);
        else report(h, "trait: monotone", "pass", "one non-decreasing function of each element, gradient 0 where flat");
        memcpy(h->x.data, saved, nx * sizeof(float));
        memcpy(h->dy.data, saved + nx, ny * sizeof(float));
    }
    if (traits & RX_TRAIT_MAX_POOL) {
        broken = max_pool_broken(h, saved, saved + nx, scratch, why, sizeof why);
        if (broken) report(h, "trait: max_pool", "FAIL", "%s", broken);
        else report(h, "trait: max_pool", "pass", "commutes with relu: the same y and dx either way");
        memcpy(h->x.data, saved, nx * sizeof(float));
        memcpy(h->dy.data, saved + nx, ny * sizeof(float));
    }
    free(saved);
}

/* One pass of every check in the mode ctx.training says. Returns -1 when out of memory, 1 when
 * forward or backward failed outright (the rest would say nothing), else 0. */
static int layer_pass(harness *h, bool training)
{
    h->ctx.training = training;
    h->prefix = training ? "" : "eval: ";
    float *w0 = malloc((tensors_total(h) + 1) * sizeof(float));
    if (!w0) return -1;
    tensors_save(h, h->w, w0);
    results first = { 0 };
    int rc = 1;
    if (check_forward_writes(h) && check_backward_writes(h)) rc = results_take(h, &first);
    if (rc == 0) {
        check_backward_adds(h, &first);
        check_determinism(h, &first);
        check_gradients(h, &first);
        check_parts(h, &first);
        check_traits(h);
        if (!training) check_buffers_kept(h, w0);
        compare_devices(h, "cpu vs cuda");
        if (h->o->device_ties) compare_on_ties(h);
    }
    free(first.y);
    free(w0);
    h->prefix = "";
    return rc;
}

/* create, and its report in a row. Returns -1 when it refused (err says why), 1 when what it
 * reported is wrong (a FAIL row), 0 when the checks can go on. */
static int layer_create(harness *h, char *err)
{
    char in[96], out[96], tensors[256] = "";
    shape_format(h->o->in, in, sizeof in);
    if (h->d->layer.create(&h->self, &h->ctx, h->u->args, h->o->in, &h->info) != 0)
        return errorf(err, "%s: create refused the input %s: %s", h->d->name, in, h->ctx.err);
    char buf[256];
    const char *problem = layer_info_problem(&h->info, buf, sizeof buf);
    if (problem) {
        report(h, "create", "FAIL", "%s", problem);
        return 1;
    }
    shape_format(h->info.out, out, sizeof out);
    size_t used = 0;
    for (int t = 0; t < h->info.ntensors && used < sizeof tensors; t++) {
        char s[64];
        shape_format(h->info.tensors[t].shape, s, sizeof s);
        used += (size_t)snprintf(tensors + used, sizeof tensors - used, ", %s %s", h->info.tensors[t].name, s);
    }
    report(h, "create", "pass", "%s -> %s%s", in, out, tensors);
    return 0;
}

/* What the checks of a layer allocate for the batch: x, dx, y and dy with their guards (twice
 * their size each), the state and the workspace, all checked, beside the tensors. Refuses a
 * batch whose buffers overflow or pass the machine's memory, naming --batch. */
static int layer_plan(const harness *h, char *err)
{
    size_origin o = { "command line", "--batch", (long long)h->n };
    int64_t per = 2 * (rx_numel(h->o->in) + rx_numel(h->info.out)); /* x and dx, y and dy */
    size_t io, state, work, total;
    bool ok = checked_bytes(h->n, per, 2 * sizeof(float), &io) &&
              checked_bytes(h->n, (int64_t)h->info.state_bytes, 1, &state) &&
              checked_bytes(h->n, (int64_t)h->info.workspace_bytes, 1, &work) && checked_add(io, state, &total) &&
              checked_add(total, work, &total) && checked_add(total, h->info.workspace_thread_bytes, &total) &&
              total <= checked_host_memory();
    double sample = (double)per * 8 + (double)h->info.state_bytes + (double)h->info.workspace_bytes;
    if (!ok)
        return size_error(err, &o, (double)h->n * sample + (double)h->info.workspace_thread_bytes,
                          "%s's checks (x, y and their gradients with guards, state, workspace)", h->d->name);
    return 0;
}

/* Every buffer, with guards; parameters U(-0.5, 0.5), x in the options' scale, dy U(-1, 1).
 * layer_plan checked every size first. */
static int layer_alloc(harness *h)
{
    size_t nx = (size_t)(h->n * rx_numel(h->o->in)), ny = (size_t)(h->n * rx_numel(h->info.out));
    h->workspace = malloc(layer_workspace(h, h->n) + 64);
    int rc = buffer_alloc(&h->x, nx) | buffer_alloc(&h->y, ny) | buffer_alloc(&h->dy, ny) | buffer_alloc(&h->dx, nx) |
             buffer_alloc(&h->state, (h->info.state_bytes * (size_t)h->n + sizeof(float) - 1) / sizeof(float));
    for (int t = 0; t < h->info.ntensors; t++) {
        size_t nw = (size_t)rx_numel(h->info.tensors[t].shape);
        rc |= buffer_alloc(&h->w[t], nw) | buffer_alloc(&h->dw[t], nw);
        /* Buffers (running statistics) start as declared: a random running variance could be < 0. */
        const rx_tensor_decl *d = &h->info.tensors[t];
        if (rc == 0 && d->buffer)
            buffer_fill(&h->w[t], d->init == RX_INIT_ONES ? 1.0f : d->init == RX_INIT_CONSTANT ? d->scale : 0.0f);
        else if (rc == 0) fill_uniform(h->w[t].data, nw, &h->rng, 0.5f);
    }
    if (rc != 0 || !h->workspace) return -1;
    h->ctx.workspace = h->workspace;
    h->ctx.workspace_bytes = layer_workspace(h, h->n);
    fill_uniform(h->x.data, nx, &h->rng, input_scale(h->o));
    fill_uniform(h->dy.data, ny, &h->rng, 1.0f);
    return 0;
}

/* Forward and backward in training, repeated for about 0.2 s (or the options' speed_seconds):
 * the mean of each over the repetitions, and how many there were. */
static void report_speed(harness *h)
{
    int reps = 0;
    const double seconds = h->o->speed_seconds > 0 ? h->o->speed_seconds : 0.2;
    double t0 = now_seconds(), tf = 0, tb = 0;
    h->ctx.training = true;
    while (now_seconds() - t0 < seconds && reps < 10000) {
        double a = now_seconds();
        layer_forward(h);
        double b = now_seconds();
        layer_backward(h, true);
        tf += b - a;
        tb += now_seconds() - b;
        reps++;
    }
    report(h, "speed", "info", "forward %.3g ms, backward %.3g ms, batch %lld, %d repetition%s", 1e3 * tf / reps,
           1e3 * tb / reps, (long long)h->n, reps, reps == 1 ? "" : "s");
}

static int check_layer(harness *h, char *err)
{
    int rc = layer_create(h, err);
    if (rc != 0) return rc < 0 ? -1 : 0;
    if (layer_plan(h, err) != 0) return -1;
    if (layer_alloc(h) != 0) return errorf(err, "%s: out of memory for the checks", h->d->name);
    rc = layer_pass(h, true);
    if (rc == 0) rc = layer_pass(h, false);
    if (rc < 0) return errorf(err, "out of memory for the checks");
    if (rc == 0 && !h->o->no_speed) report_speed(h);
    return 0;
}

/* ---- Losses ---- */

static double loss_mean(harness *h, bool with_grad)
{
    rx_tensor logits = tensor_of(h->x.data, h->n, h->o->in), dl = tensor_of(h->dx.data, h->n, h->o->in);
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

/* The GPU's losses and gradient, and its losses without the gradient, into host (N + N * C +
 * N floats); false when something failed. */
static bool loss_on_gpu(harness *h, rx_ctx *ctx, float *host)
{
    size_t nx = h->x.n, n = (size_t)h->n;
    float *x = device_alloc(RX_CUDA, nx * sizeof(float)), *dl = device_alloc(RX_CUDA, nx * sizeof(float));
    float *losses = device_alloc(RX_CUDA, n * sizeof(float));
    int32_t *labels = device_alloc(RX_CUDA, n * sizeof(int32_t));
    bool ok = x && dl && losses && labels;
    if (ok) {
        host_to_device(RX_CUDA, x, h->x.data, nx * sizeof(float));
        host_to_device(RX_CUDA, labels, h->labels, n * sizeof(int32_t));
        rx_tensor tx = tensor_of(h->x.data, h->n, h->o->in), tdl = tx;
        tx.data = x, tdl.data = dl;
        tx.device = tdl.device = RX_CUDA;
        ok = h->d->loss.forward[RX_CUDA](h->self, ctx, &tx, labels, losses, &tdl) == 0;
        if (ok) device_to_host(RX_CUDA, host, losses, n * sizeof(float));
        if (ok) device_to_host(RX_CUDA, host + n, dl, nx * sizeof(float));
        ok = ok && h->d->loss.forward[RX_CUDA](h->self, ctx, &tx, labels, losses, NULL) == 0;
        if (ok) device_to_host(RX_CUDA, host + n + nx, losses, n * sizeof(float));
        char failed[ERR_LEN];
        if (ok && device_check(RX_CUDA, failed) != 0) {
            snprintf(ctx->err, sizeof ctx->err, "%s", failed);
            ok = false;
        }
    }
    device_free(RX_CUDA, x);
    device_free(RX_CUDA, dl);
    device_free(RX_CUDA, losses);
    device_free(RX_CUDA, labels);
    return ok;
}

/* The losses and gradient on the GPU against the CPU's, and the GPU's losses without the
 * gradient against its own with it, bit for bit. */
static void compare_loss_devices(harness *h)
{
    if (!cuda_comparable(h, "cpu vs cuda", h->d->loss.forward[RX_CUDA] != NULL)) return;
    rx_ctx ctx = h->ctx;
    ctx.device = RX_CUDA;
    char why[ERR_LEN];
    size_t n = (size_t)h->n, nx = h->x.n;
    float *host = malloc((2 * n + nx) * sizeof(float));
    if (!host || device_open_context(RX_CUDA, &ctx, why) != 0) {
        report(h, "cpu vs cuda", "FAIL", "%s", host ? why : "out of memory");
        free(host);
        return;
    }
    double bound = device_bound(h->o, true);
    if (isnan(loss_mean(h, true)) || !loss_on_gpu(h, &ctx, host)) {
        report(h, "cpu vs cuda", "FAIL", "the loss failed: %s", ctx.err[0] ? ctx.err : h->ctx.err);
    } else {
        double el = max_relative_error(host, h->y.data, n), edl = max_relative_error(host + n, h->dx.data, nx);
        if (bound < 0) el = memcmp(host, h->y.data, n * sizeof(float)) ? INFINITY : 0;
        if (bound < 0) edl = memcmp(host + n, h->dx.data, nx * sizeof(float)) ? INFINITY : 0;
        bool same = memcmp(host, host + n + nx, n * sizeof(float)) == 0;
        bool pass = same && el <= fmax(bound, 0) && edl <= fmax(bound, 0);
        report(h, "cpu vs cuda", pass ? "pass" : "FAIL", "relative error losses %.2g, dlogits %.2g (bound %g)%s", el, edl,
               fmax(bound, 0), same ? "" : "; other losses without dlogits");
    }
    free(host);
    device_close_context(RX_CUDA, &ctx);
}

static int check_loss(harness *h, char *err)
{
    const check_options *o = h->o;
    char in[96];
    shape_format(o->in, in, sizeof in);
    if (o->in.ndim != 1)
        return errorf(err, "%s: a loss is checked on 1-D logits, e.g. --shape=10; got %s", h->d->name, in);
    int classes = (int)o->in.d[0];
    if (h->d->loss.create(&h->self, &h->ctx, h->u->args, o->in, classes) != 0)
        return errorf(err, "%s: create refused the logits %s: %s", h->d->name, in, h->ctx.err);
    report(h, "create", "pass", "logits %s, %d classes", in, classes);
    size_origin batch = { "command line", "--batch", (long long)h->n };
    size_t nx, bytes;
    if (!checked_bytes(h->n, classes, 1, &nx) || !checked_bytes(h->n, 5 * (int64_t)classes + 3, sizeof(float), &bytes) ||
        bytes > checked_host_memory())
        return size_error(err, &batch, (double)h->n * (5.0 * classes + 3) * sizeof(float),
                          "%s's checks (logits, gradients with guards, losses)", h->d->name);
    h->labels = malloc((size_t)h->n * sizeof *h->labels);
    if (buffer_alloc(&h->x, nx) | buffer_alloc(&h->dx, nx) | buffer_alloc(&h->y, (size_t)h->n) || !h->labels)
        return errorf(err, "out of memory for the checks");
    fill_uniform(h->x.data, nx, &h->rng, 3.0f * input_scale(o));
    for (int64_t i = 0; i < h->n; i++) h->labels[i] = (int32_t)rx_rng_below(&h->rng, (uint64_t)classes);

    double mean = loss_mean(h, true);
    bool written = isfinite(mean) && guard_intact(&h->y) && guard_intact(&h->dx) && count_nonfinite(&h->dx) == 0;
    if (written) report(h, "forward writes losses, grad", "pass", "mean loss %.6g", mean);
    else report(h, "forward writes losses, grad", "FAIL", "a loss or gradient unwritten, not finite, or past the end");
    float *g = malloc(nx * sizeof(float));
    if (!g) return errorf(err, "out of memory for the checks");
    memcpy(g, h->dx.data, nx * sizeof(float));
    bool same = loss_mean(h, false) == mean;
    report(h, "forward with dlogits = NULL", same ? "pass" : "FAIL", "%s", same ? "same losses" : "other losses, or failed");
    bool repeat = loss_mean(h, true) == mean && same_floats(&h->dx, g);
    report(h, "determinism", repeat ? "pass" : "FAIL", "%s",
           repeat ? "losses and gradient repeat bit for bit" : "a repeat gave other numbers");

    gradient_check(h, "gradient wrt logits", h->x.data, nx, g, loss_objective);
    free(g);
    compare_loss_devices(h);
    return 0;
}

static int check_in_process(const plugin_use *u, const check_options *o, char *err)
{
    harness h = { .u = u, .d = u->pl.desc, .o = o, .n = o->batch };
    h.ctx = (rx_ctx){ .device = RX_CPU, .training = true, .threads = 1 };
    /* One thread, OpenBLAS's included, as the trainer keeps it inside its own threads: left to
     * itself, OpenBLAS's pool woke and yielded beside the layer, and the speed row of one layer
     * varied by 1.8x run to run (82 to 148 ms for the same backward). */
    openblas_set_num_threads(1);
    h.rng0 = h.ctx.rng = rx_rng_stream(o->seed, 0xD0);
    h.rng = rx_rng_stream(o->seed, 0xC4EC);
    fprintf(o->out, "runexp check %s (%s)\n", h.d->name, u->pl.file);
    int params = plugin_param_count(h.d);
    bool is_layer = h.d->kind == RX_LAYER, is_loss = h.d->kind == RX_LOSS;
    bool cpu = plugin_runs_on(h.d, RX_CPU), cuda = plugin_runs_on(h.d, RX_CUDA);
    report(&h, "descriptor", "pass", "ABI %u, kind %s, %d parameter%s, devices:%s%s", h.d->abi,
           plugin_kind_name(h.d->kind), params, params == 1 ? "" : "s", cpu ? " cpu" : "", cuda ? " cuda" : "");
    int rc = -1;
    if (is_layer && cpu) rc = check_layer(&h, err);
    else if (is_loss && cpu) rc = check_loss(&h, err);
    else snprintf(err, ERR_LEN, "%s: only layers and losses with a CPU path can be checked", h.d->name);
    if (h.self) {
        if (is_layer && h.d->layer.destroy) h.d->layer.destroy(h.self);
        if (is_loss && h.d->loss.destroy) h.d->loss.destroy(h.self);
    }
    free(h.x.data);
    free(h.y.data);
    free(h.dy.data);
    free(h.dx.data);
    free(h.state.data);
    free(h.labels);
    free(h.workspace);
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
    int64_t n;
    char in[96];
    shape_format(o->in, in, sizeof in);
    if (o->batch < 1 || o->batch > CHECKED_MAX_DIM)
        return errorf(err, "command line: --batch = %lld: a batch is 1 to 2147483647 samples", (long long)o->batch);
    if (!checked_numel(o->in, &n) || o->in.ndim > RX_MAX_DIMS - 1)
        return errorf(err, "command line: --shape = %s: each dimension must be 1 to 2147483647, at most %d of them "
                      "and 2^40 elements in all", in, RX_MAX_DIMS - 1);
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
        fprintf(o->out, "  %-32s %-5s the plugin crashed the checks with signal %d (%s): the row after the last\n"
                "  %-32s %-5s one printed; a write past a buffer or a bad pointer is the usual cause\n",
                "crash", "FAIL", WTERMSIG(status), strsignal(WTERMSIG(status)), "", "");
        fprintf(o->out, "%s: the checks crashed\n", u->pl.desc->name);
        return 1;
    }
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 255;
    return code == 255 ? -1 : code;
}
