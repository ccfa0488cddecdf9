/* dropout.h: what dropout.c (the CPU path, create and the descriptor) and dropout.cu (the CUDA
 * path) share: the probabilities fixed at create, and the CUDA entry points. */
#ifndef RX_LAYER_DROPOUT_H
#define RX_LAYER_DROPOUT_H

#include "runexp.h"

typedef struct dropout {
    float p;      /* drop probability */
    float scale;  /* 1 / (1 - p), applied to the kept elements */
} dropout;

#ifdef __cplusplus
extern "C" {
#endif
/* dropout.cu: the same operations on the GPU, queued on ctx->cuda_stream, with the same mask as
 * the CPU draws from the same ctx->rng. */
int dropout_forward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w, rx_tensor *y, void *state);
int dropout_backward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y, const rx_tensor *dy,
                          const rx_tensor *w, const void *state, rx_tensor *dx, rx_tensor *dw);
#ifdef __cplusplus
}
#endif

#endif
