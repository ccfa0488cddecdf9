/* test_batchnorm.c: the batchnorm layer plugin (plugins/layers/batchnorm.c and .cu), driven the
 * way the host drives it: create, lend tensors and state, forward, backward.
 *
 * What is checked:
 * - what create declares (PyTorch's tensor names, shapes, inits, buffers) and what it refuses;
 * - forward by hand on tiny inputs, in training and in evaluation, and the running statistics
 *   after one and two training batches against PyTorch's update rule; evaluation never changes
 *   them; a training batch with one value per channel is refused and changes nothing;
 * - forward and backward against a double-precision reference that uses the textbook chain
 *   rule through mean and variance (Ioffe and Szegedy's), not the plugin's compact formula;
 * - the same bits with 1, 2 and 3 threads; a training batch of one value per channel refused
 *   on both devices;
 * - activation = "gelu": against the reference with GELU after it, and against batchnorm then
 *   the gelu layer (y bit for bit).
 * Central differences (x, weight, bias, in training and evaluation), backward adding into dweight
 * and dbias and leaving the buffers' gradients alone, dx = NULL, evaluation keeping the running
 * statistics, and CPU vs CUDA (y, dx, dw, the running statistics and the state) are rows of
 * test_check.c's table (core/check.c).
 * Tolerances are given where they are used. */
#include "helpers.h"

#include <math.h>
#include <stdio.h>

#include "device.h"

/* The declared tensors, in order. */
enum { WEIGHT, BIAS, RUNNING_MEAN, RUNNING_VAR, NTENSORS };

#define EPS_DEFAULT 1e-5
#define FWD_TOL 1e-5     /* forward against a reference, relative to max(1, |reference|) */
#define STATS_TOL 1e-6   /* running statistics against the formula, relative to max(1, |value|) */

/* ---- A batchnorm layer with every buffer the host would lend it ---- */

static double *doubles(int64_t n)
{
    double *p = calloc(n > 0 ? (size_t)n : 1, sizeof *p);
    assert_non_null(p);
    return p;
}

static void fill(rx_tensor *t, float v)
{
    for (int64_t i = 0; i < rx_numel(t->shape); i++) t->data[i] = v;
}

static int64_t numel(const rx_tensor *t) { return rx_numel(t->shape); }

static void rig_load(rig *r) { rig_open(r, "batchnorm", 7); }

/* create, which must succeed, then every buffer as the host allocates and initializes it; x is
 * U(-1, 1) + 0.5 (a mean away from zero), dy U(-1, 1). */
static void bn_build(rig *r, rx_shape in, int64_t n)
{
    rig_alloc(r, in, n);
    assert_int_equal(r->info.ntensors, NTENSORS);
    assert_int_equal(r->info.workspace_bytes, 0);
    tensor_uniform(&r->rng, &r->x, -0.5f, 1.5f);
    tensor_uniform(&r->rng, &r->dy, -1.0f, 1.0f);
}

/* Trained-looking parameters and statistics instead of the initial ones. */
static void rig_randomize_params(rig *r)
{
    tensor_uniform(&r->rng, &r->w[WEIGHT], 0.5f, 1.5f);
    tensor_uniform(&r->rng, &r->w[BIAS], -1.0f, 1.0f);
    tensor_uniform(&r->rng, &r->w[RUNNING_MEAN], -0.5f, 0.5f);
    tensor_uniform(&r->rng, &r->w[RUNNING_VAR], 0.2f, 2.0f);
}

/* Sizes of a rig's input: N, C and the values per channel in one sample. */
static int64_t rig_n(const rig *r) { return r->x.shape.d[0]; }
static int64_t rig_c(const rig *r) { return r->x.shape.d[1]; }
static int64_t rig_hw(const rig *r) { return numel(&r->x) / rig_n(r) / rig_c(r); }

/* Index of value j (of N * HW) of channel c in an (N, C, HW) tensor. */
static int64_t at(const rig *r, int64_t c, int64_t j)
{
    const int64_t hw = rig_hw(r);
    return ((j / hw) * rig_c(r) + c) * hw + j % hw;
}

/* ---- Checks ---- */

static void expect_close(const float *got, const double *want, int64_t n, double tol, const char *what)
{
    for (int64_t i = 0; i < n; i++)
        if (!(fabs(got[i] - want[i]) <= tol * fmax(1.0, fabs(want[i]))))
            fail_msg("%s[%lld] is %.9g, expected %.9g (tolerance %.2g)", what, (long long)i, got[i], want[i], tol);
}

