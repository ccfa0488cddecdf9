/* test_adam.c: the adam and adamw optimizers (plugins/common/adam.h) against three steps worked
 * out by hand, following torch.optim.Adam and AdamW: the moments m and v start at 0 and are
 * bias-corrected by the global step t; adam adds weight decay to the gradient (L2), adamw shrinks
 * the weights by 1 - lr * wd first. Weight decay is the host's, per group of parameters: it
 * arrives with each step (rx_step.weight_decay), and a step may be several calls, one per group,
 * each on its own slice of w, g and the state (2 blocks: m then v, each as long as the slice).
 *
 * Three parameters start at w = (1, -2, 0.5) and see the gradients g1, g2, g3 below with lr 0.1
 * (the ones test_sgd.c uses). With the defaults (beta1 0.9, beta2 0.999, eps 1e-8), the first
 * parameter:
 *   step 1: m = 0.1 * 0.5 = 0.05, v = 0.001 * 0.25 = 0.00025;
 *           bias-corrected m / (1 - 0.9) = 0.5 and v / (1 - 0.999) = 0.25, so
 *           w = 1 - 0.1 * 0.5 / (sqrt(0.25) + 1e-8) = 0.9
 *           (without the correction the step would be 0.1 * 0.05 / sqrt(0.00025) = 0.316)
 *   step 2: m = 0.9 * 0.05 + 0.1 * 0.25 = 0.07, v = 0.999 * 0.00025 + 0.001 * 0.0625 = 0.00031225;
 *           w = 0.9 - 0.1 / 0.19 * 0.07 / (sqrt(0.00031225) / sqrt(0.001999) + 1e-8) = 0.80678204
 * The other values were worked out the same way, in double precision; the plugins compute in
 * float, so they are compared within 1e-6.
 */
#include <math.h>

#include "helpers.h"

#define NW    3
#define STEPS 3
#define TOL   1e-6f

static const float w_start[NW] = { 1.0f, -2.0f, 0.5f };
static const float grads[STEPS][NW] = {
    { 0.5f, -1.0f, 2.0f },
    { 0.25f, 0.5f, -1.0f },
    { -0.5f, 0.0f, 1.0f },
};

typedef struct adam_case {
    const char *name;      /* "adam" or "adamw" */
    double beta1, beta2, eps;
    float weight_decay;    /* the step's, as the host passes it */
    float want[STEPS][NW]; /* w after each step */
    float want_m[NW], want_v[NW]; /* the state after the last step */
} adam_case;

static void adam_load(test_optimizer *o, const char *name, double beta1, double beta2, double eps)
{
    test_optimizer_load(o, name);
    test_arg(o->desc, o->args, "beta1")->num = beta1;
    test_arg(o->desc, o->args, "beta2")->num = beta2;
    test_arg(o->desc, o->args, "eps")->num = eps;
}

static void adam_open(test_optimizer *o, const char *name, double beta1, double beta2, double eps)
{
    adam_load(o, name, beta1, beta2, eps);
    if (o->desc->optim.create(&o->self, &o->ctx, o->args, &o->state_per_param) != 0)
        fail_msg("%s create: %s", name, o->ctx.err);
    assert_int_equal(o->state_per_param, 2);
}

static int step(test_optimizer *o, const float *g, float *w, float *state, size_t n, float lr, float wd, int64_t t)
{
    return o->desc->optim.step[RX_CPU](o->self, &o->ctx, g, w, state, n,
                                       (rx_step){ .lr = lr, .weight_decay = wd, .t = t });
}

static void expect_near(const char *what, const float *got, const float *want, int first, int count, int t)
{
    for (int i = first; i < first + count; i++)
        if (!(fabsf(got[i] - want[i]) <= TOL)) fail_msg("step %d, %s[%d]: got %.9g, want %.9g", t, what, i, got[i], want[i]);
}

