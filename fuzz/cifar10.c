/* Fuzz target: the cifar10 data plugin's reader on damaged files. Initialization writes a valid
 * data set in the official layout to a temporary folder; each input then damages one file
 * (batches.meta.txt, data_batch_1.bin or test_batch.bin): overwrites bytes at an offset, cuts
 * it short, or appends to it. The plugin must then either load the data and hand out batches, or
 * refuse with a message; never crash. The file is repaired after each input.
 * Input: [file 0-2][offset, 4 bytes little-endian][mode 0-2][bytes...]
 * The two selector bytes also choose the augmentation, so that damaged data meets every path of
 * the batch op: file byte / 3 gives crop_padding (0-4), padding_mode and flip; mode byte / 3 gives
 * tta (every view of valid and test is drawn), cutout (0, 4, 8) and valid_fraction (0.2 or 0). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "plugin.h"

#define RECORD 3073
#define FILE_BYTES (10000L * RECORD)

typedef struct target {
    char dir[256];
    plugin pl;
} target;

static target *the_target(void)
{
    static target t; /* the fuzzer's one data set, made once */
    return &t;
}

static const char *const meta_text = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n";

/* The pristine byte at position p of a .bin file: a valid label at each record's start. */
static unsigned char pristine(long p, int file)
{
    return p % RECORD == 0 ? (unsigned char)((p / RECORD + file) % 10) : (unsigned char)((p * 7 + file) % 256);
}

static void path_of(int file, char *buf, size_t len)
{
    static const char *const names[] = { "batches.meta.txt", "data_batch_1.bin", "test_batch.bin" };
    snprintf(buf, len, "%s/%s", the_target()->dir, names[file]);
}

/* Makes bytes [from, to) of a .bin file pristine again, and its size the full size. */
static void restore_bin(int file, long from, long to)
{
    char path[512];
    path_of(file, path, sizeof path);
    FILE *f = fopen(path, from ? "r+b" : "wb");
    if (!f) abort();
    static unsigned char buf[1 << 16];
    fseek(f, from, SEEK_SET);
    if (to > FILE_BYTES) to = FILE_BYTES;
    for (long p = from; p < to;) {
        long n = to - p < (long)sizeof buf ? to - p : (long)sizeof buf;
        for (long i = 0; i < n; i++) buf[i] = pristine(p + i, file);
        if (fwrite(buf, 1, (size_t)n, f) != (size_t)n) abort();
        p += n;
    }
    fclose(f);
    if (truncate(path, FILE_BYTES) != 0) abort();
}

static void restore_meta(void)
{
    char path[512];
    path_of(0, path, sizeof path);
    FILE *f = fopen(path, "w");
    if (!f) abort();
    fputs(meta_text, f);
    fclose(f);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    target *t = the_target();
    snprintf(t->dir, sizeof t->dir, "/tmp/runexp-fuzz-cifar10-XXXXXX");
    if (!mkdtemp(t->dir)) abort();
    restore_meta();
    restore_bin(1, 0, FILE_BYTES);
    restore_bin(2, 0, FILE_BYTES);
    plugin_path path = { 0 };
    plugin_path_add(&path, FUZZ_PLUGIN_DIR);
    char err[1024];
    if (plugin_load(&path, RX_DATA, "cifar10", &t->pl, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        abort();
    }
    return 0;
}

/* The augmentation two selector bytes ask for (see the top). */
static void choose_augmentation(const rx_plugin *d, rx_value *args, unsigned file_byte, unsigned mode_byte)
{
    static const char *const padding_modes[] = { "reflect", "zeros" };
    static const char *const flips[] = { "none", "random", "alternate" };
    static const char *const ttas[] = { "none", "flip", "flip_shift" };
    unsigned a = file_byte / 3, b = mode_byte / 3;
    args[plugin_param_index(d, "crop_padding")].i = a % 5;
    args[plugin_param_index(d, "padding_mode")].s = padding_modes[a / 5 % 2];
    args[plugin_param_index(d, "flip")].s = flips[a / 10 % 3];
    args[plugin_param_index(d, "tta")].s = ttas[b % 3];
    args[plugin_param_index(d, "cutout")].i = 4 * (b / 3 % 3);
    if (b / 9 % 2) args[plugin_param_index(d, "valid_fraction")].num = 0;
}

/* Loads the (damaged) data set and draws a batch from each split, in every view. */
static void exercise(const rx_plugin *d, const char *dir, unsigned file_byte, unsigned mode_byte)
{
    rx_value args[32] = { 0 };
    for (int i = 0; d->params[i].key; i++) args[i] = d->params[i].def;
    args[plugin_param_index(d, "path")].s = dir;
    args[plugin_param_index(d, "train_limit")].i = 1000;
    args[plugin_param_index(d, "test_limit")].i = 100;
    choose_augmentation(d, args, file_byte, mode_byte);
    rx_ctx ctx = { .device = RX_CPU, .threads = 1 };
    rx_data_info info = { 0 };
    void *self = NULL;
    if (d->data.create(&self, &ctx, args, 1, &info) == 0) {
        static float x[4 * 3 * 32 * 32];
        int32_t labels[4];
        for (int s = 0; s < RX_NSPLITS; s++) {
            rx_tensor t = { .data = x, .shape = { 4, { 4, 3, 32, 32 } }, .device = RX_CPU };
            if (info.size[s] < 4 || d->data.begin_epoch(self, &ctx, (rx_split)s, 1) != 0) continue;
            int views = s == RX_TRAIN || info.views < 1 ? 1 : info.views;
            for (int view = 0; view < views; view++)
                d->data.batch[RX_CPU](self, &ctx, (rx_split)s, info.size[s] - 4, view, &t, labels);
        }
    }
    if (d->data.destroy) d->data.destroy(self);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 6) return 0;
    int file = data[0] % 3, mode = data[5] % 3;
    long limit = file == 0 ? (long)strlen(meta_text) : FILE_BYTES;
    long offset = (long)((uint32_t)data[1] | (uint32_t)data[2] << 8 | (uint32_t)data[3] << 16 | (uint32_t)data[4] << 24)
                  % (limit + 1);
    char path[512];
    path_of(file, path, sizeof path);
    FILE *f = fopen(path, "r+b");
    if (!f) abort();
    if (mode == 0) { /* overwrite */
        fseek(f, offset, SEEK_SET);
        fwrite(data + 6, 1, size - 6, f);
    } else if (mode == 2) { /* append */
        fseek(f, 0, SEEK_END);
        fwrite(data + 6, 1, size - 6, f);
    }
    fclose(f);
    if (mode == 1 && truncate(path, offset) != 0) abort(); /* cut short */
    exercise(the_target()->pl.desc, the_target()->dir, data[0], data[5]);
    if (file == 0) restore_meta();
    else if (mode == 0) restore_bin(file, offset, offset + (long)(size - 6));
    else restore_bin(file, mode == 1 ? offset : FILE_BYTES, FILE_BYTES);
    return 0;
}
