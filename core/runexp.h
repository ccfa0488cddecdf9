/* runexp.h: the whole contract between the runexp host and its plugins.
 *
 * A plugin is a shared object that exports one function, named after the plugin:
 *
 *     const rx_plugin *rx_plugin_conv2d(void);
 *
 * It returns a static descriptor: ABI version, struct size, kind, name, a one-line summary, the
 * parameters it accepts (key, type, default, help) and its operations. The host checks all of it
 * once at load time, turns the user's Lua table into plain typed values in the order of the
 * parameter list, and owns every buffer it lends to the plugin. Plugins never see Lua or CUDA
 * types; everything device specific travels as void pointers in rx_ctx.
 *
 * Conventions
 * - Argument order: self, ctx, inputs (const), outputs, then scalars.
 * - Every operation returns 0 on success, or -1 after writing a one-line reason with rx_fail().
 * - Tensors are float32, contiguous, row-major (NCHW), and live on ctx->device.
 * - backward ADDS into parameter gradients (the host zeroes them once per batch) and WRITES the
 *   input gradient when dx is not NULL. ctx->training is the same in a backward as in the
 *   forward before it.
 * - Buffers never alias: x, y, dx and dy are always distinct memory.
 * - A create that fails frees what it allocated and leaves *self NULL.
 * - Operations are tables indexed by device (RX_CPU, RX_CUDA); a NULL entry means "not on that
 *   device", and the host refuses to run the plugin there rather than fall back silently.
 *
 * ABI rule: RX_ABI_VERSION changes whenever a struct below changes layout or an operation changes
 * meaning; the loader refuses plugins built for another version (or another struct size).
 */
#ifndef RUNEXP_H
#define RUNEXP_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define RX_ABI_VERSION 7
#define RX_MAX_DIMS    5   /* (N, C, H, W) plus one spare */
#define RX_MAX_LIST    16  /* longest list value, e.g. a per-channel mean */
#define RX_MAX_TENSORS 8   /* parameter tensors one layer may declare */
#define RX_MAX_CLASSES 1000
#define RX_MAX_NORM    4   /* channels a data plugin's reported normalization covers (RGBA) */
#define RX_ERR_LEN     512

typedef enum { RX_CPU = 0, RX_CUDA = 1, RX_NDEVICES = 2 } rx_device;

/* Plugin kinds, each in a folder of its own: layers in plugins/layers, losses in plugins/loss,
 * optimizers in plugins/optim and data sets in plugins/data. */
typedef enum { RX_LAYER = 1, RX_LOSS = 2, RX_OPTIM = 3, RX_DATA = 4 } rx_kind;

/* ---- Random numbers: dependency-free and identical on every platform ---- */

/* splitmix64: tiny, fast, passes BigCrush, and its whole state is one integer, so it can be
 * saved and restored exactly. */
typedef struct rx_rng { uint64_t s; } rx_rng;