static void expect_same_bits(const float *got, const float *want, int64_t n, const char *what)
{
    for (int64_t i = 0; i < n; i++)
        if (memcmp(&got[i], &want[i], sizeof(float)) != 0)
            fail_msg("%s[%lld] is %.9g, expected the same bits as %.9g", what, (long long)i, got[i], want[i]);
}

static float *copy_of(const rx_tensor *t)
{
    float *p = floats(numel(t));
    memcpy(p, t->data, sizeof(float) * (size_t)numel(t));
    return p;
}

static void expect_shape(rx_shape got, rx_shape want)
{
    assert_int_equal(got.ndim, want.ndim);
    for (int i = 0; i < want.ndim; i++) assert_int_equal(got.d[i], want.d[i]);
}

/* ---- The reference: batchnorm by the textbook, in double ---- */

typedef struct reference {
    double *y, *dx;                      /* (N, C, ...) */
    double *mean, *var;                  /* (C): the statistics forward normalizes with */
    double *dweight, *dbias;             /* (C) */
} reference;

/* Forward and backward of r's x, w and dy in double. Training: the batch mean and biased
 * variance, and the gradient through them by the chain rule of Ioffe and Szegedy (2015):
 *     dxhat = dy * weight
 *     dvar  = sum(dxhat * (x - mean)) * -1/2 (var + eps)^(-3/2)
 *     dmean = -sum(dxhat) / sqrt(var + eps) + dvar * -2 sum(x - mean) / M
 *     dx    = dxhat / sqrt(var + eps) + dvar * 2 (x - mean) / M + dmean / M
 * Evaluation: the running statistics, constants. With gelu (activation = "gelu"), y is GELU(z) of
 * the normalized z = xhat * weight + bias, by erf in double, and the gradient that reaches z is
 * dy * GELU'(z) = dy * (Phi(z) + z phi(z)). */
static reference reference_of(const rig *r, bool training, double eps, bool gelu)
{
    const int64_t c_n = rig_c(r), m = rig_n(r) * rig_hw(r);
    reference ref = { .y = doubles(numel(&r->x)), .dx = doubles(numel(&r->x)), .mean = doubles(c_n),
                      .var = doubles(c_n), .dweight = doubles(c_n), .dbias = doubles(c_n) };
    for (int64_t c = 0; c < c_n; c++) {
        double mean = 0.0, var = 0.0;
        if (training) {
            for (int64_t j = 0; j < m; j++) mean += r->x.data[at(r, c, j)];
            mean /= (double)m;
            for (int64_t j = 0; j < m; j++) var += pow(r->x.data[at(r, c, j)] - mean, 2);
            var /= (double)m;
        } else {
            mean = r->w[RUNNING_MEAN].data[c];
            var = r->w[RUNNING_VAR].data[c];
        }
        ref.mean[c] = mean;
        ref.var[c] = var;
        const double sd = sqrt(var + eps), weight = r->w[WEIGHT].data[c], bias = r->w[BIAS].data[c];
        double dvar = 0.0, dmean = 0.0, centered = 0.0;
        double *g_of = doubles(m);  /* the gradient at z */
        for (int64_t j = 0; j < m; j++) {
            const int64_t i = at(r, c, j);
            const double xhat = (r->x.data[i] - mean) / sd, z = xhat * weight + bias;
            const double phi = 0.5 * (1.0 + erf(z / sqrt(2.0))), pdf = exp(-0.5 * z * z) / sqrt(2.0 * M_PI);
            const double g = gelu ? r->dy.data[i] * (phi + z * pdf) : r->dy.data[i];
            g_of[j] = g;
            ref.y[i] = gelu ? z * phi : z;
            ref.dweight[c] += g * xhat;
            ref.dbias[c] += g;
            dvar += g * weight * (r->x.data[i] - mean) * -0.5 * pow(var + eps, -1.5);
            dmean += -g * weight / sd;
            centered += r->x.data[i] - mean;
        }
        dmean += dvar * -2.0 * centered / (double)m;
        for (int64_t j = 0; j < m; j++) {
            const int64_t i = at(r, c, j);
            ref.dx[i] = g_of[j] * weight / sd;
            if (training) ref.dx[i] += dvar * 2.0 * (r->x.data[i] - mean) / (double)m + dmean / (double)m;
        }
        free(g_of);
    }
    return ref;
}

static void reference_free(reference *ref)
{
    free(ref->y);
    free(ref->dx);
    free(ref->mean);
    free(ref->var);
    free(ref->dweight);
    free(ref->dbias);
}

/* ---- What create declares and refuses ---- */

