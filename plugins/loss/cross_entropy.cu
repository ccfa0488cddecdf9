/* cross_entropy.cu: cross_entropy's CUDA path, the twin of cross_entropy_forward_cpu: per-sample
 * losses and, when asked, the gradient of their mean, in one kernel.
 *
 * One warp per row of logits (C of them): the lanes stride over the classes, then combine with
 * shuffles in a fixed butterfly, so every lane holds the same maximum and the same sums and a
 * repeat gives the same bits. The arithmetic is the CPU's: the row's maximum subtracted before
 * exp, the sum of exp in double, loss = log(sum) - target with target = z[label] - max (with
 * label smoothing e: (1 - e) * (z[label] - max) + e * mean(z - max), the sum of z - max in
 * double), and the gradient exp(z - max) * ((float)(1 / sum) / N) minus cross_entropy.h's
 * target constants, each rounded as the CPU rounds it (__fmul_rn, __fsub_rn and __dmul_rn keep
 * the compiler from fusing them into FMAs, which the CPU build never does). The sums go in
 * another order than the CPU's, so with smoothing the losses may differ in the last bits.
 *
 * Labels outside [0, C): the CPU path refuses the batch, but refusing here would mean waiting for
 * the GPU on every batch to read a flag. Instead that sample's loss and gradient row are NaN: the
 * host copies the losses back every batch and stops a training run with a message when their sum
 * is not finite. The data plugins refuse bad labels when they load, so this is a last guard.
 * Queued on ctx->cuda_stream; nothing waits for the GPU. */
#include <cuda_runtime.h>
#include <math.h>

#include "cross_entropy.h"
#include "cuda_util.cuh"

#define WARP 32
#define ROWS_PER_BLOCK (RX_CUDA_THREADS / WARP)
#define ALL_LANES 0xffffffffu

/* losses (N) and, unless dlogits is NULL, dlogits (N, C) from logits (N, C) and labels (N).
 * e: the label smoothing; t: the gradient's targets for it (cross_entropy.h). */
__global__ void cross_entropy_rows(const float *__restrict__ logits, const int32_t *__restrict__ labels,
                                   float *__restrict__ losses, float *__restrict__ dlogits, int64_t n, int64_t c,
                                   double e, cross_entropy_targets t)
{
    const int lane = (int)(threadIdx.x % WARP);
    const float inv_n = 1.0f / (float)n;
    /* row is the same for every lane of a warp, so whole warps take each branch and every
     * shuffle below has all 32 lanes present. */
    for (int64_t row = (int64_t)blockIdx.x * ROWS_PER_BLOCK + threadIdx.x / WARP; row < n;
         row += (int64_t)gridDim.x * ROWS_PER_BLOCK) {
        const float *z = logits + row * c;                      /* (C) */
        float *dz = dlogits ? dlogits + row * c : NULL;         /* (C) */
        const int32_t label = labels[row];
        if (label < 0 || label >= c) {
            if (lane == 0) losses[row] = NAN;
            if (dz)
                for (int64_t j = lane; j < c; j += WARP) dz[j] = NAN;
            continue;
        }
        float zmax = z[0];
        for (int64_t j = lane; j < c; j += WARP) zmax = z[j] > zmax ? z[j] : zmax;
        for (int step = WARP / 2; step > 0; step /= 2) {
            const float other = __shfl_xor_sync(ALL_LANES, zmax, step);
            zmax = other > zmax ? other : zmax;
        }
        double sum = 0.0;  /* of exp(z - zmax), in [1, C] */
        for (int64_t j = lane; j < c; j += WARP) sum += (double)expf(z[j] - zmax);
        for (int step = WARP / 2; step > 0; step /= 2) sum += __shfl_xor_sync(ALL_LANES, sum, step);
        double target = (double)(z[label] - zmax);
        if (e != 0.0) {  /* the same for every lane of the row, so the shuffles see all 32 */
            double shifted = 0.0;  /* sum of z - zmax */
            for (int64_t j = lane; j < c; j += WARP) shifted += (double)(z[j] - zmax);
            for (int step = WARP / 2; step > 0; step /= 2) shifted += __shfl_xor_sync(ALL_LANES, shifted, step);
            target = __dadd_rn(__dmul_rn(1.0 - e, target), __dmul_rn(e, shifted / (double)c));
        }
        if (lane == 0) losses[row] = (float)(log(sum) - target);
        if (!dz) continue;
        const float scale = __fmul_rn((float)(1.0 / sum), inv_n);
        for (int64_t j = lane; j < c; j += WARP) {
            const float d = __fmul_rn(expf(z[j] - zmax), scale);
            dz[j] = __fsub_rn(d, j == label ? t.hit : t.off);
        }
    }
}

extern "C" int cross_entropy_forward_cuda(void *self, rx_ctx *ctx, const rx_tensor *logits, const int32_t *labels,
                                          float *losses, rx_tensor *dlogits)
{
    const cross_entropy *o = (const cross_entropy *)self;
    const int64_t n = logits->shape.d[0], c = logits->shape.d[1];
    if (n < 1) return 0;
    cross_entropy_rows<<<rx_cuda_blocks(n * WARP), RX_CUDA_THREADS, 0, rx_cuda_stream(ctx)>>>(
        logits->data, labels, losses, dlogits ? dlogits->data : NULL, n, c, o->smoothing,
        cross_entropy_targets_of(o, n, c));
    return RX_CUDA_LAUNCHED(ctx, "cross_entropy forward");
}
