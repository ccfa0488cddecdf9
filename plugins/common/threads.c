/* threads.c: the thread count of a parallel pass (threads.h says why it must not change). */
#include "threads.h"

int threads_for(const rx_ctx *ctx, int64_t work, int64_t min_work)
{
    return work >= min_work && ctx->threads > 1 ? ctx->threads : 1;
}
