/* cross_entropy.h: what cross_entropy.c (the CPU path, create and the descriptor) and
 * cross_entropy.cu (the CUDA path) share. The loss keeps no state of its own (self is NULL), so
 * only the CUDA entry point. */
#ifndef RX_LAYER_CROSS_ENTROPY_H
#define RX_LAYER_CROSS_ENTROPY_H

#include "runexp.h"

#ifdef __cplusplus
extern "C" {
#endif
/* cross_entropy.cu: the same loss on the GPU, queued on ctx->cuda_stream. A label outside
 * [0, C) cannot be refused there without waiting for the GPU; that sample's loss (and gradient
 * row) is NaN instead, which the host's finite-loss check stops the run on. */
int cross_entropy_forward_cuda(void *self, rx_ctx *ctx, const rx_tensor *logits, const int32_t *labels,
                               float *losses, rx_tensor *dlogits);
#ifdef __cplusplus
}
#endif

#endif
