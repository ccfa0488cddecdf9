/* adam.h: the Adam family, shared by two plugins: adam (adam.c, adam.cu: torch.optim.Adam) and
 * adamw (adamw.c, adamw.cu: torch.optim.AdamW). They differ only in where weight decay goes, a
 * flag fixed at create; everything else is here, once. Each plugin is its own shared object and
 * cannot call into the other, so the shared code is static: each object gets its own copy.
 *
 * One step over a group's slice of n parameters, with t the global step (1 first):
 *
 *     adam:  g = g + wd * w                  adamw:  w = w * (1 - lr * wd)
 *     m = beta1 * m + (1 - beta1) * g                  (m, v start at 0: see adam_prepare)
 *     v = beta2 * v + (1 - beta2) * g * g
 *     w = w - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 *
 * The scalars that depend only on the step (the bias corrections) are worked out once per call,
 * on the host, in double, by adam_prepare, and rounded to float once (the host compilers of
 * both paths use the same libm; a compiler that fused 1 - lr * wd into an FMA would change the
 * double in its last bit, which float rounding hides). The per-element arithmetic is
 * adam_update, the one function both
 * the CPU loop (gcc) and the CUDA kernel (nvcc) run. Its operations go through ADAM_MUL and
 * friends, which nvcc turns into __fmul_rn and the like so that it fuses nothing into an FMA,
 * as the CPU build (ISO C: no contraction) fuses nothing: the two devices round step for step
 * alike (division and square root are correctly rounded on both), so they give the same bits.
 *
 * State: 2 floats per parameter, as 2 blocks of n (the host's layout): exp_avg (m) at state[0,
 * n), exp_avg_sq (v) at state[n, 2n). Each call gets its group's own slice of w, g and state.
 *
 * The CPU half (parameters, create, the OpenMP loop) is compiled only by the C compiler; the
 * CUDA half (the kernel and its launch) only by nvcc. */
#ifndef RX_OPTIM_ADAM_H
#define RX_OPTIM_ADAM_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

/* The checks of a step, the same on both devices and in the same words, then the step's
 * scalars. t == 1 starts the moments afresh, as a new torch optimizer would (and as sgd
 * restarts its momentum buffer); a later t continues from the state, so a resumed run picks up
 * where it was. */
