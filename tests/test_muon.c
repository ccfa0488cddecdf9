/* test_muon.c: the muon optimizer against a reference written here in double precision: the
 * filters' rule (momentum, Nesterov, Newton-Schulz, normalization, decoupled weight decay) on
 * wide and tall matrices, sgd's rule for every other tensor, the same steps on 1 and 2 threads,
 * and its refusals. The training loop's side (one call per tensor, with its shape) is in
 * test_e2e's muon run. */
#include <math.h>

#include "helpers.h"

typedef struct muon_opts {
    double momentum, sgd_momentum;
    bool nesterov, normalize;
    int ns_steps;
} muon_opts;

static void muon_load(test_optimizer *o, const muon_opts *m)
{
    test_optimizer_load(o, "muon");
    test_arg(o->desc, o->args, "momentum")->num = m->momentum;
    test_arg(o->desc, o->args, "sgd_momentum")->num = m->sgd_momentum;
    test_arg(o->desc, o->args, "nesterov")->b = m->nesterov;
    test_arg(o->desc, o->args, "normalize")->b = m->normalize;
    test_arg(o->desc, o->args, "ns_steps")->i = m->ns_steps;
}

static void muon_open(test_optimizer *o, const muon_opts *m)
{
    muon_load(o, m);
    if (o->desc->optim.create(&o->self, &o->ctx, o->args, &o->state_per_param) != 0) fail_msg("create: %s", o->ctx.err);
    assert_int_equal(o->state_per_param, 1);
    assert_true(o->desc->optim.per_tensor);
}

/* ---- The reference, in double ---- */

/* C (m x n) = A (m x k) B (k x n), or A B^T with b_t (B then n x k). */
static void ref_matmul(int m, int n, int k, const double *a, const double *b, bool b_t, double *c)
{
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int p = 0; p < k; p++) s += a[i * k + p] * (b_t ? b[j * k + p] : b[p * n + j]);
            c[i * n + j] = s;
        }
}

/* u (rows x cols) into its Newton-Schulz approximation of U V^T, as muon.c's header says. */
static void ref_newton_schulz(double *u, int rows, int cols, int steps)
{
    const double a = 3.4445f, b = -4.7750f, c = 2.0315f; /* the float constants muon.c uses */
    const bool wide = rows <= cols;
    const int r = wide ? rows : cols, k = wide ? cols : rows;
    double *x = test_malloc(sizeof(double) * (size_t)(r * k)), *bx = test_malloc(sizeof(double) * (size_t)(r * k));
    double *am = test_malloc(sizeof(double) * (size_t)(r * r)), *aa = test_malloc(sizeof(double) * (size_t)(r * r));
    double norm = 0;
    for (int i = 0; i < rows * cols; i++) norm += u[i] * u[i];
    norm = sqrt(norm) + 1e-7;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) x[wide ? i * k + j : j * k + i] = u[i * cols + j] / norm;
    for (int s = 0; s < steps; s++) {
        ref_matmul(r, r, k, x, x, true, am);
        ref_matmul(r, r, r, am, am, false, aa);
        for (int i = 0; i < r * r; i++) aa[i] = b * am[i] + c * aa[i];
        ref_matmul(r, k, r, aa, x, false, bx);
        for (int i = 0; i < r * k; i++) x[i] = a * x[i] + bx[i];
    }
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) u[i * cols + j] = x[wide ? i * k + j : j * k + i];
    test_free(x), test_free(bx), test_free(am), test_free(aa);
}

/* One filters' step of muon.c's header on w and buf, in double. */
static void ref_filters_step(const muon_opts *m, const float *g, double *w, double *buf, int rows, int cols, double lr,
                             double wd, bool first)
{
    const int n = rows * cols;
    double *u = test_malloc(sizeof(double) * (size_t)n);
    for (int i = 0; i < n; i++) {
        buf[i] = (first ? 0 : m->momentum * buf[i]) + g[i];
        u[i] = m->nesterov ? g[i] + m->momentum * buf[i] : buf[i];
    }
    ref_newton_schulz(u, rows, cols, m->ns_steps);
    double keep = 1 - lr * wd, norm = 0;
    for (int i = 0; i < n; i++) norm += w[i] * w[i];
    if (m->normalize) keep *= sqrt((double)rows) / sqrt(norm);
    for (int i = 0; i < n; i++) w[i] = w[i] * keep - lr * u[i];
    test_free(u);
}

