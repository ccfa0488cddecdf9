/* test_net.c: the network the host builds from a config's model list: residual blocks (what
 * they compute, and a finite-difference check of the whole network's gradient through them),
 * the shape a block's body must keep, training rules checked against the layers' tensors, the
 * optimizer's parameter groups, the dirac and whitening initializations, and lanes (a CPU batch
 * cut into one part per thread) against one thread. */
#include "helpers.h"

#include <math.h>
#include <stdio.h>
#include <unistd.h>

#include "checked.h"
#include "config.h"
#include "device.h"
#include "net.h"

#ifdef RX_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

#define NCLASSES 5

typedef struct fixture {
    char *dir;
    char file[512];
    plugin_path path;
    config c;
    net nt;
    rx_ctx ctx;
    int threads; /* for the next build: 0 means 1 */
    bool loaded, built;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->dir = test_tmpdir();
    snprintf(f->file, sizeof f->file, "%s/exp.lua", f->dir);
    test_plugin_path(&f->path);
    *state = f;
    return 0;
}

static void release(fixture *f)
{
    if (f->built) net_free(&f->nt);
    if (f->loaded) config_free(&f->c);
    f->built = f->loaded = false;
}

static int teardown(void **state)
{
    fixture *f = *state;
    release(f);
    unlink(f->file);
    rmdir(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

/* Loads an experiment with this model list (and these sgd keys, or another optimizer's table
 * contents when they start with its quoted name) and builds its network for inputs of shape
 * `in`, batches up to max_batch, on the CPU. Returns net_build's result, or fails the test if the
 * config itself is refused. */
static int build(fixture *f, const char *model, const char *optim, rx_shape in, int64_t max_batch, char *err)
{
    release(f);
    FILE *out = fopen(f->file, "w");
    assert_non_null(out);
    fprintf(out,
            "return {\n"
            "  data = { 'synthetic', classes = %d, size = 6 },\n"
            "  model = {\n%s\n  },\n"
            "  loss = 'cross_entropy',\n"
            "  optim = { %s%s },\n"
            "}\n",
            NCLASSES, model, optim && optim[0] == '\'' ? "" : "'sgd', ", optim ? optim : "lr = 0.1");
    fclose(out);
    err[0] = '\0';
    if (config_load(&f->c, &f->path, f->file, 0, NULL, err) != 0) {
        config_free(&f->c);
        fail_msg("%s", err);
    }
    f->loaded = true;
    f->ctx = (rx_ctx){ .device = RX_CPU, .threads = f->threads > 0 ? f->threads : 1, .rng = rx_rng_stream(7, 0) };
    int rc = net_build(&f->nt, &f->ctx, &f->c, in, max_batch, err);
    if (rc == 0) f->built = true;
    else net_free(&f->nt); /* what a failed build made */
    return rc;
}

static void build_ok(fixture *f, const char *model, const char *optim, rx_shape in, int64_t max_batch)
{
    char err[ERR_LEN];
    if (build(f, model, optim, in, max_batch, err) != 0) fail_msg("%s", err);
    if (net_init_params(&f->nt, 1, err) != 0) fail_msg("%s", err);
}

/* The build must fail with a message holding both fragments. */
static void expect_build_error(fixture *f, const char *model, rx_shape in, const char *a, const char *b)
{
    char err[ERR_LEN];
    if (build(f, model, NULL, in, 4, err) == 0) fail_msg("built a network that should fail with \"%s\"", a);
    if (!strstr(err, a) || (b && !strstr(err, b))) fail_msg("got \"%s\", wanted \"%s\" and \"%s\"", err, a, b ? b : "");
    assert_non_null(strstr(err, "exp.lua: "));
    assert_null(strchr(err, '\n'));
}

static void fill_uniform(float *x, size_t n, rx_rng *rng, float scale)
{
    for (size_t i = 0; i < n; i++) x[i] = scale * (2.0f * rx_rng_uniform(rng) - 1.0f);
}

/* ---- What a residual block computes ---- */

static void test_residual_forward(void **state)
{
    fixture *f = *state;
    char err[ERR_LEN];
    rx_shape in = TEST_SHAPE(2, 3, 3);
    enum { N = 3, NUMEL = 2 * 3 * 3 };
    float x[N * NUMEL], x0[N * NUMEL];
    rx_rng rng = rx_rng_stream(3, 1);
    fill_uniform(x, N * NUMEL, &rng, 1.0f);
    memcpy(x0, x, sizeof x);
    rx_tensor xt = { .data = x, .shape = TEST_SHAPE(N, 2, 3, 3), .device = RX_CPU }, y;

    /* y = a x + b relu(x): a block from the first layer on, x + relu(x); two nested with the same
     * ends, x + (x + relu(x)); a block around the last layer, relu(x) + relu(relu(x)); and one
     * nested at the end of another, x + (r + relu(r)) with r = relu(x). */
    static const struct { const char *model; float a, b; } cases[] = {
        { "{ 'residual', { { 'relu' } } }", 1, 1 },
        { "{ 'residual', { { 'residual', { { 'relu' } } } } }", 2, 1 },
        { "{ 'relu' }, { 'residual', { { 'relu' } } }", 0, 2 },
        { "{ 'residual', { { 'relu' }, { 'residual', { { 'relu' } } } } }", 1, 2 },
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        build_ok(f, cases[k].model, NULL, in, N);
        if (net_forward(&f->nt, &f->ctx, &xt, &y, err) != 0) fail_msg("%s", err);
        assert_int_equal(y.shape.ndim, 4);
        assert_int_equal(rx_numel(y.shape), N * NUMEL);
        for (int i = 0; i < N * NUMEL; i++) {
            float want = cases[k].a * x[i] + cases[k].b * (x[i] > 0 ? x[i] : 0);
            if (fabsf(y.data[i] - want) > 1e-6f) fail_msg("case %zu, [%d]: got %g, wanted %g", k, i, y.data[i], want);
        }
        assert_memory_equal(x, x0, sizeof x); /* the input is left alone */
    }
}

/* ---- The whole network's gradient, by central differences ---- */

typedef struct problem {
    fixture *f;
    rx_tensor x;       /* (N, in...) */
    int32_t *labels;   /* (N) */
    void *loss;        /* the cross_entropy plugin's instance */
    float *losses;     /* (N) */
    float *dlogits;    /* (N, NCLASSES) */
} problem;

static void problem_init(problem *p, fixture *f, int64_t n, uint64_t seed)
{
    *p = (problem){ .f = f };
    p->x.shape.ndim = f->nt.in.ndim + 1;
    p->x.shape.d[0] = n;
    for (int i = 0; i < f->nt.in.ndim; i++) p->x.shape.d[i + 1] = f->nt.in.d[i];
    p->x.device = RX_CPU;
    p->x.data = malloc(sizeof(float) * (size_t)rx_numel(p->x.shape));
    p->labels = malloc(sizeof(int32_t) * (size_t)n);
    p->losses = malloc(sizeof(float) * (size_t)n);
    p->dlogits = malloc(sizeof(float) * (size_t)(n * NCLASSES));
    assert_true(p->x.data && p->labels && p->losses && p->dlogits);
    rx_rng rng = rx_rng_stream(seed, 2);
    fill_uniform(p->x.data, (size_t)rx_numel(p->x.shape), &rng, 1.0f);
    for (int64_t i = 0; i < n; i++) p->labels[i] = (int32_t)rx_rng_below(&rng, NCLASSES);
    const rx_plugin *d = f->c.loss.pl.desc;
    if (d->loss.create(&p->loss, &f->ctx, f->c.loss.args, f->nt.out, NCLASSES) != 0) fail_msg("%s", f->ctx.err);
}

static void problem_free(problem *p)
{
    const rx_plugin *d = p->f->c.loss.pl.desc;
    if (d->loss.destroy) d->loss.destroy(p->loss);
    free(p->x.data);
    free(p->labels);
    free(p->losses);
    free(p->dlogits);
}

/* The mean loss over the batch; with grads, also the gradients into f->nt.grads (zeroed first). */
static double loss_of(problem *p, bool grads)
{
    fixture *f = p->f;
    char err[ERR_LEN];
    rx_tensor logits;
    if (net_forward(&f->nt, &f->ctx, &p->x, &logits, err) != 0) fail_msg("%s", err);
    int64_t n = p->x.shape.d[0];
    assert_int_equal(rx_numel(logits.shape), n * NCLASSES);
    rx_tensor dl = { .data = p->dlogits, .shape = TEST_SHAPE(n, NCLASSES), .device = RX_CPU };
    if (f->c.loss.pl.desc->loss.forward[RX_CPU](p->loss, &f->ctx, &logits, p->labels, p->losses, grads ? &dl : NULL) != 0)
        fail_msg("%s", f->ctx.err);
    double sum = 0;
    for (int64_t i = 0; i < n; i++) sum += p->losses[i];
    if (grads) {
        net_zero_grads(&f->nt);
        if (net_backward(&f->nt, &f->ctx, &p->x, &dl, 0, err) != 0) fail_msg("%s", err);
    }
    return sum / (double)n;
}

/* The derivative of the loss along a change of h * dir[k] at v[idx[k]] (k < n), by central
 * differences. *kink: the estimate says nothing, because a relu or a max switched within the
 * step: the central differences with h and h / 2 differ, or (small steps) the slopes left and
 * right of v do. */
static double numeric(problem *p, float *v, const size_t *idx, const float *dir, int n, double h, bool *kink)
{
    float keep[128];
    assert_true(n <= 128);
    for (int k = 0; k < n; k++) keep[k] = v[idx[k]];
    double mid = loss_of(p, false), up[2], down[2];
    for (int s = 0; s < 2; s++) {
        double step = s ? h / 2 : h;
        for (int k = 0; k < n; k++) v[idx[k]] = keep[k] + (float)(step * dir[k]);
        up[s] = loss_of(p, false);
        for (int k = 0; k < n; k++) v[idx[k]] = keep[k] - (float)(step * dir[k]);
        down[s] = loss_of(p, false);
        for (int k = 0; k < n; k++) v[idx[k]] = keep[k];
    }
    double central = (up[0] - down[0]) / (2 * h), half = (up[1] - down[1]) / h;
    double right = (up[0] - mid) / h, left = (mid - down[0]) / h;
    /* right - left is also h times the curvature: the test for it is for small steps only. */
    *kink = fabs(central - half) > 2e-4 + 2e-2 * fabs(half) || (h < 5e-3 && fabs(right - left) > 1e-3 + 5e-2 * fabs(central));
    return central;
}

/* How far an estimate may be from the backward pass's value. Smooth: float32 losses differenced
 * over a step of 1e-2. Not smooth: relu and max make the loss piecewise smooth, and the
 * switches too close to the point to show as kinks still move the estimate a little. */
static bool close_enough(double numeric_value, double analytic, bool smooth)
{
    double tol = smooth ? 5e-5 + 1e-3 * fabs(analytic) : 1e-3 + 5e-2 * fabs(analytic);
    return fabs(numeric_value - analytic) <= tol;
}

/* Every parameter of the network against central differences of the whole loss. */
static void check_param_gradients(problem *p, const char *what, bool smooth)
{
    fixture *f = p->f;
    size_t np = f->nt.nparams;
    loss_of(p, true);
    float *analytic = malloc(sizeof(float) * np);
    assert_non_null(analytic);
    memcpy(analytic, f->nt.grads, sizeof(float) * np);
    int kinks = 0, checked = 0, nonzero = 0;
    for (size_t i = 0; i < np; i++) {
        bool kink;
        float one = 1;
        double num = numeric(p, f->nt.params, &i, &one, 1, smooth ? 1e-2 : 1e-3, &kink);
        if (kink) {
            kinks++;
            continue;
        }
        checked++;
        nonzero += fabs(analytic[i]) > 1e-3;
        if (!close_enough(num, analytic[i], smooth)) {
            size_t at = 0; /* which tensor, for the message */
            char name[128] = "?";
            for (int l = 0; l < f->nt.n; l++)
                for (int t = 0; t < f->nt.layers[l].info.ntensors; t++) {
                    size_t len = (size_t)rx_numel(f->nt.layers[l].info.tensors[t].shape);
                    if (i >= at && i < at + len) net_tensor_name(&f->nt, l, t, name, sizeof name);
                    at += len;
                }
            fail_msg("%s: d loss / d param %zu (%s): backward %.6g, central differences %.6g", what, i, name,
                     (double)analytic[i], num);
        }
    }
    /* Kinks are rare (and a smooth network has none); a gradient that is mostly ~0 would prove
     * nothing. */
    if (smooth ? kinks > 0 : kinks * 20 > (int)np) fail_msg("%s: %d of %zu parameters at a kink", what, kinks, np);
    if (nonzero * 2 < checked) fail_msg("%s: only %d of %d gradients are not ~0", what, nonzero, checked);
    free(analytic);
}

/* The networks to check. model[1] is a residual block whose first layer is the network's
 * first; model[3] one in the middle; model[4] and model[5] hold nested ones (model[5]'s two
 * begin and end at the same layer); the last ends at the network's last layer. The first is
 * smooth (convolutions and linear layers only), so its check can be tight; the second has
 * relus and a max pool in and around the blocks. */
static const char *const residual_nets[2] = {
    "{ 'residual', { { 'conv2d', out = 3, kernel = 3, padding = 1 }, { 'conv2d', out = 3, kernel = 1 } } },\n"
    "{ 'conv2d', out = 4, kernel = 3, padding = 1 },\n"
    "{ 'residual', { { 'conv2d', out = 4, kernel = 3, padding = 1 } } },\n"
    "{ 'residual', { { 'residual', { { 'conv2d', out = 4, kernel = 1 } } }, { 'conv2d', out = 4, kernel = 3, padding = 1 } } },\n"
    "{ 'residual', { { 'residual', { { 'conv2d', out = 4, kernel = 3, padding = 1 } } } } },\n"
    "{ 'conv2d', out = 4, kernel = 2, stride = 2 }, { 'flatten' }, { 'linear', out = 8 }, { 'linear', out = 5 },\n"
    "{ 'residual', { { 'linear', out = 5 } } },\n",

    "{ 'residual', { { 'conv2d', out = 3, kernel = 3, padding = 1 }, { 'relu' } } },\n"
    "{ 'conv2d', out = 4, kernel = 3, padding = 1 },\n"
    "{ 'residual', { { 'relu' }, { 'conv2d', out = 4, kernel = 3, padding = 1 } } },\n"
    "{ 'residual', { { 'residual', { { 'conv2d', out = 4, kernel = 1 } } }, { 'relu' },\n"
    "                { 'conv2d', out = 4, kernel = 3, padding = 1 } } },\n"
    "{ 'residual', { { 'residual', { { 'conv2d', out = 4, kernel = 3, padding = 1 } } } } },\n"
    "{ 'maxpool', size = 2 }, { 'flatten' }, { 'linear', out = 8 }, { 'relu' }, { 'linear', out = 5 },\n"
    "{ 'residual', { { 'relu' }, { 'linear', out = 5 } } },\n",
};

static void test_gradient_through_residuals(void **state)
{
    fixture *f = *state;
    static const int layers[2] = { 12, 16 };
    for (int k = 0; k < 2; k++) {
        build_ok(f, residual_nets[k], NULL, TEST_SHAPE(3, 6, 6), 4);
        assert_int_equal(f->nt.n, layers[k]);
        /* A BEGIN and an END step per block; the first step opens one, the last closes one. */
        int begins = 0, ends = 0;
        for (int i = 0; i < f->nt.nsteps; i++) {
            begins += f->nt.steps[i].kind == STEP_BEGIN;
            ends += f->nt.steps[i].kind == STEP_END;
        }
        assert_int_equal(begins, 7);
        assert_int_equal(ends, 7);
        assert_int_equal(f->nt.steps[0].kind, STEP_BEGIN);
        assert_int_equal(f->nt.steps[f->nt.nsteps - 1].kind, STEP_END);
        char name[64];
        net_tensor_name(&f->nt, k ? 5 : 4, 0, name, sizeof name);
        assert_string_equal(name, "3.0.0.weight");
        net_tensor_name(&f->nt, k ? 8 : 6, 1, name, sizeof name);
        assert_string_equal(name, "4.0.0.bias");
        problem p;
        problem_init(&p, f, 4, 11);
        check_param_gradients(&p, k ? "residual network with relus" : "smooth residual network", k == 0);
        problem_free(&p);
    }
}

/* The gradient wrt the input, which backward never writes for the first layer: put an identity
 * 1x1 convolution in front. Its weight's gradient, entry (o, c), is the derivative of the loss
 * along adding input channel c to input channel o; differentiate along that change of the input
 * itself. */
static void test_gradient_wrt_input(void **state)
{
    fixture *f = *state;
    for (int k = 0; k < 2; k++) {
        char model[2048];
        snprintf(model, sizeof model, "{ 'conv2d', out = 3, kernel = 1, bias = false, init = 'dirac' },\n%s", residual_nets[k]);
        build_ok(f, model, NULL, TEST_SHAPE(3, 6, 6), 2);
        const float *w = f->nt.layers[0].w[0].data; /* (3, 3, 1, 1) */
        for (int o = 0; o < 3; o++)
            for (int c = 0; c < 3; c++) assert_true(w[o * 3 + c] == (o == c ? 1.0f : 0.0f));
        problem p;
        problem_init(&p, f, 2, 12);
        loss_of(&p, true);
        float dw[9];
        memcpy(dw, f->nt.layers[0].dw[0].data, sizeof dw);
        enum { PLANE = 36 };
        int kinks = 0;
        for (int o = 0; o < 3; o++)
            for (int c = 0; c < 3; c++) {
                /* Every pixel of channel o of both samples moves by h * (its channel c). */
                size_t idx[2 * PLANE];
                float dir[2 * PLANE];
                for (int s = 0, j = 0; s < 2; s++)
                    for (int i = 0; i < PLANE; i++, j++) {
                        idx[j] = (size_t)((s * 3 + o) * PLANE + i);
                        dir[j] = p.x.data[(s * 3 + c) * PLANE + i];
                    }
                bool kink;
                double num = numeric(&p, p.x.data, idx, dir, 2 * PLANE, k ? 1e-3 : 1e-2, &kink);
                kinks += kink;
                if (!kink && !close_enough(num, dw[o * 3 + c], k == 0))
                    fail_msg("network %d: input channel %d along channel %d: backward %.6g, central differences %.6g", k,
                             o, c, (double)dw[o * 3 + c], num);
            }
        assert_true(kinks <= (k ? 2 : 0));
        problem_free(&p);
    }
}

/* ---- Mistakes the build finds ---- */

static void test_residual_shape_errors(void **state)
{
    fixture *f = *state;
    rx_shape in = TEST_SHAPE(3, 6, 6);
    expect_build_error(f,
        "{ 'conv2d', out = 4, kernel = 3, padding = 1 },\n"
        "{ 'residual', { { 'conv2d', out = 8, kernel = 3, padding = 1 }, { 'relu' } } }, { 'flatten' }, { 'linear', out = 5 }",
        in, "the residual block from model[2][1] (conv2d) to model[2][2] (relu): its layers turn (4, 6, 6) into (8, 6, 6), "
            "but y = x + f(x) needs f(x) shaped like x", NULL);
    expect_build_error(f, "{ 'residual', { { 'relu' }, { 'flatten' } } }, { 'linear', out = 5 }", in,
                       "the residual block from model[1][1] (relu) to model[1][2] (flatten): its layers turn (3, 6, 6) into (108)",
                       NULL);
    /* The inner block is fine; the outer one shrinks the image. */
    expect_build_error(f, "{ 'residual', { { 'residual', { { 'relu' } } }, { 'maxpool', size = 2 } } }, { 'flatten' }, "
                          "{ 'linear', out = 5 }", in,
                       "from model[1][1][1] (relu) to model[1][2] (maxpool): its layers turn (3, 6, 6) into (3, 3, 3)", NULL);
}

/* Backward stops at the first layer the optimizer trains: later layers' gradients are those of
 * the whole backward, bit for bit, and earlier ones stay zero (their backward never runs). */
static void test_backward_from_first_trained(void **state)
{
    fixture *f = *state;
    build_ok(f,
             "{ 'conv2d', out = 4, kernel = 3, padding = 1, frozen = { weight = true }, train_epochs = { bias = 1 } },\n"
             "{ 'relu' }, { 'conv2d', out = 4, kernel = 3, padding = 1, frozen = true },\n"  /* 0, 1, 2 */
             "{ 'residual', { { 'conv2d', out = 4, kernel = 3, padding = 1 }, { 'relu' } } },\n" /* 3, 4 */
             "{ 'flatten' }, { 'linear', out = 5 }",                                         /* 5, 6 */
             NULL, TEST_SHAPE(3, 6, 6), 4);
    assert_int_equal(net_first_trained(&f->nt, 1), 0);  /* the bias trains in epoch 1 only */
    assert_int_equal(net_first_trained(&f->nt, 2), 3);
    problem p;
    problem_init(&p, f, 4, 5);
    loss_of(&p, true);
    size_t np = f->nt.nparams, from = (size_t)(f->nt.layers[3].w[0].data - f->nt.params);
    float *full = malloc(sizeof(float) * np);
    assert_non_null(full);
    memcpy(full, f->nt.grads, sizeof(float) * np);
    size_t nonzero = 0;  /* the whole backward did reach the first layers */
    for (size_t i = 0; i < from; i++) nonzero += full[i] != 0;
    assert_true(nonzero > 0);

    char err[ERR_LEN];
    rx_tensor dl = { .data = p.dlogits, .shape = TEST_SHAPE(4, NCLASSES), .device = RX_CPU };
    net_zero_grads(&f->nt);
    if (net_backward(&f->nt, &f->ctx, &p.x, &dl, 3, err) != 0) fail_msg("%s", err);
    for (size_t i = 0; i < np; i++) {
        float want = i < from ? 0.0f : full[i];
        if (memcmp(&f->nt.grads[i], &want, sizeof want) != 0)
            fail_msg("grads[%zu] = %g, wanted %g (layer 3 starts at %zu)", i, (double)f->nt.grads[i], (double)want, from);
    }
    /* Nothing trained: no backward at all. */
    net_zero_grads(&f->nt);
    if (net_backward(&f->nt, &f->ctx, &p.x, &dl, f->nt.n, err) != 0) fail_msg("%s", err);
    for (size_t i = 0; i < np; i++)
        if (f->nt.grads[i] != 0.0f) fail_msg("grads[%zu] = %g after no backward (n %d)", i, (double)f->nt.grads[i], f->nt.n);
    free(full);
    problem_free(&p);
}

static void test_rule_errors(void **state)
{
    fixture *f = *state;
    rx_shape in = TEST_SHAPE(3, 6, 6);
    expect_build_error(f, "{ 'conv2d', out = 4, kernel = 3, lr_scale = { wieght = 2 } }, { 'flatten' }, { 'linear', out = 5 }", in,
                       "exp.lua: model[1] (conv2d): a training rule names tensor 'wieght', which this layer does not train "
                       "(it has: weight, bias)", NULL);
    expect_build_error(f, "{ 'conv2d', out = 4, kernel = 3, bias = false, frozen = { bias = true } }, { 'flatten' }, "
                          "{ 'linear', out = 5 }", in, "model[1] (conv2d): a training rule names tensor 'bias'", "(it has: weight)");
    expect_build_error(f, "{ 'residual', { { 'relu', train_epochs = { weight = 1 } } } }, { 'flatten' }, { 'linear', out = 5 }",
                       in, "model[1][1] (relu): a training rule names tensor 'weight'", "(it has: no tensors)");
    expect_build_error(f, "{ 'batchnorm', lr_scale = { running_mean = 0 } }, { 'flatten' }, { 'linear', out = 5 }", in,
                       "model[1] (batchnorm): a training rule names tensor 'running_mean', which this layer does not train "
                       "(it has: weight, bias)", NULL);
    /* A rule for every tensor is fine on a layer without any. */
    char err[ERR_LEN];
    if (build(f, "{ 'relu', frozen = true, lr_scale = 3 }, { 'flatten' }, { 'linear', out = 5 }", NULL, in, 4, err) != 0)
        fail_msg("%s", err);
}

static void test_param_groups(void **state)
{
    fixture *f = *state;
    const char *model =
        "{ 'conv2d', out = 4, kernel = 3, padding = 1 }, { 'relu' },\n"                     /* 0: 112 */
        "{ 'conv2d', out = 4, kernel = 3, padding = 1, frozen = true },\n"                  /* 112: 148 */
        "{ 'conv2d', out = 4, kernel = 3, padding = 1, lr_scale = { bias = 2 } },\n"        /* 260: 144 + 4 */
        "{ 'conv2d', out = 4, kernel = 3, padding = 1, weight_decay = 0 },\n"               /* 408: 148 */
        "{ 'conv2d', out = 4, kernel = 3, padding = 1, train_epochs = 2 },\n"               /* 556: 148 */
        "{ 'conv2d', out = 4, kernel = 3, padding = 1, weight_decay = 0 },\n"               /* 704: 148 */
        "{ 'conv2d', out = 4, kernel = 3, padding = 1, frozen = { weight = true } },\n"     /* 852: 144 + 4 */
        "{ 'flatten' }, { 'linear', out = 5 },\n"                                           /* 1000: 725 */
        "{ 'linear', out = 5, lr_scale = 0 }";                                              /* 1725: 30 */
    build_ok(f, model, "lr = 0.1, weight_decay = 5e-4", TEST_SHAPE(3, 6, 6), 4);
    assert_int_equal(f->nt.nparams, 1755);
    static const param_group want[] = {
        { 0, 112, 1, 5e-4f, 0, { 0 } },    /* a layer's weight and bias together */
        { 260, 144, 1, 5e-4f, 0, { 0 } },  /* not merged with the first: the frozen layer lies between */
        { 404, 4, 2, 5e-4f, 0, { 0 } },
        { 408, 148, 1, 0, 0, { 0 } },
        { 556, 148, 1, 5e-4f, 2, { 0 } },
        { 704, 148, 1, 0, 0, { 0 } },      /* equal to the one before the last, but not adjacent */
        { 996, 729, 1, 5e-4f, 0, { 0 } },  /* a bias and the next layer's tensors, merged */
        { 1725, 30, 0, 5e-4f, 0, { 0 } },  /* a learning rate of 0 is still a group */
    };
    int n = (int)(sizeof want / sizeof *want);
    assert_int_equal(f->nt.ngroups, n);
    for (int i = 0; i < n; i++) {
        const param_group *g = &f->nt.groups[i];
        if (g->offset != want[i].offset || g->n != want[i].n || g->lr_scale != want[i].lr_scale ||
            g->weight_decay != want[i].weight_decay || g->train_epochs != want[i].train_epochs)
            fail_msg("group %d: (%zu, %zu, %g, %g, %lld), wanted (%zu, %zu, %g, %g, %lld)", i, g->offset, g->n,
                     (double)g->lr_scale, (double)g->weight_decay, (long long)g->train_epochs, want[i].offset, want[i].n,
                     (double)want[i].lr_scale, (double)want[i].weight_decay, (long long)want[i].train_epochs);
    }
    /* Frozen tensors are in no group: the two frozen runs are the only gaps. */
    size_t covered = 0;
    for (int i = 0; i < n; i++) covered += f->nt.groups[i].n;
    assert_int_equal(covered, f->nt.nparams - 148 - 144);

    /* Buffers (batchnorm's running statistics) are never trained either, frozen or not. */
    build_ok(f, "{ 'conv2d', out = 4, kernel = 3, padding = 1 }, { 'batchnorm' },\n"      /* 0: 112, 112: 4 + 4, 120: 8 */
                "{ 'conv2d', out = 4, kernel = 3, padding = 1 }, { 'batchnorm', frozen = true },\n" /* 128: 148, 276: 16 */
                "{ 'batchnorm', weight_decay = { bias = 0 } }, { 'flatten' }, { 'linear', out = 5 }", /* 292: 4, 296: 4, 300: 8 */
             "lr = 0.1, weight_decay = 5e-4", TEST_SHAPE(3, 6, 6), 4);
    static const param_group bn[] = {
        { 0, 120, 1, 5e-4f, 0, { 0 } }, { 128, 148, 1, 5e-4f, 0, { 0 } }, { 292, 4, 1, 5e-4f, 0, { 0 } }, { 296, 4, 1, 0, 0, { 0 } },
        { 308, 725, 1, 5e-4f, 0, { 0 } },
    };
    assert_int_equal(f->nt.nparams, 1033);
    assert_int_equal(f->nt.ngroups, 5);
    for (int i = 0; i < 5; i++)
        if (f->nt.groups[i].offset != bn[i].offset || f->nt.groups[i].n != bn[i].n ||
            f->nt.groups[i].weight_decay != bn[i].weight_decay)
            fail_msg("group %d: (%zu, %zu, %g), wanted (%zu, %zu, %g)", i, f->nt.groups[i].offset, f->nt.groups[i].n,
                     (double)f->nt.groups[i].weight_decay, bn[i].offset, bn[i].n, (double)bn[i].weight_decay);
    for (int i = 0; i < 5; i++) assert_int_equal(f->nt.groups[i].shape.ndim, 0); /* sgd sees no shapes */

    /* An optimizer that steps tensors one by one (muon: rx_optim_ops.per_tensor) gets a group per
     * trained tensor, with its shape, and never a merged run: the same model as above. */
    build_ok(f, "{ 'conv2d', out = 4, kernel = 3, padding = 1 }, { 'batchnorm' },\n"
                "{ 'conv2d', out = 4, kernel = 3, padding = 1 }, { 'batchnorm', frozen = true },\n"
                "{ 'batchnorm', weight_decay = { bias = 0 } }, { 'flatten' }, { 'linear', out = 5 }",
             "'muon', lr = 0.1, weight_decay = 5e-4", TEST_SHAPE(3, 6, 6), 4);
    static const struct { size_t offset, n; int ndim; int64_t d0; } tensors[] = {
        { 0, 108, 4, 4 }, { 108, 4, 1, 4 }, { 112, 4, 1, 4 }, { 116, 4, 1, 4 }, { 128, 144, 4, 4 }, { 272, 4, 1, 4 },
        { 292, 4, 1, 4 }, { 296, 4, 1, 4 }, { 308, 720, 2, 5 }, { 1028, 5, 1, 5 },
    };
    const int nt = (int)(sizeof tensors / sizeof *tensors);
    assert_int_equal(f->nt.ngroups, nt);
    for (int i = 0; i < nt; i++) {
        const param_group *g = &f->nt.groups[i];
        if (g->offset != tensors[i].offset || g->n != tensors[i].n || g->shape.ndim != tensors[i].ndim ||
            g->shape.d[0] != tensors[i].d0 || (size_t)rx_numel(g->shape) != g->n)
            fail_msg("group %d: offset %zu, %zu floats, %d dims (%lld, ...), wanted %zu, %zu, %d (%lld, ...)", i,
                     g->offset, g->n, g->shape.ndim, (long long)g->shape.d[0], tensors[i].offset, tensors[i].n,
                     tensors[i].ndim, (long long)tensors[i].d0);
    }
}

static void test_dirac(void **state)
{
    fixture *f = *state;
    char err[ERR_LEN];
    rx_shape in = TEST_SHAPE(3, 6, 6);
    /* More outputs than inputs, then fewer: min(OC, C) identity kernels, the rest as drawn. */
    const char *model = "{ 'conv2d', out = 5, kernel = 3, padding = 1, init = 'dirac' },\n"
                        "{ 'conv2d', out = 2, kernel = 5, padding = 2, init = 'dirac' }, { 'flatten' }, { 'linear', out = 5 }";
    const char *plain = "{ 'conv2d', out = 5, kernel = 3, padding = 1 },\n"
                        "{ 'conv2d', out = 2, kernel = 5, padding = 2, init = 'default' }, { 'flatten' }, { 'linear', out = 5 }";
    build_ok(f, plain, NULL, in, 2);
    size_t np = f->nt.nparams;
    float *drawn = malloc(sizeof(float) * np);
    assert_non_null(drawn);
    memcpy(drawn, f->nt.params, sizeof(float) * np);
    build_ok(f, model, NULL, in, 2);
    assert_int_equal(f->nt.nparams, np);
    static const struct { int layer, oc, c, k; } convs[] = { { 0, 5, 3, 3 }, { 1, 2, 5, 5 } };
    for (int i = 0; i < 2; i++) {
        const layer *l = &f->nt.layers[convs[i].layer];
        const float *w = l->w[0].data;
        size_t at = (size_t)(w - f->nt.params);
        int k = convs[i].k, per = convs[i].c * k * k;
        for (int o = 0; o < convs[i].oc; o++)
            for (int c = 0; c < convs[i].c; c++)
                for (int y = 0; y < k; y++)
                    for (int x = 0; x < k; x++) {
                        int j = o * per + (c * k + y) * k + x;
                        float want = o < convs[i].c ? (c == o && y == k / 2 && x == k / 2) : drawn[at + (size_t)j];
                        if (w[j] != want) fail_msg("conv %d weight (%d, %d, %d, %d): %g, wanted %g", i, o, c, y, x, w[j], want);
                    }
        /* The bias is drawn as usual. */
        assert_memory_equal(l->w[1].data, drawn + (l->w[1].data - f->nt.params), sizeof(float) * (size_t)convs[i].oc);
    }
    free(drawn);

    /* Without a bias, a dirac convolution that keeps the channels passes its input through. */
    build_ok(f, "{ 'conv2d', out = 3, kernel = 3, padding = 1, bias = false, init = 'dirac' }", NULL, in, 2);
    float x[2 * 108];
    rx_rng rng = rx_rng_stream(5, 5);
    fill_uniform(x, 2 * 108, &rng, 2.0f);
    rx_tensor xt = { .data = x, .shape = TEST_SHAPE(2, 3, 6, 6), .device = RX_CPU }, y;
    if (net_forward(&f->nt, &f->ctx, &xt, &y, err) != 0) fail_msg("%s", err);
    for (int i = 0; i < 2 * 108; i++)
        if (fabsf(y.data[i] - x[i]) > 1e-6f) fail_msg("[%d]: %g, wanted %g", i, y.data[i], x[i]);

    expect_build_error(f, "{ 'flatten' }, { 'linear', out = 5, init = 'dirac' }", in,
                       "model[2] (linear): init = \"dirac\" is for a convolution with an odd kernel", NULL);
    expect_build_error(f, "{ 'conv2d', out = 3, kernel = 2, init = 'dirac' }, { 'flatten' }, { 'linear', out = 5 }", in,
                       "model[1] (conv2d): init = \"dirac\" is for a convolution with an odd kernel", NULL);
}

/* Roughly standard normal: the Irwin-Hall sum of four uniforms. */
static float normal(rx_rng *rng)
{
    return (rx_rng_uniform(rng) + rx_rng_uniform(rng) + rx_rng_uniform(rng) + rx_rng_uniform(rng) - 2.0f) * 1.7320508f;
}

static void test_whitening(void **state)
{
    fixture *f = *state;
    char err[ERR_LEN];
    enum { N = 64, C = 3, S = 8, K = 2, D = C * K * K, OS = S - K + 1 };
    rx_shape in = TEST_SHAPE(C, S, S);
    build_ok(f, "{ 'conv2d', out = 24, kernel = 2, bias = false, init = 'whiten' }, { 'flatten' }, { 'linear', out = 5 }",
             NULL, in, N);
    assert_int_equal(net_whitening_layer(&f->nt), 0);

    /* Channels that share most of their signal, pixels that share some with their left
     * neighbour, and an offset: far from white. */
    float *img = malloc(sizeof(float) * N * C * S * S), base[C][S][S];
    assert_non_null(img);
    rx_rng rng = rx_rng_stream(9, 9);
    for (int n = 0; n < N; n++) {
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++) {
                float a = normal(&rng), b = normal(&rng), c = normal(&rng);
                base[0][y][x] = a;
                base[1][y][x] = 0.9f * a + 0.3f * b;
                base[2][y][x] = 0.5f * a - 0.4f * b + 0.1f * c;
            }
        for (int c = 0; c < C; c++)
            for (int y = 0; y < S; y++)
                for (int x = 0; x < S; x++)
                    img[((n * C + c) * S + y) * S + x] = 0.3f + base[c][y][x] + 0.6f * base[c][y][(x + S - 1) % S];
    }
    if (net_init_whitening(&f->nt, img, N, 1e-7, err) != 0) fail_msg("%s", err);
    rx_tensor xt = { .data = img, .shape = TEST_SHAPE(N, C, S, S), .device = RX_CPU }, logits;
    if (net_forward(&f->nt, &f->ctx, &xt, &logits, err) != 0) fail_msg("%s", err);
    const float *out = f->nt.layers[0].out; /* (N, 2 * D, OS, OS) */
    /* The second moment of the first D outputs over every patch: the identity. */
    double m[D][D] = { { 0 } };
    for (int n = 0; n < N; n++)
        for (int p = 0; p < OS * OS; p++)
            for (int i = 0; i < D; i++)
                for (int j = 0; j < D; j++)
                    m[i][j] += (double)out[(n * 2 * D + i) * OS * OS + p] * out[(n * 2 * D + j) * OS * OS + p];
    for (int i = 0; i < D; i++)
        for (int j = 0; j < D; j++) {
            double v = m[i][j] / (N * OS * OS);
            if (fabs(v - (i == j)) > 2e-3) fail_msg("second moment (%d, %d) of the whitened patches: %.6f", i, j, v);
        }
    /* The other D outputs are their negatives. */
    for (int n = 0; n < N; n++)
        for (int i = 0; i < D; i++)
            for (int p = 0; p < OS * OS; p++) {
                float a = out[(n * 2 * D + i) * OS * OS + p], b = out[(n * 2 * D + D + i) * OS * OS + p];
                if (fabsf(a + b) > 1e-5f * (1 + fabsf(a))) fail_msg("output %d is not minus output %d: %g, %g", D + i, i, b, a);
            }
    free(img);

    /* A network without whitening: nothing to do. */
    build_ok(f, "{ 'conv2d', out = 24, kernel = 2 }, { 'flatten' }, { 'linear', out = 5 }", NULL, in, 2);
    assert_int_equal(net_whitening_layer(&f->nt), -1);
    float before = f->nt.params[0], one = 1;
    assert_int_equal(net_init_whitening(&f->nt, &one, 0, 1e-3, err), 0);
    assert_true(f->nt.params[0] == before);

    const char *why = "init = \"whiten\" is for the first layer, a convolution with a square kernel k and 2 * C * k * k outputs";
    expect_build_error(f, "{ 'relu' }, { 'conv2d', out = 24, kernel = 2, init = 'whiten' }, { 'flatten' }, { 'linear', out = 5 }",
                       in, "model[2] (conv2d): ", why);
    expect_build_error(f, "{ 'conv2d', out = 12, kernel = 2, init = 'whiten' }, { 'flatten' }, { 'linear', out = 5 }", in,
                       "model[1] (conv2d): ", why);
    expect_build_error(f, "{ 'flatten' }, { 'linear', out = 5, init = 'whiten' }", in, "model[2] (linear): ", why);
    /* 8 channels and k = 3: 72 values a patch, more than whitening takes. */
    expect_build_error(f, "{ 'conv2d', out = 144, kernel = 3, init = 'whiten' }, { 'flatten' }, { 'linear', out = 5 }",
                       TEST_SHAPE(8, 6, 6), "model[1] (conv2d): ", why);
}

/* ---- The same on the GPU ---- */

#ifdef RX_WITH_CUDA
/* The largest |b - a| / (|a| + 1e-3) over n floats: check.c's measure, and its bound is 1e-3. */
static double max_relative_error(const float *a, const float *b, size_t n)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)b[i] - a[i]) / (fabs((double)a[i]) + 1e-3);
        if (!(e <= worst)) worst = e; /* NaN wins */
    }
    return worst;
}

