/* threads.h: how many OpenMP threads a plugin's parallel pass uses, decided in one place. A
 * parallel region costs a few microseconds, about what a pass over 32K floats takes, so a pass
 * over less work stays on one thread.
 *
 * The answer must stay what it is for a given (ctx->threads, work): reductions are summed per
 * thread, so another split would change training results in their last bits. */
#ifndef RX_COMMON_THREADS_H
#define RX_COMMON_THREADS_H

#include <stdint.h>

#include "runexp.h"

/* Elements of an elementwise or per-plane pass worth a parallel region. */
#define THREADS_MIN_WORK 32768

/* ctx->threads when work reaches min_work and more than one thread is allowed, else 1. */
int threads_for(const rx_ctx *ctx, int64_t work, int64_t min_work);

#endif
