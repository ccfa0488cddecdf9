/* test_data.c: the data set plugins, cifar10 and synthetic, called the way the host calls them.
 *
 * cifar10 reads files written here in the official binary layout (no network, no real data):
 * six files of 10,000 records whose contents follow from the image number k (0-49999 training,
 * 50000-59999 test), so any sample handed out can be traced back to its record: the first three
 * red bytes spell k, the label and every other byte are simple functions of k. Broken copies of
 * the folder (a file missing, cut short, a bad label, a wrong class list) must be refused with a
 * message that says what is wrong.
 *
 * Augmentation is checked by hand: each training sample of an augmented instance is traced back
 * to its image (through an instance without augmentation and the same seed, whose order is the
 * same), and the crop, mirror and cutout square that made it are recovered by trying every one
 * against a transform written out here; the corners and edges are also spelled out pixel by
 * pixel. The CUDA path is compared with the CPU path batch by batch, bit for bit, when a GPU is
 * usable, and skipped (saying why) otherwise.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"

#include "device.h"
#include "error.h"

#ifdef RX_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

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

static void cifar10_load(data_rig *ds, const char *dir)
{
    data_rig_load(ds, "cifar10");
    test_arg(ds->desc, ds->args, "path")->s = dir;
}

static int64_t sample_numel(const data_rig *ds) { return rx_numel(ds->info.sample); }

/* The (n, sample...) tensor of a batch at x, on the CPU. */
static rx_tensor batch_tensor(const data_rig *ds, float *x, int64_t n)
{
    rx_tensor t = { .data = x, .device = RX_CPU, .shape = { .ndim = 4, .d = { n } } };
    for (int i = 0; i < 3; i++) t.shape.d[i + 1] = ds->info.sample.d[i];
    return t;
}

/* View VIEW of samples [first, first + n) of SPLIT into x (n, sample...) and labels (n). */
static void data_batch_view(data_rig *ds, rx_split split, int64_t first, int64_t n, int view, float *x,
                            int32_t *labels)
{
    rx_tensor t = batch_tensor(ds, x, n);
    if (ds->desc->data.batch[RX_CPU](ds->self, &ds->ctx, split, first, view, &t, labels) != 0)
        fail_msg("batch failed: %s", ds->ctx.err);
}

/* Samples [first, first + n) of SPLIT into x (n, sample...) and labels (n). */
static void data_batch(data_rig *ds, rx_split split, int64_t first, int64_t n, float *x, int32_t *labels)
{
    data_batch_view(ds, split, first, n, 0, x, labels);
}

/* ---- cifar10 ---- */

/* The byte a normalized value came from. */
static int byte_from(float x, double mean, double std) { return (int)lround((x * std + mean) * 255.0); }

/* The image number behind each sample of SPLIT, in the epoch's order, read back from its pixels;
 * checks every label on the way. ids: (size[split]). */
static void cifar10_ids(data_rig *ds, rx_split split, int32_t *ids)
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
    data_rig ds;
    cifar10_load(&ds, *state);
    data_rig_create(&ds, 1);
    assert_int_equal(ds.info.size[RX_TRAIN], 40000);
    assert_int_equal(ds.info.size[RX_VALID], 10000);
    assert_int_equal(ds.info.size[RX_TEST], 10000);
    assert_int_equal(ds.info.sample.ndim, 3);
    assert_int_equal(ds.info.sample.d[0], 3);
    assert_int_equal(ds.info.sample.d[1], 32);
    assert_int_equal(ds.info.sample.d[2], 32);
    assert_int_equal(ds.info.nclasses, 10);
    for (int c = 0; c < 10; c++) assert_string_equal(ds.info.class_names[c], class_names[c]);
    data_rig_close(&ds);
}

static void test_cifar10_limits(void **state)
{
    data_rig ds;
    cifar10_load(&ds, *state);
    test_arg(ds.desc, ds.args, "train_limit")->i = 12345; /* reaches into data_batch_2.bin */
    test_arg(ds.desc, ds.args, "test_limit")->i = 300;
    data_rig_create(&ds, 1);
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
    data_rig_close(&ds);

    /* No validation split, and limits beyond the files mean everything. */
    cifar10_load(&ds, *state);
    test_arg(ds.desc, ds.args, "valid_fraction")->num = 0;
    test_arg(ds.desc, ds.args, "train_limit")->i = 1000;
    test_arg(ds.desc, ds.args, "test_limit")->i = 99999;
    data_rig_create(&ds, 1);
    assert_int_equal(ds.info.size[RX_TRAIN], 1000);
    assert_int_equal(ds.info.size[RX_VALID], 0);
    assert_int_equal(ds.info.size[RX_TEST], NTEST);
    data_rig_close(&ds);
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
    data_rig ds;
    cifar10_load(&ds, *state);
    rx_value *m = test_arg(ds.desc, ds.args, "mean"), *s = test_arg(ds.desc, ds.args, "std");
    for (int c = 0; c < 3; c++) {
        m->list[c] = mean[c];
        s->list[c] = std[c];
    }
    data_rig_create(&ds, 3);
    /* What export and predict read: the configured values, as the batches below carry them. */
    assert_int_equal(ds.info.norm_channels, 3);
    for (int c = 0; c < 3; c++) {
        assert_true(ds.info.mean[c] == mean[c]);
        assert_true(ds.info.std[c] == std[c]);
    }

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
    data_rig_close(&ds);
}

/* One mean and std for all channels, written as single numbers. */
static void test_cifar10_scalar_normalization(void **state)
{
    const double mean[3] = { 0.25, 0.25, 0.25 }, std[3] = { 2, 2, 2 };
    data_rig ds;
    cifar10_load(&ds, *state);
    test_arg(ds.desc, ds.args, "train_limit")->i = 10;
    test_arg(ds.desc, ds.args, "test_limit")->i = 3;
    *test_arg(ds.desc, ds.args, "mean") = (rx_value){ .len = 1, .list = { 0.25 } };
    *test_arg(ds.desc, ds.args, "std") = (rx_value){ .len = 1, .list = { 2 } };
    data_rig_create(&ds, 1);
    /* Reported per channel, the one value repeated. */
    assert_int_equal(ds.info.norm_channels, 3);
    for (int c = 0; c < 3; c++) {
        assert_true(ds.info.mean[c] == mean[c]);
        assert_true(ds.info.std[c] == std[c]);
    }
    float x[3 * PIXELS];
    int32_t labels[3];
    data_batch(&ds, RX_TEST, 0, 3, x, labels);
    for (int i = 0; i < 3; i++) check_pixels(x + i * PIXELS, NTRAIN + i, mean, std);
    data_rig_close(&ds);
}

