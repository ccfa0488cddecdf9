/* maxpool.h: what maxpool.c (the CPU path, create and the descriptor) and maxpool.cu (the CUDA
 * path) share: the layer's geometry, fixed at create, and the CUDA entry points. Both devices
 * keep the same state: per output, an int32 index of the maximum within its sample, (C, OH, OW). */
#ifndef RX_LAYER_MAXPOOL_H
#define RX_LAYER_MAXPOOL_H

#include "runexp.h"

typedef struct maxpool {
    int c, h, w;   /* input (C, H, W) */
    int oh, ow;    /* output (C, OH, OW) */
    int size, stride;
} maxpool;

#ifdef __cplusplus
extern "C" {
#endif
/* maxpool.cu: the same operations on the GPU, queued on ctx->cuda_stream. */
int maxpool_forward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w, rx_tensor *y, void *state);
int maxpool_backward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y, const rx_tensor *dy,
                          const rx_tensor *w, const void *state, rx_tensor *dx, rx_tensor *dw);
#ifdef __cplusplus
}
#endif

#endif