/* A fixed, unremarkable pattern of values in about [-1, 1]. */
static float pattern(int i, int salt) { return (float)sin(1.7 * i + 0.3 * salt) * (float)(1 + (i % 3)) / 3; }

/* Three steps on a (rows, cols, 1, 1) tensor, against the reference, on `threads`. */
static void check_filters(const muon_opts *m, int rows, int cols, double wd, int threads)
{
    test_optimizer o;
    muon_open(&o, m);
    o.ctx.threads = threads;
    const int n = rows * cols;
    float *w = test_malloc(sizeof(float) * (size_t)n), *buf = test_calloc((size_t)n, sizeof(float));
    float *g = test_malloc(sizeof(float) * (size_t)n);
    double *rw = test_malloc(sizeof(double) * (size_t)n), *rbuf = test_calloc((size_t)n, sizeof(double));
    for (int i = 0; i < n; i++) rw[i] = w[i] = pattern(i, 0);
    rx_shape shape = { .ndim = 4, .d = { rows, cols, 1, 1 } };
    for (int t = 1; t <= 3; t++) {
        for (int i = 0; i < n; i++) g[i] = pattern(i, t);
        rx_step s = { .lr = 0.05f, .weight_decay = (float)wd, .t = t, .shape = shape };
        if (o.desc->optim.step[RX_CPU](o.self, &o.ctx, g, w, buf, (size_t)n, s) != 0) fail_msg("step %d: %s", t, o.ctx.err);
        ref_filters_step(m, g, rw, rbuf, rows, cols, 0.05f, (float)wd, t == 1);
        for (int i = 0; i < n; i++) {
            if (fabs(w[i] - rw[i]) > 2e-5) fail_msg("%dx%d, step %d, w[%d]: got %.8g, want %.8g", rows, cols, t, i, w[i], rw[i]);
            if (fabs(buf[i] - rbuf[i]) > 1e-5) fail_msg("%dx%d, step %d, buf[%d]: got %.8g, want %.8g", rows, cols, t, i,
                                                       buf[i], rbuf[i]);
        }
    }
    test_free(w), test_free(buf), test_free(g), test_free(rw), test_free(rbuf);
    test_optimizer_close(&o);
}

static const muon_opts airbench = { .momentum = 0.6, .sgd_momentum = 0.85, .nesterov = true, .normalize = true,
                                    .ns_steps = 3 };
static const muon_opts plain = { .momentum = 0.95, .sgd_momentum = 0.9, .ns_steps = 5 };

static void test_filters_wide(void **state)
{
    check_filters(&airbench, 3, 5, 0, 1);
    check_filters(&plain, 4, 9, 0.1, 1);
}

/* More rows than columns: the iteration runs on the transpose. */
static void test_filters_tall(void **state)
{
    check_filters(&airbench, 6, 2, 0, 1);
    check_filters(&plain, 5, 4, 0.2, 1);
}

/* Rows split over two threads (16 or more each: 32 x 40, and its transpose), and a matrix too
 * small to split: the same steps. */
static void test_filters_two_threads(void **state)
{
    check_filters(&plain, 32, 40, 0.1, 2);
    check_filters(&airbench, 40, 32, 0, 2);
    check_filters(&plain, 4, 9, 0.1, 2);
}

/* What the iteration is for: after 5 steps the update's singular values sit near 1 (between 0.6
 * and 1.3: the quintic trades exactness for speed), whatever the gradient's scale, here two
 * directions 10 times apart. */
static void test_update_is_nearly_orthogonal(void **state)
{
    test_optimizer o;
    muon_open(&o, &plain);
    enum { R = 2, C = 4 };
    float g[R * C] = { 10, 0, 0, 0, 0, 1, 0, 0 }, w[R * C] = { 0 }, buf[R * C] = { 0 };
    rx_step s = { .lr = 1, .t = 1, .shape = { .ndim = 4, .d = { R, C, 1, 1 } } };
    assert_int_equal(o.desc->optim.step[RX_CPU](o.self, &o.ctx, g, w, buf, R * C, s), 0);
    /* w = -NS(g) = -U diag(sigma) V^T; here U = I and V = the first two columns. */
    assert_true(-w[0] > 0.6f && -w[0] < 1.3f);
    assert_true(-w[5] > 0.6f && -w[5] < 1.3f);
    for (int i = 0; i < R * C; i++)
        if (i != 0 && i != 5) assert_float_equal(w[i], 0, 1e-6f);
    test_optimizer_close(&o);
}