/* Valid and train ids of a fresh instance with SEED. ids: (50000), valid first. */
static void cifar10_split_ids(const char *dir, uint64_t seed, int32_t *ids)
{
    data_rig ds;
    cifar10_load(&ds, dir);
    data_rig_create(&ds, seed);
    cifar10_ids(&ds, RX_VALID, ids);
    cifar10_ids(&ds, RX_TRAIN, ids + ds.info.size[RX_VALID]);
    data_rig_close(&ds);
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
    data_rig ds, resumed;
    cifar10_load(&ds, *state);
    test_arg(ds.desc, ds.args, "train_limit")->i = N;
    data_rig_create(&ds, 5);
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
    data_rig_create(&resumed, 5);
    assert_int_equal(resumed.desc->data.begin_epoch(resumed.self, &resumed.ctx, RX_TRAIN, 2), 0);
    cifar10_ids(&resumed, RX_TRAIN, again);
    assert_int_equal(ds.desc->data.begin_epoch(ds.self, &ds.ctx, RX_TRAIN, 2), 0);
    cifar10_ids(&ds, RX_TRAIN, e2);
    assert_memory_equal(e2, again, sizeof e2);
    data_rig_close(&resumed);

    /* Validation keeps its order across epochs. */
    cifar10_ids(&ds, RX_VALID, v1);
    assert_int_equal(ds.desc->data.begin_epoch(ds.self, &ds.ctx, RX_VALID, 3), 0);
    cifar10_ids(&ds, RX_VALID, v2);
    assert_memory_equal(v1, v2, sizeof v1);
    data_rig_close(&ds);
}

static void test_cifar10_refuses_bad_batches(void **state)
{
    data_rig ds;
    cifar10_load(&ds, *state);
    test_arg(ds.desc, ds.args, "train_limit")->i = 100;
    test_arg(ds.desc, ds.args, "test_limit")->i = 10;
    data_rig_create(&ds, 1);
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
    data_rig_close(&ds);
}

static void test_cifar10_refuses_bad_arguments(void **state)
{
    data_rig ds;
    cifar10_load(&ds, *state);
    test_arg(ds.desc, ds.args, "valid_fraction")->num = 1;
    data_rig_refused(&ds, "valid_fraction must be in [0, 1), got 1");

    test_default_args(ds.desc, ds.args);
    test_arg(ds.desc, ds.args, "path")->s = *state;
    test_arg(ds.desc, ds.args, "mean")->len = 2;
    data_rig_refused(&ds, "mean has 2 values, expected 1 or 3");

    test_default_args(ds.desc, ds.args);
    test_arg(ds.desc, ds.args, "path")->s = *state;
    test_arg(ds.desc, ds.args, "std")->list[1] = 0;
    data_rig_refused(&ds, "std[1] is 0, expected > 0");

    test_default_args(ds.desc, ds.args);
    test_arg(ds.desc, ds.args, "path")->s = *state;
    test_arg(ds.desc, ds.args, "train_limit")->i = 1;
    test_arg(ds.desc, ds.args, "valid_fraction")->num = 0.6;
    data_rig_refused(&ds, "leaves none to train on");
    data_rig_close(&ds);
}

/* A copy of the good folder with one file replaced by WRITE (or missing when WRITE is NULL)
 * must be refused with a message containing WANT. */
static void expect_broken_refused(const char *good, const char *name, void (*write)(const char *dir),
                                  const char *want)
{
    char *dir = make_broken_copy(good, name);
    if (write) write(dir);
    data_rig ds;
    cifar10_load(&ds, dir);
    data_rig_refused(&ds, want);
    data_rig_close(&ds);
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
    data_rig ds;
    cifar10_load(&ds, "/nonexistent/cifar");
    data_rig_refused(&ds, "not found in /nonexistent/cifar (see README");
    data_rig_close(&ds);
}

/* Files that are not regular files: a FIFO would block a plain open for ever, a device be read
 * as data. Each is refused at once, the kind of file named. */
static void put_fifo(const char *dir, const char *name)
{
    char file[PATH_MAX];
    path_join(file, dir, name);
    if (mkfifo(file, 0644) != 0) fail_msg("cannot make the FIFO %s: %s", file, strerror(errno));
}

static void fifo_batch_1(const char *dir) { put_fifo(dir, "data_batch_1.bin"); }
static void fifo_meta(const char *dir) { put_fifo(dir, "batches.meta.txt"); }

static void device_test_batch(const char *dir)
{
    char file[PATH_MAX];
    path_join(file, dir, "test_batch.bin");
    if (symlink("/dev/zero", file) != 0) fail_msg("cannot link %s: %s", file, strerror(errno));
}

static void test_cifar10_refuses_files_that_are_not_files(void **state)
{
    alarm(20); /* a blocking open would hang the suite: end it instead */
    double start = seconds_now();
    expect_broken_refused(*state, "data_batch_1.bin", fifo_batch_1, "data_batch_1.bin: is a FIFO, expected a regular file");
    expect_broken_refused(*state, "batches.meta.txt", fifo_meta, "batches.meta.txt: is a FIFO, expected a regular file");
    double fifos = seconds_now() - start;
    /* A bound that tells a refusal from a blocked open (which alarm ends), not a speed. */
    if (fifos > 5.0) fail_msg("two FIFOs took %.2f s to refuse", fifos);
    /* A link to a device (links to regular files are followed, as make_broken_copy's are). */
    expect_broken_refused(*state, "test_batch.bin", device_test_batch,
                          "test_batch.bin: is a character device, expected a regular file");
    alarm(0);
}

/* ---- cifar10: augmentation and test-time views, checked by hand ---- */

#define AUG_N     2000 /* train_limit of these tests: 1600 training and 400 validation samples */
#define AUG_TRAIN 1600
#define AUG_VALID 400
#define AUG_TEST  100  /* test_limit */

/* The augmentation params of an instance; 0 and NULL keep the defaults. */
typedef struct augment_args {
    int crop_padding;
    const char *padding_mode, *flip;
    int cutout;
    const char *tta;
} augment_args;

static void cifar10_load_augmented(data_rig *ds, const char *dir, augment_args a)
{
    cifar10_load(ds, dir);
    test_arg(ds->desc, ds->args, "train_limit")->i = AUG_N;
    test_arg(ds->desc, ds->args, "test_limit")->i = AUG_TEST;
    test_arg(ds->desc, ds->args, "crop_padding")->i = a.crop_padding;
    test_arg(ds->desc, ds->args, "cutout")->i = a.cutout;
    if (a.padding_mode) test_arg(ds->desc, ds->args, "padding_mode")->s = a.padding_mode;
    if (a.flip) test_arg(ds->desc, ds->args, "flip")->s = a.flip;
    if (a.tta) test_arg(ds->desc, ds->args, "tta")->s = a.tta;
}

/* View VIEW of all of SPLIT, drawn in batches of BATCH: x (size, 3, 32, 32), freed by the caller,
 * and labels (size). */
static float *read_all(data_rig *ds, rx_split split, int64_t batch, int view, int32_t *labels)
{
    int64_t size = ds->info.size[split];
    float *x = malloc((size_t)(size > 0 ? size : 1) * PIXELS * sizeof(float));
    assert_non_null(x);
    for (int64_t first = 0; first < size; first += batch) {
        int64_t n = size - first < batch ? size - first : batch;
        data_batch_view(ds, split, first, n, view, x + first * PIXELS, labels + first);
    }
    return x;
}

/* The image behind each sample of SPLIT (in EPOCH, for train) with SEED, read from the pixels of
 * an instance without augmentation: the orders depend on (seed, epoch) alone. ids: (size). */
