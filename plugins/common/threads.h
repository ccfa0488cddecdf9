/* threads.h: how many OpenMP threads a plugin's parallel pass uses, decided in one place. A
 * parallel region costs a few microseconds, about what a pass over 32K floats takes, so a pass
 * over less work stays on one thread.
 *
 * The answer must stay what it is for a given (ctx->threads, work): reductions are summed per
 * thread, so another split would change training results in their last bits. */
#ifndef RX_COMMON_THREADS_H
#define RX_COMMON_THREADS_H

#include <stddef.h>
#include <stdint.h>

#include "runexp.h"

/* Elements of an elementwise or per-plane pass worth a parallel region. */
#define THREADS_MIN_WORK 32768

/* ctx->threads when work reaches min_work and more than one thread is allowed, else 1. */
int threads_for(const rx_ctx *ctx, int64_t work, int64_t min_work);

/* for (size_t i = 0; i < n; i++) body; as one vectorized loop, split across
 * threads_for(ctx, n, THREADS_MIN_WORK) threads in equal static blocks: an elementwise pass
 * (relu, gelu, scale), whose result never depends on the thread count. `i` names the index for
 * the body. The pragma reads the thread count; a build without OpenMP ignores it. */
#define THREADS_ELEMENTWISE(ctx, n, i, ...)                                                             \
    do {                                                                                                \
        const size_t elementwise_n_ = (n);                                                              \
        const int elementwise_threads_ = threads_for((ctx), (int64_t)elementwise_n_, THREADS_MIN_WORK); \
        (void)elementwise_threads_;                                                                     \
        _Pragma("omp parallel for simd num_threads(elementwise_threads_) schedule(static)")             \
        for (size_t i = 0; i < elementwise_n_; i++) __VA_ARGS__;                                        \
    } while (0)

#endif
