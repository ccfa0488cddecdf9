/* test_data.c: the data set plugins, cifar10 and synthetic, called the way the host calls them.
 *
 * cifar10 reads files written here in the official binary layout (no network, no real data):
 * six files of 10,000 records whose contents follow from the image number k (0-49999 training,
 * 50000-59999 test), so any sample handed out can be traced back to its record: the first three
 * red bytes spell k, the label and every other byte are simple functions of k. Broken copies of
 * the folder (a file missing, cut short, a bad label, a wrong class list) must be refused with a
 * message that says what is wrong.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <unistd.h>

#include "helpers.h"

#define PIXELS     3072   /* 3 x 32 x 32 bytes per image */
#define RECORD     3073   /* label byte + pixels */
#define PER_FILE   10000
#define NTRAIN     50000
#define NTEST      10000
#define CHUNK      500    /* samples per batch when reading a whole split */

static const char *const data_files[] = {
    "data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin",
    "data_batch_5.bin", "test_batch.bin",   "batches.meta.txt",
};
#define NFILES (int)(sizeof data_files / sizeof data_files[0])

static const char *const class_names[10] = {
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
};

/* ---- The generated files ---- */

static int label_of(int64_t k) { return (int)((k * 7 + k / 10) % 10); }

/* Byte p (0-3071) of image k: bytes 0-2 hold k itself, the rest a pattern that varies with both. */
static uint8_t pixel_of(int64_t k, int p)
{
    if (p < 3) return (uint8_t)(k >> (8 * p));
    return (uint8_t)(k * 31 + p * 7 + p / 1024);
}

static void path_join(char *out, const char *dir, const char *name)
{
    if (snprintf(out, PATH_MAX, "%s/%s", dir, name) >= PATH_MAX) fail_msg("path too long: %s/%s", dir, name);
}

/* NRECORDS records for images first_k ..; record bad_record (if >= 0) gets label bad_label. */
static void write_batch_file(const char *dir, const char *name, int64_t first_k, int nrecords, int bad_record,
                             int bad_label)
{
    char file[PATH_MAX];
    path_join(file, dir, name);
    FILE *f = fopen(file, "wb");
    if (!f) fail_msg("cannot write %s: %s", file, strerror(errno));
    uint8_t record[RECORD];
    for (int r = 0; r < nrecords; r++) {
        int64_t k = first_k + r;
        record[0] = (uint8_t)(r == bad_record ? bad_label : label_of(k));
        for (int p = 0; p < PIXELS; p++) record[1 + p] = pixel_of(k, p);
        if (fwrite(record, 1, RECORD, f) != RECORD) fail_msg("cannot write %s", file);
    }
    if (fclose(f) != 0) fail_msg("cannot write %s", file);
}

static void write_text_file(const char *dir, const char *name, const char *text)
{
    char file[PATH_MAX];
    path_join(file, dir, name);
    FILE *f = fopen(file, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) fail_msg("cannot write %s", file);
}

/* The class list as the real file has it, plus a blank line and a CRLF line to be skipped/trimmed. */
static void write_meta(const char *dir, int nnames)
{
    char text[512] = "";
    for (int c = 0; c < nnames; c++) {
        strcat(text, class_names[c]);
        strcat(text, c == 3 ? "\r\n\n" : "\n");
    }
    strcat(text, "\n");
    write_text_file(dir, "batches.meta.txt", text);
}

static void write_dataset(const char *dir)
{
    for (int i = 0; i < 5; i++) write_batch_file(dir, data_files[i], (int64_t)i * PER_FILE, PER_FILE, -1, 0);
    write_batch_file(dir, "test_batch.bin", NTRAIN, PER_FILE, -1, 0);
    write_meta(dir, 10);
}

/* A new folder whose files link to the good ones, except SKIP, which the caller writes (or not). */
static char *make_broken_copy(const char *good, const char *skip)
{
    char *dir = test_tmpdir();
    for (int i = 0; i < NFILES; i++) {
        if (strcmp(data_files[i], skip) == 0) continue;
        char from[PATH_MAX], to[PATH_MAX];
        path_join(from, good, data_files[i]);
        path_join(to, dir, data_files[i]);
        if (symlink(from, to) != 0) fail_msg("cannot link %s: %s", to, strerror(errno));
    }
    return dir;
}

