/* adam.c: Adam with PyTorch's torch.optim.Adam semantics (no amsgrad), one loop over a group's
 * slice of the host's flat parameter vector:
 *
 *     g = g + weight_decay * w          (the step's weight_decay: L2, joined to the gradient)
 *     m = beta1 * m + (1 - beta1) * g,  v = beta2 * v + (1 - beta2) * g^2
 *     w = w - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 *
 * with t the global step, so the first steps are bias-corrected. The learning rate and weight
 * decay arrive with every step (the host owns schedules and groups); beta1, beta2 and eps are
 * fixed at create. m and v are the 2 floats of state per parameter the host keeps.
 *
 * Everything but the descriptor is in plugins/common/adam.{h,c,cu}, shared with adamw (which
 * decays w itself instead). */
#include "adam.h"

static int adam_create(void **self, rx_ctx *ctx, const rx_value *args, int *state_per_param)
{
    return adam_create_as(self, ctx, args, state_per_param, false);
}

#ifdef RX_WITH_CUDA
static int adam_step_cuda(void *self, rx_ctx *ctx, const float *g, float *w, float *state, size_t n, rx_step s)
{
    return adam_step_queue(self, ctx, g, w, state, n, s, "adam step");
}
#endif

static const rx_plugin desc = {
    .abi = RX_ABI_VERSION,
    .size = sizeof(rx_plugin),
    .kind = RX_OPTIM,
    .name = "adam",
    .summary = "Adam with bias correction and L2 weight decay added to the gradient (PyTorch's Adam)",
    .params = adam_params,
    .optim = {
        .create = adam_create,
        .destroy = adam_destroy,
#ifdef RX_WITH_CUDA
        .step = { [RX_CPU] = adam_step_cpu, [RX_CUDA] = adam_step_cuda },
#else
        .step = { [RX_CPU] = adam_step_cpu },
#endif
    },
};

RX_EXPORT(adam) { return &desc; }