static void test_declares(void **unused)
{
    static const struct {
        int ndim;
        int64_t d[3];
    } inputs[] = { { 3, { 3, 4, 5 } }, { 1, { 7 } }, { 2, { 2, 9 } }, { 3, { 1, 1, 1 } } };
    static const char *const names[NTENSORS] = { "weight", "bias", "running_mean", "running_var" };
    static const rx_init inits[NTENSORS] = { RX_INIT_ONES, RX_INIT_ZEROS, RX_INIT_ZEROS, RX_INIT_ONES };
    static const bool buffers[NTENSORS] = { false, false, true, true };
    for (size_t t = 0; t < sizeof inputs / sizeof inputs[0]; t++) {
        rig r;
        rig_load(&r);
        const rx_shape in = test_shape(inputs[t].ndim, inputs[t].d);
        if (rig_create(&r, in) != 0) fail_msg("create refused: %s", r.ctx.err);
        expect_shape(r.info.out, in);
        assert_int_equal(r.info.ntensors, NTENSORS);
        for (int i = 0; i < NTENSORS; i++) {
            assert_string_equal(r.info.tensors[i].name, names[i]);
            expect_shape(r.info.tensors[i].shape, TEST_SHAPE(in.d[0]));
            assert_int_equal(r.info.tensors[i].init, inits[i]);
            assert_int_equal(r.info.tensors[i].buffer, buffers[i]);
        }
        assert_int_equal(r.info.state_bytes, 2 * sizeof(float) * (size_t)in.d[0]);
        assert_int_equal(r.info.workspace_bytes, 0);
        r.desc->layer.destroy(r.self);
        plugin_unload(&r.pl);
    }
    /* PyTorch's defaults */
    rig r;
    rig_load(&r);
    assert_true(rig_arg(&r, "eps")->num == 1e-5);
    assert_true(rig_arg(&r, "momentum")->num == 0.1);
    assert_string_equal(rig_arg(&r, "activation")->s, "none");
    plugin_unload(&r.pl);
}

static void test_create_refuses(void **unused)
{
    rig r;
    rig_load(&r);
    const rx_shape in = TEST_SHAPE(3, 4, 4);
    rig_arg(&r, "eps")->num = 0.0;
    EXPECT_REFUSED(&r, in, "eps must be > 0", "got 0");
    rig_arg(&r, "eps")->num = -1e-5;
    EXPECT_REFUSED(&r, in, "eps must be > 0", "got -1e-05");
    rig_arg(&r, "eps")->num = NAN;
    EXPECT_REFUSED(&r, in, "eps must be > 0", "got nan");
    rig_arg(&r, "eps")->num = 1e-3;
    rig_arg(&r, "momentum")->num = -0.1;
    EXPECT_REFUSED(&r, in, "momentum must be in [0, 1]", "got -0.1");
    rig_arg(&r, "momentum")->num = 1.5;
    EXPECT_REFUSED(&r, in, "momentum must be in [0, 1]", "got 1.5");
    rig_arg(&r, "momentum")->num = NAN;
    EXPECT_REFUSED(&r, in, "momentum must be in [0, 1]", "got nan");
    rig_arg(&r, "momentum")->num = 0.1;
    EXPECT_REFUSED(&r, TEST_SHAPE(2, 3, 4, 5), "(C), (C, L) or (C, H, W)", "got 4 dimensions (2, 3, 4, 5)");
    EXPECT_REFUSED(&r, test_shape(0, NULL), "(C), (C, L) or (C, H, W)", "got 0 dimensions ()");
    EXPECT_REFUSED(&r, TEST_SHAPE(3, 0, 4), "at least 1", "got (3, 0, 4)");
    rig_arg(&r, "activation")->s = "relu";
    EXPECT_REFUSED(&r, in, "activation must be 'none' or 'gelu'", "got 'relu'");
    rig_arg(&r, "activation")->s = "GELU";
    EXPECT_REFUSED(&r, in, "activation must be 'none' or 'gelu'", "got 'GELU'");
    rig_arg(&r, "activation")->s = "none";
    /* the edges of momentum's range are fine */
    for (int i = 0; i <= 1; i++) {
        rig_arg(&r, "momentum")->num = i;
        if (rig_create(&r, in) != 0) fail_msg("momentum %d refused: %s", i, r.ctx.err);
        r.desc->layer.destroy(r.self);
    }
    plugin_unload(&r.pl);
}

/* ---- Forward by hand ---- */

/* x (2, 2, 1, 2): channel 0 holds 1, 3 | 5, 7 (mean 4, biased variance 20 / 4 = 5, unbiased
 * 20 / 3); channel 1 holds 0, 10 | -2, 4 (mean 3, deviations -3, 7, -5, 1: variance 84 / 4 = 21,
 * unbiased 28). weight (2, 0.5), bias (0.5, -1). */