/* Three steps of the case, each one call on the whole vector. */
static void check_steps(const adam_case *c)
{
    test_optimizer o;
    adam_open(&o, c->name, c->beta1, c->beta2, c->eps);
    float w[NW], state[2 * NW] = { 0 }; /* (2, NW): m then v */
    memcpy(w, w_start, sizeof w);
    for (int t = 1; t <= STEPS; t++) {
        if (step(&o, grads[t - 1], w, state, NW, 0.1f, c->weight_decay, t) != 0) fail_msg("step %d: %s", t, o.ctx.err);
        expect_near("w", w, c->want[t - 1], 0, NW, t);
    }
    expect_near("m", state, c->want_m, 0, NW, STEPS);
    expect_near("v", state + NW, c->want_v, 0, NW, STEPS);
    test_optimizer_close(&o);
}

static const adam_case adam_defaults = { "adam", 0.9, 0.999, 1e-8, 0,
    .want = { { 0.9f, -1.9f, 0.4f }, { 0.80678204f, -1.8733663f, 0.373366297f },
              { 0.795703734f, -1.85277837f, 0.328475967f } },
    .want_m = { 0.013f, -0.036f, 0.172f }, .want_v = { 0.00056193775f, 0.001247751f, 0.005991004f } };

/* L2: step 1 of the first parameter: g = 0.5 + 0.1 * 1 = 0.6; the first step is still lr in size. */
static const adam_case adam_decay = { "adam", 0.9, 0.999, 1e-8, 0.1f,
    .want = { { 0.9f, -1.9f, 0.4f }, { 0.805009766f, -1.85374726f, 0.370895146f },
              { 0.775511505f, -1.80892934f, 0.323817007f } },
    .want_m = { 0.0372500977f, -0.0878374727f, 0.183358951f },
    .want_v = { 0.000650744191f, 0.00156748913f, 0.00619033226f } };

/* Decoupled: step 1 of the first parameter: w = 1 * (1 - 0.1 * 0.1) = 0.99, then 0.99 - 0.1. The
 * moments see the raw gradients, so they are adam_defaults' own. */
static const adam_case adamw_decay = { "adamw", 0.9, 0.999, 1e-8, 0.1f,
    .want = { { 0.89f, -1.88f, 0.395f }, { 0.78788204f, -1.8345663f, 0.364416297f },
              { 0.768924913f, -1.7956327f, 0.315881804f } },
    .want_m = { 0.013f, -0.036f, 0.172f }, .want_v = { 0.00056193775f, 0.001247751f, 0.005991004f } };

/* Other betas and a large eps, so that each shows: step 1 of the first parameter:
 * m = 0.2 * 0.5 = 0.1, v = 0.4 * 0.25 = 0.1; w = 1 - 0.1 / 0.2 * 0.1 / (sqrt(0.1) / sqrt(0.4) + 0.1)
 * = 1 - 0.05 / 0.6 = 0.916666667. */
static const adam_case adam_other = { "adam", 0.8, 0.6, 0.1, 0,
    .want = { { 0.916666667f, -1.90909091f, 0.404761905f }, { 0.838913805f, -1.88898319f, 0.383363355f },
              { 0.837392695f, -1.87286119f, 0.33827955f } },
    .want_m = { 0.004f, -0.048f, 0.296f }, .want_v = { 0.151f, 0.204f, 1.216f } };

static const adam_case adam_other_decay = { "adam", 0.8, 0.6, 0.1, 0.5f,
    .want = { { 0.909090909f, -1.9047619f, 0.404255319f }, { 0.818999783f, -1.8218913f, 0.369790063f },
              { 0.752198813f, -1.73505561f, 0.313903749f } },
    .want_m = { 0.222627251f, -0.510570082f, 0.397319432f },
    .want_v = { 0.266408339f, 0.957044437f, 1.44337456f } };

static const adam_case adamw_other_decay = { "adamw", 0.8, 0.6, 0.1, 0.5f,
    .want = { { 0.866666667f, -1.80909091f, 0.379761905f }, { 0.745580471f, -1.69852864f, 0.33937526f },
              { 0.706780338f, -1.59748021f, 0.277322692f } },
    .want_m = { 0.004f, -0.048f, 0.296f }, .want_v = { 0.151f, 0.204f, 1.216f } };

