/* test_scale.c: the scale layer plugin (y = by * x), driven the way the host drives it (create,
 * lend tensors, forward, backward).
 *
 * - By hand: the factor is rounded to float once and each output is one float product, exactly
 *   as `x * by` in PyTorch, so y and dx are compared bit for bit with (float)by * x.
 * - Central differences of the plugin's own forward, with test_layers.c's tolerances.
 * - 1 and 2 threads give the same bits; create refuses a factor that is not a finite float, and
 *   the descriptor marks `by` required (the host then refuses a config without it).
 * - CPU vs CUDA on the same inputs, bit for bit, skipped (saying why) without CUDA or a usable
 *   GPU, as test_cuda.c does; never a failure for want of a GPU. */
#include "helpers.h"

#include <math.h>
#include <stdio.h>

#include "device.h"
#include "error.h"

#ifdef RX_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

#define GRAD_EPS  1e-3  /* central-difference step on the float forward */
#define GRAD_RTOL 1e-2
#define GRAD_ATOL 1e-3

/* ---- A layer with every buffer the host would lend it (scale has no tensors) ---- */

typedef struct rig {
    plugin pl;
    const rx_plugin *desc;
    rx_value args[TEST_MAX_ARGS];
    void *self;
    rx_ctx ctx;
    rx_layer_info info;
    rx_tensor x, dx;  /* (N, in...) */
    rx_tensor y, dy;  /* (N, out...) */
    rx_rng rng;       /* the test's own random numbers */
} rig;

static void fill_uniform(rx_rng *r, rx_tensor *t, float lo, float hi)
{
    for (int64_t i = 0; i < rx_numel(t->shape); i++) t->data[i] = lo + (hi - lo) * rx_rng_uniform(r);
}

static void rig_load(rig *r, double by)
{
    memset(r, 0, sizeof *r);
    r->desc = test_load(&r->pl, RX_LAYER, "scale");
    test_default_args(r->desc, r->args);
    test_arg(r->desc, r->args, "by")->num = by;
    r->ctx = (rx_ctx){ .device = RX_CPU, .training = true, .threads = 1 };
    r->rng = rx_rng_stream(13, 0);
}

static int rig_create(rig *r, rx_shape in)
{
    return r->desc->layer.create(&r->self, &r->ctx, r->args, in, &r->info);
}

/* create, which must succeed, then every buffer; x is U(-4, 4) and dy U(-1, 1). */
static void rig_build(rig *r, rx_shape in, int64_t n)
{
    if (rig_create(r, in) != 0) fail_msg("scale: create failed: %s", r->ctx.err);
    assert_int_equal(r->info.state_bytes, 0);
    r->x = tensor_new(batched(n, in));
    r->dx = tensor_new(batched(n, in));
    r->y = tensor_new(batched(n, r->info.out));
    r->dy = tensor_new(batched(n, r->info.out));
    fill_uniform(&r->rng, &r->x, -4.0f, 4.0f);
    fill_uniform(&r->rng, &r->dy, -1.0f, 1.0f);
}

static void rig_forward(rig *r)
{
    if (r->desc->layer.forward[RX_CPU](r->self, &r->ctx, &r->x, NULL, &r->y, NULL) != 0)
        fail_msg("scale: forward failed: %s", r->ctx.err);
}

static void rig_backward(rig *r, bool want_dx)
{
    if (r->desc->layer.backward[RX_CPU](r->self, &r->ctx, &r->x, &r->y, &r->dy, NULL, NULL,
                                        want_dx ? &r->dx : NULL, NULL) != 0)
        fail_msg("scale: backward failed: %s", r->ctx.err);
}

static void rig_free(rig *r)
{
    if (r->desc->layer.destroy) r->desc->layer.destroy(r->self);
    free(r->x.data);
    free(r->dx.data);
    free(r->y.data);
    free(r->dy.data);
    plugin_unload(&r->pl);
}

static void expect_refused(rig *r, rx_shape in, const char *const *fragments)
{
    r->ctx.err[0] = '\0';
    r->self = NULL;
    if (rig_create(r, in) == 0) {
        r->desc->layer.destroy(r->self);
        r->self = NULL;
        fail_msg("scale: create accepted what it should refuse (expected \"%s\")", fragments[0]);
    }
    assert_null(r->self);
    for (int i = 0; fragments[i]; i++)
        if (!strstr(r->ctx.err, fragments[i])) fail_msg("message \"%s\" lacks \"%s\"", r->ctx.err, fragments[i]);
}
#define EXPECT_REFUSED(r, in, ...) expect_refused((r), (in), (const char *const[]){ __VA_ARGS__, NULL })