static inline int adam_prepare(const adam *o, rx_ctx *ctx, const float *state, rx_step s, adam_scalars *k)
{
    memset(k, 0, sizeof *k); /* a compiler that does not see rx_fail return -1 would warn of it unset */
    if (!(s.lr >= 0 && isfinite(s.lr))) return rx_fail(ctx, "learning rate must be >= 0, got %g", (double)s.lr);
    if (!(s.weight_decay >= 0 && isfinite(s.weight_decay)))
        return rx_fail(ctx, "weight decay must be >= 0, got %g", (double)s.weight_decay);
    if (s.t < 1) return rx_fail(ctx, "step t must be >= 1, got %lld", (long long)s.t);
    if (!state) return rx_fail(ctx, "needs its state buffer (2 floats per parameter), got NULL");
    /* Field by field: nvcc compiles this too, and C++17 has no compound literals. */
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

/* Each operation rounded on its own, on both devices (see the top of the file). */
#ifdef __CUDACC__
#define ADAM_ELEMENTWISE static __device__ __forceinline__
#define ADAM_ADD(a, b)   __fadd_rn((a), (b))
#define ADAM_SUB(a, b)   __fsub_rn((a), (b))
#define ADAM_MUL(a, b)   __fmul_rn((a), (b))
#define ADAM_DIV(a, b)   __fdiv_rn((a), (b))
#define ADAM_SQRT(a)     __fsqrt_rn(a)
#else
#define ADAM_ELEMENTWISE static inline
#define ADAM_ADD(a, b)   ((a) + (b))
#define ADAM_SUB(a, b)   ((a) - (b))
#define ADAM_MUL(a, b)   ((a) * (b))
#define ADAM_DIV(a, b)   ((a) / (b))
#define ADAM_SQRT(a)     sqrtf(a)
#endif

/* One parameter's step: w, m, v updated in place from its gradient g. */
ADAM_ELEMENTWISE void adam_update(float *w, float *m, float *v, float g, const adam_scalars *k)
{
    float wi = *w;
    if (k->decoupled) wi = ADAM_MUL(wi, k->shrink);
    else if (k->wd != 0.0f) g = ADAM_ADD(g, ADAM_MUL(k->wd, wi));
    const float m0 = k->fresh ? 0.0f : *m, v0 = k->fresh ? 0.0f : *v;
    const float mi = ADAM_ADD(ADAM_MUL(k->beta1, m0), ADAM_MUL(k->one_minus_beta1, g));
    const float vi = ADAM_ADD(ADAM_MUL(k->beta2, v0), ADAM_MUL(k->one_minus_beta2, ADAM_MUL(g, g)));
    const float denom = ADAM_ADD(ADAM_DIV(ADAM_SQRT(vi), k->bc2_sqrt), k->eps);
    *m = mi;
    *v = vi;
    *w = ADAM_SUB(wi, ADAM_MUL(k->step_size, ADAM_DIV(mi, denom)));
}

#ifndef __CUDACC__
/* ---- The CPU half: parameters, create and the step loop (adam.c and adamw.c) ---- */

enum { ADAM_ARG_BETA1, ADAM_ARG_BETA2, ADAM_ARG_EPS };

/* Learning rate and weight decay are the host's (per step and per group), not parameters. */
static const rx_param adam_params[] = {
    { .key = "beta1", .type = RX_NUM, .def = { .num = 0.9 }, .help = "decay of the gradient's running mean, in [0, 1)" },
    { .key = "beta2", .type = RX_NUM, .def = { .num = 0.999 },
      .help = "decay of the squared gradient's running mean, in [0, 1)" },
    { .key = "eps", .type = RX_NUM, .def = { .num = 1e-8 }, .help = "added to the denominator, >= 0" },
    { 0 },
};

static void adam_destroy(void *self) { free(self); }

/* The checks torch.optim.Adam makes when it is built (NaN refused too). */
static int adam_check_args(rx_ctx *ctx, const rx_value *args)
{
    const double beta1 = args[ADAM_ARG_BETA1].num, beta2 = args[ADAM_ARG_BETA2].num, eps = args[ADAM_ARG_EPS].num;
    if (!(beta1 >= 0 && beta1 < 1)) return rx_fail(ctx, "beta1 must be in [0, 1), got %g", beta1);
    if (!(beta2 >= 0 && beta2 < 1)) return rx_fail(ctx, "beta2 must be in [0, 1), got %g", beta2);
    if (!(eps >= 0 && isfinite(eps))) return rx_fail(ctx, "eps must be >= 0, got %g", eps);
    return 0;
}

/* create for both plugins; decoupled picks adamw's weight decay. */
static int adam_create_as(void **self, rx_ctx *ctx, const rx_value *args, int *state_per_param, bool decoupled)
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

/* g, w: (n); state: (2, n), m then v. Elementwise, so a long vector is split across ctx->threads
 * with the same result as one thread. */
static int adam_step_cpu(void *self, rx_ctx *ctx, const float *g, float *w, float *state, size_t n, rx_step s)
{
    adam_scalars k;
    if (adam_prepare(self, ctx, state, s, &k) != 0) return -1;
    float *m = state, *v = state + n; /* (n) each */
    const int threads = n >= 32768 && ctx->threads > 1 ? ctx->threads : 1;
    (void)threads;  /* read only by the pragma, which a build without OpenMP ignores */
#pragma omp parallel for simd num_threads(threads) schedule(static)
    for (size_t i = 0; i < n; i++) adam_update(&w[i], &m[i], &v[i], g[i], &k);
    return 0;
}

#else
/* ---- The CUDA half: the kernel and its launch (adam.cu and adamw.cu) ---- */
#include "cuda_util.cuh"

/* w, g, m, v: (n); adam_update on each element. */
static __global__ void adam_step_elementwise(const float *__restrict__ g, float *__restrict__ w,
                                             float *__restrict__ m, float *__restrict__ v, int64_t n,
                                             adam_scalars k)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        adam_update(&w[i], &m[i], &v[i], g[i], &k);
}

/* The step on the GPU, queued on ctx->cuda_stream; nothing waits for it. */
static inline int adam_step_queue(void *self, rx_ctx *ctx, const float *g, float *w, float *state, size_t n,
                                  rx_step s, const char *what)
{
    adam_scalars k;
    if (adam_prepare((const adam *)self, ctx, state, s, &k) != 0) return -1;
    if (n == 0) return 0;
    adam_step_elementwise<<<rx_cuda_blocks((int64_t)n), RX_CUDA_THREADS, 0, rx_cuda_stream(ctx)>>>(
        g, w, state, state + n, (int64_t)n, k);
    return RX_CUDA_LAUNCHED(ctx, what);
}
#endif

#ifdef __cplusplus
extern "C" {
#endif
/* adam.cu: adam's CUDA entry, adam_step_queue under adam's name (adamw.h declares adamw's). */
int adam_step_cuda(void *self, rx_ctx *ctx, const float *g, float *w, float *state, size_t n, rx_step s);
#ifdef __cplusplus
}
#endif

#endif
