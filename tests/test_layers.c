/* test_layers.c: the layer and loss plugins, driven the way the host drives them (create, lend
 * tensors, workspace and state, forward, backward).
 *
 * Gradients by finite differences, backward adding into dw, dx = NULL and CPU vs CUDA are
 * test_check.c's table, through core/check.c. Here: forward (and backward where it is worked
 * out) against hand-computed cases, naive loops and the definition, the fast paths against
 * reference loops, thread counts, and create's refusals with the messages they should carry. */
#include "helpers.h"

#include <math.h>

#define FWD_TOL   1e-5  /* forward against a reference, relative to max(1, |reference|) */

static float uniform(rx_rng *r, float lo, float hi) { return lo + (hi - lo) * rx_rng_uniform(r); }

static void rig_load(rig *r, const char *name) { rig_open(r, name, 7); }

static void expect_close(const float *got, const float *want, int64_t n, const char *what)
{
    for (int64_t i = 0; i < n; i++)
        if (!(fabsf(got[i] - want[i]) <= FWD_TOL * fmaxf(1.0f, fabsf(want[i]))))
            fail_msg("%s[%lld] is %.7g, expected %.7g", what, (long long)i, got[i], want[i]);
}

static void expect_shape(rx_shape got, rx_shape want)
{
    assert_int_equal(got.ndim, want.ndim);
    for (int i = 0; i < want.ndim; i++) assert_int_equal(got.d[i], want.d[i]);
}

/* ---- conv2d ---- */

typedef struct conv_case {
    int n, c, h, w, out, k, stride, pad;
    bool bias;
    const char *precision; /* NULL: the default, "fp32" */
    int pool;              /* 0, or 2: conv2d's own 2x2 max-pool */
} conv_case;

static void conv_setup(rig *r, conv_case cc)
{
    rig_load(r, "conv2d");
    rig_arg(r, "out")->i = cc.out;
    rig_arg(r, "kernel")->i = cc.k;
    rig_arg(r, "stride")->i = cc.stride;
    rig_arg(r, "padding")->i = cc.pad;
    rig_arg(r, "bias")->b = cc.bias;
    if (cc.precision) rig_arg(r, "precision")->s = cc.precision;
    rig_arg(r, "pool")->i = cc.pool;
    rig_build(r, TEST_SHAPE(cc.c, cc.h, cc.w), cc.n);
}

/* Direct seven-loop convolution of r->x, into y (N, OUT, OH, OW). */
static void conv_reference(const rig *r, conv_case cc, float *y)
{
    const int oh = (int)r->info.out.d[1], ow = (int)r->info.out.d[2];
    const float *wt = r->w[0].data;  /* (OUT, C, K, K) */
    for (int n = 0; n < cc.n; n++)
        for (int o = 0; o < cc.out; o++)
            for (int i = 0; i < oh; i++)
                for (int j = 0; j < ow; j++) {
                    double sum = cc.bias ? r->w[1].data[o] : 0.0;
                    for (int c = 0; c < cc.c; c++)
                        for (int ki = 0; ki < cc.k; ki++)
                            for (int kj = 0; kj < cc.k; kj++) {
                                const int ih = i * cc.stride - cc.pad + ki, iw = j * cc.stride - cc.pad + kj;
                                if (ih < 0 || ih >= cc.h || iw < 0 || iw >= cc.w) continue;
                                sum += (double)wt[((o * cc.c + c) * cc.k + ki) * cc.k + kj] *
                                       r->x.data[((n * cc.c + c) * cc.h + ih) * cc.w + iw];
                            }
                    y[((n * cc.out + o) * oh + i) * ow + j] = (float)sum;
                }
}

static const conv_case conv_cases[] = {
    { .n = 2, .c = 2, .h = 5, .w = 6, .out = 3, .k = 3, .stride = 1, .pad = 0, .bias = true },
    { .n = 2, .c = 3, .h = 6, .w = 5, .out = 2, .k = 3, .stride = 2, .pad = 1, .bias = true },
    { .n = 3, .c = 2, .h = 4, .w = 4, .out = 2, .k = 1, .stride = 1, .pad = 0, .bias = false },
    { .n = 1, .c = 1, .h = 4, .w = 7, .out = 2, .k = 2, .stride = 3, .pad = 2, .bias = true },
    { .n = 2, .c = 2, .h = 3, .w = 3, .out = 2, .k = 4, .stride = 1, .pad = 1, .bias = false },
    /* the widths im2col and col2im copy as constants (8, 16, 32), and a wide kernel */
    { .n = 2, .c = 2, .h = 8, .w = 8, .out = 3, .k = 3, .stride = 1, .pad = 1, .bias = true },
    { .n = 1, .c = 2, .h = 16, .w = 16, .out = 2, .k = 3, .stride = 1, .pad = 1, .bias = true },
    { .n = 1, .c = 1, .h = 32, .w = 32, .out = 2, .k = 3, .stride = 1, .pad = 1, .bias = false },
    { .n = 2, .c = 1, .h = 8, .w = 8, .out = 2, .k = 5, .stride = 1, .pad = 2, .bias = true },
    /* direct forward (stride 1, rows of 16 outputs or more, C*K*K up to 64): a block of 16 channels
     * and a partial one, rows of 31 (the last block of 16 overlaps the one before), a 5x5 kernel
     * over rows of 20 */
    { .n = 2, .c = 3, .h = 32, .w = 32, .out = 20, .k = 3, .stride = 1, .pad = 1, .bias = true },
    { .n = 1, .c = 3, .h = 32, .w = 32, .out = 24, .k = 2, .stride = 1, .pad = 0, .bias = true },
    { .n = 1, .c = 2, .h = 17, .w = 20, .out = 5, .k = 5, .stride = 1, .pad = 2, .bias = false },
    /* Winograd (3x3, stride 1, padding up to 2, 8 or more channels in and out): odd outputs
     * (partial tiles), the row widths it passes as constants (4 and 8 tiles), a wider one, and
     * padding 0 and 2 */
    { .n = 2, .c = 8, .h = 5, .w = 6, .out = 8, .k = 3, .stride = 1, .pad = 0, .bias = true },
    { .n = 2, .c = 8, .h = 8, .w = 8, .out = 9, .k = 3, .stride = 1, .pad = 1, .bias = true },
    { .n = 1, .c = 9, .h = 16, .w = 16, .out = 8, .k = 3, .stride = 1, .pad = 1, .bias = false },
    { .n = 1, .c = 8, .h = 20, .w = 22, .out = 8, .k = 3, .stride = 1, .pad = 1, .bias = true },
    { .n = 2, .c = 8, .h = 7, .w = 5, .out = 8, .k = 3, .stride = 1, .pad = 2, .bias = true },
};

static void test_conv2d_declares(void **unused)
{
    rig r;
    conv_setup(&r, (conv_case){ .n = 1, .c = 3, .h = 8, .w = 6, .out = 4, .k = 3, .stride = 2, .pad = 1,
                                .bias = true });
    expect_shape(r.info.out, TEST_SHAPE(4, 4, 3));
    assert_int_equal(r.info.ntensors, 2);
    assert_string_equal(r.info.tensors[0].name, "weight");
    expect_shape(r.info.tensors[0].shape, TEST_SHAPE(4, 3, 3, 3));
    assert_string_equal(r.info.tensors[1].name, "bias");
    expect_shape(r.info.tensors[1].shape, TEST_SHAPE(4));
    for (int i = 0; i < 2; i++) {
        assert_int_equal(r.info.tensors[i].init, RX_INIT_UNIFORM);
        assert_true(fabsf(r.info.tensors[i].scale - 1.0f / sqrtf(27.0f)) < 1e-7f);
    }
    assert_true(r.info.workspace_thread_bytes > 0);  /* a thread's slot; per sample only for the CUDA path */
    rig_free(&r);

    conv_setup(&r, (conv_case){ .n = 1, .c = 1, .h = 4, .w = 4, .out = 2, .k = 2, .stride = 1,
                                .bias = false });
    assert_int_equal(r.info.ntensors, 1);
    rig_free(&r);
}