static float *to_gpu(const float *host, size_t n)
{
    float *d = device_alloc(RX_CUDA, n * sizeof(float));
    if (!d) fail_msg("cannot allocate %zu floats on the GPU", n);
    host_to_device(RX_CUDA, d, host, n * sizeof(float));
    return d;
}
#endif

/* The network with relus, its residual sums (device_copy, device_axpby) and skip gradients on
 * the GPU against the CPU: logits and every parameter's gradient, from the same weights; and
 * device_axpby itself, both of its paths (b = 1, and b != 1 as the moving average uses it).
 * Skipped without a usable GPU. */
/* ---- Buffers ---- */

/* The VmFlags of the mapping of this process that holds p ("" when none is found). */
static void mapping_flags(const void *p, char *flags, size_t len)
{
    flags[0] = '\0';
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) return;
    char line[512];
    bool inside = false;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
            inside = (uintptr_t)p >= lo && (uintptr_t)p < hi;
        else if (inside && strncmp(line, "VmFlags:", 8) == 0) {
            snprintf(flags, len, "%s", line + 8);
            break;
        }
    }
    fclose(f);
}

/* A CPU buffer of 2 MB and more starts on a 2 MB boundary, is zeroed, and (where the kernel has
 * transparent huge pages) is marked for them (VmFlags "hg"); a small one is 64-byte aligned. */
