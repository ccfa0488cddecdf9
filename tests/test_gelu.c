/* test_gelu.c: the gelu layer plugin, driven the way the host drives it (create, lend tensors,
 * forward, backward), in both forms (approximate = "none" and "tanh").
 *
 * - By hand: values and derivatives at a few points, from the closed forms in double.
 * - The derivative, twice over: on a dense grid over [-8, 8], backward against a double-precision
 *   central difference of the closed form (which knows nothing of the derivative's formula), and
 *   on random inputs against central differences of the plugin's own float forward, with
 *   test_layers.c's tolerances (1e-2 relative, 1e-3 absolute).
 * - Large inputs stay finite; 1 and 2 threads give the same bits; create refuses an unknown form.
 * - CPU vs CUDA on the same inputs, skipped (saying why) without CUDA or a usable GPU, as
 *   test_cuda.c does; never a failure for want of a GPU. */
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

/* ---- A layer with every buffer the host would lend it (gelu has no tensors) ---- */

typedef struct rig {
    plugin pl;
    const rx_plugin *desc;
    rx_value args[TEST_MAX_ARGS];
    void *self;
    rx_ctx ctx;
    rx_layer_info info;
    rx_tensor x, dx;  /* (N, in...) */
    rx_tensor y, dy;  /* (N, out...) */
    void *state;      /* info.state_bytes * N */
    rx_rng rng;       /* the test's own random numbers */
} rig;

static void fill_uniform(rx_rng *r, rx_tensor *t, float lo, float hi)
{
    for (int64_t i = 0; i < rx_numel(t->shape); i++) t->data[i] = lo + (hi - lo) * rx_rng_uniform(r);
}

static void rig_load(rig *r, const char *approximate)
{
    memset(r, 0, sizeof *r);
    r->desc = test_load(&r->pl, RX_LAYER, "gelu");
    test_default_args(r->desc, r->args);
    if (approximate) test_arg(r->desc, r->args, "approximate")->s = approximate;
    r->ctx = (rx_ctx){ .device = RX_CPU, .training = true, .threads = 1 };
    r->rng = rx_rng_stream(11, 0);
}

static int rig_create(rig *r, rx_shape in)
{
    return r->desc->layer.create(&r->self, &r->ctx, r->args, in, &r->info);
}

/* create, which must succeed, then every buffer; x is U(lo, hi) and dy U(-1, 1). */
static void rig_build(rig *r, rx_shape in, int64_t n, float lo, float hi)
{
    if (rig_create(r, in) != 0) fail_msg("gelu: create failed: %s", r->ctx.err);
    r->x = tensor_new(batched(n, in));
    r->dx = tensor_new(batched(n, in));
    r->y = tensor_new(batched(n, r->info.out));
    r->dy = tensor_new(batched(n, r->info.out));
    if (r->info.state_bytes) {
        r->state = calloc(r->info.state_bytes, (size_t)n);
        assert_non_null(r->state);
    }
    fill_uniform(&r->rng, &r->x, lo, hi);
    fill_uniform(&r->rng, &r->dy, -1.0f, 1.0f);
}

static void rig_forward(rig *r)
{
    if (r->desc->layer.forward[RX_CPU](r->self, &r->ctx, &r->x, NULL, &r->y, r->state) != 0)
        fail_msg("gelu: forward failed: %s", r->ctx.err);
}

static void rig_backward(rig *r, bool want_dx)
{
    if (r->desc->layer.backward[RX_CPU](r->self, &r->ctx, &r->x, &r->y, &r->dy, NULL, r->state,
                                        want_dx ? &r->dx : NULL, NULL) != 0)
        fail_msg("gelu: backward failed: %s", r->ctx.err);
}

static void rig_free(rig *r)
{
    if (r->desc->layer.destroy) r->desc->layer.destroy(r->self);
    free(r->x.data);
    free(r->dx.data);
    free(r->y.data);
    free(r->dy.data);
    free(r->state);
    plugin_unload(&r->pl);
}

static void expect_refused(rig *r, rx_shape in, const char *const *fragments)
{
    r->ctx.err[0] = '\0';
    r->self = NULL;
    if (rig_create(r, in) == 0) {
        r->desc->layer.destroy(r->self);
        r->self = NULL;
        fail_msg("gelu: create accepted what it should refuse (expected \"%s\")", fragments[0]);
    }
    assert_null(r->self);
    for (int i = 0; fragments[i]; i++)
        if (!strstr(r->ctx.err, fragments[i])) fail_msg("message \"%s\" lacks \"%s\"", r->ctx.err, fragments[i]);
}
#define EXPECT_REFUSED(r, in, ...) expect_refused((r), (in), (const char *const[]){ __VA_ARGS__, NULL })

/* ---- The closed forms, in double ---- */

