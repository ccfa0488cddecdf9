/* relu.cu: relu's CUDA path, the twin of relu_forward_cpu and relu_backward_cpu: one elementwise
 * kernel each way, with the CPU's exact expressions (a NaN input gives 0, as `x > 0` is false),
 * so both devices give the same bits. Queued on ctx->cuda_stream; nothing waits for the GPU. */
#include <cuda_runtime.h>

#include "relu.h"
#include "cuda_util.cuh"

/* y = max(x, 0), over n floats. */
__global__ void relu_forward_elementwise(const float *__restrict__ x, float *__restrict__ y, int64_t n)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

/* dx = dy where x > 0, else 0, over n floats. */
__global__ void relu_backward_elementwise(const float *__restrict__ x, const float *__restrict__ dy,
                                          float *__restrict__ dx, int64_t n)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        dx[i] = x[i] > 0.0f ? dy[i] : 0.0f;
}

extern "C" int relu_forward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w, rx_tensor *y,
                                 void *state)
{
    const int64_t n = rx_numel(x->shape);  /* (N, ...) */
    if (n < 1) return 0;
    relu_forward_elementwise<<<rx_cuda_blocks(n), RX_CUDA_THREADS, 0, rx_cuda_stream(ctx)>>>(x->data, y->data, n);
    return RX_CUDA_LAUNCHED(ctx, "relu forward");
}

extern "C" int relu_backward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y,
                                  const rx_tensor *dy, const rx_tensor *w, const void *state, rx_tensor *dx,
                                  rx_tensor *dw)
{
    const int64_t n = rx_numel(x->shape);  /* (N, ...) */
    if (!dx || n < 1) return 0;
    relu_backward_elementwise<<<rx_cuda_blocks(n), RX_CUDA_THREADS, 0, rx_cuda_stream(ctx)>>>(x->data, dy->data,
                                                                                             dx->data, n);
    return RX_CUDA_LAUNCHED(ctx, "relu backward");
}