static void plain_ids(const char *dir, uint64_t seed, rx_split split, int64_t epoch, int32_t *ids)
{
    data_rig plain;
    cifar10_load_augmented(&plain, dir, (augment_args){ 0 });
    data_rig_create(&plain, seed);
    assert_int_equal(plain.desc->data.begin_epoch(plain.self, &plain.ctx, split, epoch), 0);
    cifar10_ids(&plain, split, ids);
    data_rig_close(&plain);
}

/* Epoch EPOCH of the training split of ds (created with SEED): x (AUG_TRAIN, 3, 32, 32), freed by
 * the caller, and the image behind each sample in ids (AUG_TRAIN); checks every label. */
static float *augmented_epoch(data_rig *ds, const char *dir, uint64_t seed, int64_t epoch, int32_t *ids)
{
    int32_t labels[AUG_TRAIN];
    plain_ids(dir, seed, RX_TRAIN, epoch, ids);
    assert_int_equal(ds->desc->data.begin_epoch(ds->self, &ds->ctx, RX_TRAIN, epoch), 0);
    float *x = read_all(ds, RX_TRAIN, 128, 0, labels);
    for (int i = 0; i < AUG_TRAIN; i++) assert_int_equal(labels[i], label_of(ids[i]));
    return x;
}

/* The normalized value of byte v with the default mean and std (0.5 each), as the plugin has it. */
static float normalized(int v) { return ((float)v / 255.0f - 0.5f) / 0.5f; }

/* Image k's normalized pixel (c, y, x), and a sample's. */
static float source_at(int64_t k, int c, int y, int x) { return normalized(pixel_of(k, c * 1024 + y * 32 + x)); }
static float sample_at(const float *img, int c, int y, int x) { return img[c * 1024 + y * 32 + x]; }

/* PyTorch's 'reflect' padding of a row or column index: mirrored about the edge pixel, which is
 * not repeated (-1 -> 1, -4 -> 4, 32 -> 30, 35 -> 27). */
static int reflect_index(int i) { return i < 0 ? -i : i > 31 ? 62 - i : i; }

/* A sample made from an image by hand: the 32x32 crop at (dy + pad, dx + pad) of the image padded
 * by pad (so (0, 0) is the image itself and (-1, -1) moves it one pixel down and right), then
 * mirrored when flip. Padding reflects, or is black (byte 0) when zeros. */
typedef struct transform {
    int dy, dx;
    bool flip, zeros;
} transform;

static float expect_pixel(int64_t k, transform t, int c, int y, int x)
{
    int sy = y + t.dy, sx = (t.flip ? 31 - x : x) + t.dx;
    if (t.zeros && (sy < 0 || sy > 31 || sx < 0 || sx > 31)) return normalized(0);
    return source_at(k, c, reflect_index(sy), reflect_index(sx));
}

/* Whether img (3, 32, 32) is image k under t, everywhere but where mask (32 x 32, or NULL) is set. */
static bool is_transform(const float *img, int64_t k, transform t, const bool *mask)
{
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < 32; y++)
            for (int x = 0; x < 32; x++)
                if (!(mask && mask[y * 32 + x]) && sample_at(img, c, y, x) != expect_pixel(k, t, c, y, x)) return false;
    return true;
}

static void expect_transform(const float *img, int64_t k, transform t, const char *what)
{
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < 32; y++)
            for (int x = 0; x < 32; x++)
                if (sample_at(img, c, y, x) != expect_pixel(k, t, c, y, x))
                    fail_msg("%s, image %lld, pixel (%d, %d, %d): got %.8g, want %.8g", what, (long long)k, c, y, x,
                             sample_at(img, c, y, x), expect_pixel(k, t, c, y, x));
}

/* The one crop (dy, dx in [-pad, pad]) and mirror (tried when flips) that turns image k into img
 * outside mask; fails unless exactly one does. */
static transform find_transform(const float *img, int64_t k, int pad, bool flips, bool zeros, const bool *mask)
{
    transform found = { 0 };
    int matches = 0;
    for (int f = 0; f <= (int)flips; f++)
        for (int dy = -pad; dy <= pad; dy++)
            for (int dx = -pad; dx <= pad; dx++) {
                transform t = { .dy = dy, .dx = dx, .flip = f, .zeros = zeros };
                if (is_transform(img, k, t, mask)) {
                    found = t;
                    matches++;
                }
            }
    if (matches != 1) fail_msg("image %lld: %d crops and mirrors give the sample, expected exactly 1", (long long)k, matches);
    return found;
}

/* The cutout square of img: the pixels that are 0 in all three channels (with mean 0.5 no byte
 * normalizes to exactly 0). They must form one filled rectangle, rows [box[0], box[1]) and columns
 * [box[2], box[3]); mask (32 x 32) marks them. false when there are none. */
static bool find_cutout(const float *img, bool *mask, int box[4])
{
    int y0 = 32, y1 = 0, x0 = 32, x1 = 0, count = 0;
    for (int y = 0; y < 32; y++)
        for (int x = 0; x < 32; x++) {
            int zeros = 0;
            for (int c = 0; c < 3; c++) zeros += sample_at(img, c, y, x) == 0.0f;
            if (zeros != 0 && zeros != 3) fail_msg("pixel (%d, %d) is 0 in %d channels of 3", y, x, zeros);
            mask[y * 32 + x] = zeros == 3;
            if (zeros != 3) continue;
            count++;
            y0 = y < y0 ? y : y0;
            y1 = y + 1 > y1 ? y + 1 : y1;
            x0 = x < x0 ? x : x0;
            x1 = x + 1 > x1 ? x + 1 : x1;
        }
    if (count == 0) return false;
    if (count != (y1 - y0) * (x1 - x0))
        fail_msg("the zeros span rows [%d, %d) and columns [%d, %d) but are only %d pixels", y0, y1, x0, x1, count);
    box[0] = y0, box[1] = y1, box[2] = x0, box[3] = x1;
    return true;
}

/* A side of a cutout square of SIZE centred anywhere in the image: SIZE, or less where the border
 * clips it: centre 0 keeps size - size / 2 rows, centre 31 keeps 1 + size / 2. Returns whether it
 * was clipped. */
static bool check_cutout_side(int from, int to, int size)
{
    int side = to - from, least = size - size / 2 < 1 + size / 2 ? size - size / 2 : 1 + size / 2;
    if (side == size) return false;
    if (side < least || side > size || (from != 0 && to != 32))
        fail_msg("cutout %d: a side [%d, %d) that no centre gives", size, from, to);
    return true;
}