/* x = 1..9 in a 3x3 image; filter 0 = [[1, 2], [3, 4]] + 0.5, filter 1 = [[-1, 0], [0, 0]] - 1. */
static void test_conv2d_by_hand(void **unused)
{
    static const struct {
        int stride, pad, oh, ow;
        float y[2][16];  /* (2, OH, OW) */
    } cases[] = {
        { 1, 0, 2, 2, { { 37, 47, 67, 77 }, { -1, -2, -4, -5 } } },
        { 2, 0, 1, 1, { { 37 }, { -1 } } },
        { 1, 1, 4, 4, { { 4, 11, 18, 9, 18, 37, 47, 21, 36, 67, 77, 33, 14, 23, 26, 9 },
                        { 0, 0, 0, 0, 0, -1, -2, -3, 0, -4, -5, -6, 0, -7, -8, -9 } } },
        { 2, 1, 2, 2, { { 4, 18, 36, 77 }, { 0, 0, 0, -5 } } },
    };
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        rig r;
        conv_setup(&r, (conv_case){ .n = 1, .c = 1, .h = 3, .w = 3, .out = 2, .k = 2,
                                    .stride = cases[t].stride, .pad = cases[t].pad, .bias = true });
        expect_shape(r.info.out, TEST_SHAPE(2, cases[t].oh, cases[t].ow));
        static const float weight[8] = { 1, 2, 3, 4, -1, 0, 0, 0 };  /* (2, 1, 2, 2) */
        memcpy(r.w[0].data, weight, sizeof weight);
        r.w[1].data[0] = 0.5f;
        r.w[1].data[1] = -1.0f;
        for (int i = 0; i < 9; i++) r.x.data[i] = (float)(i + 1);
        rig_forward(&r);
        const int pixels = cases[t].oh * cases[t].ow;
        float want[32];
        for (int p = 0; p < pixels; p++) {
            want[p] = cases[t].y[0][p] + 0.5f;
            want[pixels + p] = cases[t].y[1][p] - 1.0f;
        }
        expect_close(r.y.data, want, 2 * pixels, "conv2d y");
        rig_free(&r);
    }
}

static void test_conv2d_matches_loops(void **unused)
{
    for (size_t t = 0; t < sizeof conv_cases / sizeof conv_cases[0]; t++) {
        rig r;
        conv_setup(&r, conv_cases[t]);
        rig_forward(&r);
        float *want = floats(rx_numel(r.y.shape));
        conv_reference(&r, conv_cases[t], want);
        expect_close(r.y.data, want, rx_numel(r.y.shape), "conv2d y");
        free(want);
        rig_free(&r);
    }
}

/* conv2d splits the batch across threads. y and dx are computed sample by sample, so they must
 * not change by a bit with the thread count; dW and db are summed per thread and then in thread
 * order, so they may differ in the last bits from one thread count to another, but never from
 * one run to the next at the same count. More threads than samples must work too. */
/* With 2 and 3 threads, from the rig's x, w and dy: y and dx the same bits as `one` (a 1-thread
 * pass's rig_outputs), with dw_close dW and db within FWD_TOL of it (summed per thread), and every
 * output the same bits on a second run. (bf16's dW, a sum of products of rounded operands, moves
 * by more with the thread count's order of sums: its test bounds it against the definition.) */
static void expect_conv2d_threads(rig *r, const float *one, bool dw_close, const char *what)
{
    int64_t n;
    const int64_t ny = rx_numel(r->y.shape), ndx = rx_numel(r->dx.shape);
    char label[64];
    for (int threads = 2; threads <= 3; threads++) {
        rig_pass(r, threads);
        float *first = rig_outputs(r, &n);
        snprintf(label, sizeof label, "%s y", what);
        expect_same_bits_at(first, one, ny, label, threads);
        snprintf(label, sizeof label, "%s dx", what);
        expect_same_bits_at(first + ny, one + ny, ndx, label, threads);
        snprintf(label, sizeof label, "%s dw with threads", what);
        if (dw_close) expect_close(first + ny + ndx, one + ny + ndx, n - ny - ndx, label);
        rig_pass(r, threads);
        float *again = rig_outputs(r, &n);
        snprintf(label, sizeof label, "%s outputs, second run", what);
        expect_same_bits_at(again, first, n, label, threads);
        free(first);
        free(again);
    }
}

static void test_conv2d_threads(void **unused)
{
    static const conv_case cases[] = {
        { .n = 5, .c = 3, .h = 8, .w = 8, .out = 4, .k = 3, .stride = 1, .pad = 1, .bias = true },
        { .n = 1, .c = 2, .h = 6, .w = 6, .out = 3, .k = 3, .stride = 2, .pad = 1, .bias = true },
        { .n = 4, .c = 4, .h = 5, .w = 5, .out = 2, .k = 1, .stride = 1, .pad = 0, .bias = false },
        { .n = 5, .c = 8, .h = 7, .w = 8, .out = 8, .k = 3, .stride = 1, .pad = 1, .bias = true },  /* Winograd */
        { .n = 18, .c = 8, .h = 8, .w = 8, .out = 8, .k = 3, .stride = 1, .pad = 1, .bias = true }, /* groups 16, 2 */
    };
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        rig r;
        conv_setup(&r, cases[t]);
        tensor_uniform(&r.rng, &r.dy, -1.0f, 1.0f);
        rig_pass(&r, 1);
        int64_t n;
        float *one = rig_outputs(&r, &n);
        expect_conv2d_threads(&r, one, true, "conv2d");
        free(one);
        rig_free(&r);
    }
}

/* The largest |v[i]|: the scale rounding differences are measured against. */
static float max_abs(const float *v, int64_t n)
{
    float m = 0.0f;
    for (int64_t i = 0; i < n; i++) m = fmaxf(m, fabsf(v[i]));
    return m;
}

/* dx, dW and db of r's x, w and dy by the definition, in double: every (output, tap) pair. */
static void conv_reference_backward(const rig *r, conv_case cc, double *dx, double *dweight, double *dbias)
{
    const int oh = (int)r->info.out.d[1], ow = (int)r->info.out.d[2];
    const float *wt = r->w[0].data;  /* (OUT, C, K, K) */
    memset(dx, 0, sizeof(double) * (size_t)rx_numel(r->x.shape));
    memset(dweight, 0, sizeof(double) * (size_t)rx_numel(r->w[0].shape));
    memset(dbias, 0, sizeof(double) * (size_t)cc.out);
    for (int n = 0; n < cc.n; n++)
        for (int o = 0; o < cc.out; o++)
            for (int i = 0; i < oh; i++)
                for (int j = 0; j < ow; j++) {
                    const double g = r->dy.data[((n * cc.out + o) * oh + i) * ow + j];
                    dbias[o] += g;
                    for (int c = 0; c < cc.c; c++)
                        for (int ki = 0; ki < cc.k; ki++)
                            for (int kj = 0; kj < cc.k; kj++) {
                                const int ih = i * cc.stride - cc.pad + ki, iw = j * cc.stride - cc.pad + kj;
                                if (ih < 0 || ih >= cc.h || iw < 0 || iw >= cc.w) continue;
                                const int at = ((n * cc.c + c) * cc.h + ih) * cc.w + iw;
                                const int tap = ((o * cc.c + c) * cc.k + ki) * cc.k + kj;
                                dweight[tap] += g * r->x.data[at];
                                dx[at] += g * wt[tap];
                            }
                }
}

static void expect_near_reference(const float *got, const double *want, int64_t n, const char *what)
{
    float scale = 0.0f;
    for (int64_t i = 0; i < n; i++) scale = fmaxf(scale, (float)fabs(want[i]));
    const double tol = 1e-5 * scale;
    for (int64_t i = 0; i < n; i++)
        if (!(fabs(got[i] - want[i]) <= tol))
            fail_msg("conv2d %s[%lld] is %.9g, the definition gives %.9g (tolerance %.3g)", what, (long long)i,
                     got[i], want[i], tol);
}

/* Backward against the definition, to 1e-5 of the largest value in each tensor (the gradient
 * checks above allow 1e-2): the tutorial's second layer (Winograd), an odd-sized Winograd layer,
 * and the tutorial's first (im2col), with two threads. Then Winograd's groups of samples, whose
 * tiles it interleaves (winograd.c): by 4 samples at once when a group holds a multiple of 4, by
 * 4 tiles when it holds one sample, float by float otherwise; each case with a short last group,
 * partial tiles or the border widths of padding 0 and 2. */