/* y == (float)by * x and dx == (float)by * dy, to the bit (NaN-aware: NaN * by is NaN). */
static void expect_products(const rig *r, double by)
{
    const float f = (float)by;
    for (int64_t i = 0; i < rx_numel(r->x.shape); i++) {
        const float want = f * r->x.data[i], want_dx = f * r->dy.data[i];
        if (!(r->y.data[i] == want || (isnan(want) && isnan(r->y.data[i]))))
            fail_msg("scale by %g: y[%lld] is %.9g, expected %.9g * %.9g = %.9g", by, (long long)i, r->y.data[i], f,
                     r->x.data[i], want);
        if (!(r->dx.data[i] == want_dx))
            fail_msg("scale by %g: dx[%lld] is %.9g, expected %.9g * %.9g = %.9g", by, (long long)i, r->dx.data[i], f,
                     r->dy.data[i], want_dx);
    }
}

/* ---- By hand ---- */

static void test_scale_by_hand(void **unused)
{
    /* airbench94's 1/9 on a few values, then products any reader can check */
    rig r;
    rig_load(&r, 1.0 / 9.0);
    rig_build(&r, TEST_SHAPE(2, 3), 2);
    assert_int_equal(r.info.out.ndim, 2);
    assert_int_equal(r.info.out.d[0], 2);
    assert_int_equal(r.info.out.d[1], 3);
    assert_int_equal(r.info.ntensors, 0);
    static const float x[12] = { 9, -18, 0, 4.5f, 1, -1, 90, 0.9f, -0.0f, 1e30f, -7, INFINITY };
    memcpy(r.x.data, x, sizeof x);
    rig_forward(&r);
    rig_backward(&r, true);
    expect_products(&r, 1.0 / 9.0);
    assert_true(r.y.data[0] == (float)(1.0 / 9.0) * 9.0f);
    assert_true(fabsf(r.y.data[0] - 1.0f) <= 1e-7f && fabsf(r.y.data[1] + 2.0f) <= 2e-7f);
    assert_true(r.y.data[2] == 0.0f && isinf(r.y.data[11]));
    rig_backward(&r, false);  /* dx == NULL: nothing to do */
    rig_free(&r);

    static const double factors[] = { -2.5, 3, 0.0, 1.0, 1e-3, -1e6 };
    for (size_t k = 0; k < sizeof factors / sizeof factors[0]; k++) {
        rig_load(&r, factors[k]);
        rig_build(&r, TEST_SHAPE(4, 5), 3);
        rig_forward(&r);
        rig_backward(&r, true);
        expect_products(&r, factors[k]);
        rig_free(&r);
    }
    /* by = 3 on small integers: exact, 3, -6, ... */
    rig_load(&r, 3);
    rig_build(&r, TEST_SHAPE(4), 1);
    for (int i = 0; i < 4; i++) r.x.data[i] = (float)(i - 2);
    rig_forward(&r);
    const float want[4] = { -6, -3, 0, 3 };
    assert_memory_equal(r.y.data, want, sizeof want);
    rig_free(&r);
}

/* ---- Gradients ---- */

/* The project's finite-difference check (as in test_layers.c): L = sum(y * dy), each x moved by
 * +-eps through the plugin's own float forward, L summed in double. */
static void test_scale_gradients(void **unused)
{
    static const double factors[] = { 1.0 / 9.0, -2.5, 40.0 };
    for (size_t k = 0; k < sizeof factors / sizeof factors[0]; k++) {
        rig r;
        rig_load(&r, factors[k]);
        rig_build(&r, TEST_SHAPE(3, 2, 2), 2);
        rig_forward(&r);
        rig_backward(&r, true);
        for (int64_t i = 0; i < rx_numel(r.x.shape); i++) {
            const float v0 = r.x.data[i], vp = v0 + (float)GRAD_EPS, vm = v0 - (float)GRAD_EPS;
            double l[2] = { 0, 0 };
            for (int side = 0; side < 2; side++) {
                r.x.data[i] = side ? vm : vp;
                rig_forward(&r);
                for (int64_t j = 0; j < rx_numel(r.y.shape); j++) l[side] += (double)r.y.data[j] * r.dy.data[j];
            }
            r.x.data[i] = v0;
            const double numeric = (l[0] - l[1]) / ((double)vp - (double)vm), analytic = r.dx.data[i];
            if (!(fabs(analytic - numeric) <= GRAD_RTOL * fmax(fabs(analytic), fabs(numeric)) + GRAD_ATOL))
                fail_msg("scale by %g: dx[%lld]: backward gives %.7g, central differences %.7g", factors[k],
                         (long long)i, analytic, numeric);
        }
        rig_free(&r);
    }
}

