/* cross_entropy.h: what cross_entropy.c (the CPU path, create and the descriptor) and
 * cross_entropy.cu (the CUDA path) share: the option fixed at create, the constants of the
 * gradient both paths work out alike, and the CUDA entry point. */
#ifndef RX_LOSS_CROSS_ENTROPY_H
#define RX_LOSS_CROSS_ENTROPY_H

#include <stdint.h>

#include "runexp.h"

typedef struct cross_entropy {
    double smoothing; /* label_smoothing e in [0, 1): the target is (1 - e) * onehot + e / C */
} cross_entropy;

/* The gradient of the mean loss wrt the logits is (softmax - target) / N, where target / N is
 * `off` for every class but the label and `hit` for the label. Worked out once per batch by the
 * host code of either path, in double (divisions and sums only, so no compiler can fuse them
 * differently) and rounded once; with e = 0 they are exactly the plain loss's 0 and 1.0f / N,
 * so its gradient is unchanged to the bit. */
typedef struct cross_entropy_targets {
    float off; /* e / C / N */
    float hit; /* ((1 - e) + e / C) / N */
} cross_entropy_targets;

static inline cross_entropy_targets cross_entropy_targets_of(const cross_entropy *o, int64_t n, int64_t c)
{
    const double e = o->smoothing;
    cross_entropy_targets t;
    if (e == 0) {
        t.off = 0.0f;
        t.hit = 1.0f / (float)n;
    } else {
        t.off = (float)(e / (double)c / (double)n);
        t.hit = (float)((1.0 - e + e / (double)c) / (double)n);
    }
    return t;
}

#ifdef __cplusplus
extern "C" {
#endif
/* cross_entropy.cu: the same loss on the GPU, queued on ctx->cuda_stream. A label outside
 * [0, C) cannot be refused there without waiting for the GPU; that sample's loss (and gradient
 * row) is NaN instead, which the host's finite-loss check stops the run on. */
int cross_entropy_forward_cuda(void *self, rx_ctx *ctx, const rx_tensor *logits, const int32_t *labels,
                               float *losses, rx_tensor *dlogits);
#ifdef __cplusplus
}
#endif

#endif
