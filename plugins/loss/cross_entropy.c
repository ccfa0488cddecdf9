/* cross_entropy.c: softmax cross-entropy loss, like torch.nn.CrossEntropyLoss (with its
 * label_smoothing), fused so that one pass yields the per-sample losses and the gradient of
 * their mean.
 *
 * Each row is shifted by its maximum before exponentiating (log-softmax via log-sum-exp), so
 * logits in the thousands give finite losses and gradients. With label smoothing e, the target
 * is (1 - e) * onehot(label) + e / C, as in PyTorch:
 *     loss_i = (1 - e) * (logsumexp(z_i) - z_i[label_i]) + e * mean_k(logsumexp(z_i) - z_i[k])
 *            = log(sum_k exp(z_i[k] - max)) - ((1 - e) * (z_i[label_i] - max) + e * mean_k(z_i[k] - max))
 *     dz_i   = (softmax(z_i) - (1 - e) * onehot(label_i) - e / C) / N.
 * With e = 0 (the default) every number is the plain loss's, to the bit.
 *
 * CUDA path: cross_entropy.cu, one warp per row (a label outside [0, C) gives a NaN loss there,
 * see cross_entropy.h, where this file refuses the batch). */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>

#include "cross_entropy.h"

enum { ARG_LABEL_SMOOTHING };

static const rx_param params[] = {
    { .key = "label_smoothing", .type = RX_NUM, .def = { .num = 0 },
      .help = "share e of the target spread evenly over the classes, in [0, 1) (0: none)" },
    { 0 },
};

static void cross_entropy_destroy(void *self) { free(self); }

static int cross_entropy_create(void **self, rx_ctx *ctx, const rx_value *args, rx_shape in,
                                int nclasses)
{
    *self = NULL;
    if (in.ndim != 1)
        return rx_fail(ctx, "expects 1-D logits (C) per sample, got %d dimensions", in.ndim);
    if (in.d[0] != nclasses)
        return rx_fail(ctx, "the model gives %" PRId64 " logits per sample but the data "
                       "has %d classes", in.d[0], nclasses);
    const double e = args[ARG_LABEL_SMOOTHING].num;
    if (!(e >= 0 && e < 1)) return rx_fail(ctx, "label_smoothing must be in [0, 1), got %g", e);
    cross_entropy *o = malloc(sizeof *o);
    if (!o) return rx_fail(ctx, "out of memory");
    o->smoothing = e;
    *self = o;
    return 0;
}

static int cross_entropy_forward_cpu(void *self, rx_ctx *ctx, const rx_tensor *logits,
                                     const int32_t *labels, float *losses, rx_tensor *dlogits)
{
    const cross_entropy *o = self;
    const int64_t n = logits->shape.d[0], c = logits->shape.d[1];
    for (int64_t i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= c)
            return rx_fail(ctx, "label %" PRId32 " at index %" PRId64 " is outside [0, %"
                           PRId64 ")", labels[i], i, c);

    const double e = o->smoothing;
    const cross_entropy_targets t = cross_entropy_targets_of(o, n, c);
    for (int64_t i = 0; i < n; i++) {
        const float *z = logits->data + (size_t)(i * c);  /* (C) */
        float max = z[0];
        for (int64_t j = 1; j < c; j++) max = z[j] > max ? z[j] : max;
        double sum = 0.0;  /* of exp(z - max), in [1, C] */
        for (int64_t j = 0; j < c; j++) sum += expf(z[j] - max);
        /* The target's share of the shifted logits, (z[label] - max) alone without smoothing;
         * the large max cancels exactly. */
        double target = (double)(z[labels[i]] - max);
        if (e != 0) {
            double shifted = 0.0;  /* sum of z - max */
            for (int64_t j = 0; j < c; j++) shifted += (double)(z[j] - max);
            target = (1.0 - e) * target + e * (shifted / (double)c);
        }
        /* sum >= 1, not the 0 cppcheck fears: the maximum's own term is exp(0), and C >= 2
         * (create checks it equals the host's class count, which is at least 2). */
        /* cppcheck-suppress invalidFunctionArg */
        losses[i] = (float)(log(sum) - target);
        if (dlogits) {
            float *dz = dlogits->data + (size_t)(i * c);  /* (C) */
            const float scale = (float)(1.0 / sum) * (1.0f / (float)n);
            for (int64_t j = 0; j < c; j++) dz[j] = expf(z[j] - max) * scale - (j == labels[i] ? t.hit : t.off);
        }
    }
    return 0;
}

static const rx_plugin desc = {
    .abi = RX_ABI_VERSION,
    .size = sizeof(rx_plugin),
    .kind = RX_LOSS,
    .name = "cross_entropy",
    .summary = "softmax cross-entropy of logits against class labels, with optional label smoothing, "
               "like torch.nn.CrossEntropyLoss",
    .params = params,
    .loss = {
        .create = cross_entropy_create,
        .destroy = cross_entropy_destroy,
#ifdef RX_WITH_CUDA
        .forward = { [RX_CPU] = cross_entropy_forward_cpu, [RX_CUDA] = cross_entropy_forward_cuda },
#else
        .forward = { [RX_CPU] = cross_entropy_forward_cpu },
#endif
    },
};

RX_EXPORT(cross_entropy) { return &desc; }