static double gelu_exact_ref(double x) { return 0.5 * x * (1.0 + erf(x / sqrt(2.0))); }

static double gelu_tanh_ref(double x)
{
    return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

/* ---- By hand ---- */

/* Both forms at a few points: f and f' from the closed forms in double (f(1) = Phi(1),
 * f'(0) = 1/2, ...), against the float plugin within 3e-7 * max(|f|, 1): a float ulp or two,
 * and the cancellation in 1 + erf(x) for negative x, which PyTorch's float kernel shares. */
static void test_gelu_by_hand(void **unused)
{
    static const float x[7] = { -3, -1, -0.5f, 0, 0.5f, 1, 2 };
    static const double exact[7] = { -0.00404969409489031, -0.15865525393145707, -0.15426876936299344, 0.0,
                                     0.34573123063700656, 0.8413447460685429, 1.9544997361036416 };
    static const double exact_grad[7] = { -0.011945647204183918, -0.08331547058768629, 0.13250487534383712, 0.5,
                                          0.8674951246561629, 1.0833154705876864, 1.085231801078197 };
    static const double tanh_form[7] = { -0.0036373920817729943, -0.15880800939172324, -0.15428599017485606, 0.0,
                                         0.34571400982514394, 0.8411919906082768, 1.954597694087775 };
    static const double tanh_grad[7] = { -0.011584166630969516, -0.08296408384578255, 0.13263009646535764, 0.5,
                                         0.8673699035346424, 1.0829640838457826, 1.0860992566236183 };
    for (int form = 0; form < 2; form++) {
        rig r;
        rig_load(&r, form ? "tanh" : NULL);  /* NULL: the default, which must be the exact form */
        rig_build(&r, TEST_SHAPE(7), 1, 0.0f, 0.0f);
        assert_int_equal(r.info.out.ndim, 1);
        assert_int_equal(r.info.out.d[0], 7);
        assert_int_equal(r.info.ntensors, 0);
        assert_int_equal(r.info.state_bytes, 0);
        memcpy(r.x.data, x, sizeof x);
        for (int i = 0; i < 7; i++) r.dy.data[i] = 1.0f;
        rig_forward(&r);
        rig_backward(&r, true);
        const double *want = form ? tanh_form : exact, *want_grad = form ? tanh_grad : exact_grad;
        for (int i = 0; i < 7; i++) {
            if (!(fabs(r.y.data[i] - want[i]) <= 3e-7 * fmax(fabs(want[i]), 1.0)))
                fail_msg("gelu %s: y(%g) is %.9g, expected %.9g", form ? "tanh" : "exact", x[i], r.y.data[i], want[i]);
            if (!(fabs(r.dx.data[i] - want_grad[i]) <= 3e-7 * fmax(fabs(want_grad[i]), 1.0)))
                fail_msg("gelu %s: y'(%g) is %.9g, expected %.9g", form ? "tanh" : "exact", x[i], r.dx.data[i],
                         want_grad[i]);
        }
        /* dx scales with dy, and dx == NULL is accepted */
        for (int i = 0; i < 7; i++) r.dy.data[i] = -2.0f;
        rig_backward(&r, true);
        for (int i = 0; i < 7; i++)
            if (!(fabs(r.dx.data[i] + 2 * want_grad[i]) <= 6e-7 * fmax(fabs(want_grad[i]), 1.0)))
                fail_msg("gelu: dx(%g) with dy = -2 is %.9g, expected %.9g", x[i], r.dx.data[i], -2 * want_grad[i]);
        rig_backward(&r, false);
        rig_free(&r);
    }
}

/* ---- The derivative, checked two ways ---- */

/* Over [-8, 8] in steps of 1/64: y against the closed form, and dx (dy = 1) against a central
 * difference of the closed form in double (step 1e-5: truncation and rounding both near 1e-10),
 * for both forms. The float results are off by rounding only, a few 1e-8 here. */
static void test_gelu_derivative_dense(void **unused)
{
    enum { POINTS = 16 * 64 + 1 };
    for (int form = 0; form < 2; form++) {
        double (*f)(double) = form ? gelu_tanh_ref : gelu_exact_ref;
        rig r;
        rig_load(&r, form ? "tanh" : "none");
        rig_build(&r, TEST_SHAPE(POINTS), 1, 0.0f, 0.0f);
        for (int i = 0; i < POINTS; i++) {
            r.x.data[i] = -8.0f + (float)i / 64.0f;  /* exact in float */
            r.dy.data[i] = 1.0f;
        }
        rig_forward(&r);
        rig_backward(&r, true);
        const double h = 1e-5;
        for (int i = 0; i < POINTS; i++) {
            const double v = r.x.data[i], want = f(v), want_grad = (f(v + h) - f(v - h)) / (2 * h);
            if (!(fabs(r.y.data[i] - want) <= 1e-6 * fmax(fabs(want), 1.0)))
                fail_msg("gelu %s: y(%g) is %.9g, the closed form %.9g", form ? "tanh" : "exact", v, r.y.data[i],
                         want);
            if (!(fabs(r.dx.data[i] - want_grad) <= 1e-6 * fmax(fabs(want_grad), 1.0)))
                fail_msg("gelu %s: y'(%g) is %.9g, a central difference of the closed form %.9g",
                         form ? "tanh" : "exact", v, r.dx.data[i], want_grad);
        }
        rig_free(&r);
    }
}

/* The project's finite-difference check (as in test_layers.c): L = sum(y * dy), each x moved by
 * +-eps through the plugin's own float forward, L summed in double. */
static void gradcheck(rig *r)
{
    rig_forward(r);
    rig_backward(r, true);
    for (int64_t i = 0; i < rx_numel(r->x.shape); i++) {
        const float v0 = r->x.data[i], vp = v0 + (float)GRAD_EPS, vm = v0 - (float)GRAD_EPS;
        double l[2] = { 0, 0 };
        for (int side = 0; side < 2; side++) {
            r->x.data[i] = side ? vm : vp;
            rig_forward(r);
            for (int64_t j = 0; j < rx_numel(r->y.shape); j++) l[side] += (double)r->y.data[j] * r->dy.data[j];
        }
        r->x.data[i] = v0;
        const double numeric = (l[0] - l[1]) / ((double)vp - (double)vm), analytic = r->dx.data[i];
        if (!(fabs(analytic - numeric) <= GRAD_RTOL * fmax(fabs(analytic), fabs(numeric)) + GRAD_ATOL))
            fail_msg("gelu: dx[%lld] (x = %g): backward gives %.7g, central differences %.7g", (long long)i, v0,
                     analytic, numeric);
    }
}

static void test_gelu_gradients(void **unused)
{
    for (int form = 0; form < 2; form++) {
        rig r;
        rig_load(&r, form ? "tanh" : "none");
        rig_build(&r, TEST_SHAPE(2, 3, 4), 2, -4.0f, 4.0f);
        gradcheck(&r);
        rig_free(&r);
    }
}

/* Far from 0 gelu is x or 0 with slope 1 or 0, and nothing overflows into NaN. */
static void test_gelu_large_inputs(void **unused)
{
    static const float x[6] = { 30, -30, 1e4f, -1e4f, 1e18f, -1e18f };
    for (int form = 0; form < 2; form++) {
        rig r;
        rig_load(&r, form ? "tanh" : "none");
        rig_build(&r, TEST_SHAPE(6), 1, 0.0f, 0.0f);
        memcpy(r.x.data, x, sizeof x);
        for (int i = 0; i < 6; i++) r.dy.data[i] = 1.0f;
        rig_forward(&r);
        rig_backward(&r, true);
        for (int i = 0; i < 6; i++) {
            const float want = x[i] > 0 ? x[i] : 0.0f, want_grad = x[i] > 0 ? 1.0f : 0.0f;
            if (r.y.data[i] != want || r.dx.data[i] != want_grad)
                fail_msg("gelu %s at %g: y %g, y' %g; expected %g and %g", form ? "tanh" : "exact", x[i], r.y.data[i],
                         r.dx.data[i], want, want_grad);
        }
        rig_free(&r);
    }
}

/* ---- Threads ---- */

/* 49152 values a sample, 6 samples: split across threads; elementwise, so the same bits. */
static void test_gelu_threads(void **unused)
{
    for (int form = 0; form < 2; form++) {
        rig r;
        rig_load(&r, form ? "tanh" : "none");
        rig_build(&r, TEST_SHAPE(48, 32, 32), 6, -5.0f, 5.0f);
        const int64_t n = rx_numel(r.x.shape);
        float *y1 = floats(n), *dx1 = floats(n);
        r.ctx.threads = 1;
        rig_forward(&r);
        rig_backward(&r, true);
        memcpy(y1, r.y.data, sizeof(float) * (size_t)n);
        memcpy(dx1, r.dx.data, sizeof(float) * (size_t)n);
        memset(r.y.data, 0, sizeof(float) * (size_t)n);
        memset(r.dx.data, 0, sizeof(float) * (size_t)n);
        r.ctx.threads = 2;
        rig_forward(&r);
        rig_backward(&r, true);
        if (memcmp(r.y.data, y1, sizeof(float) * (size_t)n) != 0) fail_msg("gelu: y with 2 threads differs from 1");
        if (memcmp(r.dx.data, dx1, sizeof(float) * (size_t)n) != 0) fail_msg("gelu: dx with 2 threads differs from 1");
        free(y1);
        free(dx1);
        rig_free(&r);
    }
}

/* ---- Refusals ---- */

static void test_gelu_refuses(void **unused)
{
    rig r;
    rig_load(&r, "fast");
    EXPECT_REFUSED(&r, TEST_SHAPE(10), "approximate", "'none' or 'tanh'", "got 'fast'");
    test_arg(r.desc, r.args, "approximate")->s = "Tanh";  /* names are exact, as in PyTorch */
    EXPECT_REFUSED(&r, TEST_SHAPE(10), "approximate", "got 'Tanh'");
    test_arg(r.desc, r.args, "approximate")->s = "";
    EXPECT_REFUSED(&r, TEST_SHAPE(10), "approximate", "got ''");
    test_arg(r.desc, r.args, "approximate")->s = "tanh";
    EXPECT_REFUSED(&r, (rx_shape){ .ndim = 0 }, "at least 1 dimension");
    rig_free(&r);
}

/* ---- CPU vs CUDA ---- */

/* Bound: CUDA's erff and tanhf are within 2 ulp where the C library's are within 1, and nvcc
 * fuses multiply-adds, so the devices differ by a few ulp: relative errors of a few 1e-7 on
 * check.c's measure |gpu - cpu| / (|cpu| + 1e-3). 1e-5 leaves room and is far below what a wrong
 * constant or formula gives (the two forms alone differ by up to 1e-3 relative). */
#define DEVICE_BOUND 1e-5

/* Whether the CUDA path can run here; if not, why. A CUDA build whose gelu lacks a CUDA path
 * fails: that is a bug, not a missing GPU. */
static bool gpu_usable(const rx_plugin *d, char *why)
{
#ifndef RX_WITH_CUDA
    (void)d;
    snprintf(why, ERR_LEN, "this build has no CUDA (make CUDA=1, with nvcc)");
    return false;
#else
    if (!d->layer.forward[RX_CUDA] || !d->layer.backward[RX_CUDA]) fail_msg("gelu has no CUDA path in a CUDA build");
    return device_usable(RX_CUDA, why);
#endif
}

#ifdef RX_WITH_CUDA
/* Largest |a - b| / (|b| + 1e-3), check.c's measure; NaN counts as the worst. */
static double max_relative_error(const float *a, const float *b, int64_t n)
{
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]) / (fabs((double)b[i]) + 1e-3);
        if (!(e <= worst)) worst = e;
    }
    return worst;
}