static void test_conv2d_backward_matches_definition(void **unused)
{
    static const conv_case cases[] = {
        { .n = 3, .c = 16, .h = 16, .w = 16, .out = 32, .k = 3, .stride = 1, .pad = 1, .bias = true },
        { .n = 2, .c = 8, .h = 9, .w = 7, .out = 12, .k = 3, .stride = 1, .pad = 0, .bias = true },
        { .n = 9, .c = 8, .h = 16, .w = 16, .out = 8, .k = 3, .stride = 1, .pad = 1, .bias = true },   /* 4, 4, 1 */
        { .n = 18, .c = 8, .h = 8, .w = 8, .out = 12, .k = 3, .stride = 1, .pad = 1, .bias = true },   /* 16, 2 */
        { .n = 8, .c = 8, .h = 3, .w = 3, .out = 8, .k = 3, .stride = 1, .pad = 1, .bias = false },    /* 8 */
        { .n = 12, .c = 8, .h = 6, .w = 6, .out = 9, .k = 3, .stride = 1, .pad = 0, .bias = true },    /* 12 */
        { .n = 6, .c = 9, .h = 7, .w = 5, .out = 8, .k = 3, .stride = 1, .pad = 2, .bias = true },     /* 6 */
        { .n = 3, .c = 8, .h = 31, .w = 31, .out = 8, .k = 3, .stride = 1, .pad = 1, .bias = true },   /* 1, 1, 1 */
        { .n = 3, .c = 3, .h = 32, .w = 32, .out = 16, .k = 3, .stride = 1, .pad = 1, .bias = true },
        /* direct forward, im2col backward: a partial block of channels over rows of 31 (the last
         * block of 16 overlaps the one before), a 5x5 kernel over rows of 20 */
        { .n = 2, .c = 3, .h = 32, .w = 32, .out = 6, .k = 2, .stride = 1, .pad = 0, .bias = true },
        { .n = 2, .c = 2, .h = 17, .w = 20, .out = 5, .k = 5, .stride = 1, .pad = 2, .bias = false },
    };
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        rig r;
        conv_setup(&r, cases[t]);
        tensor_uniform(&r.rng, &r.dy, -1.0f, 1.0f);
        rig_pass(&r, 2);
        const int64_t nx = rx_numel(r.x.shape), nw = rx_numel(r.w[0].shape);
        double *dx = malloc(sizeof(double) * (size_t)nx), *dweight = malloc(sizeof(double) * (size_t)nw);
        double *dbias = malloc(sizeof(double) * (size_t)cases[t].out);
        assert_non_null(dx);
        assert_non_null(dweight);
        assert_non_null(dbias);
        conv_reference_backward(&r, cases[t], dx, dweight, dbias);
        expect_near_reference(r.dx.data, dx, nx, "dx");
        expect_near_reference(r.dw[0].data, dweight, nw, "dweight");
        if (cases[t].bias) expect_near_reference(r.dw[1].data, dbias, cases[t].out, "dbias");
        /* and the forward, on the same scale */
        float *y = floats(rx_numel(r.y.shape));
        conv_reference(&r, cases[t], y);
        const float tol = 1e-5f * max_abs(y, rx_numel(r.y.shape));
        for (int64_t i = 0; i < rx_numel(r.y.shape); i++)
            if (!(fabsf(r.y.data[i] - y[i]) <= tol))
                fail_msg("conv2d y[%lld] is %.9g, the definition gives %.9g", (long long)i, r.y.data[i], y[i]);
        free(y);
        free(dx);
        free(dweight);
        free(dbias);
        rig_free(&r);
    }
}

/* precision = "bf16" rounds the Winograd products' operands to bfloat16 (8 bits of mantissa) and
 * sums in float32. The output transform's coefficients (up to 8) amplify that rounding, to a
 * root-mean-square error of about 2% of the definition's values (measured: 1.6-2.7%) and a worst
 * of about 6% of the largest (float32 meets 1e-5 above). So: against the definition in double,
 * every output and gradient within 10% of the tensor's largest value, their root-mean-square
 * error within 4%, and visibly not float32's results (the rounding really happens). Shapes: odd
 * channels (an odd K in the products), partial tiles, paddings 0 and 2, product widths that are
 * not whole panels of 16, the recipe's 7x7 layer. y and dx the same bits with 1, 2 and 3
 * threads; every output the same bits run after run. */
static bool cpu_has_bf16(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512bf16");
}

static void expect_within(const float *got, const double *want, int64_t n, double share, const char *what)
{
    double scale = 0.0, err2 = 0.0, want2 = 0.0;
    for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs(want[i]));
    for (int64_t i = 0; i < n; i++) {
        if (!(fabs(got[i] - want[i]) <= share * scale))
            fail_msg("conv2d bf16 %s[%lld] is %.7g, the definition gives %.7g (tolerance %.3g)", what, (long long)i,
                     got[i], want[i], share * scale);
        err2 += (got[i] - want[i]) * (got[i] - want[i]);
        want2 += want[i] * want[i];
    }
    if (!(err2 <= 0.04 * 0.04 * want2))
        fail_msg("conv2d bf16 %s: root-mean-square error %.3g of the definition's, above 0.04", what,
                 sqrt(err2 / want2));
}

static void test_conv2d_bf16_near_definition(void **unused)
{
    if (!cpu_has_bf16()) skip();  /* test_conv2d_bf16_refuses checks the refusal there */
    static const conv_case cases[] = {
        { .n = 3, .c = 9, .h = 9, .w = 7, .out = 12, .k = 3, .stride = 1, .pad = 0, .bias = true, .precision = "bf16" },
        { .n = 5, .c = 16, .h = 16, .w = 16, .out = 33, .k = 3, .stride = 1, .pad = 1, .bias = true, .precision = "bf16" },
        { .n = 2, .c = 8, .h = 7, .w = 5, .out = 8, .k = 3, .stride = 1, .pad = 2, .bias = false, .precision = "bf16" },
        { .n = 17, .c = 24, .h = 7, .w = 7, .out = 40, .k = 3, .stride = 1, .pad = 1, .bias = false, .precision = "bf16" },
    };
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        const conv_case cc = cases[t];
        rig r;
        conv_setup(&r, cc);
        tensor_uniform(&r.rng, &r.dy, -1.0f, 1.0f);
        rig_pass(&r, 1);
        int64_t n;
        float *one = rig_outputs(&r, &n);
        const int64_t ny = rx_numel(r.y.shape), nx = rx_numel(r.x.shape), nw = rx_numel(r.w[0].shape);
        double *y = malloc(sizeof(double) * (size_t)ny), *dx = malloc(sizeof(double) * (size_t)nx);
        double *dweight = malloc(sizeof(double) * (size_t)nw), *dbias = malloc(sizeof(double) * (size_t)cc.out);
        float *yf = floats(ny);
        assert_true(y && dx && dweight && dbias);
        conv_reference(&r, cc, yf);  /* double sums, stored in float */
        for (int64_t i = 0; i < ny; i++) y[i] = yf[i];
        conv_reference_backward(&r, cc, dx, dweight, dbias);
        expect_within(r.y.data, y, ny, 0.1, "y");
        expect_within(r.dx.data, dx, nx, 0.1, "dx");
        expect_within(r.dw[0].data, dweight, nw, 0.1, "dweight");
        if (cc.bias) expect_within(r.dw[1].data, dbias, cc.out, 1e-5, "dbias");  /* summed in float32 */
        double off = 0.0, scale = 0.0;  /* bf16 moves y well beyond float32's 1e-5 */
        for (int64_t i = 0; i < ny; i++) {
            off = fmax(off, fabs(r.y.data[i] - y[i]));
            scale = fmax(scale, fabs(y[i]));
        }
        if (!(off > 1e-4 * scale))
            fail_msg("conv2d bf16 y is within %.3g of the definition: not rounded to bf16?", off);
        expect_conv2d_threads(&r, one, false, "conv2d bf16");
        free(one);
        free(y);
        free(yf);
        free(dx);
        free(dweight);
        free(dbias);
        rig_free(&r);
    }
}

/* What precision = "bf16" cannot run on is refused with why, never computed in float32. */
static void test_conv2d_bf16_refuses(void **unused)
{
    rig r;
    rig_load(&r, "conv2d");
    rig_arg(&r, "out")->i = 8;
    rig_arg(&r, "kernel")->i = 3;
    rig_arg(&r, "padding")->i = 1;
    rig_arg(&r, "precision")->s = "fp16";
    EXPECT_REFUSED(&r, TEST_SHAPE(8, 8, 8), "precision must be \"fp32\" or \"bf16\", got \"fp16\"");
    rig_arg(&r, "precision")->s = "bf16";
    if (cpu_has_bf16()) {
        EXPECT_REFUSED(&r, TEST_SHAPE(3, 8, 8), "precision = \"bf16\" is for 3x3 kernels", "3 -> 8 channels",
                       "leave precision out");
        rig_arg(&r, "kernel")->i = 5;
        EXPECT_REFUSED(&r, TEST_SHAPE(8, 8, 8), "precision = \"bf16\" is for 3x3 kernels", "kernel 5");
    } else {
        EXPECT_REFUSED(&r, TEST_SHAPE(8, 8, 8), "precision = \"bf16\" needs a CPU with AVX-512 BF16");
    }
    rig_free(&r);
}