static void test_large_buffers_ask_for_huge_pages(void **state)
{
    (void)state;
    const size_t big = (3u << 20) + 100, small = 1000;
    unsigned char *p = device_alloc(RX_CPU, big), *q = device_alloc(RX_CPU, small);
    assert_non_null(p);
    assert_non_null(q);
    assert_int_equal((uintptr_t)p % (2u << 20), 0);
    assert_int_equal((uintptr_t)q % 64, 0);
    for (size_t i = 0; i < big; i += 4093) assert_int_equal(p[i], 0);
    assert_int_equal(p[big - 1], 0);
    if (access("/sys/kernel/mm/transparent_hugepage/enabled", F_OK) == 0) {
        char flags[256];
        mapping_flags(p, flags, sizeof flags);
        if (!strstr(flags, " hg")) fail_msg("the 3 MB buffer's mapping is not marked for huge pages: VmFlags:%s", flags);
    }
    device_free(RX_CPU, p);
    device_free(RX_CPU, q);
}

/* ---- Sizes from a plugin or the batch: checked before anything is allocated ---- */

/* The build of `model` on inputs `in` for batches up to max_batch, with the test fixtures
 * (tests/fixtures/layers/overflow.c) on the path, must fail naming both fragments. */
static void expect_size_error(fixture *f, const char *model, rx_shape in, int64_t max_batch, const char *a,
                              const char *b)
{
    char err[ERR_LEN];
    plugin_path_add(&f->path, RX_BUILD_DIR "/tests/fixtures");
    if (build(f, model, NULL, in, max_batch, err) == 0) fail_msg("built a network that should fail with \"%s\"", a);
    if (!strstr(err, a) || (b && !strstr(err, b))) fail_msg("got \"%s\", wanted \"%s\" and \"%s\"", err, a, b ? b : "");
    assert_non_null(strstr(err, "exp.lua: "));
    assert_null(strchr(err, '\n'));
}

