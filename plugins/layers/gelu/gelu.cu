/* gelu.cu: gelu's CUDA path, the twin of gelu_forward_cpu and gelu_backward_cpu: one elementwise
 * kernel each way, per formula, running the very functions the CPU runs (gelu.h), so the devices
 * should agree to the bit. Queued on ctx->cuda_stream; nothing waits for the GPU. */
#include <cuda_runtime.h>

#include "gelu.h"
#include "gelu_math.h"
#include "cuda_util.cuh"

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
