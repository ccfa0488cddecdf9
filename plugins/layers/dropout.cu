/* dropout.cu: dropout's CUDA path, the twin of dropout_forward_cpu and dropout_backward_cpu, with
 * the very same keep mask, so that `runexp check` can compare the devices and a run replays the
 * same on either.
 *
 * The CPU draws rx_rng_uniform(&ctx->rng) once per element, in order. rx_rng_next is splitmix64,
 * whose state only ever advances by the constant RX_GOLDEN, so draw k (from 1) after the state
 * s0 is mix(s0 + k * RX_GOLDEN): a counter, which one thread per element can compute on its own.
 * Element i uses draw i + 1; the launcher then advances ctx->rng by n draws, exactly where the
 * CPU leaves it. The mask is one byte per element in the state, as on the CPU, and evaluation is
 * the identity on both devices (no draws). Queued on ctx->cuda_stream; nothing waits. */
#include <cuda_runtime.h>

#include "dropout.h"
#include "cuda_util.cuh"

#define RX_GOLDEN 0x9E3779B97F4A7C15ull  /* splitmix64's increment, as in rx_rng_next */

/* The k-th output of rx_rng_next (k = 1 for the first) from the state s0, without stepping. */
__device__ static inline uint64_t dropout_splitmix64_at(uint64_t s0, uint64_t k)
{
    uint64_t z = s0 + k * RX_GOLDEN;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* keep (n) = uniform_i >= p, y = x * keep * scale: the CPU's expressions, term for term. */
__global__ void dropout_forward_masked(const float *__restrict__ x, float *__restrict__ y,
                                       uint8_t *__restrict__ keep, int64_t n, uint64_t s0, float p, float scale)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float uniform = (float)(dropout_splitmix64_at(s0, (uint64_t)i + 1) >> 40) * 0x1.0p-24f;
        const uint8_t k = uniform >= p;
        keep[i] = k;
        y[i] = x[i] * (float)k * scale;
    }
}

/* dx = dy * keep * scale. */
__global__ void dropout_backward_masked(const float *__restrict__ dy, const uint8_t *__restrict__ keep,
                                        float *__restrict__ dx, int64_t n, float scale)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        dx[i] = dy[i] * (float)keep[i] * scale;
}

extern "C" int dropout_forward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w, rx_tensor *y,
                                    void *state)
{
    const dropout *s = (const dropout *)self;
    const int64_t n = rx_numel(x->shape);  /* (N, ...) */
    if (n < 1) return 0;
    if (!ctx->training) {
        if (y->data == x->data) return 0;
        return RX_CUDA_OK(ctx,
                          cudaMemcpyAsync(y->data, x->data, sizeof(float) * (size_t)n, cudaMemcpyDeviceToDevice,
                                          rx_cuda_stream(ctx)),
                          "dropout forward: copy");
    }
    dropout_forward_masked<<<rx_cuda_blocks(n), RX_CUDA_THREADS, 0, rx_cuda_stream(ctx)>>>(
        x->data, y->data, (uint8_t *)state, n, ctx->rng.s, s->p, s->scale);
    if (RX_CUDA_LAUNCHED(ctx, "dropout forward") != 0) return -1;
    ctx->rng.s += (uint64_t)n * RX_GOLDEN;  /* n draws, as the CPU's loop takes (mod 2^64) */
    return 0;
}

extern "C" int dropout_backward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y,
                                     const rx_tensor *dy, const rx_tensor *w, const void *state, rx_tensor *dx,
                                     rx_tensor *dw)
{
    const dropout *s = (const dropout *)self;
    const int64_t n = rx_numel(dy->shape);  /* (N, ...) */
    if (!dx || n < 1) return 0;
    if (!ctx->training) {
        if (dx->data == dy->data) return 0;
        return RX_CUDA_OK(ctx,
                          cudaMemcpyAsync(dx->data, dy->data, sizeof(float) * (size_t)n, cudaMemcpyDeviceToDevice,
                                          rx_cuda_stream(ctx)),
                          "dropout backward: copy");
    }
    dropout_backward_masked<<<rx_cuda_blocks(n), RX_CUDA_THREADS, 0, rx_cuda_stream(ctx)>>>(
        dy->data, (const uint8_t *)state, dx->data, n, s->scale);
    return RX_CUDA_LAUNCHED(ctx, "dropout backward");
}