static void check_crops(const char *dir, int pad, const char *mode)
{
    enum { MAXPAD = 4 };
    bool zeros = strcmp(mode, "zeros") == 0, top_left = false, bottom_right = false;
    assert_true(pad <= MAXPAD);
    data_rig ds;
    cifar10_load_augmented(&ds, dir, (augment_args){ .crop_padding = pad, .padding_mode = mode });
    data_rig_create(&ds, 21);
    int32_t ids[AUG_TRAIN];
    float *x = augmented_epoch(&ds, dir, 21, 1, ids);
    int seen[2 * MAXPAD + 1][2 * MAXPAD + 1] = { { 0 } };
    float black = normalized(0);
    assert_true(black == -1.0f);
    for (int i = 0; i < AUG_TRAIN; i++) {
        const float *img = x + i * PIXELS;
        int64_t k = ids[i];
        transform t = find_transform(img, k, pad, false, zeros, NULL);
        seen[t.dy + pad][t.dx + pad]++;
        /* The corners, spelled out: the crop at (0, 0) of the padded image, then at (2 pad, 2 pad). */
        for (int c = 0; c < 3 && t.dy == -pad && t.dx == -pad; c++) {
            top_left = true;
            assert_true(sample_at(img, c, pad, pad) == source_at(k, c, 0, 0));
            if (zeros) {
                assert_true(sample_at(img, c, 0, 0) == black);
                assert_true(sample_at(img, c, pad - 1, 31) == black);
                assert_true(sample_at(img, c, pad, pad - 1) == black);
            } else {
                assert_true(sample_at(img, c, 0, 0) == source_at(k, c, pad, pad));
                assert_true(sample_at(img, c, 0, pad) == source_at(k, c, pad, 0));
                assert_true(sample_at(img, c, 0, pad - 1) == source_at(k, c, pad, 1)); /* the edge is not repeated */
                assert_true(sample_at(img, c, pad - 1, pad) == source_at(k, c, 1, 0));
            }
        }
        for (int c = 0; c < 3 && t.dy == pad && t.dx == pad; c++) {
            bottom_right = true;
            assert_true(sample_at(img, c, 31 - pad, 31 - pad) == source_at(k, c, 31, 31));
            if (zeros) {
                assert_true(sample_at(img, c, 31, 31) == black);
                assert_true(sample_at(img, c, 31 - pad + 1, 0) == black);
            } else {
                assert_true(sample_at(img, c, 31, 31) == source_at(k, c, 31 - pad, 31 - pad));
                assert_true(sample_at(img, c, 31 - pad + 1, 31 - pad + 1) == source_at(k, c, 30, 30));
            }
        }
    }
    /* Every offset in [0, 2 pad] of the padded image, about equally often. */
    int expected = AUG_TRAIN / ((2 * pad + 1) * (2 * pad + 1));
    for (int dy = 0; dy <= 2 * pad; dy++)
        for (int dx = 0; dx <= 2 * pad; dx++)
            if (seen[dy][dx] < expected / 4 || seen[dy][dx] > expected * 3)
                fail_msg("crop_padding %d: the crop at (%d, %d) came %d times, expected about %d", pad, dy, dx,
                         seen[dy][dx], expected);
    assert_true(top_left && bottom_right);
    free(x);
    data_rig_close(&ds);
}

static void test_cifar10_crop_reflect(void **state) { check_crops(*state, 4, "reflect"); }
static void test_cifar10_crop_zeros(void **state) { check_crops(*state, 3, "zeros"); }

static void test_cifar10_flip_random(void **state)
{
    data_rig ds;
    cifar10_load_augmented(&ds, *state, (augment_args){ .flip = "random" });
    data_rig_create(&ds, 22);
    int32_t ids[AUG_TRAIN];
    float *x = augmented_epoch(&ds, *state, 22, 1, ids);
    int mirrored = 0;
    for (int i = 0; i < AUG_TRAIN; i++) {
        const float *img = x + i * PIXELS;
        transform t = find_transform(img, ids[i], 0, true, false, NULL);
        mirrored += t.flip;
        for (int c = 0; c < 3 && t.flip; c++) {
            assert_true(sample_at(img, c, 5, 0) == source_at(ids[i], c, 5, 31));
            assert_true(sample_at(img, c, 5, 31) == source_at(ids[i], c, 5, 0));
        }
    }
    assert_in_range(mirrored, 700, 900); /* 800 +- 5 sd */
    free(x);
    data_rig_close(&ds);
}

/* airbench's alternating flip: each image mirrored in every other epoch, half of them in the odd
 * epochs and the other half in the even ones. */
static void test_cifar10_flip_alternate(void **state)
{
    data_rig ds;
    cifar10_load_augmented(&ds, *state, (augment_args){ .flip = "alternate" });
    data_rig_create(&ds, 23);
    static int8_t flipped[3][AUG_N]; /* by epoch 1-3 and image; -1: not in the training split */
    memset(flipped, -1, sizeof flipped);
    int32_t ids[AUG_TRAIN];
    for (int e = 1; e <= 3; e++) {
        float *x = augmented_epoch(&ds, *state, 23, e, ids);
        for (int i = 0; i < AUG_TRAIN; i++)
            flipped[e - 1][ids[i]] = (int8_t)find_transform(x + i * PIXELS, ids[i], 0, true, false, NULL).flip;
        free(x);
    }
    int odd = 0;
    for (int k = 0; k < AUG_N; k++) {
        if (flipped[0][k] < 0) continue;
        if (flipped[0][k] == flipped[1][k]) fail_msg("image %d is %s in epochs 1 and 2", k, flipped[0][k] ? "mirrored" : "as is");
        if (flipped[0][k] != flipped[2][k]) fail_msg("image %d differs between epochs 1 and 3", k);
        odd += flipped[0][k];
    }
    assert_in_range(odd, 700, 900);
    data_rig_close(&ds);
}

static void check_cutout(const char *dir, int size)
{
    data_rig ds;
    cifar10_load_augmented(&ds, dir, (augment_args){ .cutout = size });
    data_rig_create(&ds, 24);
    int32_t ids[AUG_TRAIN];
    float *x = augmented_epoch(&ds, dir, 24, 1, ids);
    int whole = 0, clipped = 0;
    bool rows[32] = { false };
    for (int i = 0; i < AUG_TRAIN; i++) {
        const float *img = x + i * PIXELS;
        bool mask[1024];
        int box[4];
        if (!find_cutout(img, mask, box)) fail_msg("cutout %d: sample %d has no square", size, i);
        bool cut_rows = check_cutout_side(box[0], box[1], size), cut_cols = check_cutout_side(box[2], box[3], size);
        bool cut = cut_rows || cut_cols;
        clipped += cut;
        whole += !cut;
        for (int y = box[0]; y < box[1]; y++) rows[y] = true;
        if (!is_transform(img, ids[i], (transform){ 0 }, mask))
            fail_msg("cutout %d: sample %d differs from image %d outside the square", size, i, ids[i]);
    }
    /* Centres anywhere in the image: about 40% of the squares are clipped for 8, and every row is hit. */
    assert_true(whole > AUG_TRAIN / 4 && clipped > AUG_TRAIN / 8);
    for (int y = 0; y < 32; y++) assert_true(rows[y]);
    free(x);
    data_rig_close(&ds);
}

static void test_cifar10_cutout(void **state)
{
    check_cutout(*state, 8);
    check_cutout(*state, 5);
}

