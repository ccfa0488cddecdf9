/* linear.h: what linear.c (the CPU path, create and the descriptor) and linear.cu (the CUDA
 * path) share: the layer's sizes, fixed at create, and the CUDA entry points. */
#ifndef RX_LAYER_LINEAR_H
#define RX_LAYER_LINEAR_H

#include <stdbool.h>

#include "runexp.h"

typedef struct linear {
    int in, out;  /* F input features, `out` outputs */
    bool bias;
} linear;

#ifdef __cplusplus
extern "C" {
#endif
/* linear.cu: the same operations on the GPU, queued on ctx->cuda_stream. */
int linear_forward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w, rx_tensor *y,
                        void *state);
int linear_backward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y, const rx_tensor *dy,
                         const rx_tensor *w, const void *state, rx_tensor *dx, rx_tensor *dw);
#ifdef __cplusplus
}
#endif

#endif