static void test_conv2d_refuses(void **unused)
{
    rig r;
    rig_load(&r, "conv2d");
    rig_arg(&r, "out")->i = 2;
    rig_arg(&r, "kernel")->i = 5;
    EXPECT_REFUSED(&r, TEST_SHAPE(1, 3, 3), "kernel 5 is larger than the padded input 3x3");
    rig_arg(&r, "padding")->i = 1;  /* 5x5 once padded: fits exactly */
    rig_build(&r, TEST_SHAPE(1, 3, 3), 1);
    expect_shape(r.info.out, TEST_SHAPE(2, 1, 1));
    rig_free(&r);

    rig_load(&r, "conv2d");
    rig_arg(&r, "out")->i = 2;
    rig_arg(&r, "kernel")->i = 3;
    EXPECT_REFUSED(&r, TEST_SHAPE(12), "(C, H, W)", "got 1 dimension");
    EXPECT_REFUSED(&r, TEST_SHAPE(1, 2, 8), "kernel 3 is larger than the padded input 2x8");
    rig_arg(&r, "stride")->i = 0;
    EXPECT_REFUSED(&r, TEST_SHAPE(1, 8, 8), "stride", "got 0");
    rig_arg(&r, "stride")->i = 1;
    rig_arg(&r, "padding")->i = -1;
    EXPECT_REFUSED(&r, TEST_SHAPE(1, 8, 8), "padding", "got -1");
    rig_arg(&r, "padding")->i = 0;
    rig_arg(&r, "out")->i = 0;  /* what a forgotten required argument would look like */
    EXPECT_REFUSED(&r, TEST_SHAPE(1, 8, 8), "out", "got 0");
    rig_free(&r);
}

/* conv2d with pool = 2 must give the bits of conv2d followed by maxpool size = 2, forward and
 * backward: y, the winners (ties to the first, a NaN wins), dx and dW; db within FWD_TOL (the
 * fused layer sums the pooled gradient, the pair the spread-out one, in other orders). Every
 * path: Winograd with one sample a group (planes of 31) and with several (a short last group),
 * even and odd sizes, padding 0; im2col's direct forward, stride 2 and 1x1; bf16 where the CPU has
 * it; and the same bits with 1, 2 and 3 threads. */
typedef struct pool_case {
    conv_case cc;
    bool ties;  /* every output equal (weights 0, one bias): the first tap of each window wins */
    bool nan;   /* a NaN in x */
} pool_case;

static void expect_same_as_pair(const float *got, const float *want, int64_t n, const char *what)
{
    for (int64_t i = 0; i < n; i++)
        if (memcmp(&got[i], &want[i], sizeof(float)) != 0)
            fail_msg("conv2d pool=2 %s[%lld] is %.9g, conv2d then maxpool give %.9g", what, (long long)i, got[i],
                     want[i]);
}

static void expect_pool_matches(const pool_case *pc)
{
    const conv_case cc = pc->cc;
    rig conv, pool, fused;
    conv_setup(&conv, cc);
    conv_case with_pool = cc;
    with_pool.pool = 2;
    conv_setup(&fused, with_pool);
    rig_load(&pool, "maxpool");
    rig_build(&pool, conv.info.out, cc.n);
    expect_shape(fused.info.out, pool.info.out);
    assert_int_equal(fused.info.state_bytes, rx_numel(fused.info.out));  /* a byte per output */

    if (pc->ties) {
        memset(conv.w[0].data, 0, sizeof(float) * (size_t)rx_numel(conv.w[0].shape));
        for (int o = 0; cc.bias && o < cc.out; o++) conv.w[1].data[o] = 0.25f;
    }
    if (pc->nan) conv.x.data[rx_numel(conv.x.shape) / 3] = NAN;
    memcpy(fused.x.data, conv.x.data, sizeof(float) * (size_t)rx_numel(conv.x.shape));
    for (int i = 0; i < conv.info.ntensors; i++)
        memcpy(fused.w[i].data, conv.w[i].data, sizeof(float) * (size_t)rx_numel(conv.w[i].shape));
    tensor_uniform(&fused.rng, &fused.dy, -1.0f, 1.0f);
    memcpy(pool.dy.data, fused.dy.data, sizeof(float) * (size_t)rx_numel(fused.dy.shape));

    rig_forward(&conv);
    memcpy(pool.x.data, conv.y.data, sizeof(float) * (size_t)rx_numel(conv.y.shape));
    rig_forward(&pool);
    rig_backward(&pool, true);
    memcpy(conv.dy.data, pool.dx.data, sizeof(float) * (size_t)rx_numel(pool.dx.shape));
    rig_backward(&conv, true);

    rig_pass(&fused, 1);
    const int64_t ny = rx_numel(fused.y.shape);
    expect_same_as_pair(fused.y.data, pool.y.data, ny, "y");
    const int32_t *arg = pool.state;  /* maxpool's winner: an index into the sample */
    const uint8_t *at = fused.state;
    const int yh = (int)pool.info.out.d[1], yw = (int)pool.info.out.d[2], ow = (int)conv.info.out.d[2];
    const int64_t per = rx_numel(pool.info.out), in_plane = conv.info.out.d[1] * ow;
    for (int64_t i = 0; i < ny; i++) {
        const int64_t q = i % per, c = q / (yh * yw), r = q / yw % yh, col = q % yw;
        const int32_t corner = (int32_t)(c * in_plane + 2 * r * ow + 2 * col);
        const int32_t want = arg[i] - corner;  /* 0, 1, ow, ow + 1 */
        if (at[i] != (want >= ow ? 2 : 0) + want % ow)
            fail_msg("conv2d pool=2 winner %lld is %d, maxpool's %d (0 .. 3)", (long long)i, at[i],
                     (want >= ow ? 2 : 0) + want % ow);
        if (pc->ties && at[i] != 0) fail_msg("conv2d pool=2: a tie went to place %d, not the first", at[i]);
    }
    expect_same_as_pair(fused.dx.data, conv.dx.data, rx_numel(conv.dx.shape), "dx");
    expect_same_as_pair(fused.dw[0].data, conv.dw[0].data, rx_numel(conv.dw[0].shape), "dW");
    if (cc.bias) expect_close(fused.dw[1].data, conv.dw[1].data, cc.out, "conv2d pool=2 db");

    int64_t n;
    float *one = rig_outputs(&fused, &n);
    expect_conv2d_threads(&fused, one, !cc.precision && !pc->nan, "conv2d pool=2");
    free(one);
    rig_free(&conv);
    rig_free(&pool);
    rig_free(&fused);
}

static void test_conv2d_pool_matches_maxpool(void **unused)
{
    static const pool_case cases[] = {
        { .cc = { .n = 2, .c = 8, .h = 31, .w = 31, .out = 8, .k = 3, .stride = 1, .pad = 1, .bias = false } },
        { .cc = { .n = 5, .c = 8, .h = 15, .w = 15, .out = 9, .k = 3, .stride = 1, .pad = 1, .bias = true } },
        { .cc = { .n = 18, .c = 8, .h = 8, .w = 8, .out = 8, .k = 3, .stride = 1, .pad = 1, .bias = false } },
        { .cc = { .n = 3, .c = 9, .h = 7, .w = 9, .out = 8, .k = 3, .stride = 1, .pad = 0, .bias = true } },
        { .cc = { .n = 3, .c = 8, .h = 7, .w = 7, .out = 8, .k = 3, .stride = 1, .pad = 1, .bias = true }, .ties = true },
        { .cc = { .n = 2, .c = 8, .h = 15, .w = 15, .out = 8, .k = 3, .stride = 1, .pad = 1, .bias = false }, .nan = true },
        { .cc = { .n = 2, .c = 3, .h = 32, .w = 32, .out = 20, .k = 3, .stride = 1, .pad = 1, .bias = true } },
        { .cc = { .n = 2, .c = 3, .h = 31, .w = 31, .out = 4, .k = 3, .stride = 1, .pad = 1, .bias = true }, .nan = true },
        { .cc = { .n = 2, .c = 2, .h = 9, .w = 8, .out = 3, .k = 3, .stride = 2, .pad = 1, .bias = true }, .ties = true },
        { .cc = { .n = 3, .c = 4, .h = 5, .w = 6, .out = 2, .k = 1, .stride = 1, .pad = 0, .bias = false } },
    };
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) expect_pool_matches(&cases[t]);
    if (!cpu_has_bf16()) return;
    const pool_case bf16[] = {
        { .cc = { .n = 2, .c = 8, .h = 31, .w = 31, .out = 8, .k = 3, .stride = 1, .pad = 1, .precision = "bf16" } },
        { .cc = { .n = 5, .c = 16, .h = 15, .w = 15, .out = 12, .k = 3, .stride = 1, .pad = 1, .precision = "bf16" } },
    };
    for (size_t t = 0; t < sizeof bf16 / sizeof bf16[0]; t++) expect_pool_matches(&bf16[t]);
}

