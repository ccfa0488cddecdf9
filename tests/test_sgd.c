/* test_sgd.c: the sgd optimizer against three steps worked out by hand, for each of its options,
 * following torch.optim.SGD: weight decay joins the gradient, the momentum buffer starts as the
 * first gradient, later ones enter it damped, Nesterov looks one momentum step ahead. Weight decay
 * is the host's, per group of parameters: it arrives with each step (rx_step.weight_decay), and
 * a step may be several calls, one per group, each on its own slice of w, g and the state.
 *
 * Three parameters start at w = (1, -2, 0.5) and see the gradients g1, g2, g3 below with lr 0.1.
 * For example, with momentum 0.9, the first parameter:
 *   step 1: buf = 0.5                     w = 1    - 0.1 * 0.5  = 0.95
 *   step 2: buf = 0.9 * 0.5 + 0.25 = 0.7  w = 0.95 - 0.1 * 0.7  = 0.88
 *   step 3: buf = 0.9 * 0.7 - 0.5 = 0.13  w = 0.88 - 0.1 * 0.13 = 0.867
 */
#include <math.h>

#include "helpers.h"

#define NW    3
#define STEPS 3

static const float w_start[NW] = { 1.0f, -2.0f, 0.5f };
static const float grads[STEPS][NW] = {
    { 0.5f, -1.0f, 2.0f },
    { 0.25f, 0.5f, -1.0f },
    { -0.5f, 0.0f, 1.0f },
};

typedef struct sgd_case {
    double momentum, weight_decay, dampening;
    bool nesterov;
    float want[STEPS][NW]; /* w after each step */
} sgd_case;

static void sgd_load(test_optimizer *o, double momentum, double dampening, bool nesterov)
{
    test_optimizer_load(o, "sgd");
    test_arg(o->desc, o->args, "momentum")->num = momentum;
    test_arg(o->desc, o->args, "dampening")->num = dampening;
    test_arg(o->desc, o->args, "nesterov")->b = nesterov;
}

static void sgd_open(test_optimizer *o, double momentum, double dampening, bool nesterov)
{
    sgd_load(o, momentum, dampening, nesterov);
    if (o->desc->optim.create(&o->self, &o->ctx, o->args, &o->state_per_param) != 0) fail_msg("create: %s", o->ctx.err);
    assert_int_equal(o->state_per_param, momentum > 0 ? 1 : 0);
}

static void expect_weights(const float *w, const float *want, int first, int count, int t)
{
    for (int i = first; i < first + count; i++)
        if (fabsf(w[i] - want[i]) > 1e-6f) fail_msg("step %d, w[%d]: got %.9g, want %.9g", t, i, w[i], want[i]);
}

/* Three steps of the case, each one call on the whole vector. */
static void check_steps(const sgd_case *c)
{
    test_optimizer o;
    sgd_open(&o, c->momentum, c->dampening, c->nesterov);
    float w[NW], state[NW] = { 0 };
    memcpy(w, w_start, sizeof w);
    for (int t = 1; t <= STEPS; t++) {
        rx_step s = { .lr = 0.1f, .weight_decay = (float)c->weight_decay, .t = t };
        if (o.desc->optim.step[RX_CPU](o.self, &o.ctx, grads[t - 1], w, o.state_per_param ? state : NULL, NW, s) != 0)
            fail_msg("step %d: %s", t, o.ctx.err);
        expect_weights(w, c->want[t - 1], 0, NW, t);
    }
    test_optimizer_close(&o);
}

static const sgd_case plain_case = {
    .want = { { 0.95f, -1.9f, 0.3f }, { 0.925f, -1.95f, 0.4f }, { 0.975f, -1.95f, 0.3f } } };

static void test_plain(void **state) { check_steps(&plain_case); }

static void test_momentum(void **state)
{
    check_steps(&(sgd_case){ .momentum = 0.9,
        .want = { { 0.95f, -1.9f, 0.3f }, { 0.88f, -1.86f, 0.22f }, { 0.867f, -1.824f, 0.048f } } });
}

/* Step 1 of the first parameter: buf = 0.5, g = 0.5 + 0.9 * 0.5 = 0.95, w = 1 - 0.095 = 0.905. */
static void test_nesterov(void **state)
{
    check_steps(&(sgd_case){ .momentum = 0.9, .nesterov = true,
        .want = { { 0.905f, -1.81f, 0.12f }, { 0.817f, -1.824f, 0.148f }, { 0.8553f, -1.7916f, -0.1068f } } });
}

