/* synthetic.c: a small generated classification task, so that a network, an optimizer or the
 * whole host can be tried in seconds on any machine, with no files to fetch.
 *
 * Each class has a random prototype image with values in [-1, 1); a sample is its class's
 * prototype plus noise * (roughly standard normal noise, a scaled sum of four uniforms). Labels
 * are drawn uniformly. With the defaults (10 classes, 3x8x8, noise 0.5) the classes are far apart
 * compared with the noise, so a linear or small conv net learns it to well over 90% in a few
 * epochs; raise noise to make it harder.
 *
 * Everything comes from the seed: the prototypes from one stream, each split's samples from its
 * own, so changing the number of training samples leaves the validation and test sets alone.
 * The splits are generated once at create, as floats (small). As in cifar10, every epoch
 * reshuffles the training split from (seed, epoch) alone; validation and test keep their order.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runexp.h"
#include "data.h"

#define SYN_NAME_LEN  24           /* "class" and any int fit */
#define SYN_MAX_FLOATS (1ll << 30) /* 4 GiB of samples: far beyond "small", surely a typo */

/* Random streams: prototypes, then one per split; epoch e shuffles with STREAM_EPOCH + e. */
#define STREAM_PROTOTYPES 1
#define STREAM_SAMPLES    2  /* + split */
#define STREAM_EPOCH      1000

enum { ARG_CLASSES, ARG_CHANNELS, ARG_SIZE, ARG_TRAIN, ARG_VALID, ARG_TEST, ARG_NOISE };

static const rx_param params[] = {
    { .key = "classes", .type = RX_INT, .def = { .i = 10 }, .help = "number of classes (2-1000)" },
    { .key = "channels", .type = RX_INT, .def = { .i = 3 }, .help = "channels per image" },
    { .key = "size", .type = RX_INT, .def = { .i = 8 }, .help = "images are size x size" },
    { .key = "train", .type = RX_INT, .def = { .i = 2000 }, .help = "training samples" },
    { .key = "valid", .type = RX_INT, .def = { .i = 500 }, .help = "validation samples" },
    { .key = "test", .type = RX_INT, .def = { .i = 500 }, .help = "test samples" },
    { .key = "noise", .type = RX_NUM, .def = { .num = 0.5 },
      .help = "standard deviation of the noise added to the class prototypes (they lie in [-1, 1))" },
    { 0 },
};

static const char *const split_names[RX_NSPLITS] = { "train", "valid", "test" };

typedef struct synthetic {
    float *x;                     /* (train + valid + test, C, S, S): train, then valid, then test */
    int32_t *y;                   /* (train + valid + test) labels */
    int64_t size[RX_NSPLITS];     /* samples per split */
    int64_t offset[RX_NSPLITS];   /* where each split starts in x and y */
    int32_t *train_order;         /* (size[RX_TRAIN]) this epoch's order, indices within train */
    rx_shape sample;              /* (C, S, S) */
    int64_t sample_numel;         /* C * S * S */
    uint64_t seed;
    char (*names)[SYN_NAME_LEN];  /* (classes) "class0", "class1", ... */
} synthetic;

static void synthetic_destroy(void *self)
{
    synthetic *d = self;
    if (!d) return;
    free(d->x);
    free(d->y);
    free(d->train_order);
    free(d->names);
    free(d);
}

/* Mean 0, variance 1, support [-2 sqrt 3, 2 sqrt 3]: the Irwin-Hall sum of four uniforms. */
static float roughly_normal(rx_rng *rng)
{
    float sum = rx_rng_uniform(rng) + rx_rng_uniform(rng) + rx_rng_uniform(rng) + rx_rng_uniform(rng);
    return (sum - 2.0f) * 1.7320508f;
}

