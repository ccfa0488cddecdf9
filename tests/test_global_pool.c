/* test_global_pool.c: the global_pool layer plugin, (C, H, W) -> (C, 1, 1) by max or mean,
 * driven the way the host drives it (create, lend tensors and state, forward, backward).
 *
 * - By hand: small planes in both modes, with ties (the first maximum wins, as in maxpool and
 *   PyTorch) and NaNs (a NaN wins; the last of several), including the state and dx.
 * - Odd and edge shapes (1x1, a single row or column, fewer and more elements than a warp's 32
 *   lanes) against plain reference loops; the mean's documented summation order.
 * - The same bits with 1 and 2 threads; global max equal, bit for bit with state and dx, to
 *   maxpool with one window over the whole (odd) plane; create's refusals.
 * Central differences of the plugin's own forward, and CPU vs CUDA to the bit (y, dx, the state,
 * and again on ties and NaNs), are rows of test_check.c's table (core/check.c). */
#include "helpers.h"

#include <math.h>

/* Loads global_pool in `mode` (NULL: the default). */
static void rig_load(rig *r, const char *mode)
{
    rig_open(r, "global_pool", 17);
    if (mode) test_arg(r->desc, r->args, "mode")->s = mode;
}

/* rig_alloc, then x and dy U(-1, 1). */
static void pool_build(rig *r, rx_shape in, int64_t n)
{
    rig_alloc(r, in, n);
    tensor_uniform(&r->rng, &r->x, -1.0f, 1.0f);
    tensor_uniform(&r->rng, &r->dy, -1.0f, 1.0f);
}

/* NaN-aware equality of floats, and of their bits otherwise (so -0 and +0 differ). */
static void expect_same_floats(const float *got, const float *want, int64_t n, const char *what)
{
    for (int64_t i = 0; i < n; i++)
        if (!(memcmp(&got[i], &want[i], sizeof(float)) == 0 || (isnan(got[i]) && isnan(want[i]))))
            fail_msg("%s[%lld] is %.9g, expected %.9g", what, (long long)i, got[i], want[i]);
}

/* Inputs drawn from five values (ties everywhere), with `nans` NaNs dropped in at random. */
static void fill_ties(rig *r, int nans)
{
    const int64_t n = rx_numel(r->x.shape);
    for (int64_t i = 0; i < n; i++) r->x.data[i] = (float)rx_rng_below(&r->rng, 5) - 2.0f;
    for (int k = 0; k < nans; k++) r->x.data[rx_rng_below(&r->rng, (uint64_t)n)] = NAN;
}

/* ---- The rule, written as plainly as possible ---- */

/* Max mode for the rig's x and dy: y (N, C), arg (N, C) as indices into each sample, dx. Scan
 * each plane in row-major order; a later element wins when it is larger or NaN. */
static void max_reference(const rig *r, float *y, int32_t *arg, float *dx)
{
    const int64_t n = r->x.shape.d[0], c = r->x.shape.d[1], hw = r->x.shape.d[2] * r->x.shape.d[3];
    memset(dx, 0, sizeof(float) * (size_t)(n * c * hw));
    for (int64_t p = 0; p < n * c; p++) {
        const float *xp = r->x.data + p * hw;
        int64_t best = 0;
        for (int64_t i = 1; i < hw; i++)
            if (xp[i] > xp[best] || isnan(xp[i])) best = i;
        y[p] = xp[best];
        arg[p] = (int32_t)((p % c) * hw + best);
        dx[p * hw + best] = r->dy.data[p];
    }
}

/* ---- By hand ---- */