/* Everything at once: the crop and mirror found outside the cutout square. */
static void test_cifar10_augment_combined(void **state)
{
    data_rig ds;
    cifar10_load_augmented(&ds, *state, (augment_args){ .crop_padding = 2, .flip = "random", .cutout = 8 });
    data_rig_create(&ds, 25);
    int32_t ids[AUG_TRAIN];
    float *x = augmented_epoch(&ds, *state, 25, 3, ids);
    int mirrored = 0, shifted = 0;
    for (int i = 0; i < AUG_TRAIN; i++) {
        bool mask[1024];
        int box[4];
        if (!find_cutout(x + i * PIXELS, mask, box)) fail_msg("sample %d has no cutout square", i);
        check_cutout_side(box[0], box[1], 8);
        check_cutout_side(box[2], box[3], 8);
        transform t = find_transform(x + i * PIXELS, ids[i], 2, true, false, mask);
        mirrored += t.flip;
        shifted += t.dy != 0 || t.dx != 0;
    }
    assert_in_range(mirrored, 700, 900);
    assert_in_range(shifted, 1400, 1600); /* 24 of 25 crops */
    free(x);
    data_rig_close(&ds);
}

/* The same samples whatever the batch size, the order of the calls, the threads or the instance. */
static void test_cifar10_augment_is_deterministic(void **state)
{
    const augment_args configs[] = {
        { .crop_padding = 4, .flip = "random", .cutout = 8 },
        { .crop_padding = 3, .padding_mode = "zeros", .flip = "alternate", .cutout = 5 },
    };
    for (size_t c = 0; c < sizeof configs / sizeof configs[0]; c++) {
        data_rig a, b;
        int32_t la[AUG_TRAIN], lb[AUG_TRAIN], one_label;
        cifar10_load_augmented(&a, *state, configs[c]);
        data_rig_create(&a, 26);
        assert_int_equal(a.desc->data.begin_epoch(a.self, &a.ctx, RX_TRAIN, 2), 0);
        float *xa = read_all(&a, RX_TRAIN, 500, 0, la);

        /* A resumed run: a new instance, another epoch first, then batches of 7 from the end. */
        cifar10_load_augmented(&b, *state, configs[c]);
        b.ctx.threads = 3;
        data_rig_create(&b, 26);
        assert_int_equal(b.desc->data.begin_epoch(b.self, &b.ctx, RX_TRAIN, 5), 0);
        assert_int_equal(b.desc->data.begin_epoch(b.self, &b.ctx, RX_TRAIN, 2), 0);
        float *xb = malloc(AUG_TRAIN * PIXELS * sizeof(float));
        assert_non_null(xb);
        for (int64_t first = (AUG_TRAIN - 1) / 7 * 7; first >= 0; first -= 7) {
            int64_t n = AUG_TRAIN - first < 7 ? AUG_TRAIN - first : 7;
            data_batch_view(&b, RX_TRAIN, first, n, 0, xb + first * PIXELS, lb + first);
        }
        assert_memory_equal(xa, xb, AUG_TRAIN * PIXELS * sizeof(float));
        assert_memory_equal(la, lb, sizeof la);

        /* Single samples, out of order, after the validation split was drawn. */
        free(read_all(&a, RX_VALID, 64, 0, lb));
        const int64_t picks[] = { 1599, 0, 777, 778 };
        for (int i = 0; i < 4; i++) {
            data_batch_view(&a, RX_TRAIN, picks[i], 1, 0, xb, &one_label);
            assert_memory_equal(xb, xa + picks[i] * PIXELS, PIXELS * sizeof(float));
            assert_int_equal(one_label, la[picks[i]]);
        }
        free(xa);
        free(xb);
        data_rig_close(&a);
        data_rig_close(&b);
    }
}

/* Another epoch, or another seed, augments the same image otherwise. */
static void test_cifar10_augment_differs(void **state)
{
    const augment_args all = { .crop_padding = 4, .flip = "random", .cutout = 8 };
    data_rig ds, other;
    cifar10_load_augmented(&ds, *state, all);
    data_rig_create(&ds, 27);
    static int32_t ids1[AUG_TRAIN], ids2[AUG_TRAIN], where[AUG_N];
    float *x1 = augmented_epoch(&ds, *state, 27, 1, ids1), *x2 = augmented_epoch(&ds, *state, 27, 2, ids2);
    for (int i = 0; i < AUG_TRAIN; i++) where[ids2[i]] = i;
    int same = 0;
    for (int i = 0; i < AUG_TRAIN; i++)
        same += memcmp(x1 + i * PIXELS, x2 + where[ids1[i]] * PIXELS, PIXELS * sizeof(float)) == 0;
    if (same > 2) fail_msg("%d of %d images are augmented the same in epochs 1 and 2", same, AUG_TRAIN);

    /* Seed 28 splits otherwise: compare the images both train on. */
    cifar10_load_augmented(&other, *state, all);
    data_rig_create(&other, 28);
    static int32_t ids3[AUG_TRAIN];
    float *x3 = augmented_epoch(&other, *state, 28, 1, ids3);
    for (int i = 0; i < AUG_N; i++) where[i] = -1;
    for (int i = 0; i < AUG_TRAIN; i++) where[ids3[i]] = i;
    int both = 0;
    same = 0;
    for (int i = 0; i < AUG_TRAIN; i++) {
        if (where[ids1[i]] < 0) continue;
        both++;
        same += memcmp(x1 + i * PIXELS, x3 + where[ids1[i]] * PIXELS, PIXELS * sizeof(float)) == 0;
    }
    assert_true(both > 1000);
    if (same > 2) fail_msg("%d of %d images are augmented the same with seeds 27 and 28", same, both);
    free(x1);
    free(x2);
    free(x3);
    data_rig_close(&other);
    data_rig_close(&ds);
}

/* Validation and test are never augmented: view 0 is the image, whatever the params. */
static void test_cifar10_augment_train_only(void **state)
{
    data_rig plain, aug;
    cifar10_load_augmented(&plain, *state, (augment_args){ 0 });
    cifar10_load_augmented(&aug, *state, (augment_args){ .crop_padding = 4, .padding_mode = "zeros", .flip = "random",
                                                         .cutout = 8, .tta = "flip_shift" });
    data_rig_create(&plain, 30);
    data_rig_create(&aug, 30);
    for (rx_split split = RX_VALID; split <= RX_TEST; split++) {
        int32_t lp[AUG_VALID], la[AUG_VALID];
        assert_int_equal(aug.desc->data.begin_epoch(aug.self, &aug.ctx, RX_TRAIN, 3), 0);
        float *xp = read_all(&plain, split, 100, 0, lp), *xa = read_all(&aug, split, 37, 0, la);
        size_t n = (size_t)plain.info.size[split];
        assert_memory_equal(xp, xa, n * PIXELS * sizeof(float));
        assert_memory_equal(lp, la, n * sizeof(int32_t));
        free(xp);
        free(xa);
    }
    data_rig_close(&aug);
    data_rig_close(&plain);
}

