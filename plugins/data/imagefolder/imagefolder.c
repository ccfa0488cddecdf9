/* imagefolder.c: a data set of the user's own pictures, in the layout torchvision's ImageFolder
 * reads: ROOT/CLASS/FILE.png|jpg|jpeg, class names from the folder names (sorted), either with
 * ROOT/train/, ROOT/val/ and ROOT/test/ each holding the same class folders, or one set of class
 * folders at ROOT split by the seed.
 *
 * Splits: the pool is ROOT/train/ (or ROOT itself). The validation split is ROOT/val/ when there
 * is one, else the first round(valid_fraction * N) images of the pool shuffled once by the seed;
 * the test split is ROOT/test/, else ROOT/val/, else the next round(test_fraction * N) of the
 * shuffled pool. Every epoch reshuffles the training split from (seed, epoch) alone, as cifar10
 * does; validation and test keep their order.
 *
 * Every picture is decoded and fitted to `size` once (scan.c: "resize" scales the whole picture,
 * "crop" scales and cuts its centre) and kept as bytes, in memory and in a cache file checked
 * against the files' names, sizes and times. Batches are normalized through a table per channel,
 * from the given mean and std or, by default, from the training split's own (reported in
 * rx_data_info either way, for export and predict). Augmentation of training images and the
 * test-time views are cifar10's (plugins/common/augment.c), with the same parameters.
 */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "augment.h"
#include "data.h"
#include "imagefolder.h"

#define STREAM_SPLIT 1
#define STREAM_EPOCH 1000

enum {
    ARG_PATH, ARG_SIZE, ARG_RESIZE, ARG_VALID_FRACTION, ARG_TEST_FRACTION, ARG_MEAN, ARG_STD, ARG_CACHE,
    ARG_CROP_PADDING, /* then the rest of AUGMENT_PARAMS */
};

static const rx_param params[] = {
    { .key = "path", .type = RX_STR, .required = true,
      .help = "the root folder: ROOT/CLASS/FILE.png|jpg|jpeg, or ROOT/train/CLASS/... with ROOT/val/ and ROOT/test/" },
    { .key = "size", .type = RX_NUMS, .def = { .len = 1, .list = { 32 } },
      .help = "the images' size in pixels: one side (square) or { height, width }, each 1-1024" },
    { .key = "resize", .type = RX_STR, .def = { .s = "resize" },
      .help = "how a picture becomes size: \"resize\" (the whole picture scaled, its aspect not kept) or \"crop\" "
              "(scaled to cover size, aspect kept, and the centre cut); bilinear, antialiased when shrinking" },
    { .key = "valid_fraction", .type = RX_NUM, .def = { .num = 0.2 },
      .help = "without ROOT/val/: share of the pool (ROOT/train/ or ROOT) held out for validation, in [0, 1)" },
    { .key = "test_fraction", .type = RX_NUM, .def = { .num = 0.1 },
      .help = "without ROOT/test/ and ROOT/val/: share of the pool held out for the test, in (0, 1)" },
    { .key = "mean", .type = RX_NUMS, .def = { .len = 0 },
      .help = "per-channel mean subtracted from pixels scaled to [0, 1] (1 or 3 values; none: the training "
              "split's own, printed)" },
    { .key = "std", .type = RX_NUMS, .def = { .len = 0 },
      .help = "per-channel standard deviation divided by (1 or 3 values, > 0; none: the training split's own)" },
    { .key = "cache", .type = RX_STR, .def = { .s = "" },
      .help = "folder for the decoded images' cache file (\"\": the root folder itself)" },
    AUGMENT_PARAMS("size"),
    { 0 },
};

static const char *const split_names[RX_NSPLITS] = { "train", "valid", "test" };

typedef struct imagefolder {
    if_list list;
    uint8_t *pixels;            /* (list.n, 3, h, w) */
    int h, w;
    int64_t size[RX_NSPLITS];
    int32_t *order[RX_NSPLITS]; /* indices into list and pixels: train's is this epoch's */
    int32_t *train_base;        /* (size[RX_TRAIN]) the training split before the epoch's shuffle */
    uint64_t seed;
    int64_t epoch;              /* the training epoch begin_epoch fixed last: its augmentation */
    augment aug;
    float lut[3][AUGMENT_LEVELS]; /* byte value -> normalized float, per channel */
} imagefolder;

static void imagefolder_destroy(void *self)
{
    imagefolder *d = self;
    if (!d) return;
    if_list_free(&d->list);
    free(d->pixels);
    for (int s = 0; s < RX_NSPLITS; s++) free(d->order[s]);
    free(d->train_base);
    free(d);
}

