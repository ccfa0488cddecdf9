/* test_scale.c: the scale layer plugin (y = by * x), driven the way the host drives it (create,
 * lend tensors, forward, backward).
 *
 * - By hand: the factor is rounded to float once and each output is one float product, exactly
 *   as `x * by` in PyTorch, so y and dx are compared bit for bit with (float)by * x.
 * - 1 and 2 threads give the same bits; create refuses a factor that is not a finite float, and
 *   the descriptor marks `by` required (the host then refuses a config without it).
 * Central differences of the plugin's own forward, and CPU vs CUDA bit for bit, are rows of
 * test_check.c's table (core/check.c). */
#include "helpers.h"

#include <math.h>

static void rig_load(rig *r, double by)
{
    rig_open(r, "scale", 13);
    test_arg(r->desc, r->args, "by")->num = by;
}

/* rig_alloc, then x U(-4, 4) and dy U(-1, 1); scale keeps no state. */
static void scale_build(rig *r, rx_shape in, int64_t n)
{
    rig_alloc(r, in, n);
    assert_int_equal(r->info.state_bytes, 0);
    tensor_uniform(&r->rng, &r->x, -4.0f, 4.0f);
    tensor_uniform(&r->rng, &r->dy, -1.0f, 1.0f);
}

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
    scale_build(&r, TEST_SHAPE(2, 3), 2);
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
        scale_build(&r, TEST_SHAPE(4, 5), 3);
        rig_forward(&r);
        rig_backward(&r, true);
        expect_products(&r, factors[k]);
        rig_free(&r);
    }
    /* by = 3 on small integers: exact, 3, -6, ... */
    rig_load(&r, 3);
    scale_build(&r, TEST_SHAPE(4), 1);
    for (int i = 0; i < 4; i++) r.x.data[i] = (float)(i - 2);
    rig_forward(&r);
    const float want[4] = { -6, -3, 0, 3 };
    assert_memory_equal(r.y.data, want, sizeof want);
    rig_free(&r);
}

/* ---- Threads ---- */

/* 49152 values a sample, 6 samples: split across threads; elementwise, so the same bits. */
static void test_scale_threads(void **unused)
{
    rig r;
    rig_load(&r, 1.0 / 9.0);
    scale_build(&r, TEST_SHAPE(48, 32, 32), 6);
    expect_threads_agree(&r, "scale outputs");
    expect_products(&r, 1.0 / 9.0);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scale_by_hand),
        cmocka_unit_test(test_scale_threads),
        cmocka_unit_test(test_scale_refuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