static void remove_dataset(char *dir)
{
    for (int i = 0; i < NFILES; i++) {
        char file[PATH_MAX];
        path_join(file, dir, data_files[i]);
        unlink(file); /* some are absent on purpose */
    }
    rmdir(dir);
    free(dir);
}

static int group_setup(void **state)
{
    char *dir = test_tmpdir();
    write_dataset(dir);
    *state = dir;
    return 0;
}

static int group_teardown(void **state)
{
    remove_dataset(*state);
    return 0;
}

/* ---- Calling the plugins as the host does ---- */

typedef struct data_set {
    plugin pl;
    const rx_plugin *desc;
    rx_value args[TEST_MAX_ARGS];
    rx_ctx ctx;
    void *self;
    rx_data_info info;
} data_set;

static void data_load(data_set *ds, const char *name)
{
    memset(ds, 0, sizeof *ds);
    ds->desc = test_load(&ds->pl, RX_DATA, name);
    test_default_args(ds->desc, ds->args);
}

static void cifar10_load(data_set *ds, const char *dir)
{
    data_load(ds, "cifar10");
    test_arg(ds->desc, ds->args, "path")->s = dir;
}

static void data_create(data_set *ds, uint64_t seed)
{
    memset(&ds->info, 0, sizeof ds->info);
    if (ds->desc->data.create(&ds->self, &ds->ctx, ds->args, seed, &ds->info) != 0)
        fail_msg("create failed: %s", ds->ctx.err);
    assert_non_null(ds->self);
}

/* create must fail, leave nothing behind, and say WANT in its message. */
static void data_create_refused(data_set *ds, const char *want)
{
    ds->ctx.err[0] = '\0';
    ds->self = NULL;
    assert_int_equal(ds->desc->data.create(&ds->self, &ds->ctx, ds->args, 1, &ds->info), -1);
    assert_null(ds->self);
    if (!strstr(ds->ctx.err, want)) fail_msg("error '%s' does not say '%s'", ds->ctx.err, want);
}

static void data_close(data_set *ds)
{
    ds->desc->data.destroy(ds->self);
    plugin_unload(&ds->pl);
}

static int64_t sample_numel(const data_set *ds) { return rx_numel(ds->info.sample); }

/* Samples [first, first + n) of SPLIT into x (n, sample...) and labels (n). */
static void data_batch(data_set *ds, rx_split split, int64_t first, int64_t n, float *x, int32_t *labels)
{
    rx_tensor t = { .data = x, .device = RX_CPU, .shape = { .ndim = 4, .d = { n } } };
    for (int i = 0; i < 3; i++) t.shape.d[i + 1] = ds->info.sample.d[i];
    if (ds->desc->data.batch[RX_CPU](ds->self, &ds->ctx, split, first, 0, &t, labels) != 0)
        fail_msg("batch failed: %s", ds->ctx.err);
}

/* ---- cifar10 ---- */

/* The byte a normalized value came from. */
static int byte_from(float x, double mean, double std) { return (int)lround((x * std + mean) * 255.0); }

/* The image number behind each sample of SPLIT, in the epoch's order, read back from its pixels;
 * checks every label on the way. ids: (size[split]). */
static void cifar10_ids(data_set *ds, rx_split split, int32_t *ids)
{
    float *x = malloc(CHUNK * PIXELS * sizeof(float)); /* (CHUNK, 3, 32, 32) */
    int32_t labels[CHUNK];
    assert_non_null(x);
    int64_t size = ds->info.size[split];
    for (int64_t first = 0; first < size; first += CHUNK) {
        int64_t n = size - first < CHUNK ? size - first : CHUNK;
        data_batch(ds, split, first, n, x, labels);
        for (int64_t i = 0; i < n; i++) {
            const float *img = x + i * PIXELS;
            int k = byte_from(img[0], 0.5, 0.5) | byte_from(img[1], 0.5, 0.5) << 8 | byte_from(img[2], 0.5, 0.5) << 16;
            ids[first + i] = k;
            if (labels[i] != label_of(k)) fail_msg("image %d has label %d, wrote %d", k, labels[i], label_of(k));
        }
    }
    free(x);
}

