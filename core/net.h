/* net.h: the network: the config's model list built into layers, with shapes inferred from the
 * data's sample shape, parameters and gradients in one flat buffer each, activations and layer
 * state allocated once for the largest batch. The parameters' first values: init.h. */
#ifndef RUNEXP_NET_H
#define RUNEXP_NET_H

#include "config.h"
#include "init.h"

typedef struct layer {
    const plugin_use *use;
    void *self;            /* the plugin's own, from create */
    rx_layer_info info;
    rx_shape in;           /* per sample, without N */
    rx_tensor *w, *dw;     /* (info.ntensors) views into net.params and net.grads */
    void *state;           /* info.state_bytes * max_batch bytes */
    float *out;            /* (max_batch, info.out...) */
    const float *x;        /* the input of the last forward, for backward */
} layer;

/* The network runs as a list of steps: layers, and the two ends of each residual block
 * (y = x + f(x)): BEGIN keeps x, END adds it to f(x). */
typedef enum { STEP_LAYER, STEP_BEGIN, STEP_END } step_kind;

typedef struct net_step {
    step_kind kind;
    int layer;             /* LAYER: which; BEGIN/END: the first/last layer of the block */
    rx_shape shape;        /* BEGIN/END: per-sample shape of x and of the sum */
    float *out;            /* END: (max_batch, shape...) the sum */
    float *dskip;          /* END: the gradient kept for the skip path */
} net_step;

/* A run of trained tensors, contiguous in net.params, that the optimizer steps together; for an
 * optimizer that steps tensors one by one (rx_optim_ops.per_tensor), exactly one tensor. */
typedef struct param_group {
    size_t offset, n;
    float lr_scale, weight_decay;
    int64_t train_epochs;  /* > 0: trained in the first train_epochs epochs only */
    rx_shape shape;        /* a per_tensor optimizer's group: its tensor's shape; ndim 0 otherwise */
} param_group;

/* Whether the optimizer steps g in epoch `epoch` (1-based). */
static inline bool group_trains(const param_group *g, int64_t epoch)
{
    return g->train_epochs == 0 || epoch <= g->train_epochs;
}

typedef struct net {
    int n;
    layer *layers;         /* (n) */
    int nsteps;
    net_step *steps;       /* (nsteps) */
    int ngroups;
    param_group *groups;   /* what the optimizer trains; buffers and frozen tensors are in none */
    rx_device device;
    int64_t max_batch;
    rx_shape in, out;      /* per sample: the data's sample shape, the logits' shape */
    size_t nparams;
    float *params, *grads; /* (nparams) each; every layer's tensors, in model order */
    float *dbuf[2];        /* backward's ping-pong buffers for activation gradients */
    size_t dbuf_floats;    /* each one's size */
    void *workspace;       /* shared scratch, the largest any layer asked for */
    size_t workspace_bytes;
    int threads;           /* the CPU threads a call may use (ctx->threads at net_build; 0 on the
                            * GPU): each layer's workspace_thread_bytes is planned that many times */
    /* Data parallelism (dist.h): this rank's samples begin part_offset samples into a training
     * batch of part_batch (0: the batch is all here). Stochastic layers then draw the numbers the
     * whole batch's forward would give these samples, so results do not depend on the ranks. */
    int64_t part_offset, part_batch;
    /* Lanes: on the CPU, when every layer declared per_sample, a batch is cut into `lanes`
     * consecutive parts, one per thread, that run the whole forward (and backward) at once, each
     * layer call on one part with one thread: threads then wait for each other once per pass
     * instead of once per operation. lane_grads holds lanes 1 on's gradients, (lanes - 1,
     * nparams), summed into grads in lane order after backward; lane 0 adds into grads itself.
     * lanes = 1: every call takes the whole batch and splits it over the threads itself. */
    int lanes;
    float *lane_grads;
    size_t lane_workspace;  /* bytes of the workspace each lane has, whatever layer it runs */
    size_t lane_dbuf;       /* floats of each of backward's buffers each lane has */
    struct net_part *parts; /* (lanes) when lanes > 1: each lane's part of the batch in a call */
} net;