/* tta = "flip_shift", view by view, on the test split (the file's order) and the validation split. */
static void check_tta_views(const char *dir, const char *mode)
{
    bool zeros = strcmp(mode, "zeros") == 0;
    const transform views[6] = {
        { 0, 0, false, zeros },  { 0, 0, true, zeros },  { -1, -1, false, zeros },
        { 1, 1, false, zeros },  { -1, -1, true, zeros }, { 1, 1, true, zeros },
    };
    data_rig ds;
    cifar10_load_augmented(&ds, dir, (augment_args){ .crop_padding = 4, .flip = "random", .cutout = 8,
                                                     .padding_mode = mode, .tta = "flip_shift" });
    data_rig_create(&ds, 29);
    assert_int_equal(ds.info.views, 6);
    static int32_t valid_ids[AUG_VALID];
    plain_ids(dir, 29, RX_VALID, 0, valid_ids);
    float black = normalized(0);
    for (int v = 0; v < 6; v++) {
        int32_t labels[AUG_VALID];
        char what[64];
        snprintf(what, sizeof what, "tta flip_shift (%s), view %d", mode, v);
        float *x = read_all(&ds, RX_TEST, 33, v, labels);
        for (int i = 0; i < AUG_TEST; i++) {
            expect_transform(x + i * PIXELS, NTRAIN + i, views[v], what);
            assert_int_equal(labels[i], label_of(NTRAIN + i));
        }
        /* Spelled out on the first test image. */
        const float *img = x;
        int64_t k = NTRAIN;
        for (int c = 0; c < 3; c++) switch (v) {
        case 0: assert_true(sample_at(img, c, 3, 4) == source_at(k, c, 3, 4)); break;
        case 1: assert_true(sample_at(img, c, 3, 0) == source_at(k, c, 3, 31)); break;
        case 2: /* moved down and right: row and column 0 come from the padding */
            assert_true(sample_at(img, c, 1, 1) == source_at(k, c, 0, 0));
            assert_true(sample_at(img, c, 31, 31) == source_at(k, c, 30, 30));
            assert_true(sample_at(img, c, 0, 0) == (zeros ? black : source_at(k, c, 1, 1)));
            break;
        case 3: /* moved up and left: row and column 31 come from the padding */
            assert_true(sample_at(img, c, 0, 0) == source_at(k, c, 1, 1));
            assert_true(sample_at(img, c, 30, 30) == source_at(k, c, 31, 31));
            assert_true(sample_at(img, c, 31, 31) == (zeros ? black : source_at(k, c, 30, 30)));
            break;
        case 4: /* view 2 mirrored */
            assert_true(sample_at(img, c, 1, 30) == source_at(k, c, 0, 0));
            assert_true(sample_at(img, c, 0, 31) == (zeros ? black : source_at(k, c, 1, 1)));
            break;
        case 5: /* view 3 mirrored */
            assert_true(sample_at(img, c, 0, 31) == source_at(k, c, 1, 1));
            assert_true(sample_at(img, c, 30, 1) == source_at(k, c, 31, 31));
            break;
        }
        free(x);
        x = read_all(&ds, RX_VALID, 128, v, labels);
        for (int i = 0; i < AUG_VALID; i++) expect_transform(x + i * PIXELS, valid_ids[i], views[v], what);
        free(x);
    }
    data_rig_close(&ds);
}

static void test_cifar10_tta_views(void **state)
{
    check_tta_views(*state, "reflect");
    check_tta_views(*state, "zeros");

    /* tta = "flip": the image and its mirror; "none" (the default): no views. */
    data_rig ds;
    cifar10_load_augmented(&ds, *state, (augment_args){ .tta = "flip" });
    data_rig_create(&ds, 1);
    assert_int_equal(ds.info.views, 2);
    int32_t labels[AUG_TEST];
    float *x = read_all(&ds, RX_TEST, 50, 1, labels);
    for (int i = 0; i < AUG_TEST; i++) expect_transform(x + i * PIXELS, NTRAIN + i, (transform){ .flip = true }, "tta flip");
    free(x);
    data_rig_close(&ds);
    cifar10_load_augmented(&ds, *state, (augment_args){ 0 });
    data_rig_create(&ds, 1);
    assert_int_equal(ds.info.views, 0);
    data_rig_close(&ds);
}

/* A batch call must fail with a message containing WANT. */
static void expect_batch_refused(data_rig *ds, rx_split split, int64_t first, int64_t n, int view, const char *want)
{
    float x[2 * PIXELS];
    int32_t labels[2];
    rx_tensor t = batch_tensor(ds, x, n);
    ds->ctx.err[0] = '\0';
    assert_int_equal(ds->desc->data.batch[RX_CPU](ds->self, &ds->ctx, split, first, view, &t, labels), -1);
    if (!strstr(ds->ctx.err, want)) fail_msg("error '%s' does not say '%s'", ds->ctx.err, want);
}

static void test_cifar10_refuses_bad_views(void **state)
{
    data_rig ds;
    cifar10_load_augmented(&ds, *state, (augment_args){ .tta = "flip" });
    data_rig_create(&ds, 1);
    expect_batch_refused(&ds, RX_TRAIN, 0, 2, 1, "view 1 of the train split: training batches are augmented");
    expect_batch_refused(&ds, RX_TEST, 0, 2, 2, "view 2 of the test split, but tta = \"flip\" gives views 0 .. 1");
    expect_batch_refused(&ds, RX_VALID, 0, 2, -1, "view -1 of the valid split, but tta = \"flip\" gives views 0 .. 1");
    data_rig_close(&ds);
    cifar10_load_augmented(&ds, *state, (augment_args){ 0 });
    data_rig_create(&ds, 1);
    expect_batch_refused(&ds, RX_TEST, 0, 2, 1, "view 1 of the test split, but tta = \"none\" gives views 0 .. 0");
    data_rig_close(&ds);
}

/* valid_fraction = 0: all 50000 images train, and the empty validation split still answers. */
static void test_cifar10_without_validation(void **state)
{
    data_rig ds;
    cifar10_load(&ds, *state);
    test_arg(ds.desc, ds.args, "valid_fraction")->num = 0;
    test_arg(ds.desc, ds.args, "tta")->s = "flip";
    data_rig_create(&ds, 31);
    assert_int_equal(ds.info.size[RX_TRAIN], NTRAIN);
    assert_int_equal(ds.info.size[RX_VALID], 0);
    assert_int_equal(ds.info.size[RX_TEST], NTEST);
    assert_int_equal(ds.desc->data.begin_epoch(ds.self, &ds.ctx, RX_VALID, 0), 0);
    assert_int_equal(ds.desc->data.begin_epoch(ds.self, &ds.ctx, RX_TRAIN, 1), 0);
    float x[PIXELS];
    int32_t label;
    for (int view = 0; view < 2; view++) {
        rx_tensor empty = batch_tensor(&ds, x, 0);
        assert_int_equal(ds.desc->data.batch[RX_CPU](ds.self, &ds.ctx, RX_VALID, 0, view, &empty, &label), 0);
    }
    expect_batch_refused(&ds, RX_VALID, 0, 1, 0, "samples [0, 1) are outside the valid split's 0");

    /* Every training image, once. */
    int32_t *ids = malloc(NTRAIN * sizeof(int32_t));
    char *seen = calloc(NTRAIN, 1);
    assert_non_null(ids);
    assert_non_null(seen);
    cifar10_ids(&ds, RX_TRAIN, ids);
    for (int i = 0; i < NTRAIN; i++) {
        assert_in_range(ids[i], 0, NTRAIN - 1);
        if (seen[ids[i]]) fail_msg("image %d is handed out twice", ids[i]);
        seen[ids[i]] = 1;
    }
    free(seen);
    free(ids);
    data_rig_close(&ds);
}