static const float hand_x[8] = { 1, 3, 0, 10, 5, 7, -2, 4 };
static const float hand_weight[2] = { 2.0f, 0.5f }, hand_bias[2] = { 0.5f, -1.0f };

static void hand_setup(rig *r)
{
    rig_load(r);
    bn_build(r, TEST_SHAPE(2, 1, 2), 2);
    memcpy(r->x.data, hand_x, sizeof hand_x);
    memcpy(r->w[WEIGHT].data, hand_weight, sizeof hand_weight);
    memcpy(r->w[BIAS].data, hand_bias, sizeof hand_bias);
}

static void test_training_by_hand(void **unused)
{
    rig r;
    hand_setup(&r);
    rig_forward(&r);
    const double s0 = sqrt(5.0 + EPS_DEFAULT), s1 = sqrt(21.0 + EPS_DEFAULT);
    const double want[8] = {
        2 * (1 - 4) / s0 + 0.5, 2 * (3 - 4) / s0 + 0.5, 0.5 * (0 - 3) / s1 - 1, 0.5 * (10 - 3) / s1 - 1,
        2 * (5 - 4) / s0 + 0.5, 2 * (7 - 4) / s0 + 0.5, 0.5 * (-2 - 3) / s1 - 1, 0.5 * (4 - 3) / s1 - 1,
    };
    expect_close(r.y.data, want, 8, FWD_TOL, "batchnorm y");
    /* running = 0.9 * running + 0.1 * batch, from mean 0 and variance 1 */
    expect_close(r.w[RUNNING_MEAN].data, (const double[]){ 0.4, 0.3 }, 2, STATS_TOL, "running_mean");
    expect_close(r.w[RUNNING_VAR].data, (const double[]){ 0.9 + 0.1 * 20.0 / 3.0, 0.9 + 0.1 * 28.0 }, 2, STATS_TOL,
                 "running_var");
    /* the state: mean (C), then 1 / sqrt(var + eps) (C) */
    expect_close(r.state, (const double[]){ 4, 3, 1 / s0, 1 / s1 }, 4, FWD_TOL, "batchnorm state");
    rig_free(&r);

    /* BatchNorm1d: x (3, 2) with rows (1, -1), (2, 0), (6, 4): both channels deviate by -2, -1, 3
     * from their means 3 and 1, variance 14 / 3; initial weight 1 and bias 0. */
    rig_load(&r);
    bn_build(&r, TEST_SHAPE(2), 3);
    memcpy(r.x.data, (const float[]){ 1, -1, 2, 0, 6, 4 }, 6 * sizeof(float));
    rig_forward(&r);
    const double s = sqrt(14.0 / 3.0 + EPS_DEFAULT);
    expect_close(r.y.data, (const double[]){ -2 / s, -2 / s, -1 / s, -1 / s, 3 / s, 3 / s }, 6, FWD_TOL,
                 "batchnorm1d y");
    expect_close(r.w[RUNNING_MEAN].data, (const double[]){ 0.3, 0.1 }, 2, STATS_TOL, "running_mean");
    expect_close(r.w[RUNNING_VAR].data, (const double[]){ 0.9 + 0.1 * 7.0, 0.9 + 0.1 * 7.0 }, 2, STATS_TOL,
                 "running_var");  /* unbiased: 14 / 2 */
    rig_free(&r);
}