static void test_adam_defaults(void **state) { check_steps(&adam_defaults); }
static void test_adam_weight_decay(void **state) { check_steps(&adam_decay); }
static void test_adamw_weight_decay(void **state) { check_steps(&adamw_decay); }
static void test_adam_other_betas_and_eps(void **state) { check_steps(&adam_other); }
static void test_adam_other_with_decay(void **state) { check_steps(&adam_other_decay); }
static void test_adamw_other_with_decay(void **state) { check_steps(&adamw_other_decay); }

/* v = U(-scale, scale), drawn from the test's own stream. */
static void fill_uniform(float *v, size_t n, rx_rng *rng, float scale)
{
    for (size_t i = 0; i < n; i++) v[i] = scale * (2.0f * rx_rng_uniform(rng) - 1.0f);
}

/* Without weight decay adamw is adam, to the bit (adamw's shrink is then a product by 1): the
 * hand-worked case, then five steps on a random vector. */
static void test_adamw_without_decay_is_adam(void **state)
{
    adam_case c = adam_defaults;
    c.name = "adamw";
    check_steps(&c);

    enum { N = 1001, T = 5 };
    test_optimizer a, aw;
    adam_open(&a, "adam", 0.9, 0.999, 1e-8);
    adam_open(&aw, "adamw", 0.9, 0.999, 1e-8);
    float *w1 = malloc(N * sizeof(float)), *w2 = malloc(N * sizeof(float)), *g = malloc(N * sizeof(float));
    float *s1 = calloc(2 * N, sizeof(float)), *s2 = calloc(2 * N, sizeof(float));
    assert_true(w1 && w2 && g && s1 && s2);
    rx_rng rng = rx_rng_stream(11, 0);
    fill_uniform(w1, N, &rng, 1.0f);
    memcpy(w2, w1, N * sizeof(float));
    for (int t = 1; t <= T; t++) {
        fill_uniform(g, N, &rng, 0.1f);
        assert_int_equal(step(&a, g, w1, s1, N, 1e-3f, 0, t), 0);
        assert_int_equal(step(&aw, g, w2, s2, N, 1e-3f, 0, t), 0);
    }
    assert_memory_equal(w1, w2, N * sizeof(float));
    assert_memory_equal(s1, s2, 2 * N * sizeof(float));
    free(w1);
    free(w2);
    free(g);
    free(s1);
    free(s2);
    test_optimizer_close(&a);
    test_optimizer_close(&aw);
}

/* Bias correction makes the first step lr * sign(g) in size (while |g| >> eps), whatever the
 * betas and the gradient's scale; a zero gradient moves nothing (0 / (0 + eps)). */
static void test_first_step_is_lr_in_size(void **state)
{
    static const double betas[3][2] = { { 0.9, 0.999 }, { 0.5, 0.5 }, { 0, 0 } };
    static const char *const names[2] = { "adam", "adamw" };
    const float g[5] = { 1e-3f, -1e3f, 0.5f, -2.0f, 0.0f };
    for (int b = 0; b < 3; b++)
        for (int p = 0; p < 2; p++) {
            test_optimizer o;
            adam_open(&o, names[p], betas[b][0], betas[b][1], 1e-8);
            float w[5] = { 1, 1, 1, 1, 1 }, st[10] = { 0 };
            assert_int_equal(step(&o, g, w, st, 5, 0.01f, 0, 1), 0);
            const float want[5] = { 0.99f, 1.01f, 0.99f, 1.01f, 1.0f };
            for (int i = 0; i < 5; i++)
                if (!(fabsf(w[i] - want[i]) <= 1e-6f))
                    fail_msg("%s, betas %g %g: w[%d] after one step with g %g is %.9g, want %.9g", names[p], betas[b][0],
                             betas[b][1], i, g[i], w[i], want[i]);
            test_optimizer_close(&o);
        }
}

/* t == 1 starts the moments from 0, whatever the state holds (as a new torch optimizer would);
 * a later t continues from the state, so a resumed run picks up where it was. */