static int synthetic_check_args(rx_ctx *ctx, const rx_value *args)
{
    static const struct { int arg; const char *key; int64_t min, max; } limits[] = {
        { ARG_CLASSES, "classes", 2, RX_MAX_CLASSES }, { ARG_CHANNELS, "channels", 1, 4096 },
        { ARG_SIZE, "size", 1, 4096 },                 { ARG_TRAIN, "train", 1, INT32_MAX },
        { ARG_VALID, "valid", 0, INT32_MAX },          { ARG_TEST, "test", 0, INT32_MAX },
    };
    for (size_t k = 0; k < sizeof limits / sizeof limits[0]; k++) {
        int64_t v = args[limits[k].arg].i;
        if (v < limits[k].min || v > limits[k].max)
            return rx_fail(ctx, "%s must be in [%lld, %lld], got %lld", limits[k].key,
                           (long long)limits[k].min, (long long)limits[k].max, (long long)v);
    }
    double noise = args[ARG_NOISE].num;
    if (!(noise >= 0 && isfinite(noise))) return rx_fail(ctx, "noise must be >= 0, got %g", noise);
    double floats = (double)(args[ARG_TRAIN].i + args[ARG_VALID].i + args[ARG_TEST].i) *
                    (double)args[ARG_CHANNELS].i * (double)(args[ARG_SIZE].i * args[ARG_SIZE].i);
    if (floats > (double)SYN_MAX_FLOATS)
        return rx_fail(ctx, "%.0f floats of samples, more than the %lld a small synthetic set may have",
                       floats, (long long)SYN_MAX_FLOATS);
    return 0;
}

static int synthetic_alloc(synthetic *d, rx_ctx *ctx, int64_t classes)
{
    size_t n = (size_t)(d->size[RX_TRAIN] + d->size[RX_VALID] + d->size[RX_TEST]);
    d->x = malloc(n * (size_t)d->sample_numel * sizeof(float));
    d->y = malloc(n * sizeof(int32_t));
    d->train_order = malloc((size_t)d->size[RX_TRAIN] * sizeof(int32_t));
    d->names = malloc((size_t)classes * sizeof *d->names);
    if (!d->x || !d->y || !d->train_order || !d->names)
        return rx_fail(ctx, "out of memory for %zu samples of %lld floats", n, (long long)d->sample_numel);
    return 0;
}

/* One prototype per class: (classes, C, S, S), uniform in [-1, 1). */
static float *synthetic_make_prototypes(const synthetic *d, rx_ctx *ctx, int64_t classes)
{
    size_t n = (size_t)(classes * d->sample_numel);
    float *proto = malloc(n * sizeof(float));
    if (!proto) {
        rx_fail(ctx, "out of memory for %lld prototypes", (long long)classes);
        return NULL;
    }
    rx_rng rng = rx_rng_stream(d->seed, STREAM_PROTOTYPES);
    for (size_t i = 0; i < n; i++) proto[i] = 2.0f * rx_rng_uniform(&rng) - 1.0f;
    return proto;
}

/* The samples of one split, each a random class's prototype plus noise. */
static void synthetic_make_split(synthetic *d, rx_split split, const float *proto, int64_t classes, float noise)
{
    rx_rng rng = rx_rng_stream(d->seed, STREAM_SAMPLES + (uint64_t)split);
    for (int64_t i = d->offset[split]; i < d->offset[split] + d->size[split]; i++) {
        int32_t label = (int32_t)rx_rng_below(&rng, (uint64_t)classes);
        const float *p = proto + label * d->sample_numel; /* (C, S, S) */
        float *x = d->x + i * d->sample_numel;            /* (C, S, S) */
        for (int64_t k = 0; k < d->sample_numel; k++) x[k] = p[k] + noise * roughly_normal(&rng);
        d->y[i] = label;
    }
}

static int synthetic_generate(synthetic *d, rx_ctx *ctx, int64_t classes, float noise)
{
    float *proto = synthetic_make_prototypes(d, ctx, classes);
    if (!proto) return -1;
    for (int s = 0; s < RX_NSPLITS; s++) synthetic_make_split(d, (rx_split)s, proto, classes, noise);
    free(proto);
    for (int64_t i = 0; i < d->size[RX_TRAIN]; i++) d->train_order[i] = (int32_t)i;
    for (int c = 0; c < (int)classes; c++) snprintf(d->names[c], SYN_NAME_LEN, "class%d", c);
    return 0;
}

static void synthetic_fill_info(const synthetic *d, int64_t classes, rx_data_info *info)
{
    info->sample = d->sample;
    info->nclasses = (int)classes;
    for (int64_t c = 0; c < classes; c++) info->class_names[c] = d->names[c];
    for (int s = 0; s < RX_NSPLITS; s++) info->size[s] = d->size[s];
    info->parts = true; /* synthetic_batch_cpu reads d only */
    /* norm_channels stays 0: the samples are generated floats, never pixels that were
     * normalized, so an exported model starts at its first layer and predict refuses the run. */
}

