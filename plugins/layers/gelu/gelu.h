/* gelu.h: what gelu.c (the CPU path, create and the descriptor) and gelu.cu (the CUDA path)
 * share: the choice of formula fixed at create and the CUDA entry points. The per-element
 * arithmetic of both, and its constants, are in plugins/common/gelu_math.h. */
#ifndef RX_LAYER_GELU_H
#define RX_LAYER_GELU_H

#include "runexp.h"

typedef enum { GELU_EXACT = 0, GELU_TANH = 1 } gelu_form;

typedef struct gelu {
    gelu_form form;  /* approximate = "none" (erf) or "tanh" */
} gelu;

#ifdef __cplusplus
extern "C" {
#endif
/* gelu.cu: the same operations on the GPU, queued on ctx->cuda_stream. */
int gelu_forward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w, rx_tensor *y, void *state);
int gelu_backward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y, const rx_tensor *dy,
                       const rx_tensor *w, const void *state, rx_tensor *dx, rx_tensor *dw);
#ifdef __cplusplus
}
#endif

#endif