static void test_sizes_checked(void **state)
{
    fixture *f = *state;
    /* what a plugin declares: an output shape, a state, a tensor past the bounds */
    expect_size_error(f, "{ 'overflow' }", TEST_SHAPE(1, 2, 2), 4, "model[1] (overflow): plugin error: create reported "
                      "the output shape (2147483647, 2147483647, 2147483647): past the bounds of a size", NULL);
    expect_size_error(f, "{ 'overflow' }", TEST_SHAPE(2, 2, 2), 4, "model[1] (overflow): plugin error: create declared "
                      "state_bytes = 18446744073709551615 and workspace_bytes = 0 per sample", NULL);
    expect_size_error(f, "{ 'overflow' }", TEST_SHAPE(3, 2, 2), 4, "create declared tensor 'weight' of shape "
                      "(2147483647, 2147483647, 2147483647): past the bounds", NULL);
    expect_size_error(f, "{ 'overflow' }", TEST_SHAPE(7, 2, 2), 4, "model[1] (overflow): plugin error: create declared "
                      "workspace_thread_bytes = 18446744073709551615: more than 4 TiB a thread cannot be meant", NULL);
    /* within bounds a sample, too large a batch: the batch is named, with what and how much */
    expect_size_error(f, "{ 'overflow' }", TEST_SHAPE(4, 2, 2), CHECKED_MAX_DIM, "exp.lua: data.batch_size = 2147483647: "
                      "model[1] (overflow)'s workspace (batch x 1099511627776 x 1 bytes) needs 2.36e+21 bytes",
                      "more than any size can hold (it overflows)");
    expect_size_error(f, "{ 'overflow' }", TEST_SHAPE(4, 2, 2), 1 << 20, "exp.lua: data.batch_size = 1048576: "
                      "the network's memory (parameters, activations, gradients, state) needs 1.15e+18 bytes",
                      "more than this machine's memory");
    expect_size_error(f, "{ 'relu' }", TEST_SHAPE(3, 64, 64), (int64_t)1 << 50, "data.batch_size = 1125899906842624: "
                      "model[1] (relu)'s output (batch x 12288 x 4 bytes) needs", "more than any size can hold");
    expect_size_error(f, "{ 'relu' }", TEST_SHAPE(CHECKED_MAX_DIM, CHECKED_MAX_DIM, 2), 1,
                      "the network's input shape (2147483647, 2147483647, 2): each dimension must be 1 to 2^31 - 1", NULL);
    /* the fixture, on another input, is a plain identity that builds */
    build_ok(f, "{ 'overflow' }", NULL, TEST_SHAPE(5, 2, 2), 4);
    /* Three layers whose workspaces are each 40% of this machine's memory share one buffer: the
     * plan counts it once (summed, 120%, it was refused), and the buffer, never touched, stays
     * virtual. */
    const size_t host = checked_host_memory();
    if (host != SIZE_MAX) {
        const int64_t mib = (int64_t)((double)host * 0.4 / 4.0 / (double)(1 << 20)) + 1;
        build_ok(f, "{ 'overflow' }, { 'overflow' }, { 'overflow' }", NULL, TEST_SHAPE(6, mib, 1), 4);
        assert_true(f->nt.workspace_bytes >= (size_t)mib << 22);
        assert_true(f->nt.workspace_bytes < host);
    }
    /* Scratch per thread is planned per thread, not per sample: 64 bytes a sample and 3 MiB a
     * thread, on 1 and 3 threads, batches of 4 and 4096. */
    for (int threads = 1; threads <= 3; threads += 2)
        for (int64_t batch = 4; batch <= 4096; batch *= 1024) {
            f->threads = threads;
            build_ok(f, "{ 'overflow' }", NULL, TEST_SHAPE(8, 3, 1), batch);
            assert_int_equal(f->nt.workspace_bytes, 64 * (size_t)batch + ((size_t)threads * 3 << 20));
        }
    f->threads = 0;
}

