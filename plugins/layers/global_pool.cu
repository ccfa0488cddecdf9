/* global_pool.cu: global_pool's CUDA path, the twin of global_pool_forward_cpu and
 * global_pool_backward_cpu, with the same state: per channel, the int32 index within its sample
 * of the maximum (max mode only).
 *
 * Forward: one warp per plane. Average: lane l sums elements l, l + 32, ... and the warp folds
 * the 32 partial sums with xor shuffles (16, 8, 4, 2, 1), which is the order the CPU adds in
 * (global_pool.h), so both devices give the same bits. Max: lane l scans its elements with the
 * CPU's rule (a later one wins when larger or NaN), then the warp combines the lanes' winners
 * with a rule that is commutative and associative and picks what the CPU's single row-major scan
 * picks: the last NaN if there is one, else the largest value, the lowest index among equals.
 * Every lane ends with the same winner, so the result does not depend on the shuffle order.
 * Backward: one thread per input, each writing dy or 0 (max) or dy / (H * W) (average): no
 * atomics, nothing to zero first. Queued on ctx->cuda_stream; nothing waits for the GPU. */
#include <cuda_runtime.h>
#include <inttypes.h>

#include "global_pool.h"
#include "cuda_util.cuh"

#define FULL_WARP 0xffffffffu

/* Whether the candidate (v, i) replaces (best, at) as the maximum; an index below 0 means no
 * candidate (a lane with no element, when H * W < 32). */
static __device__ __forceinline__ bool global_pool_takes(float v, int i, float best, int at)
{
    if (i < 0) return false;
    if (at < 0) return true;
    const bool v_nan = isnan(v), best_nan = isnan(best);
    if (v_nan || best_nan) return v_nan && (!best_nan || i > at);  /* the last NaN */
    return v > best || (v == best && i < at);                      /* the first maximum */
}

/* y (N, C) = the maximum of each plane of x (N, C, H*W); arg (N, C) = where it came from, as an
 * index into its sample (C, H, W). */
__global__ void global_pool_forward_max(const float *__restrict__ x, float *__restrict__ y,
                                        int32_t *__restrict__ arg, int c, int hw, int64_t planes)
{
    const int lane = (int)(threadIdx.x % GLOBAL_POOL_LANES);
    const int64_t first = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / GLOBAL_POOL_LANES;
    const int64_t warps = ((int64_t)gridDim.x * blockDim.x) / GLOBAL_POOL_LANES;
    /* p is the same for every lane of a warp, so the whole warp takes each shuffle */
    for (int64_t p = first; p < planes; p += warps) {
        const float *xp = x + p * hw;  /* (H, W) */
        float best = 0.0f;
        int at = -1;
        for (int i = lane; i < hw; i += GLOBAL_POOL_LANES) {
            const float v = xp[i];
            if (at < 0 || v > best || isnan(v)) {
                best = v;
                at = i;
            }
        }
        for (int offset = GLOBAL_POOL_LANES / 2; offset > 0; offset /= 2) {
            const float other = __shfl_xor_sync(FULL_WARP, best, offset);
            const int other_at = __shfl_xor_sync(FULL_WARP, at, offset);
            if (global_pool_takes(other, other_at, best, at)) {
                best = other;
                at = other_at;
            }
        }
        if (lane == 0) {
            y[p] = best;
            arg[p] = (int32_t)(p % c) * hw + at;
        }
    }
}

/* y (N, C) = the mean of each plane of x (N, C, H*W), summed in the CPU's order. */
__global__ void global_pool_forward_avg(const float *__restrict__ x, float *__restrict__ y, int hw, int64_t planes)
{
    const int lane = (int)(threadIdx.x % GLOBAL_POOL_LANES);
    const int64_t first = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / GLOBAL_POOL_LANES;
    const int64_t warps = ((int64_t)gridDim.x * blockDim.x) / GLOBAL_POOL_LANES;
    for (int64_t p = first; p < planes; p += warps) {
        const float *xp = x + p * hw;  /* (H, W) */
        float sum = 0.0f;
        for (int i = lane; i < hw; i += GLOBAL_POOL_LANES) sum += xp[i];
        /* lane l < offset adds lane l + offset's partial sum, as the CPU's fold does; the other
         * lanes compute the same sums the other way round, which IEEE addition gives equal */
        for (int offset = GLOBAL_POOL_LANES / 2; offset > 0; offset /= 2)
            sum += __shfl_xor_sync(FULL_WARP, sum, offset);
        if (lane == 0) y[p] = sum / (float)hw;
    }
}

