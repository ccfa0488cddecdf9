/* conv2d.cu: conv2d's CUDA path, the twin of conv2d_forward_cpu and conv2d_backward_cpu.
 *
 * The CPU's plan, im2col and a matrix product, done for the whole batch at once: a kernel unfolds
 * every sample into the workspace, col (N, C*K*K, OH*OW), and one strided-batched cuBLAS SGEMM
 * per product handles every sample, with the weights shared (stride 0):
 *     forward   y_i  = W (OC, C*K*K) x col_i (C*K*K, OH*OW)   straight into y's (OC, OH*OW) planes,
 *               then + b per channel
 *     backward  dW_i = dY_i (OC, OH*OW) x col_i^T             into the workspace, one per sample,
 *               then dW += their sum over i, in order;  db += the sums of dY's planes;
 *               dcol_i = W^T x dY_i                           over col, whose values dW has used,
 *               gathered back into dx (col2im)
 * A 1x1 kernel with stride 1 and no padding skips im2col: col is x and dcol is dx.
 *
 * cuBLAS is column-major. A row-major (M, K) matrix with leading dimension K is, to cuBLAS, its
 * (K, M) transpose with the same leading dimension, so the row-major product C (M, N) = A B is
 * asked of cuBLAS as C^T = B^T A^T: gemm(opB, opA, N, M, K, B, ldb, A, lda, C, N), where an
 * operand the row-major product uses transposed gets CUBLAS_OP_T and keeps its own row length as
 * leading dimension. Each call below spells out which product it is.
 *
 * Determinism: no atomics. Each output element is written by one thread, every sum runs in a
 * fixed order (dW over samples, db in a fixed tree), and cuBLAS gives the same bits for the same
 * call on the same GPU; so a repeat gives the same bits, as `runexp check` demands. col2im adds
 * the taps of each input pixel in the CPU's order, (ki, kj), so dx differs from the CPU's only
 * through the GEMM's rounding.
 *
 * Everything is queued on ctx->cuda_stream; nothing here waits for the GPU. */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <inttypes.h>
#include <limits.h>

#include "conv2d.h"
#include "cuda_util.cuh"

/* col (N, C*K*K, OH*OW) = im2col of x (N, C, H, W): entry (i, (c, ki, kj), (oh, ow)) is the input
 * pixel under tap (ki, kj) of output pixel (oh, ow), 0 in the padding. One thread per entry of
 * col, consecutive threads along an output row, so the writes coalesce. */
template <typename Index>
__global__ void conv2d_im2col_batch(const float *__restrict__ x, float *__restrict__ col, const conv2d s,
                                    Index total)
{
    const int taps = s.k * s.k;
    for (Index e = (Index)blockIdx.x * (Index)blockDim.x + (Index)threadIdx.x; e < total;
         e += (Index)gridDim.x * (Index)blockDim.x) {
        const int p = (int)(e % s.pixels);
        const Index t = e / s.pixels;
        const int r = (int)(t % s.rows);
        const Index i = t / s.rows;
        const int c = r / taps, ki = r % taps / s.k, kj = r % s.k;
        const int hh = p / s.ow * s.stride - s.pad + ki, ww = p % s.ow * s.stride - s.pad + kj;
        col[e] = hh >= 0 && hh < s.h && ww >= 0 && ww < s.w ? x[((i * s.c + c) * s.h + hh) * s.w + ww] : 0.0f;
    }
}

/* dx (N, C, H, W) = col2im of dcol (N, C*K*K, OH*OW), in gather form: one thread per input pixel
 * adds the entries of dcol that im2col read from it, taps in (ki, kj) order, so no two threads
 * write the same pixel and no atomics are needed. Tap ki of output row oh reads padded row
 * oh * stride + ki, so the pixel's padded row hp = h + pad - ki is read by oh = hp / stride when
 * that divides exactly and falls inside the output. */