/* The rig's CPU results (already in y and dx) against the CUDA path on the same x and dy. */
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
    const double ey = max_relative_error(y_back, r->y.data, ny), edx = max_relative_error(dx_back, r->dx.data, nx);
    if (ey > DEVICE_BOUND || edx > DEVICE_BOUND)
        fail_msg("%s: relative error y %.3g, dx %.3g (bound %g)", what, ey, edx, DEVICE_BOUND);
    print_message("  %-36s relative error y %.2g, dx %.2g (bound %g)\n", what, ey, edx, DEVICE_BOUND);
    free(y_back);
    free(dx_back);
    device_free(RX_CUDA, x.data);
    device_free(RX_CUDA, y.data);
    device_free(RX_CUDA, dy.data);
    device_free(RX_CUDA, dx.data);
    device_close_context(RX_CUDA, &gpu);
}
#endif

static void test_gelu_cpu_vs_cuda(void **unused)
{
    static const struct { int64_t c, h, w, n; } shapes[] = {
        { 3, 8, 8, 4 },
        { 16, 32, 32, 20 },  /* many blocks */
        { 1, 1, 7, 1 },      /* one partial block */
    };
    char why[ERR_LEN] = "";
    {
        plugin pl;
        const bool usable = gpu_usable(test_load(&pl, RX_LAYER, "gelu"), why);
        plugin_unload(&pl);
        if (!usable) {
            print_message("skipped: %s\n", why);
            skip();
        }
    }
#ifdef RX_WITH_CUDA
    for (int form = 0; form < 2; form++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            rig r;
            rig_load(&r, form ? "tanh" : "none");
            rig_build(&r, TEST_SHAPE(shapes[s].c, shapes[s].h, shapes[s].w), shapes[s].n, -6.0f, 6.0f);
            rig_forward(&r);
            rig_backward(&r, true);
            char what[96];
            snprintf(what, sizeof what, "gelu %s (%lld, %lld, %lld) x %lld", form ? "tanh" : "none",
                     (long long)shapes[s].c, (long long)shapes[s].h, (long long)shapes[s].w, (long long)shapes[s].n);
            compare_devices(&r, what);
            rig_free(&r);
        }
#else
    (void)shapes;
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gelu_by_hand),
        cmocka_unit_test(test_gelu_derivative_dense),
        cmocka_unit_test(test_gelu_gradients),
        cmocka_unit_test(test_gelu_large_inputs),
        cmocka_unit_test(test_gelu_threads),
        cmocka_unit_test(test_gelu_refuses),
        cmocka_unit_test(test_gelu_cpu_vs_cuda),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