typedef struct bad_arg {
    const char *key;
    int64_t i;     /* for an int param */
    const char *s; /* for a string param */
    const char *want;
} bad_arg;

static void test_cifar10_refuses_bad_augmentation(void **state)
{
    const bad_arg cases[] = {
        { "crop_padding", -1, NULL, "crop_padding must be in [0, 31] (pixels of padding around the 32x32 image; 0: no crop), got -1" },
        { "crop_padding", 32, NULL, "crop_padding must be in [0, 31]" },
        { "cutout", -1, NULL, "cutout must be in [0, 32] (side of the square; 0: none), got -1" },
        { "cutout", 33, NULL, "cutout must be in [0, 32]" },
        { "padding_mode", 0, "mirror", "padding_mode must be \"reflect\" or \"zeros\", got \"mirror\"" },
        { "padding_mode", 0, "", "padding_mode must be \"reflect\" or \"zeros\", got \"\"" },
        { "flip", 0, "yes", "flip must be \"none\", \"random\" or \"alternate\", got \"yes\"" },
        { "flip", 0, "Random", "flip must be \"none\", \"random\" or \"alternate\", got \"Random\"" },
        { "tta", 0, "flips", "tta must be \"none\", \"flip\" or \"flip_shift\", got \"flips\"" },
    };
    data_rig ds;
    cifar10_load(&ds, *state);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        test_default_args(ds.desc, ds.args);
        test_arg(ds.desc, ds.args, "path")->s = *state;
        rx_value *v = test_arg(ds.desc, ds.args, cases[c].key);
        if (cases[c].s) v->s = cases[c].s;
        else v->i = cases[c].i;
        data_rig_refused(&ds, cases[c].want);
    }
    data_rig_close(&ds);
}

/* ---- cifar10 on the GPU ---- */

/* What needs no GPU: the CUDA path is there in a CUDA build, refuses an instance created for the
 * CPU and a tensor on the CPU, and a create for the GPU without one fails cleanly. */
static void test_cifar10_cuda_refusals(void **state)
{
    data_rig ds;
    cifar10_load_augmented(&ds, *state, (augment_args){ 0 });
    if (!device_cuda_built()) {
        assert_null(ds.desc->data.batch[RX_CUDA]);
        data_rig_close(&ds);
        print_message("skipped: this build has no CUDA\n");
        skip();
    }
    assert_non_null(ds.desc->data.batch[RX_CUDA]);
    data_rig_create(&ds, 1);
    float x[PIXELS];
    int32_t label;
    rx_tensor t = batch_tensor(&ds, x, 1);
    t.device = RX_CUDA; /* never touched: refused first */
    assert_int_equal(ds.desc->data.batch[RX_CUDA](ds.self, &ds.ctx, RX_TEST, 0, 0, &t, &label), -1);
    assert_non_null(strstr(ds.ctx.err, "the data set was created for the CPU"));
    t.device = RX_CPU;
    assert_int_equal(ds.desc->data.batch[RX_CUDA](ds.self, &ds.ctx, RX_TEST, 0, 0, &t, &label), -1);
    assert_non_null(strstr(ds.ctx.err, "x is on the CPU, expected the GPU"));
    data_rig_close(&ds);

    char why[ERR_LEN];
    if (!device_usable(RX_CUDA, why)) {
        cifar10_load_augmented(&ds, *state, (augment_args){ 0 });
        ds.ctx.device = RX_CUDA;
        data_rig_refused(&ds, "cifar10: GPU memory for the images");
        data_rig_close(&ds);
    }
}

#ifdef RX_WITH_CUDA
/* View VIEW of samples [first, first + n) of SPLIT through both paths of one instance (created on
 * the GPU): the same floats, bit for bit, and the same labels. */
static void compare_batch(data_rig *ds, rx_ctx *cpu, rx_split split, int64_t first, int64_t n, int view, float *xc,
                          float *xg, float *xd, int32_t *lc, int32_t *lg, int32_t *ld, const char *what)
{
    rx_tensor tc = batch_tensor(ds, xc, n), tg = batch_tensor(ds, xd, n);
    tg.device = RX_CUDA;
    if (ds->desc->data.batch[RX_CPU](ds->self, cpu, split, first, view, &tc, lc) != 0) fail_msg("cpu: %s", cpu->err);
    if (ds->desc->data.batch[RX_CUDA](ds->self, &ds->ctx, split, first, view, &tg, ld) != 0)
        fail_msg("cuda: %s", ds->ctx.err);
    expect_gpu_clean(what);
    device_to_host(RX_CUDA, xg, xd, (size_t)n * PIXELS * sizeof(float));
    device_to_host(RX_CUDA, lg, ld, (size_t)n * sizeof(int32_t));
    for (int64_t i = 0; i < n * PIXELS; i++)
        if (memcmp(&xc[i], &xg[i], sizeof(float)) != 0)
            fail_msg("%s, %s samples from %lld, view %d: sample %lld float %lld: cpu %.9g, cuda %.9g", what,
                     split == RX_TRAIN ? "train" : split == RX_VALID ? "valid" : "test", (long long)first, view,
                     (long long)(i / PIXELS), (long long)(i % PIXELS), xc[i], xg[i]);
    assert_memory_equal(lc, lg, (size_t)n * sizeof(int32_t));
}

static void compare_devices(const char *dir, augment_args a, const char *what)
{
    enum { MAX_BATCH = 200 };
    data_rig ds;
    cifar10_load_augmented(&ds, dir, a);
    ds.ctx.device = RX_CUDA; /* the images go to the GPU at create */
    data_rig_create(&ds, 32);
    rx_ctx cpu = { .device = RX_CPU, .threads = 1 };
    float *xc = malloc(MAX_BATCH * PIXELS * sizeof(float)), *xg = malloc(MAX_BATCH * PIXELS * sizeof(float));
    int32_t lc[MAX_BATCH], lg[MAX_BATCH];
    float *xd = device_alloc(RX_CUDA, MAX_BATCH * PIXELS * sizeof(float));
    int32_t *ld = device_alloc(RX_CUDA, MAX_BATCH * sizeof(int32_t));
    assert_true(xc && xg && xd && ld);
    /* Batches of 128 and a last one of 64 for training; then 200 (the picks' buffers grow) and 33. */
    const int64_t batch[RX_NSPLITS] = { 128, 200, 33 };
    for (int64_t epoch = 1; epoch <= 2; epoch++) {
        assert_int_equal(ds.desc->data.begin_epoch(ds.self, &ds.ctx, RX_TRAIN, epoch), 0);
        for (rx_split split = RX_TRAIN; split < RX_NSPLITS; split++) {
            int views = split == RX_TRAIN || ds.info.views < 1 ? 1 : ds.info.views;
            for (int view = 0; view < views; view++)
                for (int64_t first = 0; first < ds.info.size[split]; first += batch[split]) {
                    int64_t n = ds.info.size[split] - first < batch[split] ? ds.info.size[split] - first : batch[split];
                    compare_batch(&ds, &cpu, split, first, n, view, xc, xg, xd, lc, lg, ld, what);
                }
        }
    }
    /* An empty batch queues nothing. */
    rx_tensor empty = batch_tensor(&ds, xd, 0);
    empty.device = RX_CUDA;
    assert_int_equal(ds.desc->data.batch[RX_CUDA](ds.self, &ds.ctx, RX_TEST, 0, 0, &empty, ld), 0);
    expect_gpu_clean(what);
    device_free(RX_CUDA, xd);
    device_free(RX_CUDA, ld);
    free(xc);
    free(xg);
    data_rig_close(&ds);
}
#endif