static void test_cifar10_sizes_and_names(void **state)
{
    data_set ds;
    cifar10_load(&ds, *state);
    data_create(&ds, 1);
    assert_int_equal(ds.info.size[RX_TRAIN], 40000);
    assert_int_equal(ds.info.size[RX_VALID], 10000);
    assert_int_equal(ds.info.size[RX_TEST], 10000);
    assert_int_equal(ds.info.sample.ndim, 3);
    assert_int_equal(ds.info.sample.d[0], 3);
    assert_int_equal(ds.info.sample.d[1], 32);
    assert_int_equal(ds.info.sample.d[2], 32);
    assert_int_equal(ds.info.nclasses, 10);
    for (int c = 0; c < 10; c++) assert_string_equal(ds.info.class_names[c], class_names[c]);
    data_close(&ds);
}

static void test_cifar10_limits(void **state)
{
    data_set ds;
    cifar10_load(&ds, *state);
    test_arg(ds.desc, ds.args, "train_limit")->i = 12345; /* reaches into data_batch_2.bin */
    test_arg(ds.desc, ds.args, "test_limit")->i = 300;
    data_create(&ds, 1);
    assert_int_equal(ds.info.size[RX_VALID], 2469); /* round(0.2 * 12345) */
    assert_int_equal(ds.info.size[RX_TRAIN], 12345 - 2469);
    assert_int_equal(ds.info.size[RX_TEST], 300);

    /* Exactly the first 12345 training images, each once, and the first 300 test images. */
    int32_t *ids = malloc(12345 * sizeof(int32_t));
    char *seen = calloc(12345, 1);
    assert_non_null(ids);
    assert_non_null(seen);
    cifar10_ids(&ds, RX_VALID, ids);
    cifar10_ids(&ds, RX_TRAIN, ids + 2469);
    for (int i = 0; i < 12345; i++) {
        assert_in_range(ids[i], 0, 12344);
        assert_false(seen[ids[i]]);
        seen[ids[i]] = 1;
    }
    cifar10_ids(&ds, RX_TEST, ids);
    for (int i = 0; i < 300; i++) assert_int_equal(ids[i], NTRAIN + i);
    free(seen);
    free(ids);
    data_close(&ds);

    /* No validation split, and limits beyond the files mean everything. */
    cifar10_load(&ds, *state);
    test_arg(ds.desc, ds.args, "valid_fraction")->num = 0;
    test_arg(ds.desc, ds.args, "train_limit")->i = 1000;
    test_arg(ds.desc, ds.args, "test_limit")->i = 99999;
    data_create(&ds, 1);
    assert_int_equal(ds.info.size[RX_TRAIN], 1000);
    assert_int_equal(ds.info.size[RX_VALID], 0);
    assert_int_equal(ds.info.size[RX_TEST], NTEST);
    data_close(&ds);
}

/* Every pixel of every sample is (byte / 255 - mean[c]) / std[c] of the byte written. */
static void check_pixels(const float *img, int64_t k, const double *mean, const double *std)
{
    for (int c = 0; c < 3; c++)
        for (int p = 0; p < 1024; p++) {
            float want = ((float)pixel_of(k, c * 1024 + p) / 255.0f - (float)mean[c]) / (float)std[c];
            float got = img[c * 1024 + p];
            if (fabsf(got - want) > 1e-6f)
                fail_msg("image %lld channel %d pixel %d: got %.8g, want %.8g", (long long)k, c, p, got, want);
        }
}