/* Step 1 of the first parameter: g = 0.5 + 0.1 * 1 = 0.6, w = 1 - 0.06 = 0.94. */
static const sgd_case weight_decay_case = { .weight_decay = 0.1,
    .want = { { 0.94f, -1.88f, 0.295f }, { 0.9056f, -1.9112f, 0.39205f }, { 0.946544f, -1.892088f, 0.2881295f } } };

static void test_weight_decay(void **state) { check_steps(&weight_decay_case); }

/* The first step is undamped (buf = g); step 2 of the first parameter:
 * buf = 0.9 * 0.5 + 0.5 * 0.25 = 0.575, w = 0.95 - 0.0575 = 0.8925. */
static void test_dampening(void **state)
{
    check_steps(&(sgd_case){ .momentum = 0.9, .dampening = 0.5,
        .want = { { 0.95f, -1.9f, 0.3f }, { 0.8925f, -1.835f, 0.17f }, { 0.86575f, -1.7765f, 0.003f } } });
}

static const sgd_case everything_case = { .momentum = 0.5, .weight_decay = 0.1, .dampening = 0.25,
    .want = { { 0.94f, -1.88f, 0.295f }, { 0.8842f, -1.8434f, 0.2652875f }, { 0.8871685f, -1.8112745f, 0.1734415938f } } };

static void test_everything_at_once(void **state) { check_steps(&everything_case); }

/* A step as the host makes it with groups: one call per group, each on its slice of w, g and the
 * state. Group 0 holds parameter 0, group 1 parameters 1 and 2; wd[k] is group k's weight decay.
 * want_of[i]: the case whose column i parameter i must follow. */
static void check_groups(double momentum, double dampening, const float wd[2], const sgd_case *const want_of[NW])
{
    test_optimizer o;
    sgd_open(&o, momentum, dampening, false);
    const int first[2] = { 0, 1 }, count[2] = { 1, 2 };
    float w[NW], state[NW] = { 0 };
    memcpy(w, w_start, sizeof w);
    for (int t = 1; t <= STEPS; t++) {
        for (int k = 0; k < 2; k++) {
            rx_step s = { .lr = 0.1f, .weight_decay = wd[k], .t = t };
            if (o.desc->optim.step[RX_CPU](o.self, &o.ctx, grads[t - 1] + first[k], w + first[k],
                                           o.state_per_param ? state + first[k] : NULL, (size_t)count[k], s) != 0)
                fail_msg("step %d, group %d: %s", t, k, o.ctx.err);
        }
        for (int i = 0; i < NW; i++) expect_weights(w, want_of[i]->want[t - 1], i, 1, t);
    }
    test_optimizer_close(&o);
}

/* Two calls on slices, each with its own slice of the momentum buffer, step as one call on the
 * whole vector does. */
static void test_groups_same_as_one_call(void **state)
{
    const float wd[2] = { 0.1f, 0.1f };
    check_groups(0.5, 0.25, wd, (const sgd_case *const[NW]){ &everything_case, &everything_case, &everything_case });
}

/* Each group's own weight decay: group 0 decays, group 1 does not. */
static void test_groups_own_weight_decay(void **state)
{
    const float wd[2] = { 0.1f, 0.0f };
    check_groups(0, 0, wd, (const sgd_case *const[NW]){ &weight_decay_case, &plain_case, &plain_case });
}

/* t == 1 starts the buffer afresh from the gradient, whatever the state holds (as a new torch
 * optimizer would); a later t continues from the state, so a resumed run picks up where it was. */
static void test_first_step_starts_buffer(void **state)
{
    test_optimizer o;
    sgd_open(&o, 0.9, 0, false);
    float w[1] = { 1 }, g[1] = { 0.5f }, buf[1] = { 123 };
    assert_int_equal(o.desc->optim.step[RX_CPU](o.self, &o.ctx, g, w, buf, 1, (rx_step){ .lr = 0.1f, .t = 1 }), 0);
    assert_float_equal(buf[0], 0.5f, 1e-7f);
    assert_float_equal(w[0], 0.95f, 1e-7f);
    assert_int_equal(o.desc->optim.step[RX_CPU](o.self, &o.ctx, g, w, buf, 1, (rx_step){ .lr = 0.1f, .t = 7 }), 0);
    assert_float_equal(buf[0], 0.95f, 1e-7f);
    assert_float_equal(w[0], 0.855f, 1e-7f);
    test_optimizer_close(&o);
}