/* A zero gradient moves nothing (no 0/0), and decoupled weight decay still shrinks. */
static void test_zero_gradient(void **state)
{
    test_optimizer o;
    muon_open(&o, &plain);
    float g[4] = { 0 }, w[4] = { 1, -2, 3, -4 }, buf[4] = { 0 };
    rx_step s = { .lr = 0.1f, .weight_decay = 0.5f, .t = 1, .shape = { .ndim = 4, .d = { 2, 2, 1, 1 } } };
    assert_int_equal(o.desc->optim.step[RX_CPU](o.self, &o.ctx, g, w, buf, 4, s), 0);
    const float want[4] = { 0.95f, -1.9f, 2.85f, -3.8f };
    for (int i = 0; i < 4; i++) assert_float_equal(w[i], want[i], 1e-6f);
    test_optimizer_close(&o);
}

/* normalize: the filters start each step at norm sqrt(out), so a step of lr 0 leaves them there. */
static void test_normalize(void **state)
{
    test_optimizer o;
    muon_open(&o, &airbench);
    float g[6] = { 1, 2, 3, 4, 5, 6 }, w[6] = { 3, 0, 0, 4, 0, 0 }, buf[6] = { 0 };
    rx_step s = { .lr = 0, .t = 1, .shape = { .ndim = 4, .d = { 2, 3, 1, 1 } } };
    assert_int_equal(o.desc->optim.step[RX_CPU](o.self, &o.ctx, g, w, buf, 6, s), 0);
    assert_float_equal(w[0], 3 * sqrtf(2) / 5, 1e-6f);
    assert_float_equal(w[3], 4 * sqrtf(2) / 5, 1e-6f);
    test_optimizer_close(&o);
}

/* Every tensor that is not 4-D takes sgd's rule with sgd_momentum: test_sgd.c's Nesterov case
 * (sgd_momentum 0.9, lr 0.1) and its weight decay case (sgd_momentum 0, weight decay 0.1). */
static void test_other_tensors_take_sgd(void **state)
{
    static const float grads[3][3] = { { 0.5f, -1.0f, 2.0f }, { 0.25f, 0.5f, -1.0f }, { -0.5f, 0.0f, 1.0f } };
    static const float want[2][3][3] = {
        { { 0.905f, -1.81f, 0.12f }, { 0.817f, -1.824f, 0.148f }, { 0.8553f, -1.7916f, -0.1068f } }, /* Nesterov */
        { { 0.94f, -1.88f, 0.295f }, { 0.9056f, -1.9112f, 0.39205f }, { 0.946544f, -1.892088f, 0.2881295f } }, /* decay */
    };
    for (int c = 0; c < 2; c++) {
        test_optimizer o;
        muon_open(&o, &(muon_opts){ .momentum = 0.5, .sgd_momentum = c == 0 ? 0.9 : 0, .nesterov = c == 0, .ns_steps = 5 });
        float w[3] = { 1.0f, -2.0f, 0.5f }, buf[3] = { 0 };
        /* a bias (1-D), then the same as a linear layer's (2-D) weights */
        rx_shape shape = c == 0 ? (rx_shape){ .ndim = 1, .d = { 3 } } : (rx_shape){ .ndim = 2, .d = { 1, 3 } };
        for (int t = 1; t <= 3; t++) {
            rx_step s = { .lr = 0.1f, .weight_decay = c == 0 ? 0 : 0.1f, .t = t, .shape = shape };
            assert_int_equal(o.desc->optim.step[RX_CPU](o.self, &o.ctx, grads[t - 1], w, buf, 3, s), 0);
            for (int i = 0; i < 3; i++) assert_float_equal(w[i], want[c][t - 1][i], 1e-6f);
        }
        test_optimizer_close(&o);
    }
}

