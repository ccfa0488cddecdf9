/* adam_update.h: one parameter's Adam step, the arithmetic that both the CPU loop (gcc, in
 * adam.c) and the CUDA kernel (nvcc, in adam.cu) run. It is a static inline function in a header
 * because each compiler must build it into its own loop: gcc inlines it into the vectorized
 * OpenMP loop, nvcc into the kernel (device code cannot call a function compiled by gcc). Its
 * operations go through ADAM_MUL and friends, which nvcc turns into __fmul_rn and the like so
 * that it fuses nothing into an FMA, as the CPU build (ISO C: no contraction) fuses nothing: the
 * two devices round step for step alike (division and square root are correctly rounded on
 * both), so they give the same bits. */
#ifndef RX_COMMON_ADAM_UPDATE_H
#define RX_COMMON_ADAM_UPDATE_H

#include <math.h>

#include "adam.h"

/* Each operation rounded on its own, on both devices (see above). */
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

#endif