static void expect_refused(double momentum, double dampening, bool nesterov, const char *want)
{
    test_optimizer o;
    sgd_load(&o, momentum, dampening, nesterov);
    o.self = (void *)&o; /* must be cleared */
    assert_int_equal(o.desc->optim.create(&o.self, &o.ctx, o.args, &o.state_per_param), -1);
    assert_null(o.self);
    if (!strstr(o.ctx.err, want)) fail_msg("error '%s' does not say '%s'", o.ctx.err, want);
    test_optimizer_close(&o);
}

static void test_refuses_invalid_options(void **state)
{
    expect_refused(0, 0, true, "nesterov requires momentum > 0 and dampening 0");
    expect_refused(0.9, 0.1, true, "nesterov requires momentum > 0 and dampening 0");
    expect_refused(-0.1, 0, false, "momentum must be >= 0, got -0.1");
    expect_refused(NAN, 0, false, "momentum must be >= 0, got nan");
    expect_refused(0, INFINITY, false, "dampening must be finite, got inf");
}

/* weight_decay is no longer one of sgd's parameters: the host owns it, per group. */
static void test_weight_decay_is_not_a_parameter(void **state)
{
    test_optimizer o;
    sgd_load(&o, 0, 0, false);
    assert_int_equal(plugin_param_index(o.desc, "weight_decay"), -1);
    test_optimizer_close(&o);
}

static void test_refuses_invalid_steps(void **state)
{
    test_optimizer o;
    sgd_open(&o, 0.9, 0, false);
    float w[1] = { 1 }, g[1] = { 1 }, buf[1] = { 0 };
    assert_int_equal(o.desc->optim.step[RX_CPU](o.self, &o.ctx, g, w, buf, 1, (rx_step){ .lr = 0.1f, .t = 0 }), -1);
    assert_non_null(strstr(o.ctx.err, "t must be >= 1, got 0"));
    assert_int_equal(o.desc->optim.step[RX_CPU](o.self, &o.ctx, g, w, NULL, 1, (rx_step){ .lr = 0.1f, .t = 1 }), -1);
    assert_non_null(strstr(o.ctx.err, "state buffer"));
    assert_int_equal(o.desc->optim.step[RX_CPU](o.self, &o.ctx, g, w, buf, 1, (rx_step){ .lr = -1, .t = 1 }), -1);
    assert_non_null(strstr(o.ctx.err, "learning rate must be >= 0, got -1"));
    assert_int_equal(o.desc->optim.step[RX_CPU](o.self, &o.ctx, g, w, buf, 1,
                                                (rx_step){ .lr = 0.1f, .weight_decay = -1e-4f, .t = 1 }), -1);
    assert_non_null(strstr(o.ctx.err, "weight decay must be >= 0, got -0.0001"));
    assert_int_equal(o.desc->optim.step[RX_CPU](o.self, &o.ctx, g, w, buf, 1,
                                                (rx_step){ .lr = 0.1f, .weight_decay = NAN, .t = 1 }), -1);
    assert_non_null(strstr(o.ctx.err, "weight decay must be >= 0, got nan"));
    assert_float_equal(w[0], 1, 0); /* untouched by the refused steps */
    o.desc->optim.destroy(NULL);    /* NULL-safe */
    test_optimizer_close(&o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain),
        cmocka_unit_test(test_momentum),
        cmocka_unit_test(test_nesterov),
        cmocka_unit_test(test_weight_decay),
        cmocka_unit_test(test_dampening),
        cmocka_unit_test(test_everything_at_once),
        cmocka_unit_test(test_groups_same_as_one_call),
        cmocka_unit_test(test_groups_own_weight_decay),
        cmocka_unit_test(test_first_step_starts_buffer),
        cmocka_unit_test(test_refuses_invalid_options),
        cmocka_unit_test(test_weight_decay_is_not_a_parameter),
        cmocka_unit_test(test_refuses_invalid_steps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