/* dx (N, C, H*W): dy at the recorded maximum of each plane, 0 elsewhere. */
template <typename Index>
__global__ void global_pool_backward_max(const float *__restrict__ dy, const int32_t *__restrict__ arg,
                                         float *__restrict__ dx, int c, int hw, Index total)
{
    for (Index e = (Index)blockIdx.x * (Index)blockDim.x + (Index)threadIdx.x; e < total;
         e += (Index)gridDim.x * (Index)blockDim.x) {
        const Index p = e / hw;
        const int at = (int)(e - p * hw);
        dx[e] = arg[p] == (int32_t)(p % c) * hw + at ? dy[p] : 0.0f;
    }
}

/* dx (N, C, H*W) = dy / (H * W) over each plane. */
template <typename Index>
__global__ void global_pool_backward_avg(const float *__restrict__ dy, float *__restrict__ dx, int hw, Index total)
{
    for (Index e = (Index)blockIdx.x * (Index)blockDim.x + (Index)threadIdx.x; e < total;
         e += (Index)gridDim.x * (Index)blockDim.x)
        dx[e] = dy[e / hw] / (float)hw;
}

extern "C" int global_pool_forward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w,
                                        rx_tensor *y, void *state)
{
    const global_pool *s = (const global_pool *)self;
    const int64_t planes = x->shape.d[0] * s->c;
    if (planes < 1) return 0;
    const unsigned blocks = rx_cuda_blocks(planes * GLOBAL_POOL_LANES);  /* a warp per plane */
    if (s->mode == GLOBAL_POOL_MAX)
        global_pool_forward_max<<<blocks, RX_CUDA_THREADS, 0, rx_cuda_stream(ctx)>>>(
            x->data, y->data, (int32_t *)state, s->c, s->hw, planes);
    else
        global_pool_forward_avg<<<blocks, RX_CUDA_THREADS, 0, rx_cuda_stream(ctx)>>>(x->data, y->data, s->hw, planes);
    return RX_CUDA_LAUNCHED(ctx, "global_pool forward");
}

extern "C" int global_pool_backward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y,
                                         const rx_tensor *dy, const rx_tensor *w, const void *state, rx_tensor *dx,
                                         rx_tensor *dw)
{
    const global_pool *s = (const global_pool *)self;
    const int64_t total = x->shape.d[0] * s->c * (int64_t)s->hw;  /* inputs */
    if (!dx || total < 1) return 0;
    const unsigned blocks = rx_cuda_blocks(total);
    cudaStream_t stream = rx_cuda_stream(ctx);
    const int32_t *arg = (const int32_t *)state;
    if (s->mode == GLOBAL_POOL_MAX) {
        if (rx_cuda_int_index(total))
            global_pool_backward_max<int><<<blocks, RX_CUDA_THREADS, 0, stream>>>(dy->data, arg, dx->data, s->c,
                                                                                  s->hw, (int)total);
        else
            global_pool_backward_max<int64_t><<<blocks, RX_CUDA_THREADS, 0, stream>>>(dy->data, arg, dx->data, s->c,
                                                                                      s->hw, total);
    } else {
        if (rx_cuda_int_index(total))
            global_pool_backward_avg<int><<<blocks, RX_CUDA_THREADS, 0, stream>>>(dy->data, dx->data, s->hw,
                                                                                  (int)total);
        else
            global_pool_backward_avg<int64_t><<<blocks, RX_CUDA_THREADS, 0, stream>>>(dy->data, dx->data, s->hw,
                                                                                      total);
    }
    return RX_CUDA_LAUNCHED(ctx, "global_pool backward");
}