template <typename Index>
__global__ void conv2d_col2im_batch(const float *__restrict__ dcol, float *__restrict__ dx, const conv2d s,
                                    Index total)
{
    for (Index e = (Index)blockIdx.x * (Index)blockDim.x + (Index)threadIdx.x; e < total;
         e += (Index)gridDim.x * (Index)blockDim.x) {
        const int ww = (int)(e % s.w);
        Index t = e / s.w;
        const int hh = (int)(t % s.h);
        t /= s.h;
        const int c = (int)(t % s.c);
        const Index i = t / s.c;
        const float *sample = dcol + i * ((Index)s.rows * s.pixels);  /* (C*K*K, OH*OW) */
        float sum = 0.0f;
        for (int ki = 0; ki < s.k; ki++) {
            const int hp = hh + s.pad - ki;
            if (hp < 0) break;  /* hp only falls as ki grows */
            if (hp % s.stride != 0 || hp / s.stride >= s.oh) continue;
            const int oh = hp / s.stride;
            for (int kj = 0; kj < s.k; kj++) {
                const int wp = ww + s.pad - kj;
                if (wp < 0) break;
                if (wp % s.stride != 0 || wp / s.stride >= s.ow) continue;
                const int row = (c * s.k + ki) * s.k + kj;
                sum += sample[(Index)row * s.pixels + oh * s.ow + wp / s.stride];
            }
        }
        dx[e] = sum;
    }
}

/* y (N, OC, OH*OW) += b[oc] on every plane. */
template <typename Index>
__global__ void conv2d_add_bias(float *__restrict__ y, const float *__restrict__ b, const conv2d s, Index total)
{
    for (Index e = (Index)blockIdx.x * (Index)blockDim.x + (Index)threadIdx.x; e < total;
         e += (Index)gridDim.x * (Index)blockDim.x)
        y[e] += b[(e / s.pixels) % s.oc];
}

/* dw (count) += the sum over the n samples of per_sample (n, count), added in sample order: one
 * thread per weight, consecutive threads on consecutive weights, so every read coalesces. */
__global__ void conv2d_sum_sample_grads(const float *__restrict__ per_sample, float *__restrict__ dw, int64_t count,
                                        int64_t n)
{
    for (int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; j < count; j += (int64_t)gridDim.x * blockDim.x) {
        float sum = 0.0f;
        for (int64_t i = 0; i < n; i++) sum += per_sample[i * count + j];
        dw[j] += sum;
    }
}

/* db[o] += the sum of dY (N, OC, OH*OW) over samples and pixels: block o, RX_CUDA_THREADS threads,
 * each summing a fixed stride of the entries, then a fixed tree over the threads. */
