/* device.h: memory on a device, and whether a device can be used. The host owns every buffer a
 * plugin sees; this is the one place that allocates them. A build with CUDA (RX_WITH_CUDA, set
 * by the Makefile when nvcc is found) adds the GPU here and nowhere else in the host. All GPU
 * work goes on the default stream, in order, so nothing in the training loop has to wait for
 * anything but the few scalars copied back for the logs. */
#ifndef RUNEXP_DEVICE_H
#define RUNEXP_DEVICE_H

#include <stdbool.h>

#include "runexp.h"

const char *device_name(rx_device d);
/* Whether this build has CUDA compiled in. */
bool device_cuda_built(void);
/* Whether d can run here; if not, why (one line) in why (ERR_LEN bytes). */
bool device_usable(rx_device d, char *why);
/* Makes GPU index % (the GPUs present) this thread's GPU (one GPU per rank, by local rank); nothing
 * where no GPU is found or CUDA is not built in. -1 with the reason in why (ERR_LEN). */
int device_pick(int index, char *why);

/* Zeroed memory of `bytes` on the device, aligned for vector loads; NULL when out of memory. */
void *device_alloc(rx_device d, size_t bytes);
/* The same, not zeroed on the CPU: for scratch its users always write before they read (the
 * layers' workspace), so that the pages no call touches are never made real. */
void *device_alloc_scratch(rx_device d, size_t bytes);
void device_free(rx_device d, void *p);
void device_zero(rx_device d, void *p, size_t bytes);
/* Copies between host memory and the device (plain memcpy on the CPU). device_to_host waits
 * for the device's queued work; host_to_device is queued after it. */
void device_to_host(rx_device d, void *host, const void *src, size_t bytes);
void host_to_device(rx_device d, void *dst, const void *host, size_t bytes);
/* Copies between two buffers of the same device (queued on the GPU). */
void device_copy(rx_device d, void *dst, const void *src, size_t bytes);
/* y = a * x + b * y over n floats of the device: residual sums, averages of views, the weights'
 * moving average. cuBLAS on the GPU, ctx->threads on the CPU. */
void device_axpby(rx_device d, const rx_ctx *ctx, size_t n, float a, const float *x, float b, float *y);
/* The sum of the squares of n floats of the device (a gradient's squared L2 norm), on the host:
 * in double and in order on the CPU, from cuBLAS's snrm2 on the GPU (which waits for the queued
 * work); NaN after a failed cuBLAS call (device_check says which). */
double device_sum_squares(rx_device d, const rx_ctx *ctx, size_t n, const float *x);
/* Host memory the device copies from without staging (pinned on CUDA). */
void *host_alloc_pinned(rx_device d, size_t bytes);
void host_free_pinned(rx_device d, void *p);

/* Whether every GPU call so far succeeded. The functions above return nothing (a copy cannot
 * fail on the CPU); in a CUDA build each checks its CUDA and cuBLAS calls and keeps the first
 * failure (per host thread) until this reports it: -1, with the call as written, file, line and
 * CUDA's reason in err ("on the GPU: cudaMemcpy(...) failed at core/device.c:123: ..."), and the
 * failure cleared. On d == RX_CUDA it also reports an error CUDA holds from a call or kernel
 * launch nobody checked. It does not wait for the GPU: a kernel that faults while running is
 * reported by the next call that waits for it (device_to_host), so call this after the copies
 * the host is about to trust. Always 0 on the CPU and in a build without CUDA. */
int device_check(rx_device d, char *err);

/* The per-run handles a CUDA context carries (cuBLAS); no-ops on the CPU. Opening also forgets
 * a failure that no device_check reported, so that a run never reports another's. */
int device_open_context(rx_device d, rx_ctx *ctx, char *why);
void device_close_context(rx_device d, rx_ctx *ctx);

#endif