static void test_residual_cpu_vs_cuda(void **state)
{
#ifdef RX_WITH_CUDA
    char why[ERR_LEN];
    if (!device_usable(RX_CUDA, why)) {
        print_message("skipped: %s\n", why);
        skip();
    }
    fixture *f = *state;
    char err[ERR_LEN];
    build_ok(f, residual_nets[1], NULL, TEST_SHAPE(3, 6, 6), 4);
    problem p;
    problem_init(&p, f, 4, 13);
    loss_of(&p, true); /* CPU gradients in f->nt.grads, the loss's dlogits in p.dlogits */
    rx_tensor logits;
    if (net_forward(&f->nt, &f->ctx, &p.x, &logits, err) != 0) fail_msg("%s", err);
    size_t np = f->nt.nparams, nx = (size_t)rx_numel(p.x.shape), nl = (size_t)rx_numel(logits.shape);

    rx_ctx gctx = { .device = RX_CUDA, .threads = 1 };
    if (device_open_context(RX_CUDA, &gctx, why) != 0) fail_msg("%s", why);
    net g;
    if (net_build(&g, &gctx, &f->c, f->nt.in, 4, err) != 0) fail_msg("%s", err);
    host_to_device(RX_CUDA, g.params, f->nt.params, np * sizeof(float));
    rx_tensor x = { .data = to_gpu(p.x.data, nx), .shape = p.x.shape, .device = RX_CUDA }, glogits;
    rx_tensor dl = { .data = to_gpu(p.dlogits, nl), .shape = logits.shape, .device = RX_CUDA };
    if (net_forward(&g, &gctx, &x, &glogits, err) != 0) fail_msg("cuda: %s", err);
    float *back = malloc(sizeof(float) * (np > nl ? np : nl));
    assert_non_null(back);
    device_to_host(RX_CUDA, back, glogits.data, nl * sizeof(float));
    double e = max_relative_error(logits.data, back, nl);
    if (e > 1e-3) fail_msg("logits: relative error %.3g between the CPU and the GPU", e);
    net_zero_grads(&g);
    if (net_backward(&g, &gctx, &x, &dl, 0, err) != 0) fail_msg("cuda: %s", err);
    device_to_host(RX_CUDA, back, g.grads, np * sizeof(float));
    e = max_relative_error(f->nt.grads, back, np);
    if (e > 1e-3) fail_msg("parameter gradients: relative error %.3g between the CPU and the GPU", e);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);

    /* device_axpby and device_copy alone, on a vector long enough for the CPU's threads. */
    enum { N = 100003 };
    float *a = malloc(sizeof(float) * N), *y = malloc(sizeof(float) * N), *got = malloc(sizeof(float) * N);
    assert_true(a && y && got);
    rx_rng rng = rx_rng_stream(4, 4);
    fill_uniform(a, N, &rng, 1.0f);
    fill_uniform(y, N, &rng, 1.0f);
    float *ad = to_gpu(a, N), *yd = to_gpu(y, N);
    rx_ctx cpu = { .device = RX_CPU, .threads = 2 };
    for (int k = 0; k < 2; k++) {
        float alpha = k ? 0.1f : 1.0f, beta = k ? 0.9f : 1.0f;
        device_axpby(RX_CPU, &cpu, N, alpha, a, beta, y);
        device_axpby(RX_CUDA, &gctx, N, alpha, ad, beta, yd);
        device_to_host(RX_CUDA, got, yd, sizeof(float) * N);
        e = max_relative_error(y, got, N);
        if (e > 1e-6) fail_msg("device_axpby(a = %g, b = %g): relative error %.3g", (double)alpha, (double)beta, e);
    }
    device_copy(RX_CUDA, yd, ad, sizeof(float) * N);
    device_to_host(RX_CUDA, got, yd, sizeof(float) * N);
    assert_memory_equal(got, a, sizeof(float) * N);
    device_free(RX_CUDA, ad);
    device_free(RX_CUDA, yd);
    free(a);
    free(y);
    free(got);

    free(back);
    device_free(RX_CUDA, x.data);
    device_free(RX_CUDA, dl.data);
    net_free(&g);
    device_close_context(RX_CUDA, &gctx);
    problem_free(&p);
