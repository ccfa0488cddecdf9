/* channel_scale.cu: channel_scale's CUDA path, the twin of channel_scale_forward_cpu and
 * channel_scale_backward_cpu. Everything runs on ctx->cuda_stream; nothing synchronizes. The
 * gradient of the scale is reduced by one block per channel in a fixed order, so it is the same
 * bits run after run (no atomics). */
#include <cuda_runtime.h>

#include "channel_scale.h"

#define THREADS 256

/* y = scale[c] * x, or dx = scale[c] * dy: the same elementwise product. */
__global__ void scale_by_channel(const float *in, const float *scale, float *out, int64_t total, int64_t c,
                                 int64_t plane)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = scale[(i / plane) % c] * in[i];
}

/* dscale[c] += sum over samples and the plane of dy * x; one block per channel. */
__global__ void scale_gradient(const float *x, const float *dy, float *dscale, int64_t n, int64_t c, int64_t plane)
{
    __shared__ float partial[THREADS];
    int64_t ch = blockIdx.x, per_channel = n * plane;
    float sum = 0;
    for (int64_t k = threadIdx.x; k < per_channel; k += blockDim.x) {
        int64_t at = ((k / plane) * c + ch) * plane + k % plane;
        sum += dy[at] * x[at];
    }
    partial[threadIdx.x] = sum;
    __syncthreads();
    for (int stride = THREADS / 2; stride > 0; stride /= 2) {
        if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
        __syncthreads();
    }
    if (threadIdx.x == 0) dscale[ch] += partial[0];
}

static int blocks_for(int64_t total)
{
    int64_t b = (total + THREADS - 1) / THREADS;
    return (int)(b < 4096 ? (b > 0 ? b : 1) : 4096);
}

static int launched(rx_ctx *ctx, const char *what)
{
    cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? 0 : rx_fail(ctx, "%s: %s", what, cudaGetErrorString(e));
}

extern "C" int channel_scale_forward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w,
                                          rx_tensor *y, void *state)
{
    const channel_scale *s = (const channel_scale *)self;
    int64_t total = rx_numel(x->shape);
    cudaStream_t stream = (cudaStream_t)ctx->cuda_stream;
    scale_by_channel<<<blocks_for(total), THREADS, 0, stream>>>(x->data, w[0].data, y->data, total, s->c, s->plane);
    return launched(ctx, "channel_scale forward");
}

extern "C" int channel_scale_backward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y,
                                           const rx_tensor *dy, const rx_tensor *w, const void *state, rx_tensor *dx,
                                           rx_tensor *dw)
{
    const channel_scale *s = (const channel_scale *)self;
    int64_t total = rx_numel(x->shape), n = x->shape.d[0];
    cudaStream_t stream = (cudaStream_t)ctx->cuda_stream;
    scale_gradient<<<(unsigned)s->c, THREADS, 0, stream>>>(x->data, dy->data, dw[0].data, n, s->c, s->plane);
    if (dx) scale_by_channel<<<blocks_for(total), THREADS, 0, stream>>>(dy->data, w[0].data, dx->data, total, s->c, s->plane);
    return launched(ctx, "channel_scale backward");
}
