/* channel_scale.h: what the CPU file and the CUDA file of channel_scale share. */
#ifndef CHANNEL_SCALE_H
#define CHANNEL_SCALE_H

#include "runexp.h"

typedef struct channel_scale {
    int64_t c;      /* channels: the length of the scale tensor */
    int64_t plane;  /* elements per channel in one sample: H * W (1 for a flat input) */
} channel_scale;

#ifdef __cplusplus
extern "C" {
#endif
/* channel_scale.cu: the same operations on the GPU, on ctx->cuda_stream. */
int channel_scale_forward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w, rx_tensor *y,
                               void *state);
int channel_scale_backward_cuda(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y, const rx_tensor *dy,
                                const rx_tensor *w, const void *state, rx_tensor *dx, rx_tensor *dw);
#ifdef __cplusplus
}
#endif

#endif