static void test_global_pool_max_by_hand(void **unused)
{
    static const float x[3 * 6] = {  /* (3, 2, 3) */
        1, 5, 2,      -1, 5, 0,       /* tie at 5: the first, index 1 */
        -4, -3, -9,   -3.5f, -8, -7,  /* all negative: -3 at index 1 */
        0, NAN, 7,    NAN, 9, 1,      /* NaNs win, the last one: index 3 */
    };
    rig r;
    rig_load(&r, NULL);  /* the default mode is max */
    pool_build(&r, TEST_SHAPE(3, 2, 3), 1);
    assert_int_equal(r.info.out.ndim, 3);
    assert_int_equal(r.info.out.d[0], 3);
    assert_int_equal(r.info.out.d[1], 1);
    assert_int_equal(r.info.out.d[2], 1);
    assert_int_equal(r.info.ntensors, 0);
    assert_int_equal(r.info.state_bytes, sizeof(int32_t) * 3);
    memcpy(r.x.data, x, sizeof x);
    for (int i = 0; i < 3; i++) r.dy.data[i] = (float)(i + 1);
    memset(r.dx.data, 0x7f, sizeof x);  /* backward must write every element, zeros included */
    rig_forward(&r);
    rig_backward(&r, true);
    assert_true(r.y.data[0] == 5.0f && r.y.data[1] == -3.0f && isnan(r.y.data[2]));
    const int32_t *arg = r.state;
    assert_int_equal(arg[0], 1);
    assert_int_equal(arg[1], 6 + 1);
    assert_int_equal(arg[2], 12 + 3);
    float dx[3 * 6] = { 0 };
    dx[1] = 1;
    dx[6 + 1] = 2;
    dx[12 + 3] = 3;
    expect_same_floats(r.dx.data, dx, 18, "global_pool max dx");
    rig_backward(&r, false);
    rig_free(&r);
}

static void test_global_pool_avg_by_hand(void **unused)
{
    static const float x[2 * 2 * 9] = {  /* (2, 2, 3, 3): two samples */
        1, 2, 3, 4, 5, 6, 7, 8, 9,          /* mean 5 */
        -1, -1, -1, -1, -1, -1, -1, -1, 17, /* mean 1 */
        0, 0, 0, 0, 0, 0, 0, 0, 4.5f,       /* mean 0.5 */
        -9, 0, 0, 0, 0, 0, 0, 0, 0,         /* mean -1 */
    };
    rig r;
    rig_load(&r, "avg");
    pool_build(&r, TEST_SHAPE(2, 3, 3), 2);
    assert_int_equal(r.info.state_bytes, 0);  /* the mean needs nothing kept */
    memcpy(r.x.data, x, sizeof x);
    const float dy[4] = { 9, -18, 1, 0.5f };
    memcpy(r.dy.data, dy, sizeof dy);
    rig_forward(&r);
    rig_backward(&r, true);
    const float want[4] = { 5, 1, 0.5f, -1 };
    expect_same_floats(r.y.data, want, 4, "global_pool avg y");
    for (int p = 0; p < 4; p++)
        for (int i = 0; i < 9; i++)
            if (r.dx.data[p * 9 + i] != dy[p] / 9.0f)
                fail_msg("global_pool avg dx[%d] is %.9g, expected %.9g / 9", p * 9 + i, r.dx.data[p * 9 + i], dy[p]);
    rig_backward(&r, false);
    rig_free(&r);
}

/* The mean sums as a CUDA warp does (lanes l, l + 32, ..., then folded), the order the GPU must
 * match for the same bits. 33 elements: 1e8, 31 ones, -1e8. Lane 0 adds 1e8 and -1e8 (0), the
 * others hold a 1 each: 31. Left to right in float the ones vanish into 1e8 and the sum is 0. */
static void test_global_pool_avg_order(void **unused)
{
    rig r;
    rig_load(&r, "avg");
    pool_build(&r, TEST_SHAPE(1, 33, 1), 1);
    for (int i = 0; i < 33; i++) r.x.data[i] = 1.0f;
    r.x.data[0] = 1e8f;
    r.x.data[32] = -1e8f;
    rig_forward(&r);
    assert_true(r.y.data[0] == 31.0f / 33.0f);
    rig_free(&r);
}

/* ---- Shapes ---- */

/* Odd and edge planes in both modes against the reference loops: max bit for bit (with ties and
 * NaNs), the mean against a double-precision mean within float rounding. */
