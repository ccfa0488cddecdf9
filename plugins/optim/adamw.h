/* adamw.h: adamw shares all of adam's code (adam.h); this header only names adamw's CUDA entry.
 * It exists because the build pairs adamw.c and adamw.cu with adamw.h. */
#ifndef RX_OPTIM_ADAMW_H
#define RX_OPTIM_ADAMW_H

#include "adam.h"

#ifdef __cplusplus
extern "C" {
#endif
/* adamw.cu: adamw's CUDA entry, adam_step_queue under adamw's name. */
int adamw_step_cuda(void *self, rx_ctx *ctx, const float *g, float *w, float *state, size_t n, rx_step s);
#ifdef __cplusplus
}
#endif

#endif
