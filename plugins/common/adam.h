/* adam.h: the Adam family, shared by two plugins: adam (plugins/optim/adam.c: torch.optim.Adam)
 * and adamw (plugins/optim/adamw.c: torch.optim.AdamW). They differ only in where weight decay
 * goes, a flag fixed at create; everything else is in plugins/common, once: adam.c (parameters,
 * create, the step's scalars, the CPU loop), adam.cu (the kernel and its launch) and
 * adam_update.h (the per-element arithmetic both devices run). Each plugin links its own copy.
 *
 * One step over a group's slice of n parameters, with t the global step (1 first):
 *
 *     adam:  g = g + wd * w                  adamw:  w = w * (1 - lr * wd)
 *     m = beta1 * m + (1 - beta1) * g                  (m, v start at 0: see adam_prepare)
 *     v = beta2 * v + (1 - beta2) * g * g
 *     w = w - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 *
 * The scalars that depend only on the step (the bias corrections) are worked out once per call,
 * on the host, in double, by adam_prepare (adam.c, compiled once by the C compiler for both
 * devices), and rounded to float once. The per-element arithmetic is
 * adam_update (adam_update.h), the one function both the CPU loop and the CUDA kernel run.
 *
 * State: 2 floats per parameter, as 2 blocks of n (the host's layout): exp_avg (m) at state[0,
 * n), exp_avg_sq (v) at state[n, 2n). Each call gets its group's own slice of w, g and state. */
#ifndef RX_COMMON_ADAM_H
#define RX_COMMON_ADAM_H

#include <stdbool.h>
#include <stddef.h>

#include "runexp.h"

/* The betas stay in double, as PyTorch's Python floats do: the bias corrections are worked out
 * from them in double, and 1 - beta is rounded to float once, not computed from a rounded beta. */
typedef struct adam {
    double beta1, beta2;
    float eps;
    bool decoupled; /* adamw: weight decay shrinks w instead of joining the gradient */
} adam;

/* What one step needs besides the vectors, worked out by adam_prepare. */
typedef struct adam_scalars {
    float wd;              /* adam: added to g as wd * w (0: skipped, as PyTorch does) */
    float shrink;          /* adamw: w *= shrink = 1 - lr * wd; 1 for adam */
    bool decoupled;
    bool fresh;            /* t == 1: the moments start from 0, whatever the state holds */
    float beta1, one_minus_beta1, beta2, one_minus_beta2, eps;
    float step_size;       /* lr / (1 - beta1^t) */
    float bc2_sqrt;        /* sqrt(1 - beta2^t) */
} adam_scalars;

enum { ADAM_STATE_PER_PARAM = 2 };

#ifdef __cplusplus
extern "C" {
#endif
/* The parameters of both plugins: beta1, beta2, eps. Learning rate and weight decay are the
 * host's (per step and per group). */
extern const rx_param adam_params[];

/* create for both plugins; decoupled picks adamw's weight decay. */
int adam_create_as(void **self, rx_ctx *ctx, const rx_value *args, int *state_per_param, bool decoupled);
void adam_destroy(void *self);

/* The checks of a step, the same on both devices and in the same words, then the step's
 * scalars. t == 1 starts the moments afresh, as a new torch optimizer would (and as sgd
 * restarts its momentum buffer); a later t continues from the state, so a resumed run picks up
 * where it was. */
int adam_prepare(const adam *o, rx_ctx *ctx, const float *state, rx_step s, adam_scalars *k);

/* g, w: (n); state: (2, n), m then v. The optim.step of both plugins on the CPU. */
int adam_step_cpu(void *self, rx_ctx *ctx, const float *g, float *w, float *state, size_t n, rx_step s);

/* adam.cu: the step on the GPU, queued on ctx->cuda_stream (nothing waits for it); `what` names
 * it in a launch failure ("adam step"). */
int adam_step_queue(void *self, rx_ctx *ctx, const float *g, float *w, float *state, size_t n, rx_step s,
                    const char *what);
#ifdef __cplusplus
}
#endif

#endif