static void test_conv2d_pool_refuses(void **unused)
{
    rig r;
    rig_load(&r, "conv2d");
    rig_arg(&r, "out")->i = 8;
    rig_arg(&r, "kernel")->i = 3;
    rig_arg(&r, "pool")->i = 3;
    EXPECT_REFUSED(&r, TEST_SHAPE(8, 8, 8), "pool must be 0 (none) or 2", "got 3");
    rig_arg(&r, "pool")->i = -2;
    EXPECT_REFUSED(&r, TEST_SHAPE(8, 8, 8), "pool must be 0 (none) or 2", "got -2");
    rig_arg(&r, "pool")->i = 2;
    EXPECT_REFUSED(&r, TEST_SHAPE(8, 3, 9), "pool = 2 needs an output of at least 2x2", "got 1x7");
    rig_free(&r);
}

/* ---- linear ---- */

static void linear_setup(rig *r, int64_t n, rx_shape in, int out, bool bias)
{
    rig_load(r, "linear");
    rig_arg(r, "out")->i = out;
    rig_arg(r, "bias")->b = bias;
    rig_build(r, in, n);
}

static void test_linear_declares_and_computes(void **unused)
{
    rig r;
    linear_setup(&r, 3, TEST_SHAPE(2, 3, 2), 4, true);  /* F = 12 */
    expect_shape(r.info.out, TEST_SHAPE(4));
    assert_int_equal(r.info.ntensors, 2);
    assert_string_equal(r.info.tensors[0].name, "weight");
    expect_shape(r.info.tensors[0].shape, TEST_SHAPE(4, 12));
    assert_string_equal(r.info.tensors[1].name, "bias");
    expect_shape(r.info.tensors[1].shape, TEST_SHAPE(4));
    for (int i = 0; i < 2; i++) {
        assert_int_equal(r.info.tensors[i].init, RX_INIT_UNIFORM);
        assert_true(fabsf(r.info.tensors[i].scale - 1.0f / sqrtf(12.0f)) < 1e-7f);
    }
    rig_forward(&r);
    float want[3 * 4];  /* (N, OUT) */
    for (int n = 0; n < 3; n++)
        for (int o = 0; o < 4; o++) {
            double sum = r.w[1].data[o];
            for (int f = 0; f < 12; f++) sum += (double)r.w[0].data[o * 12 + f] * r.x.data[n * 12 + f];
            want[n * 4 + o] = (float)sum;
        }
    expect_close(r.y.data, want, 12, "linear y");
    rig_free(&r);

    linear_setup(&r, 1, TEST_SHAPE(5), 2, false);
    assert_int_equal(r.info.ntensors, 1);
    rig_free(&r);
}

/* Large enough (8 x 130 x 1024 multiply-adds) for linear to split its products across threads,
 * with 130 outputs so that the blocks, cut on multiples of 16, come out uneven. Each block is its
 * own SGEMM, so thread counts may differ in the last bits, but never one run from the next. */
static void test_linear_threads(void **unused)
{
    rig r;
    linear_setup(&r, 8, TEST_SHAPE(16, 8, 8), 130, true);
    tensor_uniform(&r.rng, &r.dy, -1.0f, 1.0f);
    rig_pass(&r, 1);
    int64_t n;
    float *one = rig_outputs(&r, &n);
    float want[8 * 130];  /* (N, OUT) */
    for (int i = 0; i < 8; i++)
        for (int o = 0; o < 130; o++) {
            double sum = r.w[1].data[o];
            for (int f = 0; f < 1024; f++) sum += (double)r.w[0].data[o * 1024 + f] * r.x.data[i * 1024 + f];
            want[i * 130 + o] = (float)sum;
        }
    for (int threads = 2; threads <= 3; threads++) {
        rig_pass(&r, threads);
        expect_close(r.y.data, want, 8 * 130, "linear y with threads");
        float *first = rig_outputs(&r, &n);
        expect_close(first, one, n, "linear outputs with threads");
        rig_pass(&r, threads);
        float *again = rig_outputs(&r, &n);
        expect_same_bits_at(again, first, n, "linear outputs, second run", threads);
        free(first);
        free(again);
    }
    free(one);
    rig_free(&r);
}

static void test_linear_refuses(void **unused)
{
    rig r;
    rig_load(&r, "linear");
    EXPECT_REFUSED(&r, TEST_SHAPE(10), "out", "got 0");
    rig_free(&r);
}

/* ---- relu ---- */

static void test_relu(void **unused)
{
    rig r;
    rig_load(&r, "relu");
    rig_build(&r, TEST_SHAPE(3, 4, 5), 2);
    expect_shape(r.info.out, TEST_SHAPE(3, 4, 5));
    assert_int_equal(r.info.ntensors, 0);
    rig_forward(&r);
    for (int64_t i = 0; i < rx_numel(r.x.shape); i++)
        assert_true(r.y.data[i] == (r.x.data[i] > 0 ? r.x.data[i] : 0.0f));
    rig_free(&r);
}

/* Elementwise layers split long tensors across threads; the values cannot change. */
static void test_relu_threads(void **unused)
{
    rig r;
    rig_load(&r, "relu");
    rig_build(&r, TEST_SHAPE(8, 32, 32), 6);  /* 49152 values: enough to be split */
    tensor_uniform(&r.rng, &r.dy, -1.0f, 1.0f);
    expect_threads_agree(&r, "relu outputs");
    rig_free(&r);
}

/* ---- maxpool ---- */

static void maxpool_setup(rig *r, rx_shape in, int64_t n, int size, int stride)
{
    rig_load(r, "maxpool");
    rig_arg(r, "size")->i = size;
    rig_arg(r, "stride")->i = stride;
    rig_build(r, in, n);
}

static void test_maxpool_by_hand(void **unused)
{
    static const float x[2 * 16] = {  /* (2, 4, 4) */
        1, 5, 2, 0,    3, 4, 8, 1,    0, -1, 7, 7,   -2, -3, 6, 9,
        -5, -6, -7, -8, -1, -2, -3, -4, 2, 2, 3, 3,   2, 2, 3, 3,
    };
    static const float want[2 * 4] = { 5, 8, 0, 9, -1, -3, 2, 3 };  /* (2, 2, 2) */
    rig r;
    maxpool_setup(&r, TEST_SHAPE(2, 4, 4), 1, 2, 0);  /* stride 0: same as size */
    expect_shape(r.info.out, TEST_SHAPE(2, 2, 2));
    assert_int_equal(r.info.state_bytes, sizeof(int32_t) * 2 * 2 * 2);
    memcpy(r.x.data, x, sizeof x);
    rig_forward(&r);
    expect_close(r.y.data, want, 8, "maxpool y");
    /* gradients land on the maxima; ties go to the first in row-major order */
    for (int i = 0; i < 8; i++) r.dy.data[i] = (float)(i + 1);
    rig_backward(&r, true);
    float dx[2 * 16] = { 0 };
    dx[1] = 1;   /* 5 */
    dx[6] = 2;   /* 8 */
    dx[8] = 3;   /* 0 */
    dx[15] = 4;  /* 9 */
    dx[16 + 4] = 5;   /* -1 */
    dx[16 + 6] = 6;   /* -3 */
    dx[16 + 8] = 7;   /* first of the 2s */
    dx[16 + 10] = 8;  /* first of the 3s */
    expect_close(r.dx.data, dx, 32, "maxpool dx");
    rig_backward(&r, false);
    rig_free(&r);

    maxpool_setup(&r, TEST_SHAPE(1, 5, 7), 2, 3, 2);  /* overlapping windows */
    expect_shape(r.info.out, TEST_SHAPE(1, 2, 3));
    rig_free(&r);
}

/* The rule every maxpool path must follow, written as plainly as possible: scan each window in
 * row-major order, a tap replaces the best so far when it is larger or NaN. y (N, C, OH, OW) and
 * dx (N, C, H, W) for the rig's x and dy; arg (N, C, OH, OW), the state's index of each maximum
 * within its sample, unless NULL. */