static void test_eval_by_hand(void **unused)
{
    rig r;
    hand_setup(&r);
    rig_arg(&r, "eps")->num = 0.5;  /* recreate with another eps: it must be used in evaluation too */
    r.desc->layer.destroy(r.self);
    if (rig_create(&r, TEST_SHAPE(2, 1, 2)) != 0) fail_msg("create: %s", r.ctx.err);
    memcpy(r.w[RUNNING_MEAN].data, (const float[]){ 1.0f, -2.0f }, 2 * sizeof(float));
    memcpy(r.w[RUNNING_VAR].data, (const float[]){ 3.5f, 0.75f }, 2 * sizeof(float));
    float *mean0 = copy_of(&r.w[RUNNING_MEAN]), *var0 = copy_of(&r.w[RUNNING_VAR]);
    r.ctx.training = false;
    rig_forward(&r);
    /* sqrt(3.5 + 0.5) = 2, sqrt(0.75 + 0.5) = sqrt(1.25) */
    const double s1 = sqrt(1.25);
    const double want[8] = {
        2 * (1 - 1) / 2.0 + 0.5, 2 * (3 - 1) / 2.0 + 0.5, 0.5 * (0 + 2) / s1 - 1, 0.5 * (10 + 2) / s1 - 1,
        2 * (5 - 1) / 2.0 + 0.5, 2 * (7 - 1) / 2.0 + 0.5, 0.5 * (-2 + 2) / s1 - 1, 0.5 * (4 + 2) / s1 - 1,
    };
    expect_close(r.y.data, want, 8, FWD_TOL, "batchnorm eval y");
    expect_same_bits(r.w[RUNNING_MEAN].data, mean0, 2, "running_mean after evaluation");
    expect_same_bits(r.w[RUNNING_VAR].data, var0, 2, "running_var after evaluation");
    /* backward in evaluation: the statistics are constants, dx = dy * weight / sqrt(var + eps) */
    rig_backward(&r, true);
    double dx[8];
    for (int i = 0; i < 8; i++) dx[i] = r.dy.data[i] * (i % 4 < 2 ? 2.0 / 2.0 : 0.5 / s1);
    expect_close(r.dx.data, dx, 8, FWD_TOL, "batchnorm eval dx");
    expect_same_bits(r.w[RUNNING_MEAN].data, mean0, 2, "running_mean after an evaluation backward");
    expect_same_bits(r.w[RUNNING_VAR].data, var0, 2, "running_var after an evaluation backward");
    free(mean0);
    free(var0);
    rig_free(&r);

    /* One sample of a (C) input: refused in training, fine in evaluation. */
    rig_load(&r);
    bn_build(&r, TEST_SHAPE(3), 1);
    memcpy(r.x.data, (const float[]){ 2, -1, 0.5f }, 3 * sizeof(float));
    r.ctx.training = false;
    rig_forward(&r);
    const double s = sqrt(1.0 + EPS_DEFAULT);
    expect_close(r.y.data, (const double[]){ 2 / s, -1 / s, 0.5 / s }, 3, FWD_TOL, "batchnorm eval y, N = 1");
    rig_free(&r);
}

/* ---- Running statistics ---- */

/* Batch mean and unbiased variance of channel c of r's x, in double. */
static void batch_stats(const rig *r, int64_t c, double *mean, double *unbiased)
{
    const int64_t m = rig_n(r) * rig_hw(r);
    double sum = 0.0, sq = 0.0;
    for (int64_t j = 0; j < m; j++) sum += r->x.data[at(r, c, j)];
    *mean = sum / (double)m;
    for (int64_t j = 0; j < m; j++) sq += pow(r->x.data[at(r, c, j)] - *mean, 2);
    *unbiased = sq / (double)(m - 1);
}

/* Two training batches with momentum mom, against running = (1 - mom) running + mom batch from
 * (0, 1); then evaluation (forward and backward) leaves them alone to the bit. */
static void check_running_stats(rx_shape in, int64_t n, double mom)
{
    rig r;
    rig_load(&r);
    rig_arg(&r, "momentum")->num = mom;
    bn_build(&r, in, n);
    const int64_t c_n = in.d[0];
    double *rm = doubles(c_n), *rv = doubles(c_n);
    for (int64_t c = 0; c < c_n; c++) rv[c] = 1.0;
    for (int batch = 0; batch < 2; batch++) {
        tensor_uniform(&r.rng, &r.x, -2.0f + (float)batch, 3.0f);
        rig_forward(&r);
        for (int64_t c = 0; c < c_n; c++) {
            double mean, unbiased;
            batch_stats(&r, c, &mean, &unbiased);
            rm[c] = (1.0 - mom) * rm[c] + mom * mean;
            rv[c] = (1.0 - mom) * rv[c] + mom * unbiased;
        }
        char what[64];
        snprintf(what, sizeof what, "running_mean after batch %d (momentum %g)", batch + 1, mom);
        expect_close(r.w[RUNNING_MEAN].data, rm, c_n, STATS_TOL, what);
        snprintf(what, sizeof what, "running_var after batch %d (momentum %g)", batch + 1, mom);
        expect_close(r.w[RUNNING_VAR].data, rv, c_n, STATS_TOL, what);
    }
    float *mean0 = copy_of(&r.w[RUNNING_MEAN]), *var0 = copy_of(&r.w[RUNNING_VAR]);
    r.ctx.training = false;
    tensor_uniform(&r.rng, &r.x, -5.0f, 5.0f);
    rig_forward(&r);
    rig_backward(&r, true);
    rig_forward(&r);
    expect_same_bits(r.w[RUNNING_MEAN].data, mean0, c_n, "running_mean after evaluation");
    expect_same_bits(r.w[RUNNING_VAR].data, var0, c_n, "running_var after evaluation");
    free(mean0);
    free(var0);
    free(rm);
    free(rv);
    rig_free(&r);
}