__global__ void conv2d_bias_gradient(const float *__restrict__ dy, float *__restrict__ db, int64_t n, int oc,
                                     int pixels)
{
    __shared__ float partial[RX_CUDA_THREADS];
    const int o = (int)blockIdx.x;
    const int64_t count = n * pixels;
    float sum = 0.0f;
    for (int64_t k = threadIdx.x; k < count; k += blockDim.x) {
        const int64_t i = k / pixels;
        sum += dy[(i * oc + o) * pixels + (k - i * pixels)];
    }
    partial[threadIdx.x] = sum;
    __syncthreads();
    for (int half = RX_CUDA_THREADS / 2; half > 0; half /= 2) {
        if ((int)threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) db[o] += partial[0];
}

/* rx_fail unless the workspace holds `floats` floats for a batch of n. */
static int conv2d_check_workspace(rx_ctx *ctx, size_t floats, int64_t n, const char *what)
{
    const size_t need = floats * sizeof(float);
    if (need == 0 || (ctx->workspace && ctx->workspace_bytes >= need)) return 0;
    return rx_fail(ctx, "%s: needs %zu bytes of workspace for a batch of %" PRId64 ", got %zu", what, need, n,
                   ctx->workspace ? ctx->workspace_bytes : (size_t)0);
}

/* x (N, C, H, W) into col (N, C*K*K, OH*OW), counting in int when every index fits. */
static int conv2d_im2col_launch(const conv2d *s, rx_ctx *ctx, const float *x, float *col, int64_t n,
                                const char *what)
{
    const int64_t total = n * s->rows * (int64_t)s->pixels;
    const int64_t largest = total > n * s->c * (int64_t)s->h * s->w ? total : n * s->c * (int64_t)s->h * s->w;
    if (rx_cuda_int_index(largest))
        conv2d_im2col_batch<int><<<rx_cuda_blocks(total), RX_CUDA_THREADS, 0, rx_cuda_stream(ctx)>>>(x, col, *s,
                                                                                                    (int)total);
    else
        conv2d_im2col_batch<int64_t><<<rx_cuda_blocks(total), RX_CUDA_THREADS, 0, rx_cuda_stream(ctx)>>>(x, col, *s,
                                                                                                        total);
    return RX_CUDA_LAUNCHED(ctx, what);
}

extern "C" int conv2d_forward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w, rx_tensor *y,
                                   void *state)
{
    const conv2d *s = (const conv2d *)self;
    const int64_t n = x->shape.d[0];
    if (s->bf16) return rx_fail(ctx, "%s", CONV2D_BF16_CPU_ONLY);
    if (s->pool) return rx_fail(ctx, "%s", CONV2D_POOL_CPU_ONLY);
    if (n < 1) return 0;
    if (n > INT_MAX) return rx_fail(ctx, "conv2d forward: batch %" PRId64 " exceeds cuBLAS's int batch count", n);
    const size_t col_floats = s->pointwise ? 0 : (size_t)n * (size_t)s->rows * (size_t)s->pixels;
    if (conv2d_check_workspace(ctx, col_floats, n, "conv2d forward") != 0) return -1;

    const float *col = x->data;  /* (N, C*K*K, OH*OW); x itself when pointwise */
    if (!s->pointwise) {
        if (conv2d_im2col_launch(s, ctx, x->data, (float *)ctx->workspace, n, "conv2d forward: im2col") != 0)
            return -1;
        col = (const float *)ctx->workspace;
    }
    cublasHandle_t h = rx_cublas_on_stream(ctx, "conv2d forward");
    if (!h) return -1;
    const float one = 1.0f, zero = 0.0f;
    /* Per sample, row-major: y_i (OC, P) = W (OC, R) x col_i (R, P), with R = C*K*K, P = OH*OW;
     * cuBLAS: y_i^T (P, OC) = col_i^T (P, R) x W^T (R, OC), neither transposed. */
    if (RX_CUBLAS_OK(ctx,
                     cublasSgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_N, s->pixels, s->oc, s->rows, &one, col,
                                               s->pixels, (long long)s->rows * s->pixels, w[0].data, s->rows, 0,
                                               &zero, y->data, s->pixels, (long long)s->oc * s->pixels, (int)n),
                     "conv2d forward: SGEMM") != 0)
        return -1;
    if (s->bias) {
        const int64_t total = n * s->oc * (int64_t)s->pixels;
        if (rx_cuda_int_index(total))
            conv2d_add_bias<int><<<rx_cuda_blocks(total), RX_CUDA_THREADS, 0, rx_cuda_stream(ctx)>>>(
                y->data, w[1].data, *s, (int)total);
        else
            conv2d_add_bias<int64_t><<<rx_cuda_blocks(total), RX_CUDA_THREADS, 0, rx_cuda_stream(ctx)>>>(
                y->data, w[1].data, *s, total);
        if (RX_CUDA_LAUNCHED(ctx, "conv2d forward: bias") != 0) return -1;
    }
    return 0;
}

