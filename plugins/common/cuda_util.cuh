/* cuda_util.cuh: what the CUDA path of every in-tree plugin shares (plugins/KIND/NAME.cu): the launch
 * shape of a grid-stride loop, the choice of 32- or 64-bit index arithmetic, and the checks that
 * turn a failed launch or cuBLAS call into rx_fail's one line, with file and line.
 *
 * Only .cu files include it. Each plugin is its own shared object, so everything here is static
 * inline: nothing is exported and no symbol can clash between plugins. No function here waits
 * for the GPU: launches and cuBLAS calls are queued on ctx->cuda_stream, and a fault inside a
 * kernel surfaces at the host's next synchronizing copy (the per-batch losses). */
#ifndef RX_PLUGINS_CUDA_UTIL_CUH
#define RX_PLUGINS_CUDA_UTIL_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "runexp.h"

#define RX_CUDA_THREADS 256     /* threads per block: a power of two, for the tree reductions */
#define RX_CUDA_MAX_BLOCKS 4096 /* enough to fill an H200 (132 SMs x 8 blocks) several times;
                                 * grid-stride loops cover anything larger */

/* Blocks for a grid-stride loop over `total` elements: at least 1 (callers skip empty work
 * before launching), at most RX_CUDA_MAX_BLOCKS. */
static inline unsigned rx_cuda_blocks(int64_t total)
{
    const int64_t b = (total + RX_CUDA_THREADS - 1) / RX_CUDA_THREADS;
    return (unsigned)(b < 1 ? 1 : b > RX_CUDA_MAX_BLOCKS ? RX_CUDA_MAX_BLOCKS : b);
}

/* Whether a grid-stride loop whose indices never exceed `largest` can count in int: 64-bit
 * division is emulated on the GPU and costs about ten times a 32-bit one, and the index kernels
 * (im2col, col2im, pooling) divide several times per element. The margin is the loop's last
 * step, so `i += gridDim.x * blockDim.x` can never wrap. */
static inline bool rx_cuda_int_index(int64_t largest)
{
    return largest <= (int64_t)INT32_MAX - (int64_t)RX_CUDA_MAX_BLOCKS * RX_CUDA_THREADS;
}

static inline cudaStream_t rx_cuda_stream(const rx_ctx *ctx) { return (cudaStream_t)ctx->cuda_stream; }

/* After a kernel launch: 0, or rx_fail with the runtime's reason (a bad launch configuration,
 * or no kernel image for this GPU's architecture, is reported at once). */
static inline int rx_cuda_launched_at(rx_ctx *ctx, const char *what, const char *file, int line)
{
    const cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? 0 : rx_fail(ctx, "%s: %s (%s:%d)", what, cudaGetErrorString(e), file, line);
}

static inline int rx_cuda_ok_at(rx_ctx *ctx, cudaError_t e, const char *what, const char *file, int line)
{
    return e == cudaSuccess ? 0 : rx_fail(ctx, "%s: %s (%s:%d)", what, cudaGetErrorString(e), file, line);
}

static inline int rx_cublas_ok_at(rx_ctx *ctx, cublasStatus_t s, const char *what, const char *file, int line)
{
    return s == CUBLAS_STATUS_SUCCESS ? 0
                                      : rx_fail(ctx, "%s: cuBLAS %s (%s:%d)", what, cublasGetStatusString(s), file, line);
}

#define RX_CUDA_LAUNCHED(ctx, what) rx_cuda_launched_at((ctx), (what), __FILE__, __LINE__)
#define RX_CUDA_OK(ctx, call, what) rx_cuda_ok_at((ctx), (call), (what), __FILE__, __LINE__)
#define RX_CUBLAS_OK(ctx, call, what) rx_cublas_ok_at((ctx), (call), (what), __FILE__, __LINE__)

/* The run's cuBLAS handle, bound to the run's stream. The handle is shared by every layer (and
 * the host may change the stream between runs), so each operation binds it before its first
 * cuBLAS call. NULL after rx_fail when the host gave no handle or the binding failed. */
static inline cublasHandle_t rx_cublas_on_stream(rx_ctx *ctx, const char *what)
{
    cublasHandle_t h = (cublasHandle_t)ctx->cublas;
    if (!h) {
        rx_fail(ctx, "%s: the context has no cuBLAS handle (device_open_context was not called)", what);
        return NULL;
    }
    if (RX_CUBLAS_OK(ctx, cublasSetStream(h, rx_cuda_stream(ctx)), what) != 0) return NULL;
    return h;
}

#endif
