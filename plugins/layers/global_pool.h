/* global_pool.h: what global_pool.c (the CPU path, create and the descriptor) and global_pool.cu
 * (the CUDA path) share: the mode and geometry fixed at create, the summation order both devices
 * follow, and the CUDA entry points. In max mode both devices keep the same state: per channel,
 * an int32 index of the maximum within its sample (C, H, W), as maxpool does, (C). */
#ifndef RX_LAYER_GLOBAL_POOL_H
#define RX_LAYER_GLOBAL_POOL_H

#include "runexp.h"

typedef enum { GLOBAL_POOL_MAX = 0, GLOBAL_POOL_AVG = 1 } global_pool_mode;

/* An average sums its plane as one CUDA warp does: lane l adds elements l, l + 32, l + 64, ...
 * in turn, then the 32 partial sums are folded in halves (l + 16 into l, then 8, 4, 2, 1). The
 * CPU adds in that same order, so both devices give the same bits. */
#define GLOBAL_POOL_LANES 32

typedef struct global_pool {
    global_pool_mode mode;
    int c;   /* channels */
    int hw;  /* H * W: the elements of one plane */
} global_pool;

#ifdef __cplusplus
extern "C" {
#endif
/* global_pool.cu: the same operations on the GPU, queued on ctx->cuda_stream. */
int global_pool_forward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w, rx_tensor *y,
                             void *state);
int global_pool_backward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y, const rx_tensor *dy,
                              const rx_tensor *w, const void *state, rx_tensor *dx, rx_tensor *dw);
#ifdef __cplusplus
}
#endif

#endif
