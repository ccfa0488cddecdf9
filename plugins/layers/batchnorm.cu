/* batchnorm.cu: batchnorm's CUDA path, the twin of batchnorm_forward_cpu and
 * batchnorm_backward_cpu, with the same formulas and the same state (mean (C), then invstd (C),
 * at the start of the block; see batchnorm.h).
 *
 * One block per channel. Its threads stride over the channel's M = N * H * W values, each adding
 * its share in double, and the block adds the shares in a fixed tree in shared memory: no
 * atomics, since the block owns everything of its channel (its outputs, its running statistics,
 * its state and its two parameter gradients), and a repeat gives the same bits. The block is
 * the smallest power of two from 32 to RX_CUDA_THREADS threads that covers M, so a (C) input
 * with a small batch does not leave most of 256 threads idle. (With a (C) input, consecutive
 * threads read floats C apart, so those reads do not coalesce; a block spanning a few channels
 * would, and is left for when a profile asks for it.)
 *     training forward  mean, then the squared deviations from it (two passes, as the CPU);
 *                       thread 0 updates the running statistics and writes the state; then y
 *     eval forward      the running statistics; thread 0 writes the state; then y
 *     backward          sum(dy) and sum(dy * xhat) (one pass); thread 0 adds them into dbias
 *                       and dweight; then dx
 * With activation = "gelu", y is gelu_exact of the normalized value, and backward takes
 * dz = dy * gelu_exact_grad(z) for dy, z recomputed in each of its two passes (the CPU keeps dz in
 * dx between them; here recomputing costs less than the memory).
 * The CPU adds the same values in another order, so the batch statistics may differ in the last
 * bits of a double and, rarely, in the last bit of a float. Everything elementwise is the CPU's
 * expression with the CPU's roundings (__fsub_rn and friends keep nvcc from fusing a multiply and
 * an add into an FMA, which gcc in ISO C mode never does), so evaluation's forward, which has no
 * sums, gives the same bits on both devices. Queued on ctx->cuda_stream; nothing waits for the
 * GPU. */
#include <cuda_runtime.h>
#include <inttypes.h>
#include <math.h>

#include "batchnorm.h"
#include "cuda_util.cuh"
#include "gelu_math.h"

/* Where value j (0 <= j < M) of channel c lies in an (N, C, HW) tensor: sample j / HW, offset
 * j % HW within it. */
template <typename Index>
__device__ __forceinline__ Index batchnorm_at(Index j, Index c, Index ch, Index hw)
{
    const Index i = j / hw;
    return (i * ch + c) * hw + (j - i * hw);
}

/* The sums over the block of every thread's *a and *b, added in a fixed tree; every thread gets
 * both totals back in *a and *b. blockDim.x is a power of two of at most RX_CUDA_THREADS, and
 * every thread of the block must call this. */
__device__ void batchnorm_block_sums(double *a, double *b)
{
    __shared__ double sa[RX_CUDA_THREADS], sb[RX_CUDA_THREADS];
    const unsigned t = threadIdx.x;
    sa[t] = *a;
    sb[t] = *b;
    __syncthreads();
    for (unsigned step = blockDim.x / 2; step > 0; step /= 2) {
        if (t < step) {
            sa[t] += sa[t + step];
            sb[t] += sb[t + step];
        }
        __syncthreads();
    }
    *a = sa[0];
    *b = sb[0];
    __syncthreads();  /* every thread has read the totals before a later call overwrites them */
}

/* z = (x - mean) * scale + shift, rounded as the CPU rounds it. */
__device__ __forceinline__ float batchnorm_z(float x, float mean, float scale, float shift)
{
    return __fadd_rn(__fmul_rn(__fsub_rn(x, mean), scale), shift);
}

/* y = z, or GELU(z) with gelu, over channel c's M values. */
template <typename Index>
__device__ void batchnorm_normalize(const float *__restrict__ x, float *__restrict__ y, Index c, Index ch, Index hw,
                                    Index m, float mean, float scale, float shift, bool gelu)
{
    for (Index j = (Index)threadIdx.x; j < m; j += (Index)blockDim.x) {
        const Index at = batchnorm_at(j, c, ch, hw);
        const float z = batchnorm_z(x[at], mean, scale, shift);
        y[at] = gelu ? gelu_exact(z) : z;
    }
}

/* dy, or dy * GELU'(z) with gelu: the gradient that reaches z. */
__device__ __forceinline__ float batchnorm_dz(float dy, float x, float mean, float scale, float shift, bool gelu)
{
    return gelu ? __fmul_rn(dy, gelu_exact_grad(batchnorm_z(x, mean, scale, shift))) : dy;
}

/* Training forward, block c: y (N, C, HW) from x with channel c's batch statistics; updates
 * running_mean and running_var (C) at c, with the unbiased variance; writes mean and invstd (C),
 * the state, at c. m >= 2 (the host side refuses less). */
