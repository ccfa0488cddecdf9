/* linear.cu: linear's CUDA path, the twin of linear_forward_cpu and linear_backward_cpu: three
 * cuBLAS SGEMMs over the whole batch, a bias kernel and a bias-gradient kernel.
 *     forward   y  = x W^T, then + b per output
 *     backward  dW += dY^T x (beta = 1: backward adds);  dX = dY W;  db += column sums of dY
 *
 * cuBLAS is column-major. A row-major (M, K) matrix with leading dimension K is, to cuBLAS, its
 * (K, M) transpose with the same leading dimension, so the row-major product C (M, N) = A B is
 * asked of cuBLAS as C^T = B^T A^T: gemm(opB, opA, N, M, K, B, ldb, A, lda, C, N), where an
 * operand the row-major product uses transposed gets CUBLAS_OP_T and keeps its own row length as
 * leading dimension. Each call below spells out which product it is.
 *
 * Determinism: no atomics; db adds the samples in order, one thread per output, and cuBLAS gives
 * the same bits for the same call on the same GPU. The CPU's workspace (a transposed copy of y)
 * is not needed here: cuBLAS writes y in place. Everything is queued on ctx->cuda_stream;
 * nothing here waits for the GPU. */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <inttypes.h>
#include <limits.h>

#include "linear.h"
#include "cuda_util.cuh"

/* What both passes do first: the batch size as cuBLAS's int, and the run's cuBLAS handle bound
 * to the run's stream. 0 with *n the batch (0: an empty batch, nothing to do, *h NULL), or -1
 * after rx_fail; `what` names the pass in the messages ("linear forward"). */
static int linear_cuda_start(rx_ctx *ctx, const rx_tensor *x, const char *what, int *n, cublasHandle_t *h)
{
    const int64_t batch = x->shape.d[0];
    *n = 0;
    *h = NULL;
    if (batch < 1) return 0;
    if (batch > INT_MAX) return rx_fail(ctx, "%s: batch %" PRId64 " is too large for cuBLAS's int sizes", what, batch);
    *h = rx_cublas_on_stream(ctx, what);
    if (!*h) return -1;
    *n = (int)batch;
    return 0;
}

/* y (N, OUT) += b (OUT) on every row. */
__global__ void linear_add_bias(float *__restrict__ y, const float *__restrict__ b, int64_t total, int out)
{
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x)
        y[e] += b[e % out];
}

/* db (OUT) += the column sums of dY (N, OUT): one thread per output, the samples added in order;
 * consecutive threads read consecutive floats of each row. */
__global__ void linear_bias_gradient(const float *__restrict__ dy, float *__restrict__ db, int64_t n, int out)
{
    for (int64_t o = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; o < out; o += (int64_t)gridDim.x * blockDim.x) {
        float sum = 0.0f;
        for (int64_t i = 0; i < n; i++) sum += dy[i * out + o];
        db[o] += sum;
    }
}

extern "C" int linear_forward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w, rx_tensor *y,
                                   void *state)
{
    const linear *s = (const linear *)self;
    int n;
    cublasHandle_t h;
    if (linear_cuda_start(ctx, x, "linear forward", &n, &h) != 0) return -1;
    if (n == 0) return 0;
    const float one = 1.0f, zero = 0.0f;
    /* Row-major: y (N, OUT) = x (N, F) x W^T (F, OUT);
     * cuBLAS: y^T (OUT, N) = W (OUT, F) x x^T (F, N): W transposed, lda F. */
    if (RX_CUBLAS_OK(ctx,
                     cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, s->out, n, s->in, &one, w[0].data, s->in, x->data,
                                 s->in, &zero, y->data, s->out),
                     "linear forward: SGEMM") != 0)
        return -1;
    if (!s->bias) return 0;
    const int64_t total = (int64_t)n * s->out;
    linear_add_bias<<<rx_cuda_blocks(total), RX_CUDA_THREADS, 0, rx_cuda_stream(ctx)>>>(y->data, w[1].data, total,
                                                                                       s->out);
    return RX_CUDA_LAUNCHED(ctx, "linear forward: bias");
}

extern "C" int linear_backward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y,
                                    const rx_tensor *dy, const rx_tensor *w, const void *state, rx_tensor *dx,
                                    rx_tensor *dw)
{
    const linear *s = (const linear *)self;
    int n;
    cublasHandle_t h;
    if (linear_cuda_start(ctx, x, "linear backward", &n, &h) != 0) return -1;
    if (n == 0) return 0;
    const float one = 1.0f, zero = 0.0f;
    /* Row-major: dW (OUT, F) += dY^T (OUT, N) x x (N, F);
     * cuBLAS: dW^T (F, OUT) += x^T (F, N) x dY (N, OUT): dY transposed, ldb OUT. */
    if (RX_CUBLAS_OK(ctx,
                     cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_T, s->in, s->out, n, &one, x->data, s->in, dy->data,
                                 s->out, &one, dw[0].data, s->in),
                     "linear backward: SGEMM for dW") != 0)
        return -1;
    if (s->bias) {
        linear_bias_gradient<<<rx_cuda_blocks(s->out), RX_CUDA_THREADS, 0, rx_cuda_stream(ctx)>>>(dy->data,
                                                                                                 dw[1].data, n, s->out);
        if (RX_CUDA_LAUNCHED(ctx, "linear backward: db") != 0) return -1;
    }
    if (!dx) return 0;
    /* Row-major: dX (N, F) = dY (N, OUT) x W (OUT, F);
     * cuBLAS: dX^T (F, N) = W^T (F, OUT) x dY^T (OUT, N), neither transposed. */
    return RX_CUBLAS_OK(ctx,
                        cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, s->in, n, s->out, &one, w[0].data, s->in,
                                    dy->data, s->out, &zero, dx->data, s->in),
                        "linear backward: SGEMM for dx");
}
