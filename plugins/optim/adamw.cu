/* adamw.cu: adamw's CUDA path: adam.h's kernel (see adam.cu) in adamw's shared object; the
 * decoupled weight decay is a flag set at create. Queued on ctx->cuda_stream. */
#include <cuda_runtime.h>

#include "adamw.h"

extern "C" int adamw_step_cuda(void *self, rx_ctx *ctx, const float *g, float *w, float *state, size_t n, rx_step s)
{
    return adam_step_queue(self, ctx, g, w, state, n, s, "adamw step");
}
