/* cublas_lazy.c: the cuBLAS functions runexp calls, resolved from libcublas at their first use.
 *
 * Linked the usual way (-lcublas), cuBLAS and its libcublasLt (half a gigabyte of code) are mapped
 * and relocated when the process starts: about 210 MB of resident memory in every run of a CUDA
 * build, device=cpu ones included, which then needs 12 MB in all. So nothing links -lcublas:
 * each function below has cuBLAS's own name and signature (from cublas_v2.h), loads the library
 * on its first call (dlopen) and forwards to the real function. The host and every in-tree plugin
 * link this file (plugins with hidden visibility, so each has a private copy); all copies reach
 * the one libcublas the dynamic loader keeps, so handles pass between host and plugins as before.
 * Where the library cannot be loaded, every function returns CUBLAS_STATUS_NOT_INITIALIZED, which
 * every caller already checks, and cublasGetStatusString says why (the soname and the loader's
 * reason), so the caller's message carries it. The CUDA runtime (libcudart, under 1 MB) stays an
 * ordinary link: nvcc's kernels register with it when a plugin is loaded. */
#ifdef RX_WITH_CUDA
#include <cublas_v2.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>

#define STR_(x) #x
#define STR(x) STR_(x)
/* The soname of the major version the headers describe; RX_CUDA_LIB_DIR (the toolkit's lib64,
 * from the Makefile) is tried when the loader's search path does not find it. */
#define CUBLAS_SONAME "libcublas.so." STR(CUBLAS_VER_MAJOR)

/* X(name, parameters, arguments) for every cuBLAS function runexp calls, all returning a status. */
#define CUBLAS_CALLS(X)                                                                                     \
    X(cublasCreate_v2, (cublasHandle_t * handle), (handle))                                                 \
    X(cublasDestroy_v2, (cublasHandle_t handle), (handle))                                                  \
    X(cublasSetStream_v2, (cublasHandle_t handle, cudaStream_t stream), (handle, stream))                   \
    X(cublasSnrm2_v2, (cublasHandle_t handle, int n, const float *x, int incx, float *result),               \
      (handle, n, x, incx, result))                                                                         \
    X(cublasSscal_v2, (cublasHandle_t handle, int n, const float *alpha, float *x, int incx),               \
      (handle, n, alpha, x, incx))                                                                          \
    X(cublasSaxpy_v2,                                                                                       \
      (cublasHandle_t handle, int n, const float *alpha, const float *x, int incx, float *y, int incy),     \
      (handle, n, alpha, x, incx, y, incy))                                                                 \
    X(cublasSgemm_v2,                                                                                       \
      (cublasHandle_t handle, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,              \
       const float *alpha, const float *a, int lda, const float *b, int ldb, const float *beta, float *c,   \
       int ldc),                                                                                            \
      (handle, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc))                                       \
    X(cublasSgemmStridedBatched,                                                                            \
      (cublasHandle_t handle, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,              \
       const float *alpha, const float *a, int lda, long long int stride_a, const float *b, int ldb,        \
       long long int stride_b, const float *beta, float *c, int ldc, long long int stride_c, int count),    \
      (handle, ta, tb, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c, ldc, stride_c, count))

/* The real functions, filled once by load_library (pthread_once: no call sees a half-filled table). */
static struct {
#define FIELD(name, params, args) cublasStatus_t(*name) params;
    CUBLAS_CALLS(FIELD)
#undef FIELD
    const char *(*cublasGetStatusName)(cublasStatus_t);
    const char *(*cublasGetStatusString)(cublasStatus_t);
} real;
static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static char load_error[512]; /* "" once loaded; written only inside load_library */

static void *open_library(void)
{
    void *lib = dlopen(CUBLAS_SONAME, RTLD_NOW | RTLD_LOCAL);
#ifdef RX_CUDA_LIB_DIR
    if (!lib) lib = dlopen(RX_CUDA_LIB_DIR "/" CUBLAS_SONAME, RTLD_NOW | RTLD_LOCAL);
#endif
    return lib;
}

static void load_library(void)
{
    void *lib = open_library();
    if (!lib) {
        snprintf(load_error, sizeof load_error, "cannot load cuBLAS (%s): %s", CUBLAS_SONAME, dlerror());
        return;
    }
    /* POSIX lets a data pointer hold a function's address (dlsym's contract); the cast is how. */
#define LOOK_UP(name, params, args)                                                                         \
    if (!(*(void **)&real.name = dlsym(lib, #name))) {                                                      \
        snprintf(load_error, sizeof load_error, "%s has no %s: %s", CUBLAS_SONAME, #name, dlerror());      \
        return;                                                                                             \
    }
    CUBLAS_CALLS(LOOK_UP)
    LOOK_UP(cublasGetStatusName, , )
    LOOK_UP(cublasGetStatusString, , )
#undef LOOK_UP
    load_error[0] = '\0';
}

static bool loaded(void)
{
    pthread_once(&load_once, load_library);
    return !load_error[0];
}

#define FORWARD(name, params, args)                                                                         \
    cublasStatus_t CUBLASWINAPI name params                                                                 \
    {                                                                                                       \
        return loaded() ? real.name args : CUBLAS_STATUS_NOT_INITIALIZED;                                   \
    }
CUBLAS_CALLS(FORWARD)
#undef FORWARD

const char *CUBLASWINAPI cublasGetStatusName(cublasStatus_t status)
{
    return loaded() ? real.cublasGetStatusName(status) : "CUBLAS_STATUS_NOT_INITIALIZED";
}

const char *CUBLASWINAPI cublasGetStatusString(cublasStatus_t status)
{
    return loaded() ? real.cublasGetStatusString(status) : load_error;
}
#endif