static void test_running_stats(void **unused)
{
    check_running_stats(TEST_SHAPE(3, 4, 5), 3, 0.1);
    check_running_stats(TEST_SHAPE(3, 4, 5), 2, 0.3);
    check_running_stats(TEST_SHAPE(6), 5, 0.1);
    check_running_stats(TEST_SHAPE(4, 7), 2, 0.9);
    check_running_stats(TEST_SHAPE(2, 1, 1), 2, 0.1);  /* M = 2: the unbiased variance divides by 1 */
    check_running_stats(TEST_SHAPE(3, 2, 2), 1, 0.1);  /* one sample, 4 values per channel */
    check_running_stats(TEST_SHAPE(3, 4, 5), 3, 1.0);  /* the last batch's statistics */

    /* momentum 0: never change, to the bit; training's y ignores them */
    rig r;
    rig_load(&r);
    rig_arg(&r, "momentum")->num = 0.0;
    bn_build(&r, TEST_SHAPE(4, 3, 3), 3);
    tensor_uniform(&r.rng, &r.w[RUNNING_MEAN], -1.0f, 1.0f);
    tensor_uniform(&r.rng, &r.w[RUNNING_VAR], 0.5f, 2.0f);
    float *mean0 = copy_of(&r.w[RUNNING_MEAN]), *var0 = copy_of(&r.w[RUNNING_VAR]);
    rig_forward(&r);
    float *y0 = copy_of(&r.y);
    expect_same_bits(r.w[RUNNING_MEAN].data, mean0, 4, "running_mean with momentum 0");
    expect_same_bits(r.w[RUNNING_VAR].data, var0, 4, "running_var with momentum 0");
    fill(&r.w[RUNNING_MEAN], 100.0f);
    fill(&r.w[RUNNING_VAR], 1e-3f);
    rig_forward(&r);
    expect_same_bits(r.y.data, y0, numel(&r.y), "training y with other running statistics");
    free(mean0);
    free(var0);
    free(y0);
    rig_free(&r);
}

/* ---- Refusals while running ---- */

/* A training batch with one value per channel: refused before anything is written. */
static void expect_batch_refused(rx_shape in, rx_device device)
{
    rig r;
    rig_load(&r);
    bn_build(&r, in, 1);
    fill(&r.y, 12345.0f);
    float *mean0 = copy_of(&r.w[RUNNING_MEAN]), *var0 = copy_of(&r.w[RUNNING_VAR]);
    r.ctx.err[0] = '\0';
    r.ctx.device = device;
    /* The CUDA path refuses on the host before it launches anything, so host memory is safe. */
    if (r.desc->layer.forward[device](r.self, &r.ctx, &r.x, r.w, &r.y, r.state) == 0)
        fail_msg("batchnorm (%s): a training batch of 1 with input (%lld...) was accepted", device_name(device),
                 (long long)in.d[0]);
    expect_message(r.ctx.err, "expected more than 1 value per channel when training");
    expect_message(r.ctx.err, "got 1 (a batch of 1 with 1 per sample and channel)");
    expect_same_bits(r.w[RUNNING_MEAN].data, mean0, in.d[0], "running_mean after a refused batch");
    expect_same_bits(r.w[RUNNING_VAR].data, var0, in.d[0], "running_var after a refused batch");
    for (int64_t i = 0; i < numel(&r.y); i++) assert_true(r.y.data[i] == 12345.0f);
    free(mean0);
    free(var0);
    rig_free(&r);
}

static void test_forward_refuses(void **unused)
{
    expect_batch_refused(TEST_SHAPE(3), RX_CPU);
    expect_batch_refused(TEST_SHAPE(4, 1), RX_CPU);
    expect_batch_refused(TEST_SHAPE(2, 1, 1), RX_CPU);
#ifdef RX_WITH_CUDA
    expect_batch_refused(TEST_SHAPE(3), RX_CUDA);
    expect_batch_refused(TEST_SHAPE(2, 1, 1), RX_CUDA);
#endif
}

/* ---- Against the textbook, in double ---- */

typedef struct shape_case {
    int64_t n;
    int ndim;
    int64_t d[3];
} shape_case;

static rx_shape case_shape(shape_case sc) { return test_shape(sc.ndim, sc.d); }

static const shape_case shapes[] = {
    { 2, 3, { 3, 4, 5 } },
    { 5, 1, { 4 } },          /* BatchNorm1d on (N, C) */
    { 2, 2, { 2, 7 } },       /* BatchNorm1d on (N, C, L) */
    { 1, 3, { 2, 3, 3 } },    /* one sample */
    { 4, 3, { 3, 1, 1 } },    /* 1x1 images */
    { 2, 3, { 1, 1, 2 } },    /* M = 4 */
    { 2, 1, { 1 } },          /* M = 2, the least training takes */
    { 3, 3, { 5, 6, 7 } },
};