/* t == 1 starts the buffer afresh, whatever the state holds; a later t continues from it. */
static void test_first_step_starts_buffer(void **state)
{
    test_optimizer o;
    muon_open(&o, &(muon_opts){ .momentum = 0.5, .sgd_momentum = 0.5, .ns_steps = 5 });
    float g[2] = { 1, 1 }, w[2] = { 0, 0 }, buf[2] = { 100, 100 };
    rx_step s = { .lr = 0, .t = 1, .shape = { .ndim = 4, .d = { 1, 2, 1, 1 } } };
    assert_int_equal(o.desc->optim.step[RX_CPU](o.self, &o.ctx, g, w, buf, 2, s), 0);
    assert_float_equal(buf[0], 1, 0);
    s.t = 2;
    assert_int_equal(o.desc->optim.step[RX_CPU](o.self, &o.ctx, g, w, buf, 2, s), 0);
    assert_float_equal(buf[0], 1.5f, 0);
    test_optimizer_close(&o);
}

static void expect_create_refused(const muon_opts *m, const char *want)
{
    test_optimizer o;
    muon_load(&o, m);
    o.self = (void *)&o; /* must be cleared */
    assert_int_equal(o.desc->optim.create(&o.self, &o.ctx, o.args, &o.state_per_param), -1);
    assert_null(o.self);
    if (!strstr(o.ctx.err, want)) fail_msg("error '%s' does not say '%s'", o.ctx.err, want);
    plugin_unload(&o.pl);
}

static void test_refuses_invalid_options(void **state)
{
    expect_create_refused(&(muon_opts){ .momentum = 1, .ns_steps = 5 }, "momentum must be in [0, 1), got 1");
    expect_create_refused(&(muon_opts){ .momentum = NAN, .ns_steps = 5 }, "momentum must be in [0, 1), got nan");
    expect_create_refused(&(muon_opts){ .sgd_momentum = -0.1, .ns_steps = 5 }, "sgd_momentum must be in [0, 1), got -0.1");
    expect_create_refused(&(muon_opts){ .ns_steps = 0 }, "ns_steps must be in 1..20, got 0");
}

static void expect_step_refused(test_optimizer *o, float *buf, size_t n, rx_step s, const char *want)
{
    float g[4] = { 1, 2, 3, 4 }, w[4] = { 1, 1, 1, 1 };
    assert_int_equal(o->desc->optim.step[RX_CPU](o->self, &o->ctx, g, w, buf, n, s), -1);
    if (!strstr(o->ctx.err, want)) fail_msg("error '%s' does not say '%s'", o->ctx.err, want);
    for (int i = 0; i < 4; i++) assert_float_equal(w[i], 1, 0); /* untouched */
}

static void test_refuses_invalid_steps(void **state)
{
    test_optimizer o;
    muon_open(&o, &plain);
    float buf[4] = { 0 };
    const rx_shape filters = { .ndim = 4, .d = { 2, 2, 1, 1 } };
    expect_step_refused(&o, buf, 4, (rx_step){ .lr = 0.1f, .t = 1 }, "one whole tensor a call: got 4 floats and a shape of 0 dims");
    expect_step_refused(&o, buf, 3, (rx_step){ .lr = 0.1f, .t = 1, .shape = filters }, "got 3 floats");
    expect_step_refused(&o, buf, 4, (rx_step){ .lr = -1, .t = 1, .shape = filters }, "learning rate must be >= 0, got -1");
    expect_step_refused(&o, buf, 4, (rx_step){ .lr = 0.1f, .weight_decay = NAN, .t = 1, .shape = filters },
                        "weight decay must be >= 0, got nan");
    expect_step_refused(&o, buf, 4, (rx_step){ .lr = 0.1f, .t = 0, .shape = filters }, "t must be >= 1, got 0");
    expect_step_refused(&o, NULL, 4, (rx_step){ .lr = 0.1f, .t = 1, .shape = filters }, "state buffer");
    assert_null(o.desc->optim.step[RX_CUDA]); /* the CPU only: the host refuses it on a GPU */
    test_optimizer_close(&o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_filters_wide),
        cmocka_unit_test(test_filters_tall),
        cmocka_unit_test(test_filters_two_threads),
        cmocka_unit_test(test_update_is_nearly_orthogonal),
        cmocka_unit_test(test_zero_gradient),
        cmocka_unit_test(test_normalize),
        cmocka_unit_test(test_other_tensors_take_sgd),
        cmocka_unit_test(test_first_step_starts_buffer),
        cmocka_unit_test(test_refuses_invalid_options),
        cmocka_unit_test(test_refuses_invalid_steps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