extern "C" int conv2d_backward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y,
                                    const rx_tensor *dy, const rx_tensor *w, const void *state, rx_tensor *dx,
                                    rx_tensor *dw)
{
    const conv2d *s = (const conv2d *)self;
    const int64_t n = x->shape.d[0];
    if (s->bf16) return rx_fail(ctx, "%s", CONV2D_BF16_CPU_ONLY);
    if (s->pool) return rx_fail(ctx, "%s", CONV2D_POOL_CPU_ONLY);
    if (n < 1) return 0;
    if (n > INT_MAX) return rx_fail(ctx, "conv2d backward: batch %" PRId64 " exceeds cuBLAS's int batch count", n);
    const size_t col_floats = s->pointwise ? 0 : (size_t)n * (size_t)s->rows * (size_t)s->pixels;
    const size_t wsize = (size_t)s->oc * (size_t)s->rows;  /* floats in W, (OC, C*K*K) */
    if (conv2d_check_workspace(ctx, col_floats + (size_t)n * wsize, n, "conv2d backward") != 0) return -1;

    float *col = (float *)ctx->workspace;      /* (N, C*K*K, OH*OW), unless pointwise */
    float *sample_dw = col + col_floats;       /* (N, OC, C*K*K) */
    const float *cols = x->data;               /* what dW reads: col, or x when pointwise */
    if (!s->pointwise) {
        if (conv2d_im2col_launch(s, ctx, x->data, col, n, "conv2d backward: im2col") != 0) return -1;
        cols = col;
    }
    cublasHandle_t h = rx_cublas_on_stream(ctx, "conv2d backward");
    if (!h) return -1;
    const float one = 1.0f, zero = 0.0f;
    /* Per sample, row-major: dW_i (OC, R) = dY_i (OC, P) x col_i^T (P, R);
     * cuBLAS: dW_i^T (R, OC) = col_i (R, P) x dY_i^T (P, OC): col transposed, lda P. */
    if (RX_CUBLAS_OK(ctx,
                     cublasSgemmStridedBatched(h, CUBLAS_OP_T, CUBLAS_OP_N, s->rows, s->oc, s->pixels, &one, cols,
                                               s->pixels, (long long)s->rows * s->pixels, dy->data, s->pixels,
                                               (long long)s->oc * s->pixels, &zero, sample_dw, s->rows,
                                               (long long)wsize, (int)n),
                     "conv2d backward: SGEMM for dW") != 0)
        return -1;
    conv2d_sum_sample_grads<<<rx_cuda_blocks((int64_t)wsize), RX_CUDA_THREADS, 0, rx_cuda_stream(ctx)>>>(
        sample_dw, dw[0].data, (int64_t)wsize, n);
    if (RX_CUDA_LAUNCHED(ctx, "conv2d backward: dW sum") != 0) return -1;
    if (s->bias) {
        conv2d_bias_gradient<<<(unsigned)s->oc, RX_CUDA_THREADS, 0, rx_cuda_stream(ctx)>>>(dy->data, dw[1].data, n,
                                                                                           s->oc, s->pixels);
        if (RX_CUDA_LAUNCHED(ctx, "conv2d backward: db") != 0) return -1;
    }
    if (!dx) return 0;

    /* dcol overwrites col: the dW product that reads col is queued before it on the same
     * stream. When pointwise, dcol is dx itself. */
    float *dcol = s->pointwise ? dx->data : col;  /* (N, C*K*K, OH*OW) */
    /* Per sample, row-major: dcol_i (R, P) = W^T (R, OC) x dY_i (OC, P);
     * cuBLAS: dcol_i^T (P, R) = dY_i^T (P, OC) x W (OC, R): W transposed, lda R. */
    if (RX_CUBLAS_OK(ctx,
                     cublasSgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_T, s->pixels, s->rows, s->oc, &one, dy->data,
                                               s->pixels, (long long)s->oc * s->pixels, w[0].data, s->rows, 0, &zero,
                                               dcol, s->pixels, (long long)s->rows * s->pixels, (int)n),
                     "conv2d backward: SGEMM for dx") != 0)
        return -1;
    if (s->pointwise) return 0;
    const int64_t total = n * s->c * (int64_t)s->h * s->w;
    const int64_t largest = total > (int64_t)col_floats ? total : (int64_t)col_floats;
    if (rx_cuda_int_index(largest))
        conv2d_col2im_batch<int><<<rx_cuda_blocks(total), RX_CUDA_THREADS, 0, rx_cuda_stream(ctx)>>>(
            dcol, dx->data, *s, (int)total);
    else
        conv2d_col2im_batch<int64_t><<<rx_cuda_blocks(total), RX_CUDA_THREADS, 0, rx_cuda_stream(ctx)>>>(
            dcol, dx->data, *s, total);
    return RX_CUDA_LAUNCHED(ctx, "conv2d backward: col2im");
}