static void test_cifar10_records(void **state)
{
    const double mean[3] = { 0.4914, 0.4822, 0.4465 }, std[3] = { 0.2470, 0.2435, 0.2616 };
    data_set ds;
    cifar10_load(&ds, *state);
    rx_value *m = test_arg(ds.desc, ds.args, "mean"), *s = test_arg(ds.desc, ds.args, "std");
    for (int c = 0; c < 3; c++) {
        m->list[c] = mean[c];
        s->list[c] = std[c];
    }
    data_create(&ds, 3);

    float *x = malloc(CHUNK * PIXELS * sizeof(float)); /* (CHUNK, 3, 32, 32) */
    int32_t labels[CHUNK];
    assert_non_null(x);
    /* Train and valid: whatever order, each sample's pixels and label are its record's. */
    for (rx_split split = RX_TRAIN; split <= RX_VALID; split++)
        for (int64_t first = 0; first < ds.info.size[split]; first += CHUNK) {
            data_batch(&ds, split, first, CHUNK, x, labels);
            for (int i = 0; i < CHUNK; i++) {
                const float *img = x + i * PIXELS;
                int64_t k = byte_from(img[0], mean[0], std[0]) | byte_from(img[1], mean[0], std[0]) << 8 |
                            byte_from(img[2], mean[0], std[0]) << 16;
                assert_in_range(k, 0, NTRAIN - 1);
                assert_int_equal(labels[i], label_of(k));
                check_pixels(img, k, mean, std);
            }
        }
    /* Test: the file's own order, from any starting sample. */
    data_batch(&ds, RX_TEST, NTEST - 7, 7, x, labels);
    for (int i = 0; i < 7; i++) {
        int64_t k = NTRAIN + NTEST - 7 + i;
        assert_int_equal(labels[i], label_of(k));
        check_pixels(x + i * PIXELS, k, mean, std);
    }
    free(x);
    data_close(&ds);
}

/* One mean and std for all channels, written as single numbers. */
static void test_cifar10_scalar_normalization(void **state)
{
    const double mean[3] = { 0.25, 0.25, 0.25 }, std[3] = { 2, 2, 2 };
    data_set ds;
    cifar10_load(&ds, *state);
    test_arg(ds.desc, ds.args, "train_limit")->i = 10;
    test_arg(ds.desc, ds.args, "test_limit")->i = 3;
    *test_arg(ds.desc, ds.args, "mean") = (rx_value){ .len = 1, .list = { 0.25 } };
    *test_arg(ds.desc, ds.args, "std") = (rx_value){ .len = 1, .list = { 2 } };
    data_create(&ds, 1);
    float x[3 * PIXELS];
    int32_t labels[3];
    data_batch(&ds, RX_TEST, 0, 3, x, labels);
    for (int i = 0; i < 3; i++) check_pixels(x + i * PIXELS, NTRAIN + i, mean, std);
    data_close(&ds);
}

/* Valid and train ids of a fresh instance with SEED. ids: (50000), valid first. */
static void cifar10_split_ids(const char *dir, uint64_t seed, int32_t *ids)
{
    data_set ds;
    cifar10_load(&ds, dir);
    data_create(&ds, seed);
    cifar10_ids(&ds, RX_VALID, ids);
    cifar10_ids(&ds, RX_TRAIN, ids + ds.info.size[RX_VALID]);
    data_close(&ds);
}

static void test_cifar10_split_is_seeded(void **state)
{
    int32_t *a = malloc(NTRAIN * sizeof(int32_t)), *b = malloc(NTRAIN * sizeof(int32_t));
    char *seen = calloc(NTRAIN, 1);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(seen);

    cifar10_split_ids(*state, 7, a);
    /* Valid and train are disjoint and together hold every training image once. */
    for (int i = 0; i < NTRAIN; i++) {
        assert_in_range(a[i], 0, NTRAIN - 1);
        if (seen[a[i]]) fail_msg("image %d is handed out twice", a[i]);
        seen[a[i]] = 1;
    }
    /* Shuffled, not the file order. */
    int in_place = 0;
    for (int i = 0; i < NTRAIN; i++) in_place += a[i] == i;
    assert_true(in_place < 100);

    cifar10_split_ids(*state, 7, b);
    assert_memory_equal(a, b, NTRAIN * sizeof(int32_t));

    /* Another seed, another validation set (not just another order of the same one). */
    cifar10_split_ids(*state, 8, b);
    memset(seen, 0, NTRAIN);
    for (int i = 0; i < 10000; i++) seen[a[i]] = 1;
    int shared = 0;
    for (int i = 0; i < 10000; i++) shared += seen[b[i]];
    assert_in_range(shared, 1000, 3000); /* about 20% overlap by chance */

    free(seen);
    free(b);
    free(a);
}