static void test_first_step_starts_moments(void **state)
{
    test_optimizer o;
    adam_open(&o, "adam", 0.9, 0.999, 1e-8);
    float w[1] = { 1 }, g[1] = { 0.5f }, st[2] = { 123, 456 };
    assert_int_equal(step(&o, g, w, st, 1, 0.1f, 0, 1), 0);
    assert_float_equal(st[0], 0.05f, 1e-9f);     /* m = 0.1 * 0.5 */
    assert_float_equal(st[1], 0.00025f, 1e-11f); /* v = 0.001 * 0.25 */
    assert_float_equal(w[0], 0.9f, 1e-7f);
    /* step 2 from the state m = 0.2, v = 0.04: m = 0.18 + 0.05 = 0.23, v = 0.03996 + 0.00025 */
    st[0] = 0.2f;
    st[1] = 0.04f;
    w[0] = 1;
    assert_int_equal(step(&o, g, w, st, 1, 0.1f, 0, 2), 0);
    assert_float_equal(st[0], 0.23f, 1e-8f);
    assert_float_equal(st[1], 0.04021f, 1e-8f);
    const double want = 1 - 0.1 / 0.19 * 0.23 / (sqrt(0.04021) / sqrt(0.001999) + 1e-8); /* 0.94605 */
    assert_float_equal(w[0], want, 1e-6);
    test_optimizer_close(&o);
}

/* A step as the host makes it with groups: one call per group, each on its own slice of w and g
 * and its own state (2 blocks of the group's length). Group 0 holds parameter 0 with weight
 * decay wd[0]; group 1 parameters 1 and 2 with wd[1]. want_of[i]: the case whose column i
 * parameter i must follow. */
static void check_groups(const char *name, const float wd[2], const adam_case *const want_of[NW])
{
    test_optimizer o;
    adam_open(&o, name, 0.9, 0.999, 1e-8);
    const int first[2] = { 0, 1 }, count[2] = { 1, 2 };
    float w[NW], state0[2 * 1] = { 0 }, state1[2 * 2] = { 0 };
    float *const states[2] = { state0, state1 };
    memcpy(w, w_start, sizeof w);
    for (int t = 1; t <= STEPS; t++) {
        for (int k = 0; k < 2; k++)
            if (step(&o, grads[t - 1] + first[k], w + first[k], states[k], (size_t)count[k], 0.1f, wd[k], t) != 0)
                fail_msg("step %d, group %d: %s", t, k, o.ctx.err);
        for (int i = 0; i < NW; i++) expect_near("w", w, want_of[i]->want[t - 1], i, 1, t);
    }
    /* each group's m then v, gathered back into the whole vector's order */
    const float m[NW] = { state0[0], state1[0], state1[1] }, v[NW] = { state0[1], state1[2], state1[3] };
    for (int i = 0; i < NW; i++) {
        expect_near("m", m, want_of[i]->want_m, i, 1, STEPS);
        expect_near("v", v, want_of[i]->want_v, i, 1, STEPS);
    }
    test_optimizer_close(&o);
}

static void test_groups_by_hand(void **state)
{
    const float same[2] = { 0.1f, 0.1f }, mixed[2] = { 0.1f, 0 };
    check_groups("adam", same, (const adam_case *const[NW]){ &adam_decay, &adam_decay, &adam_decay });
    check_groups("adamw", same, (const adam_case *const[NW]){ &adamw_decay, &adamw_decay, &adamw_decay });
    check_groups("adam", mixed, (const adam_case *const[NW]){ &adam_decay, &adam_defaults, &adam_defaults });
    check_groups("adamw", mixed, (const adam_case *const[NW]){ &adamw_decay, &adam_defaults, &adam_defaults });
}

/* Two calls on the halves of a random vector, each with its own state slice (m then v of its
 * half), give the bits of one call on the whole; so does the whole split across threads. */