/* ---- Threads ---- */

/* 49152 values a sample, 6 samples: split across threads; elementwise, so the same bits. */
static void test_scale_threads(void **unused)
{
    rig r;
    rig_load(&r, 1.0 / 9.0);
    rig_build(&r, TEST_SHAPE(48, 32, 32), 6);
    const int64_t n = rx_numel(r.x.shape);
    float *y1 = floats(n), *dx1 = floats(n);
    rig_forward(&r);
    rig_backward(&r, true);
    memcpy(y1, r.y.data, sizeof(float) * (size_t)n);
    memcpy(dx1, r.dx.data, sizeof(float) * (size_t)n);
    memset(r.y.data, 0, sizeof(float) * (size_t)n);
    memset(r.dx.data, 0, sizeof(float) * (size_t)n);
    r.ctx.threads = 2;
    rig_forward(&r);
    rig_backward(&r, true);
    if (memcmp(r.y.data, y1, sizeof(float) * (size_t)n) != 0) fail_msg("scale: y with 2 threads differs from 1");
    if (memcmp(r.dx.data, dx1, sizeof(float) * (size_t)n) != 0) fail_msg("scale: dx with 2 threads differs from 1");
    expect_products(&r, 1.0 / 9.0);
    free(y1);
    free(dx1);
    rig_free(&r);
}

/* ---- Refusals ---- */

static void test_scale_refuses(void **unused)
{
    rig r;
    rig_load(&r, NAN);
    EXPECT_REFUSED(&r, TEST_SHAPE(10), "by must be a finite number", "got nan");
    test_arg(r.desc, r.args, "by")->num = -NAN;  /* Lua's 0/0 */
    EXPECT_REFUSED(&r, TEST_SHAPE(10), "by must be a finite number", "got nan");
    test_arg(r.desc, r.args, "by")->num = INFINITY;
    EXPECT_REFUSED(&r, TEST_SHAPE(10), "by must be a finite number", "got inf");
    test_arg(r.desc, r.args, "by")->num = -INFINITY;
    EXPECT_REFUSED(&r, TEST_SHAPE(10), "by must be a finite number", "got -inf");
    test_arg(r.desc, r.args, "by")->num = 1e300;  /* finite, but infinite as a float */
    EXPECT_REFUSED(&r, TEST_SHAPE(10), "by must fit in a float", "got 1e+300");
    test_arg(r.desc, r.args, "by")->num = 2.0;
    EXPECT_REFUSED(&r, (rx_shape){ .ndim = 0 }, "at least 1 dimension");
    /* no default: the host refuses a config without `by` before create is called */
    const int at = plugin_param_index(r.desc, "by");
    assert_true(at >= 0);
    assert_true(r.desc->params[at].required);
    assert_int_equal(r.desc->params[at].type, RX_NUM);
    rig_free(&r);
}

/* ---- CPU vs CUDA ---- */

/* Whether the CUDA path can run here; if not, why. A CUDA build whose scale lacks a CUDA path
 * fails: that is a bug, not a missing GPU. */
static bool gpu_usable(const rx_plugin *d, char *why)
{
#ifndef RX_WITH_CUDA
    (void)d;
    snprintf(why, ERR_LEN, "this build has no CUDA (make CUDA=1, with nvcc)");
    return false;
#else
    if (!d->layer.forward[RX_CUDA] || !d->layer.backward[RX_CUDA]) fail_msg("scale has no CUDA path in a CUDA build");
    return device_usable(RX_CUDA, why);
#endif
}

#ifdef RX_WITH_CUDA
/* The rig's CPU results (already in y and dx) against the CUDA path on the same x and dy: one
 * float multiply on each side, so the same bits. */