/* The plugin's forward and backward against reference_of: y to FWD_TOL; dx, dweight and dbias to
 * 1e-5 of the largest value of each (float rounding of sums of at most a few hundred terms). */
static void check_against_reference(shape_case sc, bool training, bool gelu)
{
    rig r;
    rig_load(&r);
    rig_arg(&r, "activation")->s = gelu ? "gelu" : "none";
    bn_build(&r, case_shape(sc), sc.n);
    rig_randomize_params(&r);
    r.ctx.training = training;
    fill(&r.dx, NAN);  /* backward must write all of it */
    fill(&r.y, NAN);   /* forward must write all of it */
    rig_forward(&r);
    rig_zero_grads(&r);
    rig_backward(&r, true);
    reference ref = reference_of(&r, training, EPS_DEFAULT, gelu);
    expect_close(r.y.data, ref.y, numel(&r.y), FWD_TOL, training ? "y (training)" : "y (evaluation)");
    const int64_t c_n = rig_c(&r);
    double *state = doubles(2 * c_n);
    for (int64_t c = 0; c < c_n; c++) {
        state[c] = ref.mean[c];
        state[c_n + c] = 1.0 / sqrt(ref.var[c] + EPS_DEFAULT);
    }
    expect_close(r.state, state, 2 * c_n, FWD_TOL, "state (mean, invstd)");
    const struct {
        const float *got;
        const double *want;
        int64_t n;
        const char *what;
    } grads[] = {
        { r.dx.data, ref.dx, numel(&r.dx), "dx" },
        { r.dw[WEIGHT].data, ref.dweight, c_n, "dweight" },
        { r.dw[BIAS].data, ref.dbias, c_n, "dbias" },
    };
    for (size_t g = 0; g < sizeof grads / sizeof grads[0]; g++) {
        double scale = 0.0;
        for (int64_t i = 0; i < grads[g].n; i++) scale = fmax(scale, fabs(grads[g].want[i]));
        const double tol = 1e-5 * fmax(scale, 1e-3);
        for (int64_t i = 0; i < grads[g].n; i++)
            if (!(fabs(grads[g].got[i] - grads[g].want[i]) <= tol))
                fail_msg("batchnorm%s N=%lld (%s), %s: %s[%lld] is %.9g, the textbook gives %.9g (tolerance %.3g)",
                         gelu ? " activation=gelu" : "", (long long)sc.n, training ? "training" : "evaluation",
                         "backward", grads[g].what,
                         (long long)i, grads[g].got[i], grads[g].want[i], tol);
    }
    for (int i = RUNNING_MEAN; i < NTENSORS; i++)
        for (int64_t c = 0; c < c_n; c++) assert_true(r.dw[i].data[c] == 0.0f);
    free(state);
    reference_free(&ref);
    rig_free(&r);
}

static void test_matches_reference(void **unused)
{
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++)
        for (int gelu = 0; gelu <= 1; gelu++) {
            check_against_reference(shapes[t], true, gelu);
            check_against_reference(shapes[t], false, gelu);
        }
}

/* ---- The fused GELU against the gelu layer after batchnorm ---- */

/* batchnorm activation=gelu against batchnorm then the gelu layer, from the same x, dy and
 * parameters: y bit for bit (the same float z through the same gelu_math.h), dx and the
 * parameters' gradients to 1e-6 of the largest (backward recomputes z from the float state). */