static int synthetic_create(void **self, rx_ctx *ctx, const rx_value *args, uint64_t seed, rx_data_info *info)
{
    *self = NULL;
    if (synthetic_check_args(ctx, args) != 0) return -1;
    synthetic *d = calloc(1, sizeof *d);
    if (!d) return rx_fail(ctx, "out of memory");
    int64_t classes = args[ARG_CLASSES].i, c = args[ARG_CHANNELS].i, s = args[ARG_SIZE].i;
    d->seed = seed;
    d->sample = (rx_shape){ .ndim = 3, .d = { c, s, s } };
    d->sample_numel = c * s * s;
    d->size[RX_TRAIN] = args[ARG_TRAIN].i;
    d->size[RX_VALID] = args[ARG_VALID].i;
    d->size[RX_TEST] = args[ARG_TEST].i;
    d->offset[RX_TRAIN] = 0;
    d->offset[RX_VALID] = d->size[RX_TRAIN];
    d->offset[RX_TEST] = d->size[RX_TRAIN] + d->size[RX_VALID];
    if (synthetic_alloc(d, ctx, classes) != 0 || synthetic_generate(d, ctx, classes, (float)args[ARG_NOISE].num) != 0) {
        synthetic_destroy(d);
        return -1;
    }
    synthetic_fill_info(d, classes, info);
    *self = d;
    return 0;
}

static int synthetic_begin_epoch(void *self, rx_ctx *ctx, rx_split split, int64_t epoch)
{
    synthetic *d = self;
    if (data_check_split(ctx, split) != 0) return -1;
    if (split != RX_TRAIN) return 0;
    if (epoch < 0) return rx_fail(ctx, "epoch must be >= 0, got %lld", (long long)epoch);
    /* From the identity, not the last epoch's order: the order depends on (seed, epoch) only. */
    for (int64_t i = 0; i < d->size[RX_TRAIN]; i++) d->train_order[i] = (int32_t)i;
    data_shuffle_indices(d->train_order, d->size[RX_TRAIN], rx_rng_stream(d->seed, STREAM_EPOCH + (uint64_t)epoch));
    return 0;
}

/* x must be (N, C, S, S) on the CPU and samples [first, first + N) must exist. */
static int synthetic_check_batch(const synthetic *d, rx_ctx *ctx, rx_split split, int64_t first, const rx_tensor *x)
{
    const rx_shape *s = &x->shape;
    if (s->ndim != 4 || s->d[1] != d->sample.d[0] || s->d[2] != d->sample.d[1] || s->d[3] != d->sample.d[2])
        return rx_fail(ctx, "batch: x has %d dims (%lld, %lld, %lld, %lld), expected (N, %lld, %lld, %lld)",
                       s->ndim, (long long)s->d[0], (long long)s->d[1], (long long)s->d[2], (long long)s->d[3],
                       (long long)d->sample.d[0], (long long)d->sample.d[1], (long long)d->sample.d[2]);
    if (x->device != RX_CPU) return rx_fail(ctx, "batch: x is not on the CPU");
    if (first < 0 || s->d[0] < 0 || first + s->d[0] > d->size[split])
        return rx_fail(ctx, "batch: samples [%lld, %lld) are outside the %s split's %lld", (long long)first,
                       (long long)(first + s->d[0]), split_names[split], (long long)d->size[split]);
    return 0;
}

static int synthetic_batch_cpu(void *self, rx_ctx *ctx, rx_split split, int64_t first, int view, rx_tensor *x,
                               int32_t *labels)
{
    synthetic *d = self;
    (void)view; /* no test-time views yet */
    if (data_check_split(ctx, split) != 0 || synthetic_check_batch(d, ctx, split, first, x) != 0) return -1;
    size_t bytes = (size_t)d->sample_numel * sizeof(float);
    for (int64_t n = 0; n < x->shape.d[0]; n++) {
        int64_t i = d->offset[split] + (split == RX_TRAIN ? d->train_order[first + n] : first + n);
        memcpy(x->data + n * d->sample_numel, d->x + i * d->sample_numel, bytes);
        labels[n] = d->y[i];
    }
    return 0;
}

static const rx_plugin desc = {
    .abi = RX_ABI_VERSION,
    .size = sizeof(rx_plugin),
    .kind = RX_DATA,
    .name = "synthetic",
    .summary = "generated noisy class prototypes: a learnable task that runs in seconds anywhere",
    .params = params,
    .data = {
        .create = synthetic_create,
        .destroy = synthetic_destroy,
        .begin_epoch = synthetic_begin_epoch,
        .batch = { [RX_CPU] = synthetic_batch_cpu },
    },
};

RX_EXPORT(synthetic) { return &desc; }
