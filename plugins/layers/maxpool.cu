/* maxpool.cu: maxpool's CUDA path, the twin of maxpool_forward_cpu and maxpool_backward_cpu, with
 * the same state: per output, the int32 index within its sample of the input it came from.
 *
 * Forward: one thread per output scans its window in row-major order; a later tap wins when it
 * is larger or NaN, the CPU's rule, so ties go to the first maximum and y, the state and so dx
 * are the same bits on both devices. Backward is a gather, one thread per input: it adds the
 * gradients of the outputs whose window covers it and whose recorded maximum it is, in output
 * order, which is the order the CPU adds them in; so overlapping windows need no atomics and a
 * repeat gives the same bits. Queued on ctx->cuda_stream; nothing waits for the GPU. */
#include <cuda_runtime.h>
#include <inttypes.h>

#include "maxpool.h"
#include "cuda_util.cuh"

/* y (N, C, OH, OW) = the window maxima of x (N, C, H, W); arg (N, C, OH, OW) = where each came
 * from, as an index into its sample (C, H, W). */
template <typename Index>
__global__ void maxpool_forward_windows(const float *__restrict__ x, float *__restrict__ y, int32_t *__restrict__ arg,
                                        const maxpool s, Index total)
{
    const int in_plane = s.h * s.w;  /* create bounds C*H*W by INT32_MAX */
    for (Index e = (Index)blockIdx.x * (Index)blockDim.x + (Index)threadIdx.x; e < total;
         e += (Index)gridDim.x * (Index)blockDim.x) {
        const int ow = (int)(e % s.ow);
        const Index t = e / s.ow;
        const int oh = (int)(t % s.oh);
        const Index plane = t / s.oh;  /* sample * C + channel */
        const float *xp = x + plane * in_plane;  /* (H, W) */
        int best = oh * s.stride * s.w + ow * s.stride;
        float top = xp[best];
        for (int ki = 0; ki < s.size; ki++) {
            const int row = (oh * s.stride + ki) * s.w + ow * s.stride;
            for (int kj = 0; kj < s.size; kj++) {
                const float v = xp[row + kj];
                if (v > top || isnan(v)) {
                    top = v;
                    best = row + kj;
                }
            }
        }
        y[e] = top;
        arg[e] = (int32_t)(plane % s.c) * in_plane + best;
    }
}

/* dx (N, C, H, W): each input gets the sum of dy over the outputs that recorded it as their
 * maximum. Output row oh covers input rows [oh * stride, oh * stride + size), so row h is covered
 * by oh from (h - size) / stride + 1 (0 when h < size) to h / stride, within [0, OH); columns
 * likewise. */
template <typename Index>
__global__ void maxpool_backward_gather(const float *__restrict__ dy, const int32_t *__restrict__ arg,
                                        float *__restrict__ dx, const maxpool s, Index total)
{
    const int in_plane = s.h * s.w, out_plane = s.oh * s.ow;
    for (Index e = (Index)blockIdx.x * (Index)blockDim.x + (Index)threadIdx.x; e < total;
         e += (Index)gridDim.x * (Index)blockDim.x) {
        const int at = (int)(e % in_plane);  /* h * W + w */
        const Index plane = e / in_plane;
        const int h = at / s.w, w = at % s.w;
        const int32_t here = (int32_t)(plane % s.c) * in_plane + at;  /* as forward records it */
        const int oh0 = h < s.size ? 0 : (h - s.size) / s.stride + 1, oh1 = min(h / s.stride, s.oh - 1);
        const int ow0 = w < s.size ? 0 : (w - s.size) / s.stride + 1, ow1 = min(w / s.stride, s.ow - 1);
        const float *g = dy + plane * out_plane;     /* (OH, OW) */
        const int32_t *from = arg + plane * out_plane; /* (OH, OW) */
        float sum = 0.0f;
        for (int oh = oh0; oh <= oh1; oh++)
            for (int ow = ow0; ow <= ow1; ow++)
                if (from[oh * s.ow + ow] == here) sum += g[oh * s.ow + ow];
        dx[e] = sum;
    }
}

extern "C" int maxpool_forward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w, rx_tensor *y,
                                    void *state)
{
    const maxpool *s = (const maxpool *)self;
    const int64_t n = x->shape.d[0];
    const int64_t total = n * s->c * (int64_t)s->oh * s->ow;  /* outputs; the inputs outnumber them */
    if (total < 1) return 0;
    if (rx_cuda_int_index(n * s->c * (int64_t)s->h * s->w))
        maxpool_forward_windows<int><<<rx_cuda_blocks(total), RX_CUDA_THREADS, 0, rx_cuda_stream(ctx)>>>(
            x->data, y->data, (int32_t *)state, *s, (int)total);
    else
        maxpool_forward_windows<int64_t><<<rx_cuda_blocks(total), RX_CUDA_THREADS, 0, rx_cuda_stream(ctx)>>>(
            x->data, y->data, (int32_t *)state, *s, total);
    return RX_CUDA_LAUNCHED(ctx, "maxpool forward");
}

extern "C" int maxpool_backward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y,
                                     const rx_tensor *dy, const rx_tensor *w, const void *state, rx_tensor *dx,
                                     rx_tensor *dw)
{
    const maxpool *s = (const maxpool *)self;
    const int64_t total = x->shape.d[0] * s->c * (int64_t)s->h * s->w;  /* inputs */
    if (!dx || total < 1) return 0;
    if (rx_cuda_int_index(total))
        maxpool_backward_gather<int><<<rx_cuda_blocks(total), RX_CUDA_THREADS, 0, rx_cuda_stream(ctx)>>>(
            dy->data, (const int32_t *)state, dx->data, *s, (int)total);
    else
        maxpool_backward_gather<int64_t><<<rx_cuda_blocks(total), RX_CUDA_THREADS, 0, rx_cuda_stream(ctx)>>>(
            dy->data, (const int32_t *)state, dx->data, *s, total);
    return RX_CUDA_LAUNCHED(ctx, "maxpool backward");
}
