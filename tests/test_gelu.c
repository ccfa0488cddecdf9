/* test_gelu.c: the gelu layer plugin, driven the way the host drives it (create, lend tensors,
 * forward, backward), in both forms (approximate = "none" and "tanh").
 *
 * - By hand: values and derivatives at a few points, from the closed forms in double.
 * - The derivative on a dense grid over [-8, 8], backward against a double-precision central
 *   difference of the closed form (which knows nothing of the derivative's formula).
 * - Large inputs stay finite; 1 and 2 threads give the same bits; create refuses an unknown form.
 * Central differences of the plugin's own forward, and CPU vs CUDA, are rows of test_check.c's
 * table (core/check.c). */
#include "helpers.h"

#include <math.h>

/* Loads gelu in form `approximate` (NULL: the default). */
static void rig_load(rig *r, const char *approximate)
{
    rig_open(r, "gelu", 11);
    if (approximate) test_arg(r->desc, r->args, "approximate")->s = approximate;
}

/* rig_alloc, then x U(lo, hi) and dy U(-1, 1). */
static void gelu_build(rig *r, rx_shape in, int64_t n, float lo, float hi)
{
    rig_alloc(r, in, n);
    tensor_uniform(&r->rng, &r->x, lo, hi);
    tensor_uniform(&r->rng, &r->dy, -1.0f, 1.0f);
}

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
        gelu_build(&r, TEST_SHAPE(7), 1, 0.0f, 0.0f);
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
        gelu_build(&r, TEST_SHAPE(POINTS), 1, 0.0f, 0.0f);
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

/* Far from 0 gelu is x or 0 with slope 1 or 0, and nothing overflows into NaN. */
static void test_gelu_large_inputs(void **unused)
{
    static const float x[6] = { 30, -30, 1e4f, -1e4f, 1e18f, -1e18f };
    for (int form = 0; form < 2; form++) {
        rig r;
        rig_load(&r, form ? "tanh" : "none");
        gelu_build(&r, TEST_SHAPE(6), 1, 0.0f, 0.0f);
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
        gelu_build(&r, TEST_SHAPE(48, 32, 32), 6, -5.0f, 5.0f);
        expect_threads_agree(&r, form ? "gelu tanh outputs" : "gelu outputs");
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gelu_by_hand),
        cmocka_unit_test(test_gelu_derivative_dense),
        cmocka_unit_test(test_gelu_large_inputs),
        cmocka_unit_test(test_gelu_threads),
        cmocka_unit_test(test_gelu_refuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
