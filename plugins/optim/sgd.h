/* sgd.h: what sgd.c (the CPU path, create and the descriptor) and sgd.cu (the CUDA path) share:
 * the hyperparameters fixed at create, the checks of a step, the CPU update (which muon.c calls
 * too) and the CUDA entry point. */
#ifndef RX_OPTIM_SGD_H
#define RX_OPTIM_SGD_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>

#include "runexp.h"

typedef struct sgd {
    float momentum;
    float keep;     /* 1 - dampening: the share of the new gradient that enters the buffer */
    bool nesterov;
} sgd;

/* What both devices refuse before touching anything, in the same words. The learning rate and
 * weight decay come from the host with each step (weight decay per parameter group). */
static inline int sgd_check_step(const sgd *o, rx_ctx *ctx, const float *buf, rx_step s)
{
    if (!(s.lr >= 0 && isfinite(s.lr))) return rx_fail(ctx, "learning rate must be >= 0, got %g", (double)s.lr);
    if (!(s.weight_decay >= 0 && isfinite(s.weight_decay)))
        return rx_fail(ctx, "weight decay must be >= 0, got %g", (double)s.weight_decay);
    if (s.t < 1) return rx_fail(ctx, "step t must be >= 1, got %lld", (long long)s.t);
    if (o->momentum > 0 && !buf) return rx_fail(ctx, "momentum needs its state buffer, got NULL");
    return 0;
}

#ifndef __CUDACC__
#include "threads.h"

/* The step on the CPU, after sgd_check_step: g, w, buf (n); buf is NULL without momentum. The
 * branches do not depend on i, so they cost nothing next to the memory traffic. Elementwise, so
 * the vector is split across ctx->threads when it is long enough to pay for a parallel region,
 * with the same result as one thread. Also muon's step for the tensors it does not orthogonalize. */
static inline void sgd_update_cpu(const sgd *o, rx_ctx *ctx, const float *g, float *w, float *buf, size_t n,
                                  rx_step s)
{
    const bool momentum = o->momentum > 0, first = s.t == 1, nesterov = o->nesterov;
    const float lr = s.lr, wd = s.weight_decay, mu = o->momentum, keep = o->keep;
    const int threads = threads_for(ctx, (int64_t)n, THREADS_MIN_WORK);
    (void)threads;  /* read only by the pragma, which a build without OpenMP ignores */
#pragma omp parallel for simd num_threads(threads) schedule(static)
    for (size_t i = 0; i < n; i++) {
        float d = wd != 0 ? g[i] + wd * w[i] : g[i];
        if (momentum) {
            buf[i] = first ? d : mu * buf[i] + keep * d;
            d = nesterov ? d + mu * buf[i] : buf[i];
        }
        w[i] -= lr * d;
    }
}
#endif

#ifdef __cplusplus
extern "C" {
#endif
/* sgd.cu: the same step on the GPU, queued on ctx->cuda_stream. */
int sgd_step_cuda(void *self, rx_ctx *ctx, const float *g, float *w, float *buf, size_t n, rx_step s);
#ifdef __cplusplus
}
#endif

#endif