static int cmp_int32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static void test_cifar10_epochs_reshuffle_train(void **state)
{
    enum { N = 2000, NVALID = 400, NTR = N - NVALID };
    data_set ds, resumed;
    cifar10_load(&ds, *state);
    test_arg(ds.desc, ds.args, "train_limit")->i = N;
    data_create(&ds, 5);
    int32_t e1[NTR], e2[NTR], again[NTR], v1[NVALID], v2[NVALID];

    assert_int_equal(ds.desc->data.begin_epoch(ds.self, &ds.ctx, RX_TRAIN, 1), 0);
    cifar10_ids(&ds, RX_TRAIN, e1);
    assert_int_equal(ds.desc->data.begin_epoch(ds.self, &ds.ctx, RX_TRAIN, 2), 0);
    cifar10_ids(&ds, RX_TRAIN, e2);
    assert_memory_not_equal(e1, e2, sizeof e1);
    assert_int_equal(ds.desc->data.begin_epoch(ds.self, &ds.ctx, RX_TRAIN, 1), 0);
    cifar10_ids(&ds, RX_TRAIN, again);
    assert_memory_equal(e1, again, sizeof e1);

    /* The same images every epoch, only their order changes. */
    qsort(e1, NTR, sizeof *e1, cmp_int32);
    qsort(e2, NTR, sizeof *e2, cmp_int32);
    assert_memory_equal(e1, e2, sizeof e1);

    /* A resumed run (new instance, same seed) starting at epoch 2 gets epoch 2's order. */
    cifar10_load(&resumed, *state);
    test_arg(resumed.desc, resumed.args, "train_limit")->i = N;
    data_create(&resumed, 5);
    assert_int_equal(resumed.desc->data.begin_epoch(resumed.self, &resumed.ctx, RX_TRAIN, 2), 0);
    cifar10_ids(&resumed, RX_TRAIN, again);
    assert_int_equal(ds.desc->data.begin_epoch(ds.self, &ds.ctx, RX_TRAIN, 2), 0);
    cifar10_ids(&ds, RX_TRAIN, e2);
    assert_memory_equal(e2, again, sizeof e2);
    data_close(&resumed);

    /* Validation keeps its order across epochs. */
    cifar10_ids(&ds, RX_VALID, v1);
    assert_int_equal(ds.desc->data.begin_epoch(ds.self, &ds.ctx, RX_VALID, 3), 0);
    cifar10_ids(&ds, RX_VALID, v2);
    assert_memory_equal(v1, v2, sizeof v1);
    data_close(&ds);
}

static void test_cifar10_refuses_bad_batches(void **state)
{
    data_set ds;
    cifar10_load(&ds, *state);
    test_arg(ds.desc, ds.args, "train_limit")->i = 100;
    test_arg(ds.desc, ds.args, "test_limit")->i = 10;
    data_create(&ds, 1);
    float x[4 * PIXELS];
    int32_t labels[4];
    rx_tensor t = { .data = x, .device = RX_CPU, .shape = { .ndim = 4, .d = { 4, 3, 32, 32 } } };
    assert_int_equal(ds.desc->data.batch[RX_CPU](ds.self, &ds.ctx, RX_TEST, 7, 0, &t, labels), -1);
    assert_non_null(strstr(ds.ctx.err, "samples [7, 11) are outside the test split's 10"));
    t.shape.d[2] = 28;
    assert_int_equal(ds.desc->data.batch[RX_CPU](ds.self, &ds.ctx, RX_TEST, 0, 0, &t, labels), -1);
    assert_non_null(strstr(ds.ctx.err, "expected (N, 3, 32, 32)"));
    assert_int_equal(ds.desc->data.begin_epoch(ds.self, &ds.ctx, RX_TRAIN, -1), -1);
    ds.desc->data.destroy(NULL); /* NULL-safe */
    data_close(&ds);
}

static void test_cifar10_refuses_bad_arguments(void **state)
{
    data_set ds;
    cifar10_load(&ds, *state);
    test_arg(ds.desc, ds.args, "valid_fraction")->num = 1;
    data_create_refused(&ds, "valid_fraction must be in [0, 1), got 1");

    test_default_args(ds.desc, ds.args);
    test_arg(ds.desc, ds.args, "path")->s = *state;
    test_arg(ds.desc, ds.args, "mean")->len = 2;
    data_create_refused(&ds, "mean has 2 values, expected 1 or 3");

    test_default_args(ds.desc, ds.args);
    test_arg(ds.desc, ds.args, "path")->s = *state;
    test_arg(ds.desc, ds.args, "std")->list[1] = 0;
    data_create_refused(&ds, "std[1] is 0, expected > 0");

    test_default_args(ds.desc, ds.args);
    test_arg(ds.desc, ds.args, "path")->s = *state;
    test_arg(ds.desc, ds.args, "train_limit")->i = 1;
    test_arg(ds.desc, ds.args, "valid_fraction")->num = 0.6;
    data_create_refused(&ds, "leaves none to train on");
    data_close(&ds);
}