static void check_slices_and_threads(const char *name, float wd)
{
    enum { N = 70001, HALF = 33331, T = 4 }; /* long enough for the threaded loop */
    test_optimizer o;
    adam_open(&o, name, 0.9, 0.999, 1e-8);
    float *g = malloc(N * sizeof(float)), *w_one = malloc(N * sizeof(float)), *w_two = malloc(N * sizeof(float));
    float *w_par = malloc(N * sizeof(float));
    float *s_one = calloc(2 * N, sizeof(float)), *s_par = calloc(2 * N, sizeof(float));
    float *s_a = calloc(2 * HALF, sizeof(float)), *s_b = calloc(2 * (N - HALF), sizeof(float));
    assert_true(g && w_one && w_two && w_par && s_one && s_par && s_a && s_b);
    rx_rng rng = rx_rng_stream(5, 1);
    fill_uniform(w_one, N, &rng, 1.0f);
    memcpy(w_two, w_one, N * sizeof(float));
    memcpy(w_par, w_one, N * sizeof(float));
    for (int t = 1; t <= T; t++) {
        fill_uniform(g, N, &rng, 0.1f);
        o.ctx.threads = 1;
        assert_int_equal(step(&o, g, w_one, s_one, N, 1e-2f, wd, t), 0);
        assert_int_equal(step(&o, g, w_two, s_a, HALF, 1e-2f, wd, t), 0);
        assert_int_equal(step(&o, g + HALF, w_two + HALF, s_b, N - HALF, 1e-2f, wd, t), 0);
        o.ctx.threads = 4;
        assert_int_equal(step(&o, g, w_par, s_par, N, 1e-2f, wd, t), 0);
    }
    assert_memory_equal(w_two, w_one, N * sizeof(float));
    assert_memory_equal(s_a, s_one, HALF * sizeof(float));                                   /* m */
    assert_memory_equal(s_b, s_one + HALF, (N - HALF) * sizeof(float));
    assert_memory_equal(s_a + HALF, s_one + N, HALF * sizeof(float));                        /* v */
    assert_memory_equal(s_b + (N - HALF), s_one + N + HALF, (N - HALF) * sizeof(float));
    assert_memory_equal(w_par, w_one, N * sizeof(float));
    assert_memory_equal(s_par, s_one, 2 * N * sizeof(float));
    free(g);
    free(w_one);
    free(w_two);
    free(w_par);
    free(s_one);
    free(s_par);
    free(s_a);
    free(s_b);
    test_optimizer_close(&o);
}

static void test_slices_and_threads(void **state)
{
    check_slices_and_threads("adam", 0);
    check_slices_and_threads("adam", 0.01f);
    check_slices_and_threads("adamw", 0.01f);
}

static void expect_refused(const char *name, double beta1, double beta2, double eps, const char *want)
{
    test_optimizer o;
    adam_load(&o, name, beta1, beta2, eps);
    o.self = (void *)&o; /* must be cleared */
    assert_int_equal(o.desc->optim.create(&o.self, &o.ctx, o.args, &o.state_per_param), -1);
    assert_null(o.self);
    if (!strstr(o.ctx.err, want)) fail_msg("%s: error '%s' does not say '%s'", name, o.ctx.err, want);
    plugin_unload(&o.pl);
}

/* torch.optim.Adam's checks: 0 <= beta < 1 and eps >= 0; NaN is refused as well. */
static void test_refuses_invalid_options(void **state)
{
    static const char *const names[2] = { "adam", "adamw" };
    for (int p = 0; p < 2; p++) {
        const char *n = names[p];
        expect_refused(n, 1, 0.999, 1e-8, "beta1 must be in [0, 1), got 1");
        expect_refused(n, -0.1, 0.999, 1e-8, "beta1 must be in [0, 1), got -0.1");
        expect_refused(n, NAN, 0.999, 1e-8, "beta1 must be in [0, 1), got nan");
        expect_refused(n, 0.9, 1.5, 1e-8, "beta2 must be in [0, 1), got 1.5");
        expect_refused(n, 0.9, -1e-3, 1e-8, "beta2 must be in [0, 1), got -0.001");
        expect_refused(n, 0.9, 0.999, -1e-8, "eps must be >= 0, got -1e-08");
        expect_refused(n, 0.9, 0.999, INFINITY, "eps must be >= 0, got inf");
        expect_refused(n, 0.9, 0.999, NAN, "eps must be >= 0, got nan");
        /* the edges PyTorch accepts; betas so close to 1 that they round to 1 in float still
         * give finite steps, the bias corrections being worked out in double */
        test_optimizer o;
        adam_open(&o, n, 0, 0, 0);
        test_optimizer_close(&o);
        adam_open(&o, n, 0.99999999, 0.999999999, 1e-8);
        float w[1] = { 1 }, g[1] = { 0.5f }, st[2] = { 0 };
        for (int t = 1; t <= 3; t++) assert_int_equal(step(&o, g, w, st, 1, 0.1f, 0, t), 0);
        if (!isfinite(w[0]) || !(w[0] < 1)) fail_msg("%s with betas near 1: w = %g after three steps", n, w[0]);
        test_optimizer_close(&o);
    }
}