static void test_gelu_fused_matches_the_gelu_layer(void **unused)
{
    const shape_case cases[] = { { 4, 3, { 6, 17, 19 } }, { 3, 3, { 5, 50, 50 } }, { 9, 1, { 12 } } };
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++)
        for (int training = 0; training <= 1; training++) {
            rig fused, bn, act;
            rig_load(&fused);
            rig_load(&bn);  /* the same seed: the same x, dy and parameters */
            rig_arg(&fused, "activation")->s = "gelu";
            bn_build(&fused, case_shape(cases[t]), cases[t].n);
            bn_build(&bn, case_shape(cases[t]), cases[t].n);
            rig_randomize_params(&fused);
            rig_randomize_params(&bn);
            rig_open(&act, "gelu", 7);
            rig_alloc(&act, case_shape(cases[t]), cases[t].n);
            fused.ctx.training = bn.ctx.training = act.ctx.training = training;
            rig_forward(&fused);
            rig_forward(&bn);
            memcpy(act.x.data, bn.y.data, sizeof(float) * (size_t)numel(&bn.y));
            rig_forward(&act);
            expect_same_bits(fused.y.data, act.y.data, numel(&act.y), "y against the gelu layer's");
            memcpy(act.dy.data, fused.dy.data, sizeof(float) * (size_t)numel(&fused.dy));
            rig_backward(&act, true);
            memcpy(bn.dy.data, act.dx.data, sizeof(float) * (size_t)numel(&act.dx));
            rig_zero_grads(&fused);
            rig_zero_grads(&bn);
            rig_backward(&fused, true);
            rig_backward(&bn, true);
            const rx_tensor *got[] = { &fused.dx, &fused.dw[WEIGHT], &fused.dw[BIAS] };
            const rx_tensor *want[] = { &bn.dx, &bn.dw[WEIGHT], &bn.dw[BIAS] };
            const char *what[] = { "dx", "dweight", "dbias" };
            for (int g = 0; g < 3; g++) {
                double scale = 1e-3;
                for (int64_t i = 0; i < numel(want[g]); i++) scale = fmax(scale, fabs(want[g]->data[i]));
                for (int64_t i = 0; i < numel(want[g]); i++)
                    if (!(fabs(got[g]->data[i] - want[g]->data[i]) <= 1e-6 * scale))
                        fail_msg("%s (%s)[%lld]: fused %.9g, batchnorm then gelu %.9g", what[g],
                                 training ? "training" : "evaluation", (long long)i, got[g]->data[i],
                                 want[g]->data[i]);
            }
            rig_free(&fused);
            rig_free(&bn);
            rig_free(&act);
        }
}

/* ---- Threads ---- */

/* Forward and backward from the same x, dy, parameters and running statistics at a thread
 * count; returns every output: y, dx, dweight, dbias, running_mean, running_var. */
static float *pass_with(rig *r, int threads, const float *mean0, const float *var0, int64_t *n)
{
    const int64_t c_n = rig_c(r);
    memcpy(r->w[RUNNING_MEAN].data, mean0, sizeof(float) * (size_t)c_n);
    memcpy(r->w[RUNNING_VAR].data, var0, sizeof(float) * (size_t)c_n);
    r->ctx.threads = threads;
    rig_forward(r);
    rig_zero_grads(r);
    rig_backward(r, true);
    const rx_tensor *outs[] = { &r->y, &r->dx, &r->dw[WEIGHT], &r->dw[BIAS], &r->w[RUNNING_MEAN], &r->w[RUNNING_VAR] };
    *n = 0;
    for (size_t i = 0; i < 6; i++) *n += numel(outs[i]);
    float *all = floats(*n), *to = all;
    for (size_t i = 0; i < 6; i++) {
        memcpy(to, outs[i]->data, sizeof(float) * (size_t)numel(outs[i]));
        to += numel(outs[i]);
    }
    return all;
}

/* Large enough (more than 32K values) for batchnorm to split its channels across threads; each
 * channel is one thread's, so every output keeps its bits. */
static void test_threads(void **unused)
{
    const shape_case cases[] = { { 4, 3, { 6, 40, 40 } }, { 600, 1, { 64 } }, { 3, 3, { 5, 50, 50 } } };
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        for (int mode = 0; mode < 4; mode++) {  /* training, evaluation; then both with the GELU fused */
            rig r;
            rig_load(&r);
            rig_arg(&r, "activation")->s = mode >= 2 ? "gelu" : "none";
            bn_build(&r, case_shape(cases[t]), cases[t].n);
            rig_randomize_params(&r);
            r.ctx.training = mode % 2 == 0;
            float *mean0 = copy_of(&r.w[RUNNING_MEAN]), *var0 = copy_of(&r.w[RUNNING_VAR]);
            int64_t n;
            float *one = pass_with(&r, 1, mean0, var0, &n);
            for (int threads = 2; threads <= 3; threads++) {
                float *more = pass_with(&r, threads, mean0, var0, &n);
                char what[96];
                snprintf(what, sizeof what, "outputs (%s%s) with %d threads", mode % 2 == 0 ? "training" : "evaluation",
                         mode >= 2 ? ", activation=gelu" : "", threads);
                expect_same_bits(more, one, n, what);
                free(more);
            }
            free(one);
            free(mean0);
            free(var0);
            rig_free(&r);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_declares),
        cmocka_unit_test(test_create_refuses),
        cmocka_unit_test(test_training_by_hand),
        cmocka_unit_test(test_eval_by_hand),
        cmocka_unit_test(test_running_stats),
        cmocka_unit_test(test_forward_refuses),
        cmocka_unit_test(test_matches_reference),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_gelu_fused_matches_the_gelu_layer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
