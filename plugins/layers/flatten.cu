/* flatten.cu: flatten's CUDA path, the twin of flatten_forward_cpu and flatten_backward_cpu:
 * row-major data is already in flattened order, so each pass is one device-to-device copy,
 * queued on ctx->cuda_stream (cudaMemcpyAsync between device buffers does not wait for the GPU). */
#include <cuda_runtime.h>

#include "flatten.h"
#include "cuda_util.cuh"

extern "C" int flatten_forward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w, rx_tensor *y,
                                    void *state)
{
    /* (N, C, H, W) -> (N, C*H*W) */
    const size_t bytes = sizeof(float) * (size_t)rx_numel(x->shape);
    if (bytes == 0 || y->data == x->data) return 0;
    return RX_CUDA_OK(ctx, cudaMemcpyAsync(y->data, x->data, bytes, cudaMemcpyDeviceToDevice, rx_cuda_stream(ctx)),
                      "flatten forward: copy");
}

extern "C" int flatten_backward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y,
                                     const rx_tensor *dy, const rx_tensor *w, const void *state, rx_tensor *dx,
                                     rx_tensor *dw)
{
    /* (N, C*H*W) -> (N, C, H, W) */
    const size_t bytes = sizeof(float) * (size_t)rx_numel(dy->shape);
    if (!dx || bytes == 0 || dx->data == dy->data) return 0;
    return RX_CUDA_OK(ctx, cudaMemcpyAsync(dx->data, dy->data, bytes, cudaMemcpyDeviceToDevice, rx_cuda_stream(ctx)),
                      "flatten backward: copy");
}
