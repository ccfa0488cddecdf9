/* adam.cu: the CUDA half of the Adam family (adam.h), linked into both adam.so and adamw.so:
 * the kernel, adam_update (adam_update.h) on each element, and its launch. */
#include <cuda_runtime.h>

#include "adam.h"
#include "adam_update.h"
#include "cuda_util.cuh"

/* w, g, m, v: (n); adam_update on each element. */
static __global__ void adam_step_elementwise(const float *__restrict__ g, float *__restrict__ w,
                                             float *__restrict__ m, float *__restrict__ v, int64_t n,
                                             adam_scalars k)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        adam_update(&w[i], &m[i], &v[i], g[i], &k);
}

extern "C" int adam_step_queue(void *self, rx_ctx *ctx, const float *g, float *w, float *state, size_t n,
                                rx_step s, const char *what)
{
    adam_scalars k;
    if (adam_prepare((const adam *)self, ctx, state, s, &k) != 0) return -1;
    if (n == 0) return 0;
    adam_step_elementwise<<<rx_cuda_blocks((int64_t)n), RX_CUDA_THREADS, 0, rx_cuda_stream(ctx)>>>(
        g, w, state, state + n, (int64_t)n, k);
    return RX_CUDA_LAUNCHED(ctx, what);
}