static void compare_devices(rig *r, const char *what)
{
    rx_ctx gpu = r->ctx;
    gpu.device = RX_CUDA;
    char why[ERR_LEN];
    if (device_open_context(RX_CUDA, &gpu, why) != 0) fail_msg("%s", why);
    const int64_t nx = rx_numel(r->x.shape), ny = rx_numel(r->y.shape);
    rx_tensor x = r->x, y = r->y, dy = r->dy, dx = r->dx;
    x.data = gpu_alloc_or_fail(sizeof(float) * (size_t)nx);
    y.data = gpu_alloc_or_fail(sizeof(float) * (size_t)ny);
    dy.data = gpu_alloc_or_fail(sizeof(float) * (size_t)ny);
    dx.data = gpu_alloc_or_fail(sizeof(float) * (size_t)nx);
    x.device = y.device = dy.device = dx.device = RX_CUDA;
    host_to_device(RX_CUDA, x.data, r->x.data, sizeof(float) * (size_t)nx);
    host_to_device(RX_CUDA, dy.data, r->dy.data, sizeof(float) * (size_t)ny);
    if (r->desc->layer.forward[RX_CUDA](r->self, &gpu, &x, NULL, &y, NULL) != 0) fail_msg("cuda forward: %s", gpu.err);
    if (r->desc->layer.backward[RX_CUDA](r->self, &gpu, &x, &y, &dy, NULL, NULL, &dx, NULL) != 0)
        fail_msg("cuda backward: %s", gpu.err);
    if (r->desc->layer.backward[RX_CUDA](r->self, &gpu, &x, &y, &dy, NULL, NULL, NULL, NULL) != 0)
        fail_msg("cuda backward with dx = NULL: %s", gpu.err);
    expect_gpu_clean(what);
    float *y_back = floats(ny), *dx_back = floats(nx);
    device_to_host(RX_CUDA, y_back, y.data, sizeof(float) * (size_t)ny);
    device_to_host(RX_CUDA, dx_back, dx.data, sizeof(float) * (size_t)nx);
    for (int64_t i = 0; i < ny; i++)
        if (memcmp(&y_back[i], &r->y.data[i], sizeof(float)) != 0)
            fail_msg("%s: y[%lld] is %.9g on the GPU, %.9g on the CPU", what, (long long)i, y_back[i], r->y.data[i]);
    for (int64_t i = 0; i < nx; i++)
        if (memcmp(&dx_back[i], &r->dx.data[i], sizeof(float)) != 0)
            fail_msg("%s: dx[%lld] is %.9g on the GPU, %.9g on the CPU", what, (long long)i, dx_back[i],
                     r->dx.data[i]);
    print_message("  %-36s y and dx: the same bits\n", what);
    free(y_back);
    free(dx_back);
    device_free(RX_CUDA, x.data);
    device_free(RX_CUDA, y.data);
    device_free(RX_CUDA, dy.data);
    device_free(RX_CUDA, dx.data);
    device_close_context(RX_CUDA, &gpu);
}
#endif

static void test_scale_cpu_vs_cuda(void **unused)
{
    static const struct { double by; int64_t c, h, w, n; } cases[] = {
        { 1.0 / 9.0, 10, 1, 1, 4 },   /* airbench94's logits */
        { -2.5, 16, 32, 32, 20 },     /* many blocks */
        { 3.0, 1, 1, 7, 1 },          /* one partial block */
    };
    char why[ERR_LEN] = "";
    {
        plugin pl;
        const bool usable = gpu_usable(test_load(&pl, RX_LAYER, "scale"), why);
        plugin_unload(&pl);
        if (!usable) {
            print_message("skipped: %s\n", why);
            skip();
        }
    }
#ifdef RX_WITH_CUDA
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        rig r;
        rig_load(&r, cases[k].by);
        rig_build(&r, TEST_SHAPE(cases[k].c, cases[k].h, cases[k].w), cases[k].n);
        rig_forward(&r);
        rig_backward(&r, true);
        char what[96];
        snprintf(what, sizeof what, "scale by %g (%lld, %lld, %lld) x %lld", cases[k].by, (long long)cases[k].c,
                 (long long)cases[k].h, (long long)cases[k].w, (long long)cases[k].n);
        compare_devices(&r, what);
        rig_free(&r);
    }
#else
    (void)cases;
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scale_by_hand),
        cmocka_unit_test(test_scale_gradients),
        cmocka_unit_test(test_scale_threads),
        cmocka_unit_test(test_scale_refuses),
        cmocka_unit_test(test_scale_cpu_vs_cuda),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