static void test_global_pool_shapes(void **unused)
{
    static const struct { int64_t c, h, w, n; } shapes[] = {
        { 3, 1, 1, 2 },   /* nothing to pool */
        { 2, 1, 7, 3 },   /* one row */
        { 3, 33, 1, 2 },  /* one column, one more than a warp's lanes */
        { 2, 5, 3, 1 },
        { 4, 7, 7, 2 },
        { 2, 8, 8, 3 },   /* 64: two elements a lane */
        { 1, 31, 31, 2 },
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int64_t c = shapes[s].c, hw = shapes[s].h * shapes[s].w, n = shapes[s].n;
        rig r;
        rig_load(&r, "max");
        pool_build(&r, TEST_SHAPE(c, shapes[s].h, shapes[s].w), n);
        fill_ties(&r, s % 2 ? 3 : 0);
        rig_forward(&r);
        rig_backward(&r, true);
        float *y = floats(n * c), *dx = floats(n * c * hw);
        int32_t *arg = calloc((size_t)(n * c), sizeof *arg);
        assert_non_null(arg);
        max_reference(&r, y, arg, dx);
        expect_same_floats(r.y.data, y, n * c, "global_pool max y");
        assert_memory_equal(r.state, arg, sizeof *arg * (size_t)(n * c));
        expect_same_floats(r.dx.data, dx, n * c * hw, "global_pool max dx");
        free(y);
        free(dx);
        free(arg);
        rig_free(&r);

        rig_load(&r, "avg");
        pool_build(&r, TEST_SHAPE(c, shapes[s].h, shapes[s].w), n);
        rig_forward(&r);
        rig_backward(&r, true);
        for (int64_t p = 0; p < n * c; p++) {
            double sum = 0, size = 0;
            for (int64_t i = 0; i < hw; i++) {
                sum += r.x.data[p * hw + i];
                size += fabs(r.x.data[p * hw + i]);
            }
            if (!(fabs(r.y.data[p] - sum / (double)hw) <= 4e-6 * (size / (double)hw) + 1e-12))
                fail_msg("global_pool avg (%lld, %lld, %lld): y[%lld] is %.9g, the mean %.9g", (long long)c,
                         (long long)shapes[s].h, (long long)shapes[s].w, (long long)p, r.y.data[p], sum / (double)hw);
            for (int64_t i = 0; i < hw; i++)
                if (r.dx.data[p * hw + i] != r.dy.data[p] / (float)hw)
                    fail_msg("global_pool avg: dx[%lld] is %.9g, expected dy / %lld = %.9g", (long long)(p * hw + i),
                             r.dx.data[p * hw + i], (long long)hw, r.dy.data[p] / (float)hw);
        }
        rig_free(&r);
    }
}

/* ---- Threads ---- */

/* 16384 values a sample, 4 samples: planes split across threads, each plane one thread's. */
static void test_global_pool_threads(void **unused)
{
    for (int mode = 0; mode < 2; mode++) {
        rig r;
        rig_load(&r, mode ? "avg" : "max");
        pool_build(&r, TEST_SHAPE(64, 16, 16), 4);
        if (!mode) fill_ties(&r, 5);
        const int64_t nx = rx_numel(r.x.shape), ny = rx_numel(r.y.shape);
        const size_t ns = r.info.state_bytes * 4;
        float *y1 = floats(ny), *dx1 = floats(nx);
        void *s1 = malloc(ns + 1);
        assert_non_null(s1);
        rig_forward(&r);
        rig_backward(&r, true);
        memcpy(y1, r.y.data, sizeof(float) * (size_t)ny);
        memcpy(dx1, r.dx.data, sizeof(float) * (size_t)nx);
        if (ns) memcpy(s1, r.state, ns);
        memset(r.y.data, 0, sizeof(float) * (size_t)ny);
        memset(r.dx.data, 0, sizeof(float) * (size_t)nx);
        if (ns) memset(r.state, 0, ns);
        r.ctx.threads = 2;
        rig_forward(&r);
        rig_backward(&r, true);
        expect_same_floats(r.y.data, y1, ny, mode ? "avg y with 2 threads" : "max y with 2 threads");
        expect_same_floats(r.dx.data, dx1, nx, mode ? "avg dx with 2 threads" : "max dx with 2 threads");
        if (ns && memcmp(r.state, s1, ns) != 0) fail_msg("global_pool max: state with 2 threads differs from 1");
        free(y1);
        free(dx1);
        free(s1);
        rig_free(&r);
    }
}