static int check_normalization(rx_ctx *ctx, const rx_value *mean, const rx_value *std)
{
    if (mean->len != std->len && (mean->len == 0 || std->len == 0))
        return rx_fail(ctx, "mean and std are given together or not at all (got %d and %d values)", mean->len, std->len);
    if (mean->len > 3 || mean->len == 2) return rx_fail(ctx, "mean has %d values, expected 1 or 3 (one per channel)", mean->len);
    if (std->len > 3 || std->len == 2) return rx_fail(ctx, "std has %d values, expected 1 or 3 (one per channel)", std->len);
    for (int c = 0; c < std->len; c++)
        if (!(std->list[c] > 0)) return rx_fail(ctx, "std[%d] is %g, expected > 0", c, std->list[c]);
    return 0;
}

static int check_args(rx_ctx *ctx, const rx_value *args, int *h, int *w, int *fit, augment *aug)
{
    if (!args[ARG_PATH].s || !*args[ARG_PATH].s) return rx_fail(ctx, "path is empty (the root folder of the images)");
    const rx_value *size = &args[ARG_SIZE];
    if (size->len != 1 && size->len != 2) return rx_fail(ctx, "size has %d values, expected 1 or 2", size->len);
    for (int i = 0; i < size->len; i++)
        if (!(size->list[i] >= 1 && size->list[i] <= IF_MAX_SIDE) || size->list[i] != floor(size->list[i]))
            return rx_fail(ctx, "size[%d] is %g, expected a whole number of pixels in [1, %d]", i, size->list[i],
                           IF_MAX_SIDE);
    *h = (int)size->list[0];
    *w = (int)size->list[size->len - 1];
    double vf = args[ARG_VALID_FRACTION].num, tf = args[ARG_TEST_FRACTION].num;
    if (!(vf >= 0 && vf < 1)) return rx_fail(ctx, "valid_fraction must be in [0, 1), got %g", vf);
    if (!(tf > 0 && tf < 1)) return rx_fail(ctx, "test_fraction must be in (0, 1), got %g", tf);
    if (check_normalization(ctx, &args[ARG_MEAN], &args[ARG_STD]) != 0 ||
        augment_parse(ctx, &args[ARG_CROP_PADDING], *h, *w, aug) != 0)
        return -1;
    return data_parse_choice(ctx, "resize", args[ARG_RESIZE].s, picture_fit_names, 2, fit);
}

/* The cache file: ROOT/.imagefolder-HxW-FIT.cache, or in the cache folder with the root's path
 * hashed into the name (FNV-1a), so that two roots never share one. */
static int cache_path(rx_ctx *ctx, const rx_value *args, int h, int w, int fit, char *out)
{
    const char *root = args[ARG_PATH].s, *dir = args[ARG_CACHE].s;
    char name[96], abs[PATH_MAX];
    snprintf(name, sizeof name, ".imagefolder-%dx%d-%s", h, w, picture_fit_names[fit]);
    int n;
    if (!dir || !*dir) {
        n = snprintf(out, PATH_MAX, "%s/%s.cache", root, name);
    } else {
        uint64_t hash = 0xcbf29ce484222325ull;
        for (const char *p = realpath(root, abs) ? abs : root; *p; p++) hash = (hash ^ (uint8_t)*p) * 0x100000001b3ull;
        n = snprintf(out, PATH_MAX, "%s/%s-%016llx.cache", dir, name, (unsigned long long)hash);
    }
    if (n >= PATH_MAX) return rx_fail(ctx, "the cache's path is too long (path %s, cache %s)", root, dir);
    return 0;
}

static int64_t count_from(const if_list *l, if_origin o)
{
    int64_t n = 0;
    for (int64_t i = 0; i < l->n; i++) n += l->files[i].origin == o;
    return n;
}

static void take_from(const if_list *l, if_origin o, int32_t *out)
{
    for (int64_t i = 0, k = 0; i < l->n; i++)
        if (l->files[i].origin == o) out[k++] = (int32_t)i;
}

/* The pool (ROOT/train/ or ROOT), shuffled by the seed when splits are cut from it, then ROOT/val/
 * and ROOT/test/ as they are. */
