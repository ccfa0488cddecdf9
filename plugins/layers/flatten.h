/* flatten.h: what flatten.c (the CPU path, create and the descriptor) and flatten.cu (the CUDA
 * path) share. flatten keeps no state of its own (self is NULL), so only the CUDA entry points. */
#ifndef RX_LAYER_FLATTEN_H
#define RX_LAYER_FLATTEN_H

#include "runexp.h"

#ifdef __cplusplus
extern "C" {
#endif
/* flatten.cu: the same operations on the GPU, queued on ctx->cuda_stream. */
int flatten_forward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w, rx_tensor *y, void *state);
int flatten_backward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y, const rx_tensor *dy,
                          const rx_tensor *w, const void *state, rx_tensor *dx, rx_tensor *dw);
#ifdef __cplusplus
}
#endif

#endif