/* A copy of the good folder with one file replaced by WRITE (or missing when WRITE is NULL)
 * must be refused with a message containing WANT. */
static void expect_broken_refused(const char *good, const char *name, void (*write)(const char *dir),
                                  const char *want)
{
    char *dir = make_broken_copy(good, name);
    if (write) write(dir);
    data_set ds;
    cifar10_load(&ds, dir);
    data_create_refused(&ds, want);
    data_close(&ds);
    remove_dataset(dir);
}

static void write_short_batch_3(const char *dir)
{
    write_batch_file(dir, "data_batch_3.bin", 2 * PER_FILE, 5, -1, 0);
    char file[PATH_MAX];
    path_join(file, dir, "data_batch_3.bin");
    assert_int_equal(truncate(file, 15362), 0); /* five records less three bytes */
}

static void write_bad_label_batch_2(const char *dir)
{
    write_batch_file(dir, "data_batch_2.bin", PER_FILE, PER_FILE, 17, 200);
}

static void write_meta_9_names(const char *dir) { write_meta(dir, 9); }

static void write_meta_11_names(const char *dir)
{
    write_text_file(dir, "batches.meta.txt", "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\n");
}

static void test_cifar10_refuses_broken_files(void **state)
{
    expect_broken_refused(*state, "data_batch_3.bin", NULL, "data_batch_3.bin not found in ");
    expect_broken_refused(*state, "data_batch_3.bin", NULL, "(see README: getting CIFAR-10)");
    expect_broken_refused(*state, "batches.meta.txt", NULL, "batches.meta.txt not found in ");
    expect_broken_refused(*state, "data_batch_3.bin", write_short_batch_3,
                          "data_batch_3.bin: 15362 bytes, expected 30730000 (10000 records of 3073 bytes)");
    expect_broken_refused(*state, "data_batch_2.bin", write_bad_label_batch_2,
                          "data_batch_2.bin: record 17 has label 200, expected 0-9");
    expect_broken_refused(*state, "batches.meta.txt", write_meta_9_names,
                          "batches.meta.txt: 9 class names, expected 10");
    expect_broken_refused(*state, "batches.meta.txt", write_meta_11_names,
                          "batches.meta.txt: 11 class names, expected 10");

    /* The missing-file message names the folder it looked in. */
    data_set ds;
    cifar10_load(&ds, "/nonexistent/cifar");
    data_create_refused(&ds, "not found in /nonexistent/cifar (see README");
    data_close(&ds);
}

/* ---- synthetic ---- */

/* All of SPLIT: x (size, sample...), labels (size). */
static float *synthetic_read_split(data_set *ds, rx_split split, int32_t *labels)
{
    int64_t n = ds->info.size[split];
    float *x = malloc((size_t)(n * sample_numel(ds)) * sizeof(float));
    assert_non_null(x);
    data_batch(ds, split, 0, n, x, labels);
    return x;
}