/* ---- maxpool with one window over the plane is the same layer ---- */

/* On square planes global max pooling is maxpool(size = H), so both must give the same bits, the
 * same state and the same dx: the tie and NaN rules agree. Odd sizes too: maxpool's floor mode
 * must give a 1x1 output from a 3x3 plane with size 3, as torch.nn.MaxPool2d(3) does (airbench94's
 * last pooling), and 2x2 (its vectorized path) is included. */
static void test_global_pool_matches_maxpool(void **unused)
{
    static const int sizes[] = { 2, 3, 5, 7 };
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        const int s = sizes[k];
        rig g, m;
        rig_load(&g, "max");
        pool_build(&g, TEST_SHAPE(6, s, s), 3);
        fill_ties(&g, 2);

        rig_open(&m, "maxpool", 19);
        rig_arg(&m, "size")->i = s;
        pool_build(&m, TEST_SHAPE(6, s, s), 3);
        assert_int_equal(m.info.out.d[1], 1);
        assert_int_equal(m.info.out.d[2], 1);
        assert_int_equal(m.info.state_bytes, g.info.state_bytes);
        memcpy(m.x.data, g.x.data, sizeof(float) * (size_t)rx_numel(g.x.shape));
        memcpy(m.dy.data, g.dy.data, sizeof(float) * (size_t)rx_numel(g.dy.shape));

        rig_forward(&g);
        rig_backward(&g, true);
        rig_forward(&m);
        rig_backward(&m, true);
        expect_same_floats(g.y.data, m.y.data, rx_numel(g.y.shape), "global_pool y vs maxpool's");
        assert_memory_equal(g.state, m.state, g.info.state_bytes * 3);
        expect_same_floats(g.dx.data, m.dx.data, rx_numel(g.x.shape), "global_pool dx vs maxpool's");
        rig_free(&g);
        rig_free(&m);
    }
}

/* ---- Refusals ---- */

static void test_global_pool_refuses(void **unused)
{
    rig r;
    rig_load(&r, "mean");
    EXPECT_REFUSED(&r, TEST_SHAPE(4, 8, 8), "mode", "'max' or 'avg'", "got 'mean'");
    test_arg(r.desc, r.args, "mode")->s = "MAX";  /* names are exact */
    EXPECT_REFUSED(&r, TEST_SHAPE(4, 8, 8), "mode", "got 'MAX'");
    test_arg(r.desc, r.args, "mode")->s = "";
    EXPECT_REFUSED(&r, TEST_SHAPE(4, 8, 8), "mode", "got ''");
    test_arg(r.desc, r.args, "mode")->s = "avg";
    EXPECT_REFUSED(&r, TEST_SHAPE(4, 8), "(C, H, W)", "got 2 dimensions");
    EXPECT_REFUSED(&r, TEST_SHAPE(64), "(C, H, W)", "got 1 dimension");
    EXPECT_REFUSED(&r, TEST_SHAPE(4, 0, 8), "empty dimension");
    EXPECT_REFUSED(&r, TEST_SHAPE(65536, 256, 256), "more than 2^31 - 1 elements");
    rig_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_global_pool_max_by_hand),
        cmocka_unit_test(test_global_pool_avg_by_hand),
        cmocka_unit_test(test_global_pool_avg_order),
        cmocka_unit_test(test_global_pool_shapes),
        cmocka_unit_test(test_global_pool_threads),
        cmocka_unit_test(test_global_pool_matches_maxpool),
        cmocka_unit_test(test_global_pool_refuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