static void maxpool_reference(const rig *r, int size, int stride, float *y, float *dx, int32_t *arg)
{
    const int64_t n = r->x.shape.d[0], c = r->x.shape.d[1], h = r->x.shape.d[2], w = r->x.shape.d[3];
    const int64_t oh = r->y.shape.d[2], ow = r->y.shape.d[3];
    memset(dx, 0, sizeof(float) * (size_t)rx_numel(r->x.shape));
    for (int64_t p = 0; p < n * c; p++)
        for (int64_t i = 0; i < oh; i++)
            for (int64_t j = 0; j < ow; j++) {
                int64_t best = (i * stride) * w + j * stride;
                for (int ki = 0; ki < size; ki++)
                    for (int kj = 0; kj < size; kj++) {
                        const int64_t at = (i * stride + ki) * w + j * stride + kj;
                        const float v = r->x.data[p * h * w + at];
                        if (v > r->x.data[p * h * w + best] || isnan(v)) best = at;
                    }
                y[(p * oh + i) * ow + j] = r->x.data[p * h * w + best];
                dx[p * h * w + best] += r->dy.data[(p * oh + i) * ow + j];
                if (arg) arg[(p * oh + i) * ow + j] = (int32_t)((p % c) * h * w + best);
            }
}

/* NaN-aware bit equality: the fast 2x2 path and the reference must agree exactly. */
static void expect_same_floats(const float *got, const float *want, int64_t n, const char *what)
{
    for (int64_t i = 0; i < n; i++)
        if (!(got[i] == want[i] || (isnan(got[i]) && isnan(want[i]))))
            fail_msg("%s[%lld] is %.9g, expected %.9g", what, (long long)i, got[i], want[i]);
}

/* 2x2 windows at stride 2 take a vectorized path, in runs of 4, 8 or 16 windows a row (a
 * constant); odd sizes leave a row and a column out. Inputs drawn from five values make
 * ties common, and a few NaNs test that a NaN wins its window, the last one when there are two. */
static void test_maxpool_2x2_paths(void **unused)
{
    static const struct { int c, h, w, size, stride; } cases[] = {
        { 3, 8, 8, 2, 2 },   /* 4 outputs a row */
        { 2, 16, 16, 2, 2 }, /* 8 */
        { 2, 32, 32, 2, 2 }, /* 16 */
        { 2, 5, 9, 2, 2 },   /* odd: the last row and column belong to no window */
        { 2, 6, 6, 2, 0 },   /* stride 0 means the size: the same path */
        { 2, 7, 7, 3, 2 },   /* overlapping windows: the general path, against the same rule */
    };
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        rig r;
        maxpool_setup(&r, TEST_SHAPE(cases[t].c, cases[t].h, cases[t].w), 3, cases[t].size, cases[t].stride);
        const int64_t nx = rx_numel(r.x.shape), ny = rx_numel(r.y.shape);
        for (int64_t i = 0; i < nx; i++) r.x.data[i] = (float)rx_rng_below(&r.rng, 5) - 2.0f;
        for (int k = 0; k < 6; k++) r.x.data[rx_rng_below(&r.rng, (uint64_t)nx)] = NAN;
        tensor_uniform(&r.rng, &r.dy, -1.0f, 1.0f);
        rig_forward(&r);
        rig_backward(&r, true);
        float *y = floats(ny), *dx = floats(nx);
        const int stride = cases[t].stride ? cases[t].stride : cases[t].size;
        maxpool_reference(&r, cases[t].size, stride, y, dx, NULL);
        expect_same_floats(r.y.data, y, ny, "maxpool y");
        expect_same_floats(r.dx.data, dx, nx, "maxpool dx");
        free(y);
        free(dx);
        rig_free(&r);
    }
}

/* The fast paths against the reference, bit for bit, on CIFAR's odd planes (31, 15 and 7 wide:
 * rows of 15, 7 and 3 windows, which runs of 16, 8 and 4 cover by spilling into the next row or
 * by overlapping) and its 3x3 pool over 3x3 planes, and on widths that take each other kind of
 * run: y, the state's argmax indices and dx, which must be written everywhere (dx starts as
 * NaN). Inputs from five values make ties common, with a NaN or two in some windows and -0
 * against 0; one thread and two, with batches large enough to split. */
static void test_maxpool_fast_paths(void **unused)
{
    static const struct { int c, h, w, size, stride, n; } cases[] = {
        { 4, 31, 31, 2, 2, 9 },  /* CIFAR: 15 windows a row; 2 threads split a sample */
        { 8, 15, 15, 2, 2, 19 }, /* 7 */
        { 16, 7, 7, 2, 2, 43 },  /* 3 */
        { 128, 3, 3, 3, 0, 29 }, /* one window over each plane */
        { 2, 6, 7, 2, 2, 2 },    /* 3 windows a row, even height */
        { 2, 9, 13, 2, 2, 2 },   /* 6: runs of 8, the last row in runs of 4 */
        { 2, 8, 19, 2, 2, 2 },   /* 9: runs of 16 */
        { 2, 5, 37, 2, 2, 2 },   /* 18: runs of 16, spilling 14 or overlapping 14 */
        { 2, 7, 9, 2, 2, 2 },    /* 4: no spill, so the odd column is zeroed on its own */
        { 2, 5, 4, 2, 2, 2 },    /* 2 */
        { 2, 3, 3, 2, 2, 2 },    /* 1 */
        { 2, 4, 3, 3, 1, 2 },    /* a 3x3 window that does not cover its plane: the general path */
    };
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++)
        for (int threads = 1; threads <= 2; threads++) {
            rig r;
            maxpool_setup(&r, TEST_SHAPE(cases[t].c, cases[t].h, cases[t].w), cases[t].n,
                          cases[t].size, cases[t].stride);
            r.ctx.threads = threads;
            const int64_t nx = rx_numel(r.x.shape), ny = rx_numel(r.y.shape);
            for (int64_t i = 0; i < nx; i++) r.x.data[i] = (float)rx_rng_below(&r.rng, 5) - 2.0f;
            for (int64_t k = 0; k < nx / 50 + 2; k++) r.x.data[rx_rng_below(&r.rng, (uint64_t)nx)] = NAN;
            for (int64_t k = 0; k < nx / 20; k++) r.x.data[rx_rng_below(&r.rng, (uint64_t)nx)] = -0.0f;
            tensor_uniform(&r.rng, &r.dy, -1.0f, 1.0f);
            for (int64_t i = 0; i < nx; i++) r.dx.data[i] = NAN;
            rig_forward(&r);
            rig_backward(&r, true);
            float *y = floats(ny), *dx = floats(nx);
            int32_t *arg = malloc(sizeof(int32_t) * (size_t)ny);
            assert_non_null(arg);
            const int stride = cases[t].stride ? cases[t].stride : cases[t].size;
            maxpool_reference(&r, cases[t].size, stride, y, dx, arg);
            /* Bits, so that -0 and 0 count as different; the NaNs all have NAN's bits. */
            for (int64_t i = 0; i < ny; i++)
                if (memcmp(&r.y.data[i], &y[i], sizeof(float)) != 0)
                    fail_msg("case %zu, %d threads: maxpool y[%lld] is %.9g, expected %.9g", t,
                             threads, (long long)i, r.y.data[i], y[i]);
            for (int64_t i = 0; i < ny; i++)
                if (((const int32_t *)r.state)[i] != arg[i])
                    fail_msg("case %zu, %d threads: maxpool argmax[%lld] is %d, expected %d", t,
                             threads, (long long)i, ((const int32_t *)r.state)[i], arg[i]);
            for (int64_t i = 0; i < nx; i++)
                if (memcmp(&r.dx.data[i], &dx[i], sizeof(float)) != 0)
                    fail_msg("case %zu, %d threads: maxpool dx[%lld] is %.9g, expected %.9g", t,
                             threads, (long long)i, r.dx.data[i], dx[i]);
            free(y);
            free(dx);
            free(arg);
            rig_free(&r);
        }
}

/* Large batches are split across threads (planes; samples for the backward of windows that
 * may overlap): same bits. */
static void test_maxpool_threads(void **unused)
{
    rig r;
    maxpool_setup(&r, TEST_SHAPE(8, 32, 32), 6, 2, 2);
    tensor_uniform(&r.rng, &r.dy, -1.0f, 1.0f);
    expect_threads_agree(&r, "maxpool outputs");
    rig_free(&r);
}

