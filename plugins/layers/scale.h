/* scale.h: what scale.c (the CPU path, create and the descriptor) and scale.cu (the CUDA path)
 * share: the factor fixed at create, and the CUDA entry points. */
#ifndef RX_LAYER_SCALE_H
#define RX_LAYER_SCALE_H

#include "runexp.h"

typedef struct scale {
    float by;  /* the factor, rounded to float once, as PyTorch does with a Python scalar */
} scale;

#ifdef __cplusplus
extern "C" {
#endif
/* scale.cu: the same operations on the GPU, queued on ctx->cuda_stream. */
int scale_forward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w, rx_tensor *y, void *state);
int scale_backward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y, const rx_tensor *dy,
                        const rx_tensor *w, const void *state, rx_tensor *dx, rx_tensor *dw);
#ifdef __cplusplus
}
#endif

#endif