template <typename Index>
__global__ void batchnorm_forward_train(const float *__restrict__ x, float *__restrict__ y,
                                        const float *__restrict__ weight, const float *__restrict__ bias,
                                        float *__restrict__ running_mean, float *__restrict__ running_var,
                                        float *__restrict__ mean, float *__restrict__ invstd, Index ch, Index hw,
                                        Index m, double eps, double momentum, bool gelu)
{
    const Index c = (Index)blockIdx.x;
    double sum = 0.0, unused = 0.0;
    for (Index j = (Index)threadIdx.x; j < m; j += (Index)blockDim.x) sum += x[batchnorm_at(j, c, ch, hw)];
    batchnorm_block_sums(&sum, &unused);
    const double mu = sum / (double)m;
    double squares = 0.0;
    for (Index j = (Index)threadIdx.x; j < m; j += (Index)blockDim.x) {
        const double d = (double)x[batchnorm_at(j, c, ch, hw)] - mu;
        squares += d * d;
    }
    unused = 0.0;
    batchnorm_block_sums(&squares, &unused);
    const double var = squares / (double)m;
    const double is = 1.0 / sqrt(var + eps);
    if (threadIdx.x == 0) {
        const double unbiased = var * (double)m / (double)(m - 1);
        running_mean[c] = (float)__dadd_rn(__dmul_rn(1.0 - momentum, (double)running_mean[c]), __dmul_rn(momentum, mu));
        running_var[c] =
            (float)__dadd_rn(__dmul_rn(1.0 - momentum, (double)running_var[c]), __dmul_rn(momentum, unbiased));
        mean[c] = (float)mu;
        invstd[c] = (float)is;
    }
    batchnorm_normalize(x, y, c, ch, hw, m, (float)mu, (float)((double)weight[c] * is), bias[c], gelu);
}

/* Evaluation forward, block c: y (N, C, HW) from x with the running statistics (read only);
 * writes mean and invstd (C), the state, at c, so that a backward can follow. */
template <typename Index>
__global__ void batchnorm_forward_eval(const float *__restrict__ x, float *__restrict__ y,
                                       const float *__restrict__ weight, const float *__restrict__ bias,
                                       const float *__restrict__ running_mean, const float *__restrict__ running_var,
                                       float *__restrict__ mean, float *__restrict__ invstd, Index ch, Index hw,
                                       Index m, double eps, bool gelu)
{
    const Index c = (Index)blockIdx.x;
    const float mu = running_mean[c];
    const double is = 1.0 / sqrt((double)running_var[c] + eps);
    if (threadIdx.x == 0) {
        mean[c] = mu;
        invstd[c] = (float)is;
    }
    batchnorm_normalize(x, y, c, ch, hw, m, mu, (float)((double)weight[c] * is), bias[c], gelu);
}

/* Backward, block c: adds sum(dy * xhat) into dweight[c] and sum(dy) into dbias[c]; writes dx
 * (N, C, HW) at channel c unless dx is NULL. mean and invstd (C): the state forward wrote. */
template <typename Index>
__global__ void batchnorm_backward_channel(const float *__restrict__ x, const float *__restrict__ dy,
                                           const float *__restrict__ weight, const float *__restrict__ bias,
                                           const float *__restrict__ mean, const float *__restrict__ invstd,
                                           float *__restrict__ dx, float *__restrict__ dweight,
                                           float *__restrict__ dbias, Index ch, Index hw, Index m, bool training,
                                           bool gelu)
{
    const Index c = (Index)blockIdx.x;
    const float mu = mean[c], is = invstd[c];
    const float scale = (float)((double)weight[c] * (double)is), shift = bias[c];  /* z's, as the CPU's */
    double sum_dy = 0.0, sum_dy_xhat = 0.0;  /* float * float is exact in double */
    for (Index j = (Index)threadIdx.x; j < m; j += (Index)blockDim.x) {
        const Index at = batchnorm_at(j, c, ch, hw);
        const float g = batchnorm_dz(dy[at], x[at], mu, scale, shift, gelu);
        const float xhat = __fmul_rn(__fsub_rn(x[at], mu), is);
        sum_dy += g;
        sum_dy_xhat += (double)g * xhat;
    }
    batchnorm_block_sums(&sum_dy, &sum_dy_xhat);
    if (threadIdx.x == 0) {
        dweight[c] += (float)sum_dy_xhat;
        dbias[c] += (float)sum_dy;
    }
    if (!dx) return;
    const float k = (float)((double)weight[c] * is);
    if (training) {
        const float a = (float)(sum_dy / (double)m), b = (float)(sum_dy_xhat / (double)m);
        for (Index j = (Index)threadIdx.x; j < m; j += (Index)blockDim.x) {
            const Index at = batchnorm_at(j, c, ch, hw);
            const float xhat = __fmul_rn(__fsub_rn(x[at], mu), is);
            const float g = batchnorm_dz(dy[at], x[at], mu, scale, shift, gelu);
            dx[at] = __fmul_rn(k, __fsub_rn(__fsub_rn(g, a), __fmul_rn(xhat, b)));
        }
    } else {
        for (Index j = (Index)threadIdx.x; j < m; j += (Index)blockDim.x) {
            const Index at = batchnorm_at(j, c, ch, hw);
            dx[at] = __fmul_rn(k, batchnorm_dz(dy[at], x[at], mu, scale, shift, gelu));
        }
    }
}