static int make_splits(imagefolder *d, rx_ctx *ctx, const char *root, double vf, double tf)
{
    const if_list *l = &d->list;
    if_origin pool = l->split_layout ? IF_FROM_TRAIN : IF_FROM_ROOT;
    int64_t npool = count_from(l, pool), nval = count_from(l, IF_FROM_VAL), ntest = count_from(l, IF_FROM_TEST);
    int64_t cut_valid = nval ? 0 : llround(vf * (double)npool);
    int64_t cut_test = nval || ntest ? 0 : llround(tf * (double)npool);
    if (!nval && !ntest && cut_test < 1)
        return rx_fail(ctx, "%s: test_fraction %g of %lld images leaves no test images (or add %s/test/)", root, tf,
                       (long long)npool, root);
    if (cut_valid + cut_test >= npool)
        return rx_fail(ctx, "%s: valid_fraction %g and test_fraction %g of %lld images leave none to train on", root,
                       vf, tf, (long long)npool);
    d->size[RX_TRAIN] = npool - cut_valid - cut_test;
    d->size[RX_VALID] = nval ? nval : cut_valid;
    d->size[RX_TEST] = ntest ? ntest : nval ? nval : cut_test;
    int32_t *p = malloc((size_t)npool * sizeof *p);
    for (int s = 0; s < RX_NSPLITS; s++) d->order[s] = malloc((size_t)(d->size[s] ? d->size[s] : 1) * sizeof(int32_t));
    d->train_base = malloc((size_t)d->size[RX_TRAIN] * sizeof(int32_t));
    if (!p || !d->order[RX_TRAIN] || !d->order[RX_VALID] || !d->order[RX_TEST] || !d->train_base) {
        free(p);
        return rx_fail(ctx, "out of memory for the splits");
    }
    take_from(l, pool, p);
    if (cut_valid || cut_test) data_shuffle_indices(p, npool, rx_rng_stream(d->seed, STREAM_SPLIT));
    if (nval) take_from(l, IF_FROM_VAL, d->order[RX_VALID]);
    else memcpy(d->order[RX_VALID], p, (size_t)cut_valid * sizeof *p);
    if (ntest || nval) take_from(l, ntest ? IF_FROM_TEST : IF_FROM_VAL, d->order[RX_TEST]);
    else memcpy(d->order[RX_TEST], p + cut_valid, (size_t)cut_test * sizeof *p);
    memcpy(d->train_base, p + cut_valid + cut_test, (size_t)d->size[RX_TRAIN] * sizeof *p);
    memcpy(d->order[RX_TRAIN], d->train_base, (size_t)d->size[RX_TRAIN] * sizeof *p);
    free(p);
    return 0;
}

/* The training split's per-channel mean and standard deviation of pixels in [0, 1]; the sums are
 * integers, so the result does not depend on the order. */
static void training_statistics(const imagefolder *d, rx_value *mean, rx_value *std)
{
    size_t plane = (size_t)d->h * (size_t)d->w;
    mean->len = std->len = 3;
    for (int c = 0; c < 3; c++) {
        uint64_t sum = 0, sq = 0;
        for (int64_t i = 0; i < d->size[RX_TRAIN]; i++) {
            const uint8_t *px = d->pixels + ((size_t)d->train_base[i] * 3 + (size_t)c) * plane;
            for (size_t k = 0; k < plane; k++) {
                sum += px[k];
                sq += (uint64_t)px[k] * px[k];
            }
        }
        double n = (double)plane * (double)d->size[RX_TRAIN], m = (double)sum / n;
        double var = (double)sq / n - m * m;
        mean->list[c] = m / 255.0;
        std->list[c] = var > 0 ? sqrt(var) / 255.0 : 1.0; /* one flat colour: nothing to scale */
    }
}

/* The given or computed mean and std into info (what export and predict read) and the table. */
static void normalization(imagefolder *d, const rx_value *args, const char *root, rx_data_info *info)
{
    rx_value mean = args[ARG_MEAN], std = args[ARG_STD];
    if (mean.len == 0) {
        training_statistics(d, &mean, &std);
        fprintf(stderr, "imagefolder: %s: mean = { %.4f, %.4f, %.4f }, std = { %.4f, %.4f, %.4f } from the %lld "
                "training images\n", root, mean.list[0], mean.list[1], mean.list[2], std.list[0], std.list[1],
                std.list[2], (long long)d->size[RX_TRAIN]);
    }
    data_set_normalization(info, 3, &mean, &std);
    data_build_luts(d->lut, info);
}

