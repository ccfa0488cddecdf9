/* sgd.cu: sgd's CUDA path, the twin of sgd_step_cpu: one elementwise kernel over the host's flat
 * parameter vector, with PyTorch's torch.optim.SGD semantics exactly as sgd.c has them (weight
 * decay added to the gradient, the momentum buffer set to the gradient on the first step and
 * damped after, Nesterov's look-ahead).
 *
 * Each product and sum is rounded on its own (__fmul_rn, __fadd_rn, __fsub_rn): nvcc would
 * otherwise fuse them into FMAs, while the CPU build (ISO C11, no contraction) rounds every step.
 * So the same g, w and buffer give the same bits on both devices, and CPU and GPU runs part only
 * where the layers' sums differ. Queued on ctx->cuda_stream; nothing waits for the GPU. */
#include <cuda_runtime.h>

#include "sgd.h"
#include "cuda_util.cuh"

/* w (n) -= lr * update(g (n), buf (n)); buf is NULL without momentum. */
__global__ void sgd_step_elementwise(const float *__restrict__ g, float *__restrict__ w, float *__restrict__ buf,
                                     int64_t n, float lr, float wd, float mu, float keep, bool first, bool nesterov)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float d = wd != 0.0f ? __fadd_rn(g[i], __fmul_rn(wd, w[i])) : g[i];
        if (buf) {
            const float b = first ? d : __fadd_rn(__fmul_rn(mu, buf[i]), __fmul_rn(keep, d));
            buf[i] = b;
            d = nesterov ? __fadd_rn(d, __fmul_rn(mu, b)) : b;
        }
        w[i] = __fsub_rn(w[i], __fmul_rn(lr, d));
    }
}

extern "C" int sgd_step_cuda(void *self, rx_ctx *ctx, const float *g, float *w, float *buf, size_t n, rx_step s)
{
    const sgd *o = (const sgd *)self;
    if (sgd_check_step(o, ctx, buf, s) != 0) return -1; /* the CPU's checks, in the CPU's words */
    const bool momentum = o->momentum > 0;
    if (n == 0) return 0;
    sgd_step_elementwise<<<rx_cuda_blocks((int64_t)n), RX_CUDA_THREADS, 0, rx_cuda_stream(ctx)>>>(
        g, w, momentum ? buf : NULL, (int64_t)n, s.lr, s.weight_decay, o->momentum, o->keep, s.t == 1, o->nesterov);
    return RX_CUDA_LAUNCHED(ctx, "sgd step");
}
