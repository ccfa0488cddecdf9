/* device.c: CPU memory (64-byte aligned, so AVX-512 loads never split a cache line) and, in a
 * CUDA build, GPU memory through the CUDA runtime's C API and cuBLAS's handle. Every CUDA and
 * cuBLAS call goes through CUDA_CHECK or CUBLAS_CHECK, which keep the first failure for
 * device_check (see device.h). */
#include "device.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "error.h"

#ifdef RX_WITH_CUDA
#include <dlfcn.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

/* The first CUDA or cuBLAS call of this file that failed since the last device_check (or the
 * start of the run), as device_check reports it; "" when none did. A deliberate exception to
 * "no mutable globals", kept as narrow as it can be:
 * - rx_ctx, where state belongs, is the plugin ABI and cannot grow a field, and most functions
 *   here take no context; giving each a status argument would change about 150 call sites.
 * - It is thread-local, not process-wide: CUDA keeps its own last error per host thread too, so
 *   this record has the scope of the errors it reports, and two runs on two threads cannot see
 *   each other's failures.
 * - It is written only by record_failure below, on a failure, and read and cleared only by
 *   device_check (and cleared by device_open_context, so a run never inherits an old failure). */
static _Thread_local char first_failure[ERR_LEN];

/* Said after the errors a faulting kernel leaves: CUDA reports them at whatever call comes next,
 * so the call named is seldom the culprit. */
#define KERNEL_FAULT_HINT "; a kernel queued before it faulted (CUDA_LAUNCH_BLOCKING=1 names the launch)"

static bool kernel_fault(cudaError_t e)
{
    switch (e) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorHardwareStackError:
    case cudaErrorAssert:
    case cudaErrorLaunchTimeout: return true;
    default: return false;
    }
}

static void record_failure(const char *call, const char *file, int line, const char *why, const char *name,
                           const char *hint)
{
    if (first_failure[0]) return; /* the first failure is the cause; later ones often follow from it */
    snprintf(first_failure, sizeof first_failure, "%s failed at %s:%d: %s (%s)%s", call, file, line, why, name, hint);
}

static bool cuda_ok(cudaError_t e, const char *call, const char *file, int line)
{
    if (e == cudaSuccess) return true;
    const char *hint = kernel_fault(e) ? KERNEL_FAULT_HINT : "";
    record_failure(call, file, line, cudaGetErrorString(e), cudaGetErrorName(e), hint);
    return false;
}

static bool cublas_ok(cublasStatus_t s, const char *call, const char *file, int line)
{
    if (s == CUBLAS_STATUS_SUCCESS) return true;
    record_failure(call, file, line, cublasGetStatusString(s), cublasGetStatusName(s), "");
    return false;
}

/* True when the call succeeded; otherwise false, and the call (as written), file and line are
 * kept for device_check unless an earlier failure already is. */
#define CUDA_CHECK(call) cuda_ok((call), #call, __FILE__, __LINE__)
#define CUBLAS_CHECK(call) cublas_ok((call), #call, __FILE__, __LINE__)
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

#ifdef RX_WITH_CUDA
/* Whether the NVIDIA driver's library, which the CUDA runtime loads, is on this machine. */
static bool driver_installed(void)
{
    void *h = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
    if (h) dlclose(h);
    return h != NULL;
}
#endif

bool device_usable(rx_device d, char *why)
{
    if (d == RX_CPU) return true;
#ifdef RX_WITH_CUDA
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e == cudaErrorInsufficientDriver && !driver_installed()) {
        /* CUDA says "driver version is insufficient" when there is no driver at all. */
        snprintf(why, ERR_LEN, "no NVIDIA driver found (libcuda.so.1 missing)");
        return false;
    }
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

int device_pick(int index, char *why)
{
#ifdef RX_WITH_CUDA
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count < 1) return 0; /* no GPU: the run's device = "cuda" says so */
    e = cudaSetDevice(index % count);
    if (e != cudaSuccess)
        return errorf(why, "cannot use GPU %d of %d: %s (%s)", index % count, count, cudaGetErrorString(e),
                      cudaGetErrorName(e));
#endif
    return 0;
}

/* Buffers of 2 MB and more (a batch's activations, the layers' workspaces) ask for transparent
 * huge pages, which most kernels give only on request (madvise mode): the convolutions read their
 * inputs as many short strided streams, and on the 2-core VM 4 KB pages cost 2-4% of a training
 * step (docs/benchmarks.md, "Huge pages"). Where the kernel refuses, the buffer keeps small
 * pages: same bytes, same results. */
enum { HUGE_PAGE = 2 << 20 };

/* Bytes rounded up to whole 64-byte lines, at least one: every buffer starts and ends on one. */
static size_t whole_lines(size_t bytes)
{
    size_t rounded = (bytes + 63) / 64 * 64;
    return rounded ? rounded : 64;
}

/* On the GPU, cudaMalloc makes every byte real anyway: scratch is zeroed there too, so the
 * CUDA path keeps what it has always had. */