static void test_refuses_invalid_steps(void **state)
{
    static const char *const names[2] = { "adam", "adamw" };
    for (int p = 0; p < 2; p++) {
        test_optimizer o;
        adam_open(&o, names[p], 0.9, 0.999, 1e-8);
        float w[1] = { 1 }, g[1] = { 1 }, st[2] = { 0 };
        assert_int_equal(step(&o, g, w, st, 1, 0.1f, 0, 0), -1);
        assert_non_null(strstr(o.ctx.err, "t must be >= 1, got 0"));
        assert_int_equal(step(&o, g, w, NULL, 1, 0.1f, 0, 1), -1);
        assert_non_null(strstr(o.ctx.err, "needs its state buffer (2 floats per parameter), got NULL"));
        assert_int_equal(step(&o, g, w, st, 1, -1, 0, 1), -1);
        assert_non_null(strstr(o.ctx.err, "learning rate must be >= 0, got -1"));
        assert_int_equal(step(&o, g, w, st, 1, INFINITY, 0, 1), -1);
        assert_non_null(strstr(o.ctx.err, "learning rate must be >= 0, got inf"));
        assert_int_equal(step(&o, g, w, st, 1, 0.1f, -1e-4f, 1), -1);
        assert_non_null(strstr(o.ctx.err, "weight decay must be >= 0, got -0.0001"));
        assert_int_equal(step(&o, g, w, st, 1, 0.1f, NAN, 1), -1);
        assert_non_null(strstr(o.ctx.err, "weight decay must be >= 0, got nan"));
        assert_float_equal(w[0], 1, 0); /* untouched by the refused steps */
        assert_float_equal(st[0], 0, 0);
        assert_float_equal(st[1], 0, 0);
        assert_int_equal(step(&o, g, w, st, 0, 0.1f, 0, 1), 0); /* an empty group is no error */
        o.desc->optim.destroy(NULL);                             /* NULL-safe */
        test_optimizer_close(&o);
    }
}

/* The descriptors: PyTorch's defaults, learning rate and weight decay left to the host, and a
 * CUDA path in a CUDA build. */
static void test_descriptors(void **state)
{
    static const char *const names[2] = { "adam", "adamw" };
    for (int p = 0; p < 2; p++) {
        plugin pl;
        const rx_plugin *d = test_load(&pl, RX_OPTIM, names[p]);
        assert_string_equal(d->name, names[p]);
        assert_int_equal(d->kind, RX_OPTIM);
        rx_value args[TEST_MAX_ARGS];
        test_default_args(d, args);
        assert_float_equal(test_arg(d, args, "beta1")->num, 0.9, 0);
        assert_float_equal(test_arg(d, args, "beta2")->num, 0.999, 0);
        assert_float_equal(test_arg(d, args, "eps")->num, 1e-8, 0);
        assert_int_equal(plugin_param_index(d, "weight_decay"), -1);
        assert_int_equal(plugin_param_index(d, "lr"), -1);
        assert_non_null(d->optim.step[RX_CPU]);
#ifdef RX_WITH_CUDA
        assert_non_null(d->optim.step[RX_CUDA]);
#endif
        plugin_unload(&pl);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_descriptors),
        cmocka_unit_test(test_adam_defaults),
        cmocka_unit_test(test_adam_weight_decay),
        cmocka_unit_test(test_adamw_weight_decay),
        cmocka_unit_test(test_adam_other_betas_and_eps),
        cmocka_unit_test(test_adam_other_with_decay),
        cmocka_unit_test(test_adamw_other_with_decay),
        cmocka_unit_test(test_adamw_without_decay_is_adam),
        cmocka_unit_test(test_first_step_is_lr_in_size),
        cmocka_unit_test(test_first_step_starts_moments),
        cmocka_unit_test(test_groups_by_hand),
        cmocka_unit_test(test_slices_and_threads),
        cmocka_unit_test(test_refuses_invalid_options),
        cmocka_unit_test(test_refuses_invalid_steps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
