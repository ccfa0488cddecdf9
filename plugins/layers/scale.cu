/* scale.cu: scale's CUDA path, the twin of scale_forward_cpu and scale_backward_cpu: one
 * elementwise multiply by the same float factor, forward on x and backward on dy, so both
 * devices give the same bits. Queued on ctx->cuda_stream; nothing waits for the GPU. */
#include <cuda_runtime.h>

#include "scale.h"
#include "cuda_util.cuh"

/* out = by * in, over n floats. */
__global__ void scale_elementwise(const float *__restrict__ in, float *__restrict__ out, float by, int64_t n)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = by * in[i];
}

extern "C" int scale_forward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w, rx_tensor *y,
                                  void *state)
{
    const scale *s = (const scale *)self;
    const int64_t n = rx_numel(x->shape);  /* (N, ...) */
    if (n < 1) return 0;
    scale_elementwise<<<rx_cuda_blocks(n), RX_CUDA_THREADS, 0, rx_cuda_stream(ctx)>>>(x->data, y->data, s->by, n);
    return RX_CUDA_LAUNCHED(ctx, "scale forward");
}

extern "C" int scale_backward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y,
                                   const rx_tensor *dy, const rx_tensor *w, const void *state, rx_tensor *dx,
                                   rx_tensor *dw)
{
    const scale *s = (const scale *)self;
    const int64_t n = rx_numel(dy->shape);  /* (N, ...) */
    if (!dx || n < 1) return 0;
    scale_elementwise<<<rx_cuda_blocks(n), RX_CUDA_THREADS, 0, rx_cuda_stream(ctx)>>>(dy->data, dx->data, s->by, n);
    return RX_CUDA_LAUNCHED(ctx, "scale backward");
}