#else
    (void)state;
    print_message("skipped: this build has no CUDA\n");
    skip();
#endif
}

/* ---- Lanes: a CPU batch cut into one part per thread ---- */

/* Every per_sample layer kind the tutorial uses, a Winograd and an im2col convolution, a residual
 * block and dropout, which draws numbers per sample. */
#define LANES_MODEL                                                                                          \
    "{ 'conv2d', out = 8, kernel = 3, padding = 1 }, { 'relu' }, { 'maxpool', size = 2 },\n"               \
    "{ 'conv2d', out = 8, kernel = 3, padding = 1 }, { 'residual', { { 'relu' } } },\n"                      \
    "{ 'flatten' }, { 'dropout', p = 0.5 }, { 'linear', out = 12 }, { 'relu' }, { 'linear', out = 5 }"

typedef struct pass {
    float *logits, *grads;
    uint64_t rng;
} pass;

/* One training forward and backward of a batch of n (fixed inputs and logit gradients) with the
 * model's network built for `threads`, from the same initial weights and random numbers. */
static pass model_pass(fixture *f, const char *model, int threads, int64_t n, int lanes_expected)
{
    char err[ERR_LEN];
    rx_shape in = TEST_SHAPE(3, 8, 8);
    f->threads = threads;
    build_ok(f, model, NULL, in, 7);
    assert_int_equal(f->nt.lanes, lanes_expected);
    size_t xn = (size_t)n * 3 * 8 * 8, ln = (size_t)n * NCLASSES;
    float *x = malloc(xn * sizeof *x), *dl = malloc(ln * sizeof *dl);
    rx_rng rng = rx_rng_stream(11, 2);
    fill_uniform(x, xn, &rng, 1.0f);
    fill_uniform(dl, ln, &rng, 0.1f);
    rx_tensor xt = { .data = x, .shape = TEST_SHAPE(n, 3, 8, 8), .device = RX_CPU }, y;
    rx_tensor dlt = { .data = dl, .shape = TEST_SHAPE(n, NCLASSES), .device = RX_CPU };
    f->ctx.training = true;
    net_zero_grads(&f->nt);
    if (net_forward(&f->nt, &f->ctx, &xt, &y, err) != 0) fail_msg("%s", err);
    if (net_backward(&f->nt, &f->ctx, &xt, &dlt, 0, err) != 0) fail_msg("%s", err);
    pass p = { .logits = malloc(ln * sizeof(float)), .grads = malloc(f->nt.nparams * sizeof(float)),
               .rng = f->ctx.rng.s };
    memcpy(p.logits, y.data, ln * sizeof(float));
    memcpy(p.grads, f->nt.grads, f->nt.nparams * sizeof(float));
    free(x);
    free(dl);
    return p;
}

