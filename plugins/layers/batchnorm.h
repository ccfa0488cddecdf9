/* batchnorm.h: what batchnorm.c (the CPU path, create and the descriptor) and batchnorm.cu (the
 * CUDA path) share: the layer's sizes and options, fixed at create, the layout of its state and
 * the CUDA entry points.
 *
 * Tensors, in declaration order (w[i] and dw[i]):
 *     0 weight (C)        trained, ones at first
 *     1 bias (C)          trained, zeros at first
 *     2 running_mean (C)  buffer: forward updates it in place while training; no gradient
 *     3 running_var (C)   buffer: likewise, with the unbiased batch variance
 * State: 2C floats, mean (C) then inverse standard deviation (C) as forward normalized with them
 * (the batch's in training, the running statistics' in evaluation), at the start of the block
 * the host lends (see batchnorm_create for why that is enough). Both devices use this layout.
 * With activation = "gelu" the output is GELU of the normalized value, which backward recomputes
 * from x and the state: one pass over the tensor each way where a gelu layer after it takes
 * another. */
#ifndef RX_LAYER_BATCHNORM_H
#define RX_LAYER_BATCHNORM_H

#include <stdbool.h>
#include <stdint.h>

#include "runexp.h"

enum { BN_WEIGHT, BN_BIAS, BN_RUNNING_MEAN, BN_RUNNING_VAR, BN_NTENSORS };

typedef struct batchnorm {
    int64_t c;        /* channels: the first per-sample dimension */
    int64_t hw;       /* values per channel in one sample: H * W, L, or 1 for a (C) input */
    double eps;       /* added to the variance before the square root */
    double momentum;  /* running = (1 - momentum) * running + momentum * batch statistic */
    bool gelu;        /* activation = "gelu": y = GELU(z) of the normalized z (gelu_math.h's exact form) */
} batchnorm;

#ifdef __cplusplus
extern "C" {
#endif
/* batchnorm.c: 0, or rx_fail when a training batch of n samples has fewer than 2 values per
 * channel (N * H * W < 2), whose variance says nothing; PyTorch refuses it too. Both devices
 * check before they touch anything. */
int batchnorm_check_batch(const batchnorm *s, rx_ctx *ctx, int64_t n);
/* batchnorm.cu: the same operations on the GPU, queued on ctx->cuda_stream. */
int batchnorm_forward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w, rx_tensor *y,
                           void *state);
int batchnorm_backward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y, const rx_tensor *dy,
                            const rx_tensor *w, const void *state, rx_tensor *dx, rx_tensor *dw);
#ifdef __cplusplus
}
#endif

#endif