static inline uint64_t rx_rng_next(rx_rng *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform float in [0, 1) with 24 random bits. */
static inline float rx_rng_uniform(rx_rng *r) { return (float)(rx_rng_next(r) >> 40) * 0x1.0p-24f; }

/* Uniform integer in [0, n), n > 0; the modulo bias is below 2^-32 for any n we use. */
static inline uint64_t rx_rng_below(rx_rng *r, uint64_t n) { return rx_rng_next(r) % n; }

/* A new independent stream derived from a seed and a stream number. */
static inline rx_rng rx_rng_stream(uint64_t seed, uint64_t stream)
{
    rx_rng r = { seed ^ (stream * 0xD1B54A32D192ED03ull) };
    rx_rng_next(&r);
    return r;
}

/* ---- Shapes and tensors ---- */

typedef struct rx_shape {
    int ndim;
    int64_t d[RX_MAX_DIMS];
} rx_shape;

typedef struct rx_tensor {
    float *data;     /* contiguous row-major, on `device`; owned by the host */
    rx_shape shape;  /* activations: (N, ...); parameters: their own shape, e.g. (OC, C, KH, KW) */
    rx_device device;
} rx_tensor;

static inline int64_t rx_numel(rx_shape s)
{
    int64_t n = 1;
    for (int i = 0; i < s.ndim; i++) n *= s.d[i];
    return n;
}

/* ---- The context: everything a call may need, and no globals anywhere. ---- */

typedef struct rx_ctx {
    rx_device device;
    bool training;          /* false while validating and testing (dropout off) */
    rx_rng rng;             /* for stochastic layers; the host saves it with the run */
    int threads;            /* CPU threads the run may use */
    void *workspace;        /* scratch shared by all layers, on `device`, valid during one call */
    size_t workspace_bytes; /* its whole size: at least workspace_bytes * N of any layer's info,
                             * plus workspace_thread_bytes * threads on the CPU */
    void *cuda_stream;      /* cudaStream_t when device == RX_CUDA, else NULL */
    void *cublas;           /* cublasHandle_t when device == RX_CUDA, else NULL */
    char err[RX_ERR_LEN];   /* the reason for the last failure, written by rx_fail */
} rx_ctx;

/* Record why an operation failed and return -1, so that `return rx_fail(ctx, ...)` reads well. */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static inline int rx_fail(rx_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->err, sizeof ctx->err, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- Parameters a plugin accepts, and the values the host hands it ---- */

typedef enum {
    RX_INT = 1,  /* Lua integer                        -> rx_value.i */
    RX_NUM,      /* Lua number (an integer is accepted) -> rx_value.num */
    RX_BOOL,     /* Lua boolean                        -> rx_value.b */
    RX_STR,      /* Lua string                         -> rx_value.s (host-owned, valid until destroy) */
    RX_NUMS,     /* Lua list of numbers, or one number -> rx_value.list[0 .. len-1] */
} rx_type;

typedef struct rx_value {
    int64_t i;
    double num;
    bool b;
    const char *s;
    int len;
    double list[RX_MAX_LIST];
} rx_value;

typedef struct rx_param {
    const char *key;    /* NULL ends the list */
    rx_type type;
    bool required;      /* no default: the config must give it */
    rx_value def;       /* default when not required */
    const char *help;
} rx_param;

/* ---- Layers ---- */

typedef enum {
    RX_INIT_ZEROS = 0,
    RX_INIT_ONES,
    RX_INIT_UNIFORM,    /* U(-scale, scale), drawn on the CPU from the run's seed */
    RX_INIT_CONSTANT,   /* every element is scale (a PReLU's slope: 0.25) */
} rx_init;

typedef struct rx_tensor_decl {
    const char *name;   /* PyTorch's name within the module: "weight", "bias", "running_mean" */
    rx_shape shape;
    rx_init init;
    float scale;
    /* A buffer (batchnorm's running statistics) is saved and restored with the parameters but
     * never trained: no gradient is asked for it and the optimizer never sees it. forward may
     * update it in place while ctx->training; in evaluation it is read only. */
    bool buffer;
} rx_tensor_decl;

/* What create tells the host about a layer built for one input shape. */
typedef struct rx_layer_info {
    rx_shape out;                           /* per-sample output shape, without N */
    int ntensors;
    rx_tensor_decl tensors[RX_MAX_TENSORS]; /* parameters, in checkpoint order */
    size_t state_bytes;      /* per sample, written by forward and read by backward */
    size_t workspace_bytes;  /* per sample scratch during forward or backward */
    size_t workspace_thread_bytes; /* and scratch per thread of a CPU call (ctx->threads; a GPU
                                    * call gets none), which does not grow with the batch */
    /* Whether every sample's forward and backward depend on that sample alone, in training as
     * in evaluation (no statistics over the batch, as batchnorm's). The host may then cut a CPU
     * batch into consecutive parts and run them at once, one per thread (net.h: lanes): each
     * call sees its part as the whole batch, with ctx->threads = 1, a workspace of its own of
     * workspace_bytes per sample of the part plus workspace_thread_bytes, the part's rows of the
     * state, and dw to add into that only this part adds to. It replaces one wait between
     * threads per operation by one per network pass. A layer that says so promises, besides:
     * its state is per sample (sample i's at i * state_bytes), `self` is only read by forward
     * and backward, and random numbers are drawn the same count per sample, in sample order.
     * 0 (false) is always safe. */
    bool per_sample;
} rx_layer_info;

/* ---- ONNX export: a layer's inference graph, written through the host's builder ----
 *
 * A layer that can be exported says so with the optional operation export_onnx, which adds ONNX
 * nodes (https://onnx.ai/onnx/operators/) to a graph the host builds and serializes: the plugin
 * names operators and values, the host writes the protobuf, so no plugin links a protobuf library.
 * Values are tensors with the batch first, (N, in...); the layer's declared tensors are already
 * initializers (its weights as trained), under their checkpoint names. */

typedef enum { RX_ATTR_INT = 1, RX_ATTR_FLOAT, RX_ATTR_INTS, RX_ATTR_STRING } rx_onnx_attr_type;

#define RX_ONNX_MAX_INTS 8

/* One attribute of a node: Conv's "pads", BatchNormalization's "epsilon". */
typedef struct rx_onnx_attr {
    const char *name;
    rx_onnx_attr_type type;
    int64_t i;                       /* RX_ATTR_INT */
    float f;                         /* RX_ATTR_FLOAT */
    int nints;                       /* RX_ATTR_INTS: ints[0 .. nints - 1] */
    int64_t ints[RX_ONNX_MAX_INTS];
    const char *s;                   /* RX_ATTR_STRING */
} rx_onnx_attr;

typedef struct rx_onnx rx_onnx;
struct rx_onnx {
    void *host;              /* the host's graph: the plugin leaves it alone */
    int opset;               /* the default domain's opset the file declares (17 or newer) */
    rx_shape in;             /* the layer's per-sample input shape, without N */
    const char *input;       /* the value holding the layer's input (N, in...) */
    const char *output;      /* the value the layer must write its output (N, out...) into */
    const char *tensors[RX_MAX_TENSORS]; /* the declared tensors' initializers, declaration order */
    /* Adds the node op_type(inputs) -> outputs with nattrs attributes (names are copied). 0, or
     * -1 when out of memory. An input "" is an optional input left out, as ONNX writes it. */
    int (*node)(rx_onnx *g, const char *op_type, const char *const *inputs, int ninputs,
                const char *const *outputs, int noutputs, const rx_onnx_attr *attrs, int nattrs);
    /* A float32 constant of `shape` (ndim 0: a scalar) holding data, as an initializer; returns
     * its name, valid until the export ends, or NULL when out of memory. */
    const char *(*constant)(rx_onnx *g, rx_shape shape, const float *data);
    /* The same for a 1-D int64 constant of n values (the axes of Unsqueeze, a Reshape's shape). */
    const char *(*ints)(rx_onnx *g, int n, const int64_t *values);
    /* A fresh name for a value between this layer's nodes; NULL when out of memory. */
    const char *(*temp)(rx_onnx *g);
    /* The layer is the identity in inference (dropout): its output is its input, and it adds no
     * node. */
    void (*same)(rx_onnx *g);
};

typedef struct rx_layer_ops {
    /* REQUIRED. Called once per run, on the CPU, before any memory is allocated. in: the
     * per-sample input shape, without N. args: the values of the plugin's params[], in order.
     * Fills info (zeroed by the host). May allocate a small *self that the plugin owns (or leave
     * it NULL); on failure frees what it allocated and returns rx_fail(...). */
    int (*create)(void **self, rx_ctx *ctx, const rx_value *args, rx_shape in, rx_layer_info *info);
    /* OPTIONAL (NULL when create allocates nothing). Frees *self; must accept NULL. */
    void (*destroy)(void *self);
    /* REQUIRED for at least one device, with backward for the same devices. All memory is the
     * host's, on ctx->device: x (N, in...) to read; y (N, out...) to write entirely; w the
     * declared tensors, in declaration order, to read; state (state_bytes * N bytes) to write
     * what backward will need. ctx->workspace is scratch valid during this call only. */
    int (*forward[RX_NDEVICES])(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w,
                                rx_tensor *y, void *state);
    /* Called after the forward of the same batch, with the same x, y and state. dy: gradient of
     * the loss wrt y. ADDS the gradient wrt each tensor into dw (same order and shapes as w;
     * zeroed by the host once per batch). WRITES the whole gradient wrt x into dx unless dx is
     * NULL (the first layer's input gradient is never needed). */
    int (*backward[RX_NDEVICES])(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y,
                                 const rx_tensor *dy, const rx_tensor *w, const void *state,
                                 rx_tensor *dx, rx_tensor *dw);
    /* OPTIONAL (ABI 3). The layer in inference (ctx->training false) as ONNX nodes from
     * g->input to g->output, added through g's functions; see rx_onnx above. Called once, on
     * the CPU, after create. A layer without it cannot be exported: `runexp export` names it. */
    int (*export_onnx)(void *self, rx_ctx *ctx, rx_onnx *g);
    /* ABI 5. RX_TRAIT_* flags: what the host may rely on to run the layers in another order
     * with the same results. 0 is always safe. */
    unsigned traits;
} rx_layer_ops;

/* rx_layer_ops.traits. A MONOTONE layer just before a MAX_POOL one runs just after it instead
 * (neither opening nor closing a residual block): max(f(a), f(b)) = f(max(a, b)) for f
 * non-decreasing, so f then works on the pooled values only (a quarter of them after a 2x2 pool:
 * the tutorial's relu, maxpool). */
enum {
    /* y = f(x) elementwise, with no tensors and no state, f non-decreasing, and f's gradient 0
     * wherever f is flat, so that the gradients agree too (relu: 0 at and below 0). */
    RX_TRAIT_MONOTONE = 1u << 0,
    /* Each output is the largest of a window of one channel of the input (padding never wins),
     * and backward gives the output's gradient to that largest input. */
    RX_TRAIT_MAX_POOL = 1u << 1,
};

/* ---- Losses: softmax and friends are fused in, so forward also yields the gradient. ---- */

typedef struct rx_loss_ops {
    /* REQUIRED. in: per-sample shape of the logits; nclasses: how many labels the data set has. */
    int (*create)(void **self, rx_ctx *ctx, const rx_value *args, rx_shape in, int nclasses);
    void (*destroy)(void *self); /* OPTIONAL, NULL-safe */
    /* REQUIRED for at least one device. All buffers are the host's, on ctx->device. */
    /* logits: (N, C); labels: N ints on ctx->device. Writes the per-sample losses (N floats, on
     * the device) and, unless dlogits is NULL, the gradient of their MEAN wrt the logits. On the
     * CPU the host may call it on parts of a batch at once, from several threads (ctx->threads
     * = 1 each; lanes): it must read self only. */
    int (*forward[RX_NDEVICES])(void *self, rx_ctx *ctx, const rx_tensor *logits,
                                const int32_t *labels, float *losses, rx_tensor *dlogits);
} rx_loss_ops;

/* ---- Optimizers: one step over one flat vector of parameters. ---- */

typedef struct rx_step {
    float lr;           /* this step's learning rate (the host owns schedules and groups) */
    float weight_decay; /* this group's weight decay (L2 for sgd and adam, decoupled for adamw) */
    int64_t t;          /* 1 for the first step */
    rx_shape shape;     /* per_tensor optimizers: the shape of the one tensor the call steps;
                           ndim 0 otherwise */
} rx_step;

typedef struct rx_optim_ops {
    /* REQUIRED. Says how many floats of state it keeps per parameter (momentum: 1, adam: 2). */
    int (*create)(void **self, rx_ctx *ctx, const rx_value *args, int *state_per_param);
    void (*destroy)(void *self); /* OPTIONAL, NULL-safe */
    /* REQUIRED for at least one device. Reads g, updates w and state in place; all host memory on
     * ctx->device: w, g n floats each, state state_per_param * n laid out as state_per_param
     * blocks of n (zeroed by the host at the start, saved and restored with the run). The host
     * calls it once per group of tensors that share a learning rate and weight decay, so one
     * step may be several calls, each with its own slice of w, g and state. On the CPU it may
     * make calls from several threads at once (ctx->threads = 1 each; lanes), and with at most
     * one state value per parameter it may cut a group into slices for them: step must read
     * self only, and each parameter's update depend on its own g, w and state only, as sgd's
     * and adam's do. */
    int (*step[RX_NDEVICES])(void *self, rx_ctx *ctx, const float *g, float *w, float *state,
                             size_t n, rx_step s);
    /* OPTIONAL (false: the calls above). true: an update that needs each tensor whole, as a
     * matrix (muon orthogonalizes it): the host calls step once per trained tensor, never a
     * slice of one, with s.shape its shape; ctx->threads may be 1 (a lane's) or more. */
    bool per_tensor;
} rx_optim_ops;

/* ---- Data sets ---- */

typedef enum { RX_TRAIN = 0, RX_VALID = 1, RX_TEST = 2, RX_NSPLITS = 3 } rx_split;

typedef struct rx_data_info {
    rx_shape sample;                       /* per-sample shape, e.g. (3, 32, 32) */
    int nclasses;
    const char *class_names[RX_MAX_CLASSES]; /* owned by the plugin, valid until destroy */
    int64_t size[RX_NSPLITS];              /* samples in train, valid and test (valid may be 0) */
    int views;  /* test-time augmentation: views of each sample evaluation averages (0 or 1: none) */
    /* ABI 3. The normalization the plugin applied to pixels scaled to [0, 1]: channel c of a
     * sample is (v / 255 - mean[c]) / std[c]. `runexp export` writes it as the model's first
     * nodes and `runexp predict` applies it to picture files, so it must be what the batches
     * carry. norm_channels: 0 when the plugin does not say (its samples are not pictures), else
     * the samples' channels (sample.d[0], at most RX_MAX_NORM), each with its own value (a
     * single configured value is repeated); std > 0. */
    int norm_channels;
    double mean[RX_MAX_NORM], std[RX_MAX_NORM];
    /* ABI 5. true: the CPU batch may be called from several threads at once, each on its own
     * consecutive part of a batch (its first, x rows and labels), so it must read self only, as
     * cifar10's does. The host then has each thread draw its part of a batch (training or
     * evaluation) in the parallel region that runs it (lanes), instead of one thread drawing the
     * whole batch while the others wait. false (the default): one call per batch. */
    bool parts;
} rx_data_info;

typedef struct rx_data_ops {
    /* REQUIRED. seed: the run's seed, for the train/valid split and the epoch shuffles. Loads (or
     * generates) the data set, which the plugin owns, and fills info. */
    int (*create)(void **self, rx_ctx *ctx, const rx_value *args, uint64_t seed, rx_data_info *info);
    void (*destroy)(void *self); /* OPTIONAL, NULL-safe */
    /* REQUIRED. Fixes the order of `split` for one epoch (train is reshuffled; valid and test are
     * not). The order must depend only on (seed, split, epoch), so a resumed run repeats it. */
    int (*begin_epoch)(void *self, rx_ctx *ctx, rx_split split, int64_t epoch);
    /* REQUIRED for at least one device. Samples [first, first + x->shape.d[0]) of the epoch's
     * order into x (N, sample...) and labels (N ints), both host-allocated on ctx->device.
     * Training batches carry the plugin's augmentation, which must depend only on (seed, epoch,
     * sample), never on batch size or device. view: 0 for training and plain evaluation; for
     * valid and test, 0 .. info.views - 1 selects a test-time augmentation view. */
    int (*batch[RX_NDEVICES])(void *self, rx_ctx *ctx, rx_split split, int64_t first, int view,
                              rx_tensor *x, int32_t *labels);
} rx_data_ops;

/* ---- The descriptor ---- */

typedef struct rx_plugin {
    uint32_t abi;          /* RX_ABI_VERSION */
    uint32_t size;         /* sizeof(rx_plugin) as the plugin saw it */
    rx_kind kind;
    const char *name;      /* equals the file name and the entry suffix */
    const char *summary;   /* one line for `runexp plugins` */
    const rx_param *params;/* terminated by an entry with key == NULL */
    union {
        rx_layer_ops layer;
        rx_loss_ops loss;
        rx_optim_ops optim;
        rx_data_ops data;
    };
} rx_plugin;

/* Declares the entry point; the plugin's source ends with RX_EXPORT(name) { return &desc; } */
#define RX_EXPORT(name) \
    __attribute__((visibility("default"))) const rx_plugin *rx_plugin_##name(void); \
    __attribute__((visibility("default"))) const rx_plugin *rx_plugin_##name(void)

#endif