/* Threads per channel's block: the smallest power of two from 32 (a warp) to RX_CUDA_THREADS
 * that covers the channel's m values. */
static unsigned batchnorm_block_threads(int64_t m)
{
    unsigned t = 32;
    while (t < RX_CUDA_THREADS && (int64_t)t < m) t *= 2;
    return t;
}

extern "C" int batchnorm_forward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w, rx_tensor *y,
                                      void *state)
{
    const batchnorm *s = (const batchnorm *)self;
    const int64_t n = x->shape.d[0], m = n * s->hw;  /* m: values per channel in the batch */
    if (batchnorm_check_batch(s, ctx, n) != 0) return -1;
    if (n < 1) return 0;
    float *mean = (float *)state, *invstd = mean + s->c;  /* (C) each, on the GPU */
    if (ctx->training) {
        if (rx_cuda_int_index(n * s->c * s->hw))
            batchnorm_forward_train<int><<<(unsigned)s->c, batchnorm_block_threads(m), 0, rx_cuda_stream(ctx)>>>(
                x->data, y->data, w[BN_WEIGHT].data, w[BN_BIAS].data, w[BN_RUNNING_MEAN].data,
                w[BN_RUNNING_VAR].data, mean, invstd, (int)s->c, (int)s->hw, (int)m, s->eps, s->momentum, s->gelu);
        else
            batchnorm_forward_train<int64_t><<<(unsigned)s->c, batchnorm_block_threads(m), 0, rx_cuda_stream(ctx)>>>(
                x->data, y->data, w[BN_WEIGHT].data, w[BN_BIAS].data, w[BN_RUNNING_MEAN].data,
                w[BN_RUNNING_VAR].data, mean, invstd, s->c, s->hw, m, s->eps, s->momentum, s->gelu);
        return RX_CUDA_LAUNCHED(ctx, "batchnorm forward (training)");
    }
    if (rx_cuda_int_index(n * s->c * s->hw))
        batchnorm_forward_eval<int><<<(unsigned)s->c, batchnorm_block_threads(m), 0, rx_cuda_stream(ctx)>>>(
            x->data, y->data, w[BN_WEIGHT].data, w[BN_BIAS].data, w[BN_RUNNING_MEAN].data, w[BN_RUNNING_VAR].data,
            mean, invstd, (int)s->c, (int)s->hw, (int)m, s->eps, s->gelu);
    else
        batchnorm_forward_eval<int64_t><<<(unsigned)s->c, batchnorm_block_threads(m), 0, rx_cuda_stream(ctx)>>>(
            x->data, y->data, w[BN_WEIGHT].data, w[BN_BIAS].data, w[BN_RUNNING_MEAN].data, w[BN_RUNNING_VAR].data,
            mean, invstd, s->c, s->hw, m, s->eps, s->gelu);
    return RX_CUDA_LAUNCHED(ctx, "batchnorm forward (evaluation)");
}

extern "C" int batchnorm_backward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y,
                                       const rx_tensor *dy, const rx_tensor *w, const void *state, rx_tensor *dx,
                                       rx_tensor *dw)
{
    const batchnorm *s = (const batchnorm *)self;
    const int64_t n = x->shape.d[0], m = n * s->hw;
    if (n < 1) return 0;
    const float *mean = (const float *)state, *invstd = mean + s->c;  /* (C) each, on the GPU */
    float *out = dx ? dx->data : NULL;
    if (rx_cuda_int_index(n * s->c * s->hw))
        batchnorm_backward_channel<int><<<(unsigned)s->c, batchnorm_block_threads(m), 0, rx_cuda_stream(ctx)>>>(
            x->data, dy->data, w[BN_WEIGHT].data, w[BN_BIAS].data, mean, invstd, out, dw[BN_WEIGHT].data,
            dw[BN_BIAS].data, (int)s->c, (int)s->hw, (int)m, ctx->training, s->gelu);
    else
        batchnorm_backward_channel<int64_t><<<(unsigned)s->c, batchnorm_block_threads(m), 0, rx_cuda_stream(ctx)>>>(
            x->data, dy->data, w[BN_WEIGHT].data, w[BN_BIAS].data, mean, invstd, out, dw[BN_WEIGHT].data,
            dw[BN_BIAS].data, s->c, s->hw, m, ctx->training, s->gelu);
    return RX_CUDA_LAUNCHED(ctx, "batchnorm backward");
}