/* Whole batches on both devices: training with every augmentation, and every test-time view. */
static void test_cifar10_cpu_vs_cuda(void **state)
{
    char why[ERR_LEN];
    if (!device_usable(RX_CUDA, why)) {
        print_message("skipped: %s\n", why);
        skip();
    }
#ifdef RX_WITH_CUDA
    compare_devices(*state, (augment_args){ .crop_padding = 4, .flip = "random", .cutout = 8, .tta = "flip_shift" },
                    "reflect, random flip");
    compare_devices(*state, (augment_args){ .crop_padding = 3, .padding_mode = "zeros", .flip = "alternate",
                                            .cutout = 5, .tta = "flip_shift" }, "zeros, alternate flip");
    compare_devices(*state, (augment_args){ .tta = "flip" }, "no augmentation");
#endif
}

/* ---- synthetic ---- */

/* All of SPLIT: x (size, sample...), labels (size). */
static float *synthetic_read_split(data_rig *ds, rx_split split, int32_t *labels)
{
    int64_t n = ds->info.size[split];
    float *x = malloc((size_t)(n * sample_numel(ds)) * sizeof(float));
    assert_non_null(x);
    data_batch(ds, split, 0, n, x, labels);
    return x;
}

static void test_synthetic_shapes(void **state)
{
    data_rig ds;
    data_rig_load(&ds, "synthetic");
    data_rig_create(&ds, 1);
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
    assert_int_equal(ds.info.norm_channels, 0); /* generated floats, not normalized pixels */
    data_rig_close(&ds);

    data_rig_load(&ds, "synthetic");
    test_arg(ds.desc, ds.args, "classes")->i = 4;
    test_arg(ds.desc, ds.args, "channels")->i = 1;
    test_arg(ds.desc, ds.args, "size")->i = 5;
    test_arg(ds.desc, ds.args, "train")->i = 30;
    test_arg(ds.desc, ds.args, "valid")->i = 0;
    test_arg(ds.desc, ds.args, "test")->i = 7;
    data_rig_create(&ds, 1);
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
    data_rig_close(&ds);
}

static void test_synthetic_is_seeded(void **state)
{
    data_rig a, b;
    data_rig_load(&a, "synthetic");
    data_rig_load(&b, "synthetic");
    data_rig_create(&a, 11);
    data_rig_create(&b, 11);
    int32_t la[2000], lb[2000];
    for (rx_split split = RX_TRAIN; split < RX_NSPLITS; split++) {
        int64_t n = a.info.size[split];
        float *xa = synthetic_read_split(&a, split, la), *xb = synthetic_read_split(&b, split, lb);
        assert_memory_equal(xa, xb, (size_t)(n * sample_numel(&a)) * sizeof(float));
        assert_memory_equal(la, lb, (size_t)n * sizeof(int32_t));
        free(xa);
        free(xb);
    }
    data_rig_close(&b);

    /* Another seed, other data. */
    data_rig_load(&b, "synthetic");
    data_rig_create(&b, 12);
    float *xa = synthetic_read_split(&a, RX_TEST, la), *xb = synthetic_read_split(&b, RX_TEST, lb);
    assert_memory_not_equal(xa, xb, 500 * sample_numel(&a) * sizeof(float));
    free(xb);
    data_rig_close(&b);

    /* A different number of training samples leaves the test set as it was. */
    data_rig_load(&b, "synthetic");
    test_arg(b.desc, b.args, "train")->i = 100;
    data_rig_create(&b, 11);
    xb = synthetic_read_split(&b, RX_TEST, lb);
    assert_memory_equal(xa, xb, 500 * sample_numel(&a) * sizeof(float));
    free(xb);
    free(xa);
    data_rig_close(&b);
    data_rig_close(&a);
}

static void test_synthetic_classes_balanced(void **state)
{
    data_rig ds;
    data_rig_load(&ds, "synthetic");
    data_rig_create(&ds, 2);
    int32_t labels[2000];
    int count[10] = { 0 };
    free(synthetic_read_split(&ds, RX_TRAIN, labels));
    for (int i = 0; i < 2000; i++) {
        assert_in_range(labels[i], 0, 9);
        count[labels[i]]++;
    }
    for (int c = 0; c < 10; c++) assert_in_range(count[c], 140, 260); /* 200 +- 4.5 sd */
    data_rig_close(&ds);
}

static void test_synthetic_epochs_reshuffle_train(void **state)
{
    data_rig ds;
    data_rig_load(&ds, "synthetic");
    data_rig_create(&ds, 3);
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
    data_rig_close(&ds);
}

/* Learnable: classifying test samples by the nearest class mean of the training samples (a linear
 * classifier) already gets well over 90%. */
static void test_synthetic_is_learnable(void **state)
{
    data_rig ds;
    data_rig_load(&ds, "synthetic");
    data_rig_create(&ds, 4);
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
    data_rig_close(&ds);
}

static void test_synthetic_refuses_bad_arguments(void **state)
{
    data_rig ds;
    data_rig_load(&ds, "synthetic");
    test_arg(ds.desc, ds.args, "classes")->i = 1;
    data_rig_refused(&ds, "classes must be in [2, 1000], got 1");
    test_default_args(ds.desc, ds.args);
    test_arg(ds.desc, ds.args, "train")->i = 0;
    data_rig_refused(&ds, "train must be in [1, ");
    test_default_args(ds.desc, ds.args);
    test_arg(ds.desc, ds.args, "noise")->num = -1;
    data_rig_refused(&ds, "noise must be >= 0, got -1");
    data_rig_close(&ds);
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
        cmocka_unit_test(test_cifar10_refuses_files_that_are_not_files),
        cmocka_unit_test(test_cifar10_crop_reflect),
        cmocka_unit_test(test_cifar10_crop_zeros),
        cmocka_unit_test(test_cifar10_flip_random),
        cmocka_unit_test(test_cifar10_flip_alternate),
        cmocka_unit_test(test_cifar10_cutout),
        cmocka_unit_test(test_cifar10_augment_combined),
        cmocka_unit_test(test_cifar10_augment_is_deterministic),
        cmocka_unit_test(test_cifar10_augment_differs),
        cmocka_unit_test(test_cifar10_augment_train_only),
        cmocka_unit_test(test_cifar10_tta_views),
        cmocka_unit_test(test_cifar10_refuses_bad_views),
        cmocka_unit_test(test_cifar10_without_validation),
        cmocka_unit_test(test_cifar10_refuses_bad_augmentation),
        cmocka_unit_test(test_cifar10_cuda_refusals),
        cmocka_unit_test(test_cifar10_cpu_vs_cuda),
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
