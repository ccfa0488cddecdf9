/* sgd.c: stochastic gradient descent with PyTorch's torch.optim.SGD semantics, one loop over the
 * host's flat parameter vector. The learning rate arrives with every step (the host owns the
 * schedule); the rest is fixed at create:
 *
 *     g = g + weight_decay * w     (when the step's weight_decay != 0: the host's optim.weight_decay)
 *     buf = g on the first step,                        (when momentum != 0)
 *           momentum * buf + (1 - dampening) * g after
 *     g = nesterov ? g + momentum * buf : buf
 *     w = w - lr * g
 *
 * The momentum buffer is the one float of state per parameter the host keeps (and checkpoints).
 * CUDA path: sgd.cu, one elementwise kernel, rounded step for step as here; sgd.h holds the
 * struct both files share.
 */
#include <math.h>
#include <stdlib.h>

#include "sgd.h"

enum { ARG_MOMENTUM, ARG_NESTEROV, ARG_DAMPENING };

static const rx_param params[] = {
    { .key = "momentum", .type = RX_NUM, .def = { .num = 0 }, .help = "momentum factor (0: none)" },
    { .key = "nesterov", .type = RX_BOOL, .def = { .b = false },
      .help = "Nesterov momentum (needs momentum > 0 and dampening 0)" },
    { .key = "dampening", .type = RX_NUM, .def = { .num = 0 }, .help = "dampening for momentum" },
    { 0 },
};

static void sgd_destroy(void *self) { free(self); }

/* The checks torch.optim.SGD makes when it is built. */
static int sgd_check_args(rx_ctx *ctx, const rx_value *args)
{
    double momentum = args[ARG_MOMENTUM].num, damp = args[ARG_DAMPENING].num;
    if (!(momentum >= 0 && isfinite(momentum))) return rx_fail(ctx, "momentum must be >= 0, got %g", momentum);
    if (!isfinite(damp)) return rx_fail(ctx, "dampening must be finite, got %g", damp);
    if (args[ARG_NESTEROV].b && (momentum <= 0 || damp != 0))
        return rx_fail(ctx, "nesterov requires momentum > 0 and dampening 0, got momentum %g and dampening %g",
                       momentum, damp);
    return 0;
}

static int sgd_create(void **self, rx_ctx *ctx, const rx_value *args, int *state_per_param)
{
    *self = NULL;
    if (sgd_check_args(ctx, args) != 0) return -1;
    sgd *o = malloc(sizeof *o);
    if (!o) return rx_fail(ctx, "out of memory");
    *o = (sgd){
        .momentum = (float)args[ARG_MOMENTUM].num,
        .keep = (float)(1.0 - args[ARG_DAMPENING].num),
        .nesterov = args[ARG_NESTEROV].b,
    };
    *state_per_param = o->momentum > 0 ? 1 : 0;
    *self = o;
    return 0;
}

/* g, w, buf: (n); the update is sgd.h's sgd_update_cpu. */
static int sgd_step_cpu(void *self, rx_ctx *ctx, const float *g, float *w, float *buf, size_t n, rx_step s)
{
    const sgd *o = self;
    if (sgd_check_step(o, ctx, buf, s) != 0) return -1;
    sgd_update_cpu(o, ctx, g, w, buf, n, s);
    return 0;
}

static const rx_plugin desc = {
    .abi = RX_ABI_VERSION,
    .size = sizeof(rx_plugin),
    .kind = RX_OPTIM,
    .name = "sgd",
    .summary = "stochastic gradient descent with momentum, Nesterov and weight decay (PyTorch's SGD)",
    .params = params,
    .optim = {
        .create = sgd_create,
        .destroy = sgd_destroy,
#ifdef RX_WITH_CUDA
        .step = { [RX_CPU] = sgd_step_cpu, [RX_CUDA] = sgd_step_cuda },
#else
        .step = { [RX_CPU] = sgd_step_cpu },
#endif
    },
};

RX_EXPORT(sgd) { return &desc; }