static pass train_pass(fixture *f, int threads, int64_t n, int lanes_expected)
{
    return model_pass(f, LANES_MODEL, threads, n, lanes_expected);
}

static void expect_close(const float *a, const float *b, size_t n, float tol, const char *what)
{
    for (size_t i = 0; i < n; i++)
        if (fabsf(a[i] - b[i]) > tol * (1.0f + fabsf(a[i])))
            fail_msg("%s[%zu]: %.9g with one thread, %.9g in lanes", what, i, (double)a[i], (double)b[i]);
}

static void pass_free(pass *p)
{
    free(p->logits);
    free(p->grads);
}

/* Lanes give what one thread gives, to rounding (the same dropout masks included: the draws do
 * not depend on the cut), and the same bits run after run; parts of 3, 2 and 2 samples, and a
 * batch smaller than the lanes. */
static void test_lanes_match_one_thread(void **state)
{
    fixture *f = *state;
    static const int64_t batches[] = { 2, 7 };
    for (size_t b = 0; b < sizeof batches / sizeof *batches; b++) {
        const int64_t n = batches[b];
        pass one = train_pass(f, 1, n, 1), lanes = train_pass(f, 3, n, 3), again = train_pass(f, 3, n, 3);
        size_t np = f->nt.nparams;
        expect_close(one.logits, lanes.logits, (size_t)n * NCLASSES, 1e-5f, "logits");
        expect_close(one.grads, lanes.grads, np, 1e-4f, "gradients");
        assert_true(one.rng == lanes.rng); /* the random numbers end where the whole batch's do */
        assert_memory_equal(lanes.logits, again.logits, (size_t)n * NCLASSES * sizeof(float));
        assert_memory_equal(lanes.grads, again.grads, np * sizeof(float));
        pass_free(&one);
        pass_free(&lanes);
        pass_free(&again);
    }
}