static void fill_info(const imagefolder *d, rx_data_info *info)
{
    info->sample = (rx_shape){ .ndim = 3, .d = { 3, d->h, d->w } };
    info->nclasses = d->list.nclasses;
    for (int c = 0; c < d->list.nclasses; c++) info->class_names[c] = d->list.classes[c];
    for (int s = 0; s < RX_NSPLITS; s++) info->size[s] = d->size[s];
    info->views = d->aug.views;
    info->parts = true; /* imagefolder_batch_cpu reads d only */
}

static int imagefolder_create(void **self, rx_ctx *ctx, const rx_value *args, uint64_t seed, rx_data_info *info)
{
    *self = NULL;
    int h = 0, w = 0, fit = 0;
    char cache[PATH_MAX];
    augment aug;
    if (check_args(ctx, args, &h, &w, &fit, &aug) != 0 || cache_path(ctx, args, h, w, fit, cache) != 0) return -1;
    imagefolder *d = calloc(1, sizeof *d);
    if (!d) return rx_fail(ctx, "out of memory");
    const char *root = args[ARG_PATH].s;
    d->h = h;
    d->w = w;
    d->seed = seed;
    d->aug = aug;
    if (if_scan(ctx, root, &d->list) != 0 ||
        make_splits(d, ctx, root, args[ARG_VALID_FRACTION].num, args[ARG_TEST_FRACTION].num) != 0 ||
        if_load_images(ctx, root, &d->list, cache, h, w, (picture_fit)fit, &d->pixels) != 0) {
        imagefolder_destroy(d);
        return -1;
    }
    normalization(d, args, root, info);
    fill_info(d, info);
    *self = d;
    return 0;
}

static int imagefolder_begin_epoch(void *self, rx_ctx *ctx, rx_split split, int64_t epoch)
{
    imagefolder *d = self;
    if (data_check_split(ctx, split) != 0) return -1;
    if (split != RX_TRAIN) return 0;
    if (epoch < 0) return rx_fail(ctx, "epoch must be >= 0, got %lld", (long long)epoch);
    int64_t n = d->size[RX_TRAIN];
    memcpy(d->order[RX_TRAIN], d->train_base, (size_t)n * sizeof(int32_t));
    data_shuffle_indices(d->order[RX_TRAIN], n, rx_rng_stream(d->seed, STREAM_EPOCH + (uint64_t)epoch));
    d->epoch = epoch;
    return 0;
}

static int imagefolder_batch_cpu(void *self, rx_ctx *ctx, rx_split split, int64_t first, int view, rx_tensor *x,
                                 int32_t *labels)
{
    imagefolder *d = self;
    if (data_check_split(ctx, split) != 0 || augment_check_view(ctx, &d->aug, split, view) != 0) return -1;
    const rx_shape *s = &x->shape;
    if (s->ndim != 4 || s->d[1] != 3 || s->d[2] != d->h || s->d[3] != d->w)
        return rx_fail(ctx, "batch: x has %d dims (%lld, %lld, %lld, %lld), expected (N, 3, %d, %d)", s->ndim,
                       (long long)s->d[0], (long long)s->d[1], (long long)s->d[2], (long long)s->d[3], d->h, d->w);
    if (first < 0 || s->d[0] < 0 || first + s->d[0] > d->size[split])
        return rx_fail(ctx, "batch: samples [%lld, %lld) are outside the %s split's %lld", (long long)first,
                       (long long)(first + s->d[0]), split_names[split], (long long)d->size[split]);
    size_t each = (size_t)3 * (size_t)d->h * (size_t)d->w;
    for (int64_t n = 0; n < s->d[0]; n++) {
        augment_pick pk = augment_pick_for(&d->aug, d->seed, d->epoch, split, d->order[split][first + n], view);
        augment_render(&d->aug, &d->lut[0][0], d->pixels + (size_t)pk.image * each, pk, x->data + (size_t)n * each);
        labels[n] = d->list.files[pk.image].label;
    }
    return 0;
}

static const rx_plugin desc = {
    .abi = RX_ABI_VERSION,
    .size = sizeof(rx_plugin),
    .kind = RX_DATA,
    .name = "imagefolder",
    .summary = "your own PNG and JPEG pictures in torchvision's ImageFolder layout (ROOT/CLASS/FILE.png), decoded once; crop, flip, cutout, TTA",
    .params = params,
    .data = {
        .create = imagefolder_create,
        .destroy = imagefolder_destroy,
        .begin_epoch = imagefolder_begin_epoch,
        .batch = { [RX_CPU] = imagefolder_batch_cpu },
    },
};

RX_EXPORT(imagefolder) { return &desc; }
