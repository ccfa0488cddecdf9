/* gelu.cu: gelu's CUDA path, the twin of gelu_forward_cpu and gelu_backward_cpu: one elementwise
 * kernel each way, per formula, with the CPU's expressions. CUDA's erff and tanhf are within 2
 * ulp rather than the C library's 1, and nvcc fuses multiply-adds, so the devices agree to a few
 * ulp, not to the bit. Queued on ctx->cuda_stream; nothing waits for the GPU. */
#include <cuda_runtime.h>

#include "gelu.h"
#include "../cuda_util.cuh"

static __device__ __forceinline__ float gelu_exact(float v)
{
    return v * 0.5f * (1.0f + erff(v * GELU_SQRT1_2));
}

static __device__ __forceinline__ float gelu_tanh(float v)
{
    const float inner = GELU_SQRT_2_OVER_PI * (v + GELU_KAPPA * (v * v * v));
    return 0.5f * v * (1.0f + tanhf(inner));
}

/* Phi(x) + x phi(x) */
static __device__ __forceinline__ float gelu_exact_grad(float v)
{
    const float cdf = 0.5f * (1.0f + erff(v * GELU_SQRT1_2));
    const float pdf = GELU_INV_SQRT_2PI * expf(-0.5f * v * v);
    return cdf + v * pdf;
}

/* 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2 / pi) (1 + 3 * 0.044715 x^2) */
static __device__ __forceinline__ float gelu_tanh_grad(float v)
{
    const float v2 = v * v;
    const float t = tanhf(GELU_SQRT_2_OVER_PI * (v + GELU_KAPPA * (v2 * v)));
    const float left = 0.5f * v, right = 1.0f + t;
    return 0.5f * right + left * (1.0f - t * t) * (GELU_SQRT_2_OVER_PI * (1.0f + 3.0f * GELU_KAPPA * v2));
}

/* y = gelu(x), over n floats. */
template <gelu_form Form>
__global__ void gelu_forward_elementwise(const float *__restrict__ x, float *__restrict__ y, int64_t n)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        y[i] = Form == GELU_TANH ? gelu_tanh(x[i]) : gelu_exact(x[i]);
}

/* dx = dy * gelu'(x), over n floats. */
template <gelu_form Form>
__global__ void gelu_backward_elementwise(const float *__restrict__ x, const float *__restrict__ dy,
                                          float *__restrict__ dx, int64_t n)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        dx[i] = dy[i] * (Form == GELU_TANH ? gelu_tanh_grad(x[i]) : gelu_exact_grad(x[i]));
}

extern "C" int gelu_forward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w, rx_tensor *y,
                                 void *state)
{
    const gelu *s = (const gelu *)self;
    const int64_t n = rx_numel(x->shape);  /* (N, ...) */
    if (n < 1) return 0;
    if (s->form == GELU_TANH)
        gelu_forward_elementwise<GELU_TANH><<<rx_cuda_blocks(n), RX_CUDA_THREADS, 0, rx_cuda_stream(ctx)>>>(
            x->data, y->data, n);
    else
        gelu_forward_elementwise<GELU_EXACT><<<rx_cuda_blocks(n), RX_CUDA_THREADS, 0, rx_cuda_stream(ctx)>>>(
            x->data, y->data, n);
    return RX_CUDA_LAUNCHED(ctx, "gelu forward");
}

extern "C" int gelu_backward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y,
                                  const rx_tensor *dy, const rx_tensor *w, const void *state, rx_tensor *dx,
                                  rx_tensor *dw)
{
    const gelu *s = (const gelu *)self;
    const int64_t n = rx_numel(x->shape);  /* (N, ...) */
    if (!dx || n < 1) return 0;
    if (s->form == GELU_TANH)
        gelu_backward_elementwise<GELU_TANH><<<rx_cuda_blocks(n), RX_CUDA_THREADS, 0, rx_cuda_stream(ctx)>>>(
            x->data, dy->data, dx->data, n);
    else
        gelu_backward_elementwise<GELU_EXACT><<<rx_cuda_blocks(n), RX_CUDA_THREADS, 0, rx_cuda_stream(ctx)>>>(
            x->data, dy->data, dx->data, n);
    return RX_CUDA_LAUNCHED(ctx, "gelu backward");
}
