/* gelu_math.h: one element's GELU and its gradient, the arithmetic that the gelu layer (gelu.c,
 * gelu.cu) and batchnorm's fused activation (batchnorm.c, batchnorm.cu) run.
 * These are static inline functions in a header, not a .c of their own, because each compiler
 * must build them into its own loop: gcc inlines them into the layers' `omp simd` loops, which it
 * vectorizes only when it sees the whole body (a call out would leave them scalar), and nvcc into
 * the kernels (device code cannot call what gcc compiled). */
#ifndef RX_COMMON_GELU_MATH_H
#define RX_COMMON_GELU_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* PyTorch's constants (aten/src/ATen/native/cpu/Activation.cpp), as floats. */
#define GELU_SQRT1_2       0.70710678118654752440f /* 1 / sqrt(2): erf's argument scale */
#define GELU_INV_SQRT_2PI  0.39894228040143267794f /* 1 / sqrt(2 pi): the normal density's */
#define GELU_SQRT_2_OVER_PI 0.79788456080286535588f /* sqrt(2 / pi): the tanh form's */
#define GELU_KAPPA         0.044715f               /* the tanh form's cubic coefficient */

/* One element's arithmetic, shared by the C and CUDA files so that the devices compute the same
 * floats: the C build contracts nothing into FMAs (ISO C mode) and nvcc is told not to either
 * (--fmad=false in the Makefile); division is correctly rounded on both. erf, exp and tanh are
 * short polynomials, as in PyTorch's vectorized CPU kernels: their error is below 2e-7 absolute
 * for erf and tanh and 2 ulp for exp, and gcc vectorizes them, which it cannot do with libm. */
#ifdef __CUDACC__
#define GELU_FN static __host__ __device__ __forceinline__
#else
#define GELU_FN static inline
#endif

/* e^x for x in [-87, 88] (0 below, e^88 above), as Cephes' expf: x = n ln2 + r with
 * |r| <= ln2 / 2, e^r by a degree-6 polynomial, 2^n put into the exponent bits. Branch-free
 * (the selects become blends), so it vectorizes. */
GELU_FN float fast_expf(float x)
{
    const float under = x < -87.0f ? 0.0f : 1.0f;
    x = x < -87.0f ? -87.0f : x > 88.0f ? 88.0f : x; /* not fminf: a libm call, never vectorized */
    const float n = floorf(x * 1.44269504088896341f + 0.5f);
    const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f; /* ln 2 in two parts */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale); /* 2^n */
    return p * scale * under;
}

/* erf by Abramowitz and Stegun 7.1.26 (absolute error < 1.5e-7), as PyTorch's vectorized erf:
 * erf(|x|) = 1 - P(t) e^{-x^2}, t = 1 / (1 + 0.3275911 |x|). erf_from takes e^{-x^2} made by its
 * caller, who may want it again (gelu_exact_grad's density). */
GELU_FN float erf_from(float x, float exp_neg_x2)
{
    const float t = 1.0f / (1.0f + 0.3275911f * fabsf(x));
    float p = 1.061405429f;
    p = p * t - 1.453152027f;
    p = p * t + 1.421413741f;
    p = p * t - 0.284496736f;
    p = p * t + 0.254829592f;
    return copysignf(1.0f - p * t * exp_neg_x2, x);
}

GELU_FN float fast_erff(float x)
{
    const float a = fabsf(x);
    return erf_from(x, fast_expf(-a * a));
}

/* tanh(x) = 1 - 2 / (e^{2x} + 1), on |x| so that it never overflows. */
GELU_FN float fast_tanhf(float x)
{
    const float e = fast_expf(2.0f * fabsf(x));
    return copysignf(1.0f - 2.0f / (e + 1.0f), x);
}

/* The formulas, one element each, for both devices. */
GELU_FN float gelu_exact(float v)
{
    return v * 0.5f * (1.0f + fast_erff(v * GELU_SQRT1_2));
}

GELU_FN float gelu_tanh(float v)
{
    const float inner = GELU_SQRT_2_OVER_PI * (v + GELU_KAPPA * (v * v * v));
    return 0.5f * v * (1.0f + fast_tanhf(inner));
}

/* d/dx x Phi(x) = Phi(x) + x phi(x). erf's e^{-(v / sqrt 2)^2} is the density's e^{-v^2 / 2}:
 * one exponential serves both. */
GELU_FN float gelu_exact_grad(float v)
{
    const float x = v * GELU_SQRT1_2, a = fabsf(x);
    const float e = fast_expf(-a * a);
    const float cdf = 0.5f * (1.0f + erf_from(x, e));
    return cdf + v * (GELU_INV_SQRT_2PI * e);
}

/* d/dx 0.5 x (1 + t), t = tanh(u(x)): 0.5 (1 + t) + 0.5 x (1 - t^2) u'(x), with
 * u'(x) = sqrt(2 / pi) (1 + 3 * 0.044715 x^2). */
GELU_FN float gelu_tanh_grad(float v)
{
    const float v2 = v * v;
    const float t = fast_tanhf(GELU_SQRT_2_OVER_PI * (v + GELU_KAPPA * (v2 * v)));
    const float left = 0.5f * v, right = 1.0f + t;
    return 0.5f * right + left * (1.0f - t * t) * (GELU_SQRT_2_OVER_PI * (1.0f + 3.0f * GELU_KAPPA * v2));
}

#endif