static void test_synthetic_shapes(void **state)
{
    data_set ds;
    data_load(&ds, "synthetic");
    data_create(&ds, 1);
    assert_int_equal(ds.info.sample.ndim, 3);
    assert_int_equal(ds.info.sample.d[0], 3);
    assert_int_equal(ds.info.sample.d[1], 8);
    assert_int_equal(ds.info.sample.d[2], 8);
    assert_int_equal(ds.info.nclasses, 10);
    assert_int_equal(ds.info.size[RX_TRAIN], 2000);
    assert_int_equal(ds.info.size[RX_VALID], 500);
    assert_int_equal(ds.info.size[RX_TEST], 500);
    assert_string_equal(ds.info.class_names[0], "class0");
    assert_string_equal(ds.info.class_names[9], "class9");
    data_close(&ds);

    data_load(&ds, "synthetic");
    test_arg(ds.desc, ds.args, "classes")->i = 4;
    test_arg(ds.desc, ds.args, "channels")->i = 1;
    test_arg(ds.desc, ds.args, "size")->i = 5;
    test_arg(ds.desc, ds.args, "train")->i = 30;
    test_arg(ds.desc, ds.args, "valid")->i = 0;
    test_arg(ds.desc, ds.args, "test")->i = 7;
    data_create(&ds, 1);
    assert_int_equal(ds.info.sample.d[0], 1);
    assert_int_equal(ds.info.sample.d[1], 5);
    assert_int_equal(ds.info.sample.d[2], 5);
    assert_int_equal(ds.info.nclasses, 4);
    assert_int_equal(ds.info.size[RX_TRAIN], 30);
    assert_int_equal(ds.info.size[RX_VALID], 0);
    assert_int_equal(ds.info.size[RX_TEST], 7);
    int32_t labels[7];
    float *x = synthetic_read_split(&ds, RX_TEST, labels);
    for (int i = 0; i < 7; i++) assert_in_range(labels[i], 0, 3);
    free(x);
    data_close(&ds);
}

static void test_synthetic_is_seeded(void **state)
{
    data_set a, b;
    data_load(&a, "synthetic");
    data_load(&b, "synthetic");
    data_create(&a, 11);
    data_create(&b, 11);
    int32_t la[2000], lb[2000];
    for (rx_split split = RX_TRAIN; split < RX_NSPLITS; split++) {
        int64_t n = a.info.size[split];
        float *xa = synthetic_read_split(&a, split, la), *xb = synthetic_read_split(&b, split, lb);
        assert_memory_equal(xa, xb, (size_t)(n * sample_numel(&a)) * sizeof(float));
        assert_memory_equal(la, lb, (size_t)n * sizeof(int32_t));
        free(xa);
        free(xb);
    }
    data_close(&b);

    /* Another seed, other data. */
    data_load(&b, "synthetic");
    data_create(&b, 12);
    float *xa = synthetic_read_split(&a, RX_TEST, la), *xb = synthetic_read_split(&b, RX_TEST, lb);
    assert_memory_not_equal(xa, xb, 500 * sample_numel(&a) * sizeof(float));
    free(xb);
    data_close(&b);

    /* A different number of training samples leaves the test set as it was. */
    data_load(&b, "synthetic");
    test_arg(b.desc, b.args, "train")->i = 100;
    data_create(&b, 11);
    xb = synthetic_read_split(&b, RX_TEST, lb);
    assert_memory_equal(xa, xb, 500 * sample_numel(&a) * sizeof(float));
    free(xb);
    free(xa);
    data_close(&b);
    data_close(&a);
}

static void test_synthetic_classes_balanced(void **state)
{
    data_set ds;
    data_load(&ds, "synthetic");
    data_create(&ds, 2);
    int32_t labels[2000];
    int count[10] = { 0 };
    free(synthetic_read_split(&ds, RX_TRAIN, labels));
    for (int i = 0; i < 2000; i++) {
        assert_in_range(labels[i], 0, 9);
        count[labels[i]]++;
    }
    for (int c = 0; c < 10; c++) assert_in_range(count[c], 140, 260); /* 200 +- 4.5 sd */
    data_close(&ds);
}

static void test_synthetic_epochs_reshuffle_train(void **state)
{
    data_set ds;
    data_load(&ds, "synthetic");
    data_create(&ds, 3);
    int64_t numel = 2000 * sample_numel(&ds);
    int32_t l1[2000], l2[2000], l3[2000];
    assert_int_equal(ds.desc->data.begin_epoch(ds.self, &ds.ctx, RX_TRAIN, 1), 0);
    float *x1 = synthetic_read_split(&ds, RX_TRAIN, l1);
    assert_int_equal(ds.desc->data.begin_epoch(ds.self, &ds.ctx, RX_TRAIN, 2), 0);
    float *x2 = synthetic_read_split(&ds, RX_TRAIN, l2);
    assert_int_equal(ds.desc->data.begin_epoch(ds.self, &ds.ctx, RX_TRAIN, 1), 0);
    float *x3 = synthetic_read_split(&ds, RX_TRAIN, l3);
    assert_memory_not_equal(x1, x2, (size_t)numel * sizeof(float));
    assert_memory_equal(x1, x3, (size_t)numel * sizeof(float));
    assert_memory_equal(l1, l3, sizeof l1);
    /* Same labels, reordered. */
    qsort(l1, 2000, sizeof *l1, cmp_int32);
    qsort(l2, 2000, sizeof *l2, cmp_int32);
    assert_memory_equal(l1, l2, sizeof l1);
    free(x1);
    free(x2);
    free(x3);
    data_close(&ds);
}