static void test_maxpool_refuses(void **unused)
{
    rig r;
    rig_load(&r, "maxpool");
    rig_arg(&r, "size")->i = 3;
    EXPECT_REFUSED(&r, TEST_SHAPE(4, 2, 8), "size 3 is larger than the input 2x8");
    EXPECT_REFUSED(&r, TEST_SHAPE(4, 8), "(C, H, W)", "got 2 dimensions");
    rig_arg(&r, "stride")->i = -1;
    EXPECT_REFUSED(&r, TEST_SHAPE(4, 8, 8), "stride", "got -1");
    rig_free(&r);
}

/* ---- flatten ---- */

static void test_flatten(void **unused)
{
    rig r;
    rig_load(&r, "flatten");
    rig_build(&r, TEST_SHAPE(3, 2, 4), 2);
    expect_shape(r.info.out, TEST_SHAPE(24));
    expect_shape(r.y.shape, TEST_SHAPE(2, 24));
    rig_forward(&r);
    expect_close(r.y.data, r.x.data, 48, "flatten y");
    tensor_uniform(&r.rng, &r.dy, -1.0f, 1.0f);
    rig_backward(&r, true);
    expect_close(r.dx.data, r.dy.data, 48, "flatten dx");
    rig_free(&r);
}

/* ---- dropout ---- */

static void dropout_setup(rig *r, rx_shape in, int64_t n, double p, bool training)
{
    rig_load(r, "dropout");
    rig_arg(r, "p")->num = p;
    r->ctx.training = training;
    rig_build(r, in, n);
}

static void test_dropout_eval_is_identity(void **unused)
{
    rig r;
    dropout_setup(&r, TEST_SHAPE(4, 5), 3, 0.5, false);
    expect_shape(r.info.out, TEST_SHAPE(4, 5));
    const rx_rng before = r.ctx.rng;
    rig_forward(&r);
    expect_close(r.y.data, r.x.data, 60, "dropout y");
    assert_true(r.ctx.rng.s == before.s);  /* evaluation draws no random numbers */
    tensor_uniform(&r.rng, &r.dy, -1.0f, 1.0f);
    rig_backward(&r, true);
    expect_close(r.dx.data, r.dy.data, 60, "dropout dx");
    rig_free(&r);
}

static void test_dropout_training(void **unused)
{
    const double p = 0.3;
    rig r;
    dropout_setup(&r, TEST_SHAPE(100, 100), 2, p, true);
    for (int64_t i = 0; i < rx_numel(r.x.shape); i++) r.x.data[i] = uniform(&r.rng, 0.5f, 1.5f);
    rig_forward(&r);
    int64_t zeros = 0;
    const int64_t n = rx_numel(r.x.shape);
    for (int64_t i = 0; i < n; i++) {
        if (r.y.data[i] == 0.0f) zeros++;
        else if (fabsf(r.y.data[i] - r.x.data[i] / (float)(1 - p)) > 1e-6f * r.y.data[i])
            fail_msg("dropout: kept y[%lld] = %g, expected x / (1 - p) = %g", (long long)i, r.y.data[i],
                     r.x.data[i] / (1 - p));
    }
    /* 20000 draws: the standard deviation of the fraction is 0.003, so +-0.02 is generous */
    const double fraction = (double)zeros / (double)n;
    if (fabs(fraction - p) > 0.02)
        fail_msg("dropout: zeroed %.4f of the values, expected about %.2f", fraction, p);
    /* backward uses the same mask: zero where y was dropped, scaled where it was kept */
    for (int64_t i = 0; i < n; i++) r.dy.data[i] = 1.0f;
    rig_backward(&r, true);
    for (int64_t i = 0; i < n; i++)
        assert_true(fabsf(r.dx.data[i] - (r.y.data[i] == 0.0f ? 0.0f : (float)(1 / (1 - p)))) < 1e-6f);
    rig_free(&r);

    dropout_setup(&r, TEST_SHAPE(50), 2, 0.0, true);  /* p = 0 keeps everything, unscaled */
    rig_forward(&r);
    expect_close(r.y.data, r.x.data, 100, "dropout y");
    rig_free(&r);
}

static void test_dropout_refuses(void **unused)
{
    rig r;
    rig_load(&r, "dropout");
    rig_arg(&r, "p")->num = 1.0;
    EXPECT_REFUSED(&r, TEST_SHAPE(10), "p must be in [0, 1)", "got 1");
    rig_arg(&r, "p")->num = -0.25;
    EXPECT_REFUSED(&r, TEST_SHAPE(10), "p must be in [0, 1)", "got -0.25");
    rig_free(&r);
}

/* ---- cross_entropy ---- */

typedef struct loss_rig {
    plugin pl;
    const rx_plugin *desc;
    rx_value args[TEST_MAX_ARGS];
    void *self;
    rx_ctx ctx;
} loss_rig;

static void loss_load(loss_rig *l)
{
    memset(l, 0, sizeof *l);
    l->desc = test_load(&l->pl, RX_LOSS, "cross_entropy");
    test_default_args(l->desc, l->args);
    l->ctx = (rx_ctx){ .device = RX_CPU, .training = true, .threads = 1 };
}

static void loss_smoothing(loss_rig *l, double e) { test_arg(l->desc, l->args, "label_smoothing")->num = e; }

static int loss_create(loss_rig *l, rx_shape in, int nclasses)
{
    return l->desc->loss.create(&l->self, &l->ctx, l->args, in, nclasses);
}

static int loss_forward(loss_rig *l, const rx_tensor *logits, const int32_t *labels, float *losses,
                        rx_tensor *dlogits)
{
    return l->desc->loss.forward[RX_CPU](l->self, &l->ctx, logits, labels, losses, dlogits);
}

static void loss_free(loss_rig *l)
{
    if (l->desc->loss.destroy) l->desc->loss.destroy(l->self);
    plugin_unload(&l->pl);
}

static void test_cross_entropy_by_hand(void **unused)
{
    loss_rig l;
    loss_load(&l);
    if (loss_create(&l, TEST_SHAPE(3), 3) != 0) fail_msg("%s", l.ctx.err);
    float z[2 * 3] = { 1, 2, 3, 1, 2, 3 };  /* (2, 3) */
    const int32_t labels[2] = { 2, 0 };
    rx_tensor logits = { .data = z, .shape = TEST_SHAPE(2, 3) };
    rx_tensor dz = tensor_new(TEST_SHAPE(2, 3));
    float losses[2];
    assert_int_equal(loss_forward(&l, &logits, labels, losses, &dz), 0);
    const double lse = log(exp(1.0) + exp(2.0) + exp(3.0));
    const float want_loss[2] = { (float)(lse - 3), (float)(lse - 1) };  /* 0.4076, 2.4076 */
    expect_close(losses, want_loss, 2, "cross_entropy loss");
    float want_dz[6];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++)
            want_dz[i * 3 + j] = (float)((exp(j + 1.0 - lse) - (j == labels[i])) / 2);
    expect_close(dz.data, want_dz, 6, "cross_entropy dlogits");
    /* dlogits == NULL: the same losses, no gradient */
    float again[2];
    assert_int_equal(loss_forward(&l, &logits, labels, again, NULL), 0);
    expect_close(again, losses, 2, "cross_entropy loss without gradient");
    free(dz.data);
    loss_free(&l);
}

static void test_cross_entropy_is_stable(void **unused)
{
    loss_rig l;
    loss_load(&l);
    if (loss_create(&l, TEST_SHAPE(3), 3) != 0) fail_msg("%s", l.ctx.err);
    float z[3 * 3] = { 1000, 0, -1000, 1000, 1000, 1000, -1000, -1000, 1000 };  /* (3, 3) */
    const int32_t labels[3] = { 1, 2, 2 };
    rx_tensor logits = { .data = z, .shape = TEST_SHAPE(3, 3) };
    rx_tensor dz = tensor_new(TEST_SHAPE(3, 3));
    float losses[3];
    assert_int_equal(loss_forward(&l, &logits, labels, losses, &dz), 0);
    for (int i = 0; i < 9; i++) assert_true(isfinite(dz.data[i]));
    const float want[3] = { 1000.0f, (float)log(3.0), 0.0f };
    expect_close(losses, want, 3, "cross_entropy loss");
    /* the first row's softmax is (1, 0, 0): gradient (1, -1, 0) / 3 */
    const float want_dz[3] = { 1.0f / 3, -1.0f / 3, 0.0f };
    expect_close(dz.data, want_dz, 3, "cross_entropy dlogits");
    free(dz.data);
    loss_free(&l);
}

