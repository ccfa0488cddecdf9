/* adam.cu: adam's CUDA path. The kernel is adam.h's adam_step_elementwise, whose per-element
 * arithmetic (adam_update) is the very function the CPU loop runs, rounded step for step alike;
 * adamw.cu builds the same kernel into adamw's shared object. Queued on ctx->cuda_stream. */
#include <cuda_runtime.h>

#include "adam.h"

extern "C" int adam_step_cuda(void *self, rx_ctx *ctx, const float *g, float *w, float *state, size_t n, rx_step s)
{
    return adam_step_queue(self, ctx, g, w, state, n, s, "adam step");
}
