/* adam.c: the host side of the Adam family (adam.h), linked into both adam.so and adamw.so:
 * the parameters and their checks, create, the scalars of a step (for both devices) and the
 * CPU step loop. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "adam.h"
#include "adam_update.h"
#include "threads.h"

enum { ADAM_ARG_BETA1, ADAM_ARG_BETA2, ADAM_ARG_EPS };

/* Learning rate and weight decay are the host's (per step and per group), not parameters. */
const rx_param adam_params[] = {
    { .key = "beta1", .type = RX_NUM, .def = { .num = 0.9 }, .help = "decay of the gradient's running mean, in [0, 1)" },
    { .key = "beta2", .type = RX_NUM, .def = { .num = 0.999 },
      .help = "decay of the squared gradient's running mean, in [0, 1)" },
    { .key = "eps", .type = RX_NUM, .def = { .num = 1e-8 }, .help = "added to the denominator, >= 0" },
    { 0 },
};

void adam_destroy(void *self) { free(self); }

/* The checks torch.optim.Adam makes when it is built (NaN refused too). */
static int adam_check_args(rx_ctx *ctx, const rx_value *args)
{
    const double beta1 = args[ADAM_ARG_BETA1].num, beta2 = args[ADAM_ARG_BETA2].num, eps = args[ADAM_ARG_EPS].num;
    if (!(beta1 >= 0 && beta1 < 1)) return rx_fail(ctx, "beta1 must be in [0, 1), got %g", beta1);
    if (!(beta2 >= 0 && beta2 < 1)) return rx_fail(ctx, "beta2 must be in [0, 1), got %g", beta2);
    if (!(eps >= 0 && isfinite(eps))) return rx_fail(ctx, "eps must be >= 0, got %g", eps);
    return 0;
}

int adam_create_as(void **self, rx_ctx *ctx, const rx_value *args, int *state_per_param, bool decoupled)
{
    *self = NULL;
    if (adam_check_args(ctx, args) != 0) return -1;
    adam *o = malloc(sizeof *o);
    if (!o) return rx_fail(ctx, "out of memory");
    *o = (adam){
        .beta1 = args[ADAM_ARG_BETA1].num,
        .beta2 = args[ADAM_ARG_BETA2].num,
        .eps = (float)args[ADAM_ARG_EPS].num,
        .decoupled = decoupled,
    };
    *state_per_param = ADAM_STATE_PER_PARAM;
    *self = o;
    return 0;
}

/* Elementwise, so a long vector is split across ctx->threads with the same result as one thread. */
int adam_step_cpu(void *self, rx_ctx *ctx, const float *g, float *w, float *state, size_t n, rx_step s)
{
    adam_scalars k;
    if (adam_prepare(self, ctx, state, s, &k) != 0) return -1;
    float *m = state, *v = state + n; /* (n) each */
    const int threads = threads_for(ctx, (int64_t)n, THREADS_MIN_WORK);
    (void)threads;  /* read only by the pragma, which a build without OpenMP ignores */
#pragma omp parallel for simd num_threads(threads) schedule(static)
    for (size_t i = 0; i < n; i++) adam_update(&w[i], &m[i], &v[i], g[i], &k);
    return 0;
}

/* The scalars are worked out on the host, in double, for both devices (adam.h says why). */
int adam_prepare(const adam *o, rx_ctx *ctx, const float *state, rx_step s, adam_scalars *k)
{
    memset(k, 0, sizeof *k); /* a compiler that does not see rx_fail return -1 would warn of it unset */
    if (!(s.lr >= 0 && isfinite(s.lr))) return rx_fail(ctx, "learning rate must be >= 0, got %g", (double)s.lr);
    if (!(s.weight_decay >= 0 && isfinite(s.weight_decay)))
        return rx_fail(ctx, "weight decay must be >= 0, got %g", (double)s.weight_decay);
    if (s.t < 1) return rx_fail(ctx, "step t must be >= 1, got %lld", (long long)s.t);
    if (!state) return rx_fail(ctx, "needs its state buffer (2 floats per parameter), got NULL");
    const double t = (double)s.t;
    k->decoupled = o->decoupled;
    k->wd = o->decoupled ? 0.0f : s.weight_decay;
    k->shrink = o->decoupled ? (float)(1.0 - (double)s.lr * (double)s.weight_decay) : 1.0f;
    k->fresh = s.t == 1;
    k->beta1 = (float)o->beta1;
    k->one_minus_beta1 = (float)(1.0 - o->beta1);
    k->beta2 = (float)o->beta2;
    k->one_minus_beta2 = (float)(1.0 - o->beta2);
    k->eps = o->eps;
    k->step_size = (float)((double)s.lr / (1.0 - pow(o->beta1, t)));
    k->bc2_sqrt = (float)sqrt(1.0 - pow(o->beta2, t));
    return 0;
}
