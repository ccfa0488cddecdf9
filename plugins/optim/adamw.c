/* adamw.c: AdamW with PyTorch's torch.optim.AdamW semantics (no amsgrad): Adam with decoupled
 * weight decay, which shrinks the weights instead of joining the gradient:
 *
 *     w = w * (1 - lr * weight_decay)   (the step's weight_decay)
 *     m = beta1 * m + (1 - beta1) * g,  v = beta2 * v + (1 - beta2) * g^2
 *     w = w - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 *
 * Note PyTorch's defaults differ between the two classes only in weight_decay (AdamW: 0.01), and
 * weight decay is the host's here (optim.weight_decay, per group), so it is 0 unless the config
 * asks for it.
 *
 * Everything but the descriptor is in plugins/common/adam.{h,c,cu}, shared with adam. */
#include "adam.h"

static int adamw_create(void **self, rx_ctx *ctx, const rx_value *args, int *state_per_param)
{
    return adam_create_as(self, ctx, args, state_per_param, true);
}

#ifdef RX_WITH_CUDA
static int adamw_step_cuda(void *self, rx_ctx *ctx, const float *g, float *w, float *state, size_t n, rx_step s)
{
    return adam_step_queue(self, ctx, g, w, state, n, s, "adamw step");
}
#endif

static const rx_plugin desc = {
    .abi = RX_ABI_VERSION,
    .size = sizeof(rx_plugin),
    .kind = RX_OPTIM,
    .name = "adamw",
    .summary = "Adam with bias correction and decoupled weight decay (PyTorch's AdamW)",
    .params = adam_params,
    .optim = {
        .create = adamw_create,
        .destroy = adam_destroy,
#ifdef RX_WITH_CUDA
        .step = { [RX_CPU] = adam_step_cpu, [RX_CUDA] = adamw_step_cuda },
#else
        .step = { [RX_CPU] = adam_step_cpu },
#endif
    },
};

RX_EXPORT(adamw) { return &desc; }