/* Creates every layer of c's model for inputs of shape `in` and batches up to max_batch (shapes
 * and checks first, then all the memory at once). Errors name the config file and the layer:
 * "cifar10.lua: model[12] (linear): ...". */
int net_build(net *nt, rx_ctx *ctx, const config *c, rx_shape in, int64_t max_batch, char *err);
void net_free(net *nt);
/* Draws rows [first, first + count) of a batch into x (and their labels), with ctx (a lane's, on
 * its own thread): a data plugin that declared rx_data_info.parts. */
typedef int (*net_draw)(void *arg, rx_ctx *ctx, int64_t first, int64_t count, char *err);
/* x: (N, in...). Returns the logits (N, out...), which stay valid until the next forward. */
int net_forward(net *nt, rx_ctx *ctx, const rx_tensor *x, rx_tensor *logits, char *err);
/* The same, with x drawn first by draw(arg, ...): by each lane for its own rows. */
int net_forward_drawing(net *nt, rx_ctx *ctx, const rx_tensor *x, net_draw draw, void *arg, rx_tensor *logits,
                        char *err);
/* Adds the parameter gradients for dlogits into nt->grads (zero them first: net_zero_grads), for
 * layers `first` on: earlier layers get no backward and layer `first` no input gradient, as
 * nothing before it trains (0: every layer; see net_first_trained). */
int net_backward(net *nt, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *dlogits, int first, char *err);
/* A training step in lanes, whose threads then meet once: each lane runs its part's forward,
 * the loss (hooks.loss: samples [first, first + count), their logits' rows in, their rows of
 * dlogits out, scaled for the whole batch's mean) and backward; then each thread sums the lanes'
 * gradients over its range of the parameters and updates that range (hooks.update). Calls get
 * one thread's context each. Only for a batch of n with net_lanes_for(nt, n) > 1; gradients
 * zeroed first, as for net_backward. */
typedef struct net_hooks {
    net_draw load; /* OPTIONAL: each lane draws its rows of x first; NULL: x holds the batch */
    int (*loss)(void *arg, rx_ctx *ctx, int64_t first, int64_t count, const float *logits, char *err);
    int (*update)(void *arg, rx_ctx *ctx, size_t begin, size_t end, char *err);
    void *arg;
    float *dlogits;    /* (N, out...): what hooks.loss writes rows of */
    bool whole_groups; /* ranges never split a parameter group (nt->groups) */
} net_hooks;
int net_lanes_for(const net *nt, int64_t n);
int net_train_lanes(net *nt, rx_ctx *ctx, const rx_tensor *x, int first, const net_hooks *h, char *err);
/* The first layer holding a tensor the optimizer steps in `epoch`, or nt->n if none: backward
 * can stop there. After airbench's whitening bias stops training, that skips the first layers'
 * backward (the largest activations) for the rest of the run. */
int net_first_trained(const net *nt, int64_t epoch);
void net_zero_grads(net *nt);

/* Numbers drawn between two states of one rx_rng (splitmix64 steps its state by a constant per
 * number, so the difference counts them), and a state moved on by `draws` numbers: how a part
 * of a batch finds where the whole batch's draws reached its first sample. */
uint64_t rng_draws_between(uint64_t from, uint64_t to);
uint64_t rng_skip(uint64_t s, uint64_t draws);

/* "(16, 3, 3, 3)": a shape as every message writes it. */
void shape_format(rx_shape s, char *buf, size_t len);

/* What is wrong with what a plugin's create reported (a shape, a tensor, a size past the
 * bounds of checked.h), or NULL: checked before the host trusts it with memory. The message is
 * a constant or written into buf (len bytes). */
const char *layer_info_problem(const rx_layer_info *info, char *buf, size_t len);

/* Checkpoint names as PyTorch's nn.Sequential gives them: "<index>.<tensor>", e.g. "11.weight",
 * and "4.1.weight" inside a residual block (a Sequential whose forward adds its input). */
void net_tensor_name(const net *nt, int index, int tensor, char *buf, size_t len);

#endif