/* Learnable: classifying test samples by the nearest class mean of the training samples (a linear
 * classifier) already gets well over 90%. */
static void test_synthetic_is_learnable(void **state)
{
    data_set ds;
    data_load(&ds, "synthetic");
    data_create(&ds, 4);
    int64_t d = sample_numel(&ds);
    int32_t ytr[2000], yte[500];
    float *xtr = synthetic_read_split(&ds, RX_TRAIN, ytr), *xte = synthetic_read_split(&ds, RX_TEST, yte);
    double *mean = calloc((size_t)(10 * d), sizeof(double)); /* (10, d) */
    int count[10] = { 0 };
    assert_non_null(mean);
    for (int i = 0; i < 2000; i++) {
        count[ytr[i]]++;
        for (int64_t k = 0; k < d; k++) mean[ytr[i] * d + k] += xtr[i * d + k];
    }
    for (int c = 0; c < 10; c++)
        for (int64_t k = 0; k < d; k++) mean[c * d + k] /= count[c];
    int correct = 0;
    for (int i = 0; i < 500; i++) {
        int best = 0;
        double best_dist = INFINITY;
        for (int c = 0; c < 10; c++) {
            double dist = 0;
            for (int64_t k = 0; k < d; k++) {
                double diff = xte[i * d + k] - mean[c * d + k];
                dist += diff * diff;
            }
            if (dist < best_dist) {
                best_dist = dist;
                best = c;
            }
        }
        correct += best == yte[i];
    }
    if (correct < 450) fail_msg("nearest class mean: %d of 500 test samples right", correct);
    free(mean);
    free(xtr);
    free(xte);
    data_close(&ds);
}

static void test_synthetic_refuses_bad_arguments(void **state)
{
    data_set ds;
    data_load(&ds, "synthetic");
    test_arg(ds.desc, ds.args, "classes")->i = 1;
    data_create_refused(&ds, "classes must be in [2, 1000], got 1");
    test_default_args(ds.desc, ds.args);
    test_arg(ds.desc, ds.args, "train")->i = 0;
    data_create_refused(&ds, "train must be in [1, ");
    test_default_args(ds.desc, ds.args);
    test_arg(ds.desc, ds.args, "noise")->num = -1;
    data_create_refused(&ds, "noise must be >= 0, got -1");
    data_close(&ds);
}

int main(void)
{
    const struct CMUnitTest cifar10_tests[] = {
        cmocka_unit_test(test_cifar10_sizes_and_names),
        cmocka_unit_test(test_cifar10_limits),
        cmocka_unit_test(test_cifar10_records),
        cmocka_unit_test(test_cifar10_scalar_normalization),
        cmocka_unit_test(test_cifar10_split_is_seeded),
        cmocka_unit_test(test_cifar10_epochs_reshuffle_train),
        cmocka_unit_test(test_cifar10_refuses_bad_batches),
        cmocka_unit_test(test_cifar10_refuses_bad_arguments),
        cmocka_unit_test(test_cifar10_refuses_broken_files),
    };
    const struct CMUnitTest synthetic_tests[] = {
        cmocka_unit_test(test_synthetic_shapes),
        cmocka_unit_test(test_synthetic_is_seeded),
        cmocka_unit_test(test_synthetic_classes_balanced),
        cmocka_unit_test(test_synthetic_epochs_reshuffle_train),
        cmocka_unit_test(test_synthetic_is_learnable),
        cmocka_unit_test(test_synthetic_refuses_bad_arguments),
    };
    int failed = cmocka_run_group_tests_name("cifar10", cifar10_tests, group_setup, group_teardown);
    failed += cmocka_run_group_tests_name("synthetic", synthetic_tests, NULL, NULL);
    return failed != 0;
}
