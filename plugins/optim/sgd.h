/* sgd.h: what sgd.c (the CPU path, create and the descriptor) and sgd.cu (the CUDA path) share:
 * the hyperparameters fixed at create, and the CUDA entry point. */
#ifndef RX_OPTIM_SGD_H
#define RX_OPTIM_SGD_H

#include <stdbool.h>
#include <stddef.h>

#include "runexp.h"

typedef struct sgd {
    float momentum;
    float keep;     /* 1 - dampening: the share of the new gradient that enters the buffer */
    bool nesterov;
} sgd;

#ifdef __cplusplus
extern "C" {
#endif
/* sgd.cu: the same step on the GPU, queued on ctx->cuda_stream. */
int sgd_step_cuda(void *self, rx_ctx *ctx, const float *g, float *w, float *buf, size_t n, rx_step s);
#ifdef __cplusplus
}
#endif

#endif