/* A layer that did not declare per_sample (batchnorm: batch statistics) keeps the whole network
 * on one part, whatever the threads; so does a single thread. */
static void test_lanes_need_per_sample_layers(void **state)
{
    fixture *f = *state;
    rx_shape in = TEST_SHAPE(3, 8, 8);
    f->threads = 3;
    build_ok(f, "{ 'conv2d', out = 8, kernel = 3 }, { 'batchnorm' }, { 'flatten' }, { 'linear', out = 5 }", NULL, in, 7);
    assert_int_equal(f->nt.lanes, 1);
    build_ok(f, "{ 'flatten' }, { 'linear', out = 5 }", NULL, in, 2);
    assert_int_equal(f->nt.lanes, 2); /* no more lanes than samples */
    f->threads = 1;
    build_ok(f, "{ 'flatten' }, { 'linear', out = 5 }", NULL, in, 7);
    assert_int_equal(f->nt.lanes, 1);
}

/* Model layer `use` of the fixture's config: which one network layer i runs. */
static int runs_model_layer(const fixture *f, int i)
{
    return (int)(f->nt.layers[i].use - f->c.layers);
}

/* A monotone layer (relu) just before a max-pool runs just after it (runexp.h: traits), on the
 * pooled values, with the same bits as the model written that way: logits and every gradient,
 * with and without lanes. Not across a residual block's edge, and not for a layer that did not
 * declare itself monotone (gelu dips below zero). */
static void test_monotone_runs_after_max_pool(void **state)
{
    fixture *f = *state;
    const char *written = "{ 'conv2d', out = 8, kernel = 3, padding = 1 }, { 'relu' }, { 'maxpool', size = 2 },\n"
                          "{ 'conv2d', out = 8, kernel = 3, padding = 1 }, { 'relu' }, { 'maxpool', size = 2 },\n"
                          "{ 'flatten' }, { 'linear', out = 5 }";
    const char *moved = "{ 'conv2d', out = 8, kernel = 3, padding = 1 }, { 'maxpool', size = 2 }, { 'relu' },\n"
                        "{ 'conv2d', out = 8, kernel = 3, padding = 1 }, { 'maxpool', size = 2 }, { 'relu' },\n"
                        "{ 'flatten' }, { 'linear', out = 5 }";
    for (int threads = 1; threads <= 2; threads++) {
        const int64_t n = 6;
        pass a = model_pass(f, written, threads, n, threads);
        static const int expect[] = { 0, 2, 1, 3, 5, 4, 6, 7 };
        for (int i = 0; i < 8; i++) assert_int_equal(runs_model_layer(f, i), expect[i]);
        size_t np = f->nt.nparams;
        pass b = model_pass(f, moved, threads, n, threads);
        for (int i = 0; i < 8; i++) assert_int_equal(runs_model_layer(f, i), i);
        assert_memory_equal(a.logits, b.logits, (size_t)n * NCLASSES * sizeof(float));
        assert_memory_equal(a.grads, b.grads, np * sizeof(float));
        pass_free(&a);
        pass_free(&b);
    }
    rx_shape in = TEST_SHAPE(3, 8, 8);
    build_ok(f, "{ 'conv2d', out = 4, kernel = 3, padding = 1 }, { 'residual', { { 'relu' } } }, { 'maxpool', size = 2 }",
             NULL, in, 2);
    for (int i = 0; i < 3; i++) assert_int_equal(runs_model_layer(f, i), i);
    build_ok(f, "{ 'conv2d', out = 4, kernel = 3, padding = 1 }, { 'gelu' }, { 'maxpool', size = 2 }", NULL, in, 2);
    for (int i = 0; i < 3; i++) assert_int_equal(runs_model_layer(f, i), i);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_residual_forward, setup, teardown),
        cmocka_unit_test_setup_teardown(test_monotone_runs_after_max_pool, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gradient_through_residuals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gradient_wrt_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_residual_shape_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backward_from_first_trained, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rule_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_param_groups, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dirac, setup, teardown),
        cmocka_unit_test_setup_teardown(test_whitening, setup, teardown),
        cmocka_unit_test_setup_teardown(test_residual_cpu_vs_cuda, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sizes_checked, setup, teardown),
        cmocka_unit_test(test_large_buffers_ask_for_huge_pages),
        cmocka_unit_test_setup_teardown(test_lanes_match_one_thread, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lanes_need_per_sample_layers, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
