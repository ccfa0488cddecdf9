/* device.c: CPU memory (64-byte aligned, so AVX-512 loads never split a cache line) and, in a
 * CUDA build, GPU memory through the CUDA runtime's C API and cuBLAS's handle. */
#include "device.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "files.h"

#ifdef RX_WITH_CUDA
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#endif

const char *device_name(rx_device d)
{
    return d == RX_CUDA ? "cuda" : "cpu";
}

bool device_cuda_built(void)
{
#ifdef RX_WITH_CUDA
    return true;
#else
    return false;
#endif
}

bool device_usable(rx_device d, char *why)
{
    if (d == RX_CPU) return true;
#ifdef RX_WITH_CUDA
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        snprintf(why, ERR_LEN, "no usable GPU (%s)", cudaGetErrorString(e));
        return false;
    }
    if (count < 1) {
        snprintf(why, ERR_LEN, "no GPU found");
        return false;
    }
    return true;
#else
    snprintf(why, ERR_LEN, "this runexp was built without CUDA (rebuild with nvcc on the PATH, or CUDA=1)");
    return false;
#endif
}

void *device_alloc(rx_device d, size_t bytes)
{
    size_t rounded = (bytes + 63) / 64 * 64;
    if (!rounded) rounded = 64;
#ifdef RX_WITH_CUDA
    if (d == RX_CUDA) {
        void *p = NULL;
        if (cudaMalloc(&p, rounded) != cudaSuccess) return NULL;
        if (cudaMemset(p, 0, rounded) != cudaSuccess) {
            cudaFree(p);
            return NULL;
        }
        return p;
    }
#endif
    void *p = aligned_alloc(64, rounded);
    if (p) memset(p, 0, rounded);
    return p;
}

void device_free(rx_device d, void *p)
{
#ifdef RX_WITH_CUDA
    if (d == RX_CUDA) {
        if (p) cudaFree(p);
        return;
    }
#endif
    free(p);
}

void device_zero(rx_device d, void *p, size_t bytes)
{
#ifdef RX_WITH_CUDA
    if (d == RX_CUDA) {
        cudaMemsetAsync(p, 0, bytes, 0);
        return;
    }
#endif
    memset(p, 0, bytes);
}

void device_to_host(rx_device d, void *host, const void *src, size_t bytes)
{
#ifdef RX_WITH_CUDA
    if (d == RX_CUDA) {
        cudaMemcpy(host, src, bytes, cudaMemcpyDeviceToHost);
        return;
    }
#endif
    memcpy(host, src, bytes);
}

void host_to_device(rx_device d, void *dst, const void *host, size_t bytes)
{
#ifdef RX_WITH_CUDA
    if (d == RX_CUDA) {
        cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, 0);
        return;
    }
#endif
    memcpy(dst, host, bytes);
}

void device_copy(rx_device d, void *dst, const void *src, size_t bytes)
{
#ifdef RX_WITH_CUDA
    if (d == RX_CUDA) {
        cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, 0);
        return;
    }
#endif
    memcpy(dst, src, bytes);
}

void device_axpby(rx_device d, const rx_ctx *ctx, size_t n, float a, const float *x, float b, float *y)
{
#ifdef RX_WITH_CUDA
    if (d == RX_CUDA) {
        cublasHandle_t h = (cublasHandle_t)ctx->cublas;
        for (size_t at = 0; at < n; at += 1u << 30) { /* cuBLAS counts in int */
            int k = (int)(n - at < (1u << 30) ? n - at : (1u << 30));
            if (b != 1) cublasSscal(h, k, &b, y + at, 1);
            if (a != 0) cublasSaxpy(h, k, &a, x + at, 1, y + at, 1);
        }
        return;
    }
#endif
    int threads = n >= 65536 && ctx->threads > 1 ? ctx->threads : 1;
    (void)threads; /* read only by the pragma */
    if (a == 0) { /* y = b * y: never 0 * x, which an infinite x would turn into NaN */
#pragma omp parallel for simd num_threads(threads) schedule(static)
        for (size_t i = 0; i < n; i++) y[i] = b * y[i];
        return;
    }
#pragma omp parallel for simd num_threads(threads) schedule(static)
    for (size_t i = 0; i < n; i++) y[i] = a * x[i] + b * y[i];
}

void *host_alloc_pinned(rx_device d, size_t bytes)
{
#ifdef RX_WITH_CUDA
    if (d == RX_CUDA) {
        void *p = NULL;
        return cudaMallocHost(&p, bytes ? bytes : 64) == cudaSuccess ? p : NULL;
    }
#endif
    return device_alloc(RX_CPU, bytes);
}

void host_free_pinned(rx_device d, void *p)
{
#ifdef RX_WITH_CUDA
    if (d == RX_CUDA) {
        if (p) cudaFreeHost(p);
        return;
    }
#endif
    free(p);
}

int device_open_context(rx_device d, rx_ctx *ctx, char *why)
{
    ctx->cuda_stream = NULL; /* the default stream: everything in order */
    ctx->cublas = NULL;
#ifdef RX_WITH_CUDA
    if (d == RX_CUDA) {
        cublasHandle_t h;
        cublasStatus_t s = cublasCreate(&h);
        if (s != CUBLAS_STATUS_SUCCESS) {
            snprintf(why, ERR_LEN, "cannot start cuBLAS (status %d)", (int)s);
            return -1;
        }
        ctx->cublas = h;
    }
#endif
    return 0;
}

void device_close_context(rx_device d, rx_ctx *ctx)
{
#ifdef RX_WITH_CUDA
    if (d == RX_CUDA && ctx->cublas) cublasDestroy((cublasHandle_t)ctx->cublas);
#endif
    ctx->cublas = NULL;
}