void *device_alloc_scratch(rx_device d, size_t bytes)
{
    if (d == RX_CUDA) return device_alloc(d, bytes);
    if (bytes >= HUGE_PAGE) {
        const size_t rounded = (bytes + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
        void *p = aligned_alloc(HUGE_PAGE, rounded);
        if (p) (void)madvise(p, rounded, MADV_HUGEPAGE);  /* advice only: a refusal changes nothing */
        return p;
    }
    return aligned_alloc(64, whole_lines(bytes));
}

void *device_alloc(rx_device d, size_t bytes)
{
    size_t rounded = whole_lines(bytes);
#ifdef RX_WITH_CUDA
    if (d == RX_CUDA) {
        void *p = NULL;
        if (!CUDA_CHECK(cudaMalloc(&p, rounded))) return NULL;
        if (!CUDA_CHECK(cudaMemset(p, 0, rounded))) {
            CUDA_CHECK(cudaFree(p));
            return NULL;
        }
        return p;
    }
#endif
    void *p = device_alloc_scratch(RX_CPU, bytes);
    if (p) memset(p, 0, rounded);
    return p;
}

void device_free(rx_device d, void *p)
{
#ifdef RX_WITH_CUDA
    if (d == RX_CUDA) {
        if (p) CUDA_CHECK(cudaFree(p));
        return;
    }
#endif
    free(p);
}

void device_zero(rx_device d, void *p, size_t bytes)
{
#ifdef RX_WITH_CUDA
    if (d == RX_CUDA) {
        CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, 0));
        return;
    }
#endif
    memset(p, 0, bytes);
}

void device_to_host(rx_device d, void *host, const void *src, size_t bytes)
{
#ifdef RX_WITH_CUDA
    if (d == RX_CUDA) {
        CUDA_CHECK(cudaMemcpy(host, src, bytes, cudaMemcpyDeviceToHost));
        return;
    }
#endif
    memcpy(host, src, bytes);
}

void host_to_device(rx_device d, void *dst, const void *host, size_t bytes)
{
#ifdef RX_WITH_CUDA
    if (d == RX_CUDA) {
        CUDA_CHECK(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, 0));
        return;
    }
#endif
    memcpy(dst, host, bytes);
}

void device_copy(rx_device d, void *dst, const void *src, size_t bytes)
{
#ifdef RX_WITH_CUDA
    if (d == RX_CUDA) {
        CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, 0));
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
            if (b != 1 && !CUBLAS_CHECK(cublasSscal(h, k, &b, y + at, 1))) return;
            if (a != 0 && !CUBLAS_CHECK(cublasSaxpy(h, k, &a, x + at, 1, y + at, 1))) return;
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
    /* cuBLAS's saxpy after its sscal rounds b * y, then a * x + that in one FMA: the same here,
     * so both devices give the same bits. */
#pragma omp parallel for simd num_threads(threads) schedule(static)
    for (size_t i = 0; i < n; i++) y[i] = fmaf(a, x[i], b * y[i]);
}

double device_sum_squares(rx_device d, const rx_ctx *ctx, size_t n, const float *x)
{
    double sum = 0;
#ifdef RX_WITH_CUDA
    if (d == RX_CUDA) {
        cublasHandle_t h = (cublasHandle_t)ctx->cublas;
        for (size_t at = 0; at < n; at += 1u << 30) { /* cuBLAS counts in int */
            int k = (int)(n - at < (1u << 30) ? n - at : (1u << 30));
            float norm = 0; /* the host pointer mode: the call waits for the queued work */
            if (!CUBLAS_CHECK(cublasSnrm2(h, k, x + at, 1, &norm))) return NAN;
            sum += (double)norm * (double)norm;
        }
        return sum;
    }
#endif
    /* One thread, in order, in double: the same sum on every thread count, and no float's
     * overflow for the squares of large gradients. */
    for (size_t i = 0; i < n; i++) sum += (double)x[i] * (double)x[i];
    return sum;
}

void *host_alloc_pinned(rx_device d, size_t bytes)
{
#ifdef RX_WITH_CUDA
    if (d == RX_CUDA) {
        void *p = NULL;
        return CUDA_CHECK(cudaMallocHost(&p, bytes ? bytes : 64)) ? p : NULL;
    }
#endif
    return device_alloc(RX_CPU, bytes);
}

void host_free_pinned(rx_device d, void *p)
{
#ifdef RX_WITH_CUDA
    if (d == RX_CUDA) {
        if (p) CUDA_CHECK(cudaFreeHost(p));
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
    first_failure[0] = '\0';
    if (d == RX_CUDA) {
        cublasHandle_t h;
        if (!CUBLAS_CHECK(cublasCreate(&h))) {
            errorf(why, "cannot start cuBLAS: %s", first_failure);
            first_failure[0] = '\0'; /* reported here; no device_check will follow */
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
    if (d == RX_CUDA && ctx->cublas) CUBLAS_CHECK(cublasDestroy((cublasHandle_t)ctx->cublas));
#endif
    ctx->cublas = NULL;
}

int device_check(rx_device d, char *err)
{
#ifdef RX_WITH_CUDA
    /* Read (and so cleared) even when a failure is kept: it is then that same failure, which must
     * not be reported again at the next check. Never on the CPU, which must not start CUDA. */
    cudaError_t pending = d == RX_CUDA ? cudaGetLastError() : cudaSuccess;
    if (first_failure[0]) {
        errorf(err, "on the GPU: %s", first_failure);
        first_failure[0] = '\0';
        return -1;
    }
    if (pending != cudaSuccess) /* every call here is checked, so the call was a plugin's */
        return errorf(err, "on the GPU: an unchecked CUDA call or kernel launch of a plugin's failed since the last "
                      "check: %s (%s)%s", cudaGetErrorString(pending), cudaGetErrorName(pending),
                      kernel_fault(pending) ? KERNEL_FAULT_HINT : "");
#endif
    return 0;
}