static void test_cross_entropy_refuses(void **unused)
{
    loss_rig l;
    loss_load(&l);
    assert_int_not_equal(loss_create(&l, TEST_SHAPE(5), 10), 0);
    expect_message(l.ctx.err, "gives 5 logits");
    expect_message(l.ctx.err, "has 10 classes");
    assert_int_not_equal(loss_create(&l, TEST_SHAPE(2, 5), 10), 0);
    expect_message(l.ctx.err, "got 2 dimensions");

    if (loss_create(&l, TEST_SHAPE(3), 3) != 0) fail_msg("%s", l.ctx.err);
    float z[2 * 3] = { 0 };
    rx_tensor logits = { .data = z, .shape = TEST_SHAPE(2, 3) };
    float losses[2];
    const int32_t high[2] = { 0, 7 }, low[2] = { -1, 0 };
    assert_int_equal(loss_forward(&l, &logits, high, losses, NULL), -1);
    expect_message(l.ctx.err, "label 7 at index 1");
    assert_int_equal(loss_forward(&l, &logits, low, losses, NULL), -1);
    expect_message(l.ctx.err, "label -1 at index 0");
    loss_free(&l);
}

/* Label smoothing e: the target is (1 - e) * onehot + e / C, as in PyTorch, so
 *     loss = (1 - e) * (lse - z[label]) + e * mean_k(lse - z[k]),
 *     dz   = (softmax - (1 - e) * onehot - e / C) / N. */
static void test_cross_entropy_label_smoothing_by_hand(void **unused)
{
    const double e = 0.2;
    loss_rig l;
    loss_load(&l);
    loss_smoothing(&l, e);
    if (loss_create(&l, TEST_SHAPE(3), 3) != 0) fail_msg("%s", l.ctx.err);
    float z[3 * 3] = { 1, 2, 3, 1, 2, 3, 1000, 0, -1000 };  /* (3, 3) */
    const int32_t labels[3] = { 2, 0, 1 };
    rx_tensor logits = { .data = z, .shape = TEST_SHAPE(3, 3) };
    rx_tensor dz = tensor_new(TEST_SHAPE(3, 3));
    float losses[3];
    assert_int_equal(loss_forward(&l, &logits, labels, losses, &dz), 0);
    /* rows 0 and 1: lse = 3.4076; mean_k(lse - z[k]) = lse - 2, so
     * row 0: 0.8 * (lse - 3) + 0.2 * (lse - 2) = lse - 2.8 = 0.6076,
     * row 1: 0.8 * (lse - 1) + 0.2 * (lse - 2) = lse - 1.2 = 2.2076;
     * row 2: lse = 1000 (exp(-1000) and exp(-2000) vanish), mean z = 0: 0.8 * 1000 + 0.2 * 1000 = 1000 */
    const double lse = log(exp(1.0) + exp(2.0) + exp(3.0));
    const float want_loss[3] = { (float)(lse - 2.8), (float)(lse - 1.2), 1000.0f };
    expect_close(losses, want_loss, 3, "smoothed cross_entropy loss");
    float want_dz[9];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++)
            want_dz[i * 3 + j] = (float)((exp(j + 1.0 - lse) - (1 - e) * (j == labels[i]) - e / 3) / 3);
    /* row 2: softmax (1, 0, 0), target (0.2/3, 0.8 + 0.2/3, 0.2/3) */
    want_dz[6] = (float)((1 - e / 3) / 3);
    want_dz[7] = (float)((-(1 - e) - e / 3) / 3);
    want_dz[8] = (float)(-e / 3 / 3);
    expect_close(dz.data, want_dz, 9, "smoothed cross_entropy dlogits");
    /* each gradient row sums to 0, as softmax and the target both sum to 1 */
    for (int i = 0; i < 3; i++)
        assert_float_equal(dz.data[3 * i] + dz.data[3 * i + 1] + dz.data[3 * i + 2], 0, 1e-7);
    float again[3];
    assert_int_equal(loss_forward(&l, &logits, labels, again, NULL), 0);
    assert_memory_equal(again, losses, sizeof losses);
    free(dz.data);
    loss_free(&l);
}

/* label_smoothing = 0 (the default, and given explicitly) is the loss as it was before the
 * option, to the bit: the same arithmetic, replayed here. */
static void test_cross_entropy_no_smoothing_is_unchanged(void **unused)
{
    enum { N = 7, C = 13 };
    rx_rng rng = rx_rng_stream(9, 0);
    rx_tensor logits = tensor_new(TEST_SHAPE(N, C)), dz = tensor_new(TEST_SHAPE(N, C));
    tensor_uniform(&rng, &logits, -5.0f, 5.0f);
    int32_t labels[N];
    for (int i = 0; i < N; i++) labels[i] = (int32_t)rx_rng_below(&rng, C);
    float want_loss[N], want_dz[N * C];
    const float inv_n = 1.0f / (float)N;
    for (int i = 0; i < N; i++) {
        const float *z = logits.data + i * C;
        float max = z[0];
        for (int j = 1; j < C; j++) max = z[j] > max ? z[j] : max;
        double sum = 0.0;
        for (int j = 0; j < C; j++) sum += expf(z[j] - max);
        want_loss[i] = (float)(log(sum) - (double)(z[labels[i]] - max));
        const float scale = (float)(1.0 / sum) * inv_n;
        for (int j = 0; j < C; j++) want_dz[i * C + j] = expf(z[j] - max) * scale;
        want_dz[i * C + labels[i]] -= inv_n;
    }
    for (int explicit_zero = 0; explicit_zero < 2; explicit_zero++) {
        loss_rig l;
        loss_load(&l);
        if (explicit_zero) loss_smoothing(&l, 0.0);
        if (loss_create(&l, TEST_SHAPE(C), C) != 0) fail_msg("%s", l.ctx.err);
        float losses[N];
        assert_int_equal(loss_forward(&l, &logits, labels, losses, &dz), 0);
        assert_memory_equal(losses, want_loss, sizeof want_loss);
        assert_memory_equal(dz.data, want_dz, sizeof want_dz);
        loss_free(&l);
    }
    free(logits.data);
    free(dz.data);
}

static void test_cross_entropy_refuses_label_smoothing(void **unused)
{
    static const double bad[4] = { 1.0, 1.5, -0.1, NAN };
    static const char *const says[4] = { "got 1", "got 1.5", "got -0.1", "got nan" };
    for (int k = 0; k < 4; k++) {
        loss_rig l;
        loss_load(&l);
        loss_smoothing(&l, bad[k]);
        l.self = &l;  /* must be cleared */
        assert_int_equal(loss_create(&l, TEST_SHAPE(3), 3), -1);
        assert_null(l.self);
        expect_message(l.ctx.err, "label_smoothing must be in [0, 1)");
        expect_message(l.ctx.err, says[k]);
        loss_free(&l);
    }
    loss_rig l;  /* just below 1 is accepted */
    loss_load(&l);
    loss_smoothing(&l, 0.999);
    if (loss_create(&l, TEST_SHAPE(3), 3) != 0) fail_msg("%s", l.ctx.err);
    loss_free(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv2d_declares),
        cmocka_unit_test(test_conv2d_by_hand),
        cmocka_unit_test(test_conv2d_matches_loops),
        cmocka_unit_test(test_conv2d_threads),
        cmocka_unit_test(test_conv2d_backward_matches_definition),
        cmocka_unit_test(test_conv2d_refuses),
        cmocka_unit_test(test_conv2d_bf16_near_definition),
        cmocka_unit_test(test_conv2d_bf16_refuses),
        cmocka_unit_test(test_conv2d_pool_matches_maxpool),
        cmocka_unit_test(test_conv2d_pool_refuses),
        cmocka_unit_test(test_linear_declares_and_computes),
        cmocka_unit_test(test_linear_threads),
        cmocka_unit_test(test_linear_refuses),
        cmocka_unit_test(test_relu),
        cmocka_unit_test(test_relu_threads),
        cmocka_unit_test(test_maxpool_by_hand),
        cmocka_unit_test(test_maxpool_2x2_paths),
        cmocka_unit_test(test_maxpool_fast_paths),
        cmocka_unit_test(test_maxpool_threads),
        cmocka_unit_test(test_maxpool_refuses),
        cmocka_unit_test(test_flatten),
        cmocka_unit_test(test_dropout_eval_is_identity),
        cmocka_unit_test(test_dropout_training),
        cmocka_unit_test(test_dropout_refuses),
        cmocka_unit_test(test_cross_entropy_by_hand),
        cmocka_unit_test(test_cross_entropy_is_stable),
        cmocka_unit_test(test_cross_entropy_refuses),
        cmocka_unit_test(test_cross_entropy_label_smoothing_by_hand),
        cmocka_unit_test(test_cross_entropy_no_smoothing_is_unchanged),
        cmocka_unit_test(test_cross_entropy_refuses_label_smoothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
