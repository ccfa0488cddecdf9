/* cifar10.c: the CIFAR-10 data set, read from the official binary layout (data_batch_1.bin ..
 * data_batch_5.bin, test_batch.bin, batches.meta.txt) as users download it.
 *
 * The images stay uint8 in one allocation (180 MB for all 60,000; floats would take 720 MB);
 * each batch is normalized on the way out through a 256-entry table per channel, which gives
 * exactly what PyTorch's ToTensor + Normalize give: (float(v) / 255 - mean[c]) / std[c].
 *
 * Splits, as the PyTorch tutorial makes them: the training images are shuffled once from the
 * run's seed (Fisher-Yates), the first round(valid_fraction * N) become the validation split and
 * the rest the training split. Every epoch reshuffles the training split from (seed, epoch)
 * alone, so a resumed run recomputes the same order; validation and test keep a fixed order.
 *
 * With download = true and files missing, the official archive is fetched first (download.c does
 * the fetching, checking and extracting): into PARENT/cifar-10-binary.tar.gz.part beside the
 * folder, resumed if an earlier run left one; checked against md5 (or sha256); renamed to
 * PARENT/cifar-10-binary.tar.gz, which stays, so a deleted folder comes back without the network;
 * extracted into a temporary folder and renamed into place. An archive already there (put by
 * hand where there is no network) is checked and extracted the same way.
 *
 * Augmentation (training split only: crop, flip, cutout) and the test-time views (tta) are
 * plugins/common/augment.c's, shared with imagefolder: a sample's choices come from (seed, epoch,
 * its index in the data set) alone.
 *
 * On the GPU (created with ctx->device == RX_CUDA, in a CUDA build): the images go to the GPU once
 * as bytes; each batch's choices (an augment_pick per sample, see augment.h) are drawn here by the
 * code the CPU path uses, copied over (20 bytes a sample), and cifar10.cu's kernel writes the
 * floats from the same table. The host copy stays, so batch[RX_CPU] works on either.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runexp.h"
#include "data.h"
#include "regular.h"
#include "cifar10.h"
#include "download.h"

#define CIFAR_RECORD      (1 + CIFAR_PIXELS)              /* a label byte, then the pixels */
#define CIFAR_PER_FILE    10000
#define CIFAR_FILE_BYTES  ((int64_t)CIFAR_PER_FILE * CIFAR_RECORD) /* 30,730,000 */
#define CIFAR_TRAIN_FILES 5
#define CIFAR_TRAIN_MAX   (CIFAR_TRAIN_FILES * CIFAR_PER_FILE)
#define CIFAR_META_MAX    4096  /* the real batches.meta.txt is 61 bytes */

/* Random streams: the split uses one, epoch e shuffles with STREAM_EPOCH + e (never the same).
 * Augmentation keys its streams with a salted seed instead (augment.c). */
#define STREAM_SPLIT   1
#define STREAM_EPOCH   1000

#define GETTING_DATA "see README: getting CIFAR-10"

#define CIFAR_URL     "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
#define CIFAR_MD5     "c32a1d4ab5d03f1284b67883e8d87530"
#define CIFAR_ARCHIVE "cifar-10-binary.tar.gz" /* the name it gets beside the folder */
#define CIFAR_FOLDER  "cifar-10-batches-bin"   /* the archive's one folder */

/* The arguments, in the order of the parameter list below. */
enum {
    ARG_PATH, ARG_VALID_FRACTION, ARG_MEAN, ARG_STD, ARG_TRAIN_LIMIT, ARG_TEST_LIMIT,
    ARG_CROP_PADDING, ARG_PADDING_MODE, ARG_FLIP, ARG_CUTOUT, ARG_TTA,
    ARG_DOWNLOAD, ARG_URL, ARG_MD5, ARG_SHA256,
};

static const rx_param params[] = {
    { .key = "path", .type = RX_STR, .def = { .s = "data/cifar-10-batches-bin" },
      .help = "folder holding data_batch_1.bin .. data_batch_5.bin, test_batch.bin, batches.meta.txt" },
    { .key = "valid_fraction", .type = RX_NUM, .def = { .num = 0.2 },
      .help = "share of the training images held out for validation, in [0, 1)" },
    { .key = "mean", .type = RX_NUMS, .def = { .len = 3, .list = { 0.5, 0.5, 0.5 } },
      .help = "per-channel mean subtracted from pixels scaled to [0, 1] (1 or 3 values)" },
    { .key = "std", .type = RX_NUMS, .def = { .len = 3, .list = { 0.5, 0.5, 0.5 } },
      .help = "per-channel standard deviation divided by after the mean (1 or 3 values, > 0)" },
    { .key = "train_limit", .type = RX_INT, .def = { .i = 0 },
      .help = "read only the first N training images, for quick runs (0: all 50000)" },
    { .key = "test_limit", .type = RX_INT, .def = { .i = 0 },
      .help = "read only the first N test images, for quick runs (0: all 10000)" },
    AUGMENT_PARAMS("32x32"),
    { .key = "download", .type = RX_BOOL, .def = { .b = false },
      .help = "when files are missing, download the archive from url, check it and extract it into path" },
    { .key = "url", .type = RX_STR, .def = { .s = CIFAR_URL },
      .help = "where the archive comes from: http://, https:// or file://" },
    { .key = "md5", .type = RX_STR, .def = { .s = CIFAR_MD5 },
      .help = "the archive's md5 (the official one by default; a mirror or a local copy has its own)" },
    { .key = "sha256", .type = RX_STR, .def = { .s = "" },
      .help = "the archive's sha256; when given, it is checked instead of md5" },
    { 0 },
};

/* The files the reader needs; bytes: their exact size, 0 for any. */
static const struct cifar10_file {
    const char *name;
    int64_t bytes;
} cifar10_files[] = {
    { "data_batch_1.bin", CIFAR_FILE_BYTES }, { "data_batch_2.bin", CIFAR_FILE_BYTES },
    { "data_batch_3.bin", CIFAR_FILE_BYTES }, { "data_batch_4.bin", CIFAR_FILE_BYTES },
    { "data_batch_5.bin", CIFAR_FILE_BYTES }, { "test_batch.bin", CIFAR_FILE_BYTES },
    { "batches.meta.txt", 0 },
};
#define CIFAR_NFILES (int)(sizeof cifar10_files / sizeof cifar10_files[0])

static const char *const split_names[RX_NSPLITS] = { "train", "valid", "test" };

static void cifar10_destroy(void *self)
{
    cifar10 *d = self;
    if (!d) return;
#ifdef RX_WITH_CUDA
    cifar10_gpu_destroy(d);
#endif
    free(d->pixels);
    free(d->labels);
    free(d->split_perm);
    free(d->train_order);
    free(d->test_order);
    free(d->meta);
    free(d);
}

/* Whether S is exactly LEN hexadecimal digits. */
static bool is_hex(const char *s, size_t len)
{
    if (strlen(s) != len) return false;
    for (size_t i = 0; i < len; i++)
        if (!strchr("0123456789abcdefABCDEF", s[i])) return false;
    return true;
}

/* Checked even with download = false: a malformed value is a mistake whether or not it is used. */
static int cifar10_check_download_args(rx_ctx *ctx, const rx_value *args)
{
    const char *url = args[ARG_URL].s ? args[ARG_URL].s : "", *md5 = args[ARG_MD5].s ? args[ARG_MD5].s : "";
    const char *sha256 = args[ARG_SHA256].s ? args[ARG_SHA256].s : "";
    if (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0 && strncasecmp(url, "file://", 7) != 0)
        return rx_fail(ctx, "url must start with http://, https:// or file://, got '%s'", url);
    if (*md5 && !is_hex(md5, 32)) return rx_fail(ctx, "md5 must be 32 hexadecimal digits, got '%s'", md5);
    if (*sha256 && !is_hex(sha256, 64)) return rx_fail(ctx, "sha256 must be 64 hexadecimal digits, got '%s'", sha256);
    if (args[ARG_DOWNLOAD].b && !*md5 && !*sha256)
        return rx_fail(ctx, "download = true needs md5 or sha256, to check what comes");
    return 0;
}

static int cifar10_check_args(rx_ctx *ctx, const rx_value *args, augment *aug)
{
    if (!args[ARG_PATH].s || !*args[ARG_PATH].s) return rx_fail(ctx, "path is empty (" GETTING_DATA ")");
    double vf = args[ARG_VALID_FRACTION].num;
    if (!(vf >= 0 && vf < 1)) return rx_fail(ctx, "valid_fraction must be in [0, 1), got %g", vf);
    const rx_value *mean = &args[ARG_MEAN], *std = &args[ARG_STD];
    if (mean->len != 1 && mean->len != CIFAR_CHANNELS)
        return rx_fail(ctx, "mean has %d values, expected 1 or 3 (one per channel)", mean->len);
    if (std->len != 1 && std->len != CIFAR_CHANNELS)
        return rx_fail(ctx, "std has %d values, expected 1 or 3 (one per channel)", std->len);
    for (int c = 0; c < std->len; c++)
        if (!(std->list[c] > 0)) return rx_fail(ctx, "std[%d] is %g, expected > 0", c, std->list[c]);
    if (args[ARG_TRAIN_LIMIT].i < 0)
        return rx_fail(ctx, "train_limit must be >= 0 (0: all), got %lld", (long long)args[ARG_TRAIN_LIMIT].i);
    if (args[ARG_TEST_LIMIT].i < 0)
        return rx_fail(ctx, "test_limit must be >= 0 (0: all), got %lld", (long long)args[ARG_TEST_LIMIT].i);
    if (augment_parse(ctx, &args[ARG_CROP_PADDING], CIFAR_SIDE, CIFAR_SIDE, aug) != 0) return -1;
    return cifar10_check_download_args(ctx, args);
}

/* A limit of 0 means everything there is; a larger one than there is means the same. */
static int64_t apply_limit(int64_t limit, int64_t available)
{
    return limit == 0 || limit > available ? available : limit;
}

/* Opens DIR/NAME and checks its size unless expected_bytes is 0; reports a missing file with the
 * folder it looked in. */
static FILE *cifar10_open(rx_ctx *ctx, const char *dir, const char *name, int64_t expected_bytes,
                          int64_t *bytes)
{
    char file[PATH_MAX];
    if (snprintf(file, sizeof file, "%s/%s", dir, name) >= (int)sizeof file) {
        rx_fail(ctx, "path '%s' is too long", dir);
        return NULL;
    }
    FILE *f = fopen_regular(ctx, file); /* a FIFO or a device is refused, not waited on */
    if (!f) {
        if (errno == ENOENT) rx_fail(ctx, "%s not found in %s (" GETTING_DATA ")", name, dir);
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        rx_fail(ctx, "%s: cannot stat: %s", file, strerror(errno));
        fclose(f);
        return NULL;
    }
    *bytes = (int64_t)st.st_size;
    if (expected_bytes > 0 && *bytes != expected_bytes) {
        rx_fail(ctx, "%s: %lld bytes, expected %lld (%d records of %d bytes)", file,
                (long long)*bytes, (long long)expected_bytes, CIFAR_PER_FILE, CIFAR_RECORD);
        fclose(f);
        return NULL;
    }
    return f;
}

/* Reads the first COUNT records of DIR/NAME into images [first, first + count). */
static int cifar10_read_file(cifar10 *d, rx_ctx *ctx, const char *dir, const char *name,
                             int64_t first, int64_t count)
{
    int64_t bytes;
    FILE *f = cifar10_open(ctx, dir, name, CIFAR_FILE_BYTES, &bytes);
    if (!f) return -1;
    uint8_t record[CIFAR_RECORD]; /* label, then (3, 32, 32) */
    for (int64_t r = 0; r < count; r++) {
        if (fread(record, 1, sizeof record, f) != sizeof record) {
            if (ferror(f))
                rx_fail(ctx, "%s/%s: read error at record %lld: %s", dir, name, (long long)r, strerror(errno));
            else
                rx_fail(ctx, "%s/%s: truncated: ends inside record %lld, expected %d records of %d bytes",
                        dir, name, (long long)r, CIFAR_PER_FILE, CIFAR_RECORD);
            fclose(f);
            return -1;
        }
        if (record[0] >= CIFAR_CLASSES) {
            rx_fail(ctx, "%s/%s: record %lld has label %d, expected 0-%d", dir, name, (long long)r,
                    record[0], CIFAR_CLASSES - 1);
            fclose(f);
            return -1;
        }
        d->labels[first + r] = record[0];
        memcpy(d->pixels + (first + r) * CIFAR_PIXELS, record + 1, CIFAR_PIXELS);
    }
    fclose(f);
    return 0;
}

/* Trims spaces, tabs and carriage returns from both ends of a line, in place. */
static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t' || *s == '\r') s++;
    char *end = s + strlen(s);
    while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r')) *--end = '\0';
    return s;
}

/* batches.meta.txt: one class name per line, blank lines ignored, 10 names expected. */
static int cifar10_read_meta(cifar10 *d, rx_ctx *ctx, const char *dir)
{
    const char *name = "batches.meta.txt";
    int64_t bytes;
    FILE *f = cifar10_open(ctx, dir, name, 0, &bytes);
    if (!f) return -1;
    if (bytes > CIFAR_META_MAX) {
        fclose(f);
        return rx_fail(ctx, "%s/%s: %lld bytes, expected at most %d (10 class names, one per line)",
                       dir, name, (long long)bytes, CIFAR_META_MAX);
    }
    d->meta = malloc((size_t)bytes + 1);
    if (!d->meta) {
        fclose(f);
        return rx_fail(ctx, "%s/%s: out of memory", dir, name);
    }
    size_t got = fread(d->meta, 1, (size_t)bytes, f);
    fclose(f);
    if (got != (size_t)bytes)
        return rx_fail(ctx, "%s/%s: read %zu of %lld bytes", dir, name, got, (long long)bytes);
    d->meta[bytes] = '\0';

    int n = 0;
    for (char *save = NULL, *line = strtok_r(d->meta, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        line = trim(line);
        if (!*line) continue;
        if (n < CIFAR_CLASSES) d->class_names[n] = line;
        n++;
    }
    if (n != CIFAR_CLASSES)
        return rx_fail(ctx, "%s/%s: %d class names, expected %d (one per line)", dir, name, n, CIFAR_CLASSES);
    return 0;
}

static int cifar10_alloc_images(cifar10 *d, rx_ctx *ctx)
{
    size_t n = (size_t)(d->ntrain + d->ntest);
    d->pixels = malloc(n * CIFAR_PIXELS);
    d->labels = malloc(n);
    if (!d->pixels || !d->labels)
        return rx_fail(ctx, "out of memory for %zu images (%zu MB)", n, n * CIFAR_PIXELS >> 20);
    return 0;
}

/* data_batch_1.bin .. data_batch_5.bin, as far as ntrain reaches, then test_batch.bin. */
static int cifar10_read_images(cifar10 *d, rx_ctx *ctx, const char *dir)
{
    for (int i = 0; i < CIFAR_TRAIN_FILES; i++) {
        int64_t first = (int64_t)i * CIFAR_PER_FILE;
        if (first >= d->ntrain) break;
        char name[32];
        snprintf(name, sizeof name, "data_batch_%d.bin", i + 1);
        int64_t count = d->ntrain - first < CIFAR_PER_FILE ? d->ntrain - first : CIFAR_PER_FILE;
        if (cifar10_read_file(d, ctx, dir, name, first, count) != 0) return -1;
    }
    return cifar10_read_file(d, ctx, dir, "test_batch.bin", d->ntrain, d->ntest);
}

/* The seeded split of the training images, and the fixed order of the test images. */
static int cifar10_make_splits(cifar10 *d, rx_ctx *ctx, double valid_fraction)
{
    int64_t nvalid = llround(valid_fraction * (double)d->ntrain);
    if (nvalid >= d->ntrain)
        return rx_fail(ctx, "valid_fraction %g of %lld training images leaves none to train on",
                       valid_fraction, (long long)d->ntrain);
    d->size[RX_VALID] = nvalid;
    d->size[RX_TRAIN] = d->ntrain - nvalid;
    d->size[RX_TEST] = d->ntest;

    d->split_perm = malloc((size_t)d->ntrain * sizeof(int32_t));
    d->train_order = malloc((size_t)d->size[RX_TRAIN] * sizeof(int32_t));
    d->test_order = malloc((size_t)d->ntest * sizeof(int32_t));
    if (!d->split_perm || !d->train_order || !d->test_order) return rx_fail(ctx, "out of memory for the splits");

    for (int64_t i = 0; i < d->ntrain; i++) d->split_perm[i] = (int32_t)i;
    data_shuffle_indices(d->split_perm, d->ntrain, rx_rng_stream(d->seed, STREAM_SPLIT));
    memcpy(d->train_order, d->split_perm + nvalid, (size_t)d->size[RX_TRAIN] * sizeof(int32_t));
    for (int64_t i = 0; i < d->ntest; i++) d->test_order[i] = (int32_t)(d->ntrain + i);

    d->order[RX_TRAIN] = d->train_order;
    d->order[RX_VALID] = d->split_perm;
    d->order[RX_TEST] = d->test_order;
    return 0;
}

static void cifar10_fill_info(const cifar10 *d, rx_data_info *info)
{
    info->sample = (rx_shape){ .ndim = 3, .d = { CIFAR_CHANNELS, CIFAR_SIDE, CIFAR_SIDE } };
    info->nclasses = CIFAR_CLASSES;
    for (int c = 0; c < CIFAR_CLASSES; c++) info->class_names[c] = d->class_names[c];
    for (int s = 0; s < RX_NSPLITS; s++) info->size[s] = d->size[s];
    info->views = d->aug.views;
    info->parts = true; /* cifar10_batch_cpu reads d only */
}

/* ---- Getting the files (download = true) ---- */

/* The first file the reader needs that DIR lacks, or NULL when it has them all (their contents
 * are the reader's to check). */
static const char *cifar10_first_missing(const char *dir)
{
    for (int i = 0; i < CIFAR_NFILES; i++) {
        char file[PATH_MAX];
        struct stat st;
        if (snprintf(file, sizeof file, "%s/%s", dir, cifar10_files[i].name) >= (int)sizeof file ||
            stat(file, &st) != 0)
            return cifar10_files[i].name;
    }
    return NULL;
}

/* PATH without trailing slashes into dir, and the folder holding it into parent (PATH_MAX each). */
static int cifar10_split_path(rx_ctx *ctx, const char *path, char *dir, char *parent)
{
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/') len--;
    if (len >= PATH_MAX) return rx_fail(ctx, "path '%s' is too long", path);
    memcpy(dir, path, len);
    dir[len] = '\0';
    const char *slash = strrchr(dir, '/');
    if (!slash) snprintf(parent, PATH_MAX, ".");
    else if (slash == dir) snprintf(parent, PATH_MAX, "/");
    else snprintf(parent, PATH_MAX, "%.*s", (int)(slash - dir), dir);
    return 0;
}

/* The extracted folder takes DIR's place only where that loses nothing: DIR absent, or empty. */
static int cifar10_check_replaceable(rx_ctx *ctx, const char *dir, const char *missing)
{
    DIR *d = opendir(dir);
    if (!d && errno == ENOENT) return 0;
    if (!d) return rx_fail(ctx, "%s lacks %s and cannot be read: %s", dir, missing, strerror(errno));
    bool empty = true;
    for (struct dirent *e; empty && (e = readdir(d));)
        empty = strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0;
    closedir(d); /* read-only */
    if (!empty)
        return rx_fail(ctx, "%s lacks %s but holds other files, so the download will not replace it; move it "
                       "away and run again (" GETTING_DATA ")", dir, missing);
    return 0;
}

/* An extracted folder (beside the data set, not yet in place) must hold every file the reader
 * needs, each the right size: an archive that does not is refused before anything moves. */
static int cifar10_check_extracted(rx_ctx *ctx, const char *dir, const char *archive)
{
    for (int i = 0; i < CIFAR_NFILES; i++) {
        const struct cifar10_file *f = &cifar10_files[i];
        char file[PATH_MAX];
        struct stat st;
        if (dl_join(ctx, file, dir, f->name) != 0) return -1;
        if (stat(file, &st) != 0)
            return rx_fail(ctx, "%s lacks " CIFAR_FOLDER "/%s: it is not CIFAR-10 in the official layout", archive,
                           f->name);
        if (f->bytes && (int64_t)st.st_size != f->bytes)
            return rx_fail(ctx, "%s: " CIFAR_FOLDER "/%s is %lld bytes, expected %lld", archive, f->name,
                           (long long)st.st_size, (long long)f->bytes);
    }
    return 0;
}

/* A file's checksum beside the one expected: sha256 when given, else md5. */
typedef struct checksum {
    const char *algo, *want;
    char got[2 * EVP_MAX_MD_SIZE + 1];
} checksum;

static int cifar10_checksum(rx_ctx *ctx, const rx_value *args, const char *file, checksum *c)
{
    bool sha = args[ARG_SHA256].s && *args[ARG_SHA256].s;
    c->algo = sha ? "sha256" : "md5";
    c->want = sha ? args[ARG_SHA256].s : args[ARG_MD5].s;
    return dl_digest(ctx, file, c->algo, c->got);
}

static bool checksum_matches(const checksum *c) { return strcasecmp(c->got, c->want) == 0; }

/* A failed download gets, in the same line, the way round it. */
static int cifar10_add_hint(rx_ctx *ctx, const char *parent)
{
    char reason[RX_ERR_LEN];
    memcpy(reason, ctx->err, sizeof reason);
    return rx_fail(ctx, "%s; put " CIFAR_ARCHIVE ", downloaded by hand, in %s and run again (" GETTING_DATA ")",
                   reason, parent);
}

/* Downloads url into ARCHIVE.part, checks it and renames it to ARCHIVE. A download that fails its
 * check is deleted: resuming it could only repeat the mismatch. */
static int cifar10_download(rx_ctx *ctx, const rx_value *args, const char *archive, const char *parent,
                            checksum *sum)
{
    const char *url = args[ARG_URL].s;
    char part[PATH_MAX];
    if (snprintf(part, sizeof part, "%s.part", archive) >= (int)sizeof part)
        return rx_fail(ctx, "path %s is too long", archive);
    /* A .part that checks out already is a download whose run stopped before the rename. */
    bool done = access(part, F_OK) == 0 && cifar10_checksum(ctx, args, part, sum) == 0 && checksum_matches(sum);
    if (!done) {
        if (dl_fetch(ctx, url, part, "cifar10") != 0) return cifar10_add_hint(ctx, parent);
        if (cifar10_checksum(ctx, args, part, sum) != 0) return -1;
    }
    if (!checksum_matches(sum)) {
        const char *fate = unlink(part) == 0 ? "the download was deleted" : "the download could not be deleted";
        return rx_fail(ctx, "%s: %s is %s, expected %s; %s (a mirror or a re-packed copy has its own: give it as "
                       "data.md5 or data.sha256)", url, sum->algo, sum->got, sum->want, fate);
    }
    if (rename(part, archive) != 0) return rx_fail(ctx, "cannot rename %s: %s", part, strerror(errno));
    return 0;
}

/* ARCHIVE, checked: the one already there (put by hand, or kept by an earlier run), else a fresh
 * download. *downloaded: whether this call fetched it. */
static int cifar10_get_archive(rx_ctx *ctx, const rx_value *args, const char *archive, const char *parent,
                               checksum *sum, bool *downloaded)
{
    *downloaded = false;
    if (access(archive, F_OK) != 0) {
        if (cifar10_download(ctx, args, archive, parent, sum) != 0) return -1;
        *downloaded = true;
        return 0;
    }
    if (cifar10_checksum(ctx, args, archive, sum) != 0) return -1;
    if (!checksum_matches(sum))
        return rx_fail(ctx, "%s: %s is %s, expected %s; if it is a copy from elsewhere, give its checksum as data.%s, "
                       "else delete it to download again", archive, sum->algo, sum->got, sum->want, sum->algo);
    return 0;
}

/* With download = true, makes sure the folder holds the data set, or leaves things as they were
 * (an interrupted download's .part aside, kept for the next run to continue). */
static int cifar10_ensure_files(rx_ctx *ctx, const rx_value *args)
{
    const char *missing = cifar10_first_missing(args[ARG_PATH].s);
    if (!args[ARG_DOWNLOAD].b || !missing) return 0; /* the reader reports what is missing */
    char dir[PATH_MAX], parent[PATH_MAX], archive[PATH_MAX];
    size_t made;
    if (cifar10_split_path(ctx, args[ARG_PATH].s, dir, parent) != 0 || cifar10_check_replaceable(ctx, dir, missing) != 0 ||
        dl_join(ctx, archive, parent, CIFAR_ARCHIVE) != 0 || dl_make_dirs(ctx, parent, &made) != 0)
        return -1;
    checksum sum;
    bool downloaded;
    int rc = cifar10_get_archive(ctx, args, archive, parent, &sum, &downloaded);
    if (rc == 0) rc = dl_extract_into_place(ctx, archive, CIFAR_FOLDER, dir, parent, cifar10_check_extracted);
    if (rc == 0) {
        fprintf(stderr, "cifar10: extracted %s (%s verified) into %s\n", archive, sum.algo, dir);
        return 0;
    }
    /* A fetched archive that cannot be used goes; one put there by hand is the user's to keep.
     * Best effort, as is removing the folders made: the reason worth reporting is in ctx->err. */
    if (downloaded) unlink(archive);
    dl_unmake_dirs(parent, made);
    return -1;
}

/* Created for the GPU: the images go there now, once. */
static int cifar10_place(cifar10 *d, rx_ctx *ctx)
{
#ifdef RX_WITH_CUDA
    if (ctx->device == RX_CUDA) return cifar10_gpu_create(d, ctx);
#endif
    return 0;
}

static int cifar10_create(void **self, rx_ctx *ctx, const rx_value *args, uint64_t seed, rx_data_info *info)
{
    *self = NULL;
    augment aug;
    if (cifar10_check_args(ctx, args, &aug) != 0 || cifar10_ensure_files(ctx, args) != 0) return -1;
    cifar10 *d = calloc(1, sizeof *d);
    if (!d) return rx_fail(ctx, "out of memory");
    const char *dir = args[ARG_PATH].s;
    d->seed = seed;
    d->aug = aug;
    d->ntrain = apply_limit(args[ARG_TRAIN_LIMIT].i, CIFAR_TRAIN_MAX);
    d->ntest = apply_limit(args[ARG_TEST_LIMIT].i, CIFAR_PER_FILE);
    /* The table is built from what info reports, so the two cannot disagree. */
    data_set_normalization(info, CIFAR_CHANNELS, &args[ARG_MEAN], &args[ARG_STD]);
    data_build_luts(d->lut, info);
    if (cifar10_read_meta(d, ctx, dir) != 0 || cifar10_alloc_images(d, ctx) != 0 ||
        cifar10_read_images(d, ctx, dir) != 0 ||
        cifar10_make_splits(d, ctx, args[ARG_VALID_FRACTION].num) != 0 || cifar10_place(d, ctx) != 0) {
        cifar10_destroy(d);
        return -1;
    }
    cifar10_fill_info(d, info);
    *self = d;
    return 0;
}

/* An empty split (valid with valid_fraction = 0) has nothing to order: 0, and its batches may
 * only be empty. */
static int cifar10_begin_epoch(void *self, rx_ctx *ctx, rx_split split, int64_t epoch)
{
    cifar10 *d = self;
    if (data_check_split(ctx, split) != 0) return -1;
    if (split != RX_TRAIN) return 0;
    if (epoch < 0) return rx_fail(ctx, "epoch must be >= 0, got %lld", (long long)epoch);
    /* From the split's order, not the last epoch's: the order depends on (seed, epoch) only. */
    int64_t n = d->size[RX_TRAIN];
    memcpy(d->train_order, d->split_perm + d->size[RX_VALID], (size_t)n * sizeof(int32_t));
    data_shuffle_indices(d->train_order, n, rx_rng_stream(d->seed, STREAM_EPOCH + (uint64_t)epoch));
    d->epoch = epoch;
    return 0;
}

/* ---- Batches ---- */

/* view must be 0 for training and one of the tta views otherwise; x must be (N, 3, 32, 32) on
 * DEVICE and samples [first, first + N) must exist. */
static int cifar10_check_batch(const cifar10 *d, rx_ctx *ctx, rx_split split, int64_t first, int view,
                               const rx_tensor *x, rx_device device)
{
    if (data_check_split(ctx, split) != 0 || augment_check_view(ctx, &d->aug, split, view) != 0) return -1;
    const rx_shape *s = &x->shape;
    if (s->ndim != 4 || s->d[1] != CIFAR_CHANNELS || s->d[2] != CIFAR_SIDE || s->d[3] != CIFAR_SIDE)
        return rx_fail(ctx, "batch: x has %d dims (%lld, %lld, %lld, %lld), expected (N, 3, 32, 32)", s->ndim,
                       (long long)s->d[0], (long long)s->d[1], (long long)s->d[2], (long long)s->d[3]);
    if (x->device != device)
        return rx_fail(ctx, "batch: x is on the %s, expected the %s", x->device == RX_CUDA ? "GPU" : "CPU",
                       device == RX_CUDA ? "GPU" : "CPU");
    if (first < 0 || s->d[0] < 0 || first + s->d[0] > d->size[split])
        return rx_fail(ctx, "batch: samples [%lld, %lld) are outside the %s split's %lld", (long long)first,
                       (long long)(first + s->d[0]), split_names[split], (long long)d->size[split]);
    return 0;
}

static int cifar10_batch_cpu(void *self, rx_ctx *ctx, rx_split split, int64_t first, int view, rx_tensor *x,
                             int32_t *labels)
{
    cifar10 *d = self;
    if (cifar10_check_batch(d, ctx, split, first, view, x, RX_CPU) != 0) return -1;
    for (int64_t n = 0; n < x->shape.d[0]; n++) {
        augment_pick pk = augment_pick_for(&d->aug, d->seed, d->epoch, split, d->order[split][first + n], view);
        augment_render(&d->aug, &d->lut[0][0], d->pixels + (size_t)pk.image * CIFAR_PIXELS, pk, x->data + n * CIFAR_PIXELS);
        labels[n] = d->labels[pk.image];
    }
    return 0;
}

#ifdef RX_WITH_CUDA
/* The picks are drawn here, as for the CPU, into pinned memory; cifar10.cu copies them over and
 * renders the batch on the GPU from the images it holds. */
static int cifar10_batch_cuda(void *self, rx_ctx *ctx, rx_split split, int64_t first, int view, rx_tensor *x,
                              int32_t *labels)
{
    cifar10 *d = self;
    if (cifar10_check_batch(d, ctx, split, first, view, x, RX_CUDA) != 0) return -1;
    if (!d->gpu)
        return rx_fail(ctx, "batch: the data set was created for the CPU (ctx->device at create), so it is not on the GPU");
    int64_t n = x->shape.d[0];
    if (n == 0) return 0;
    augment_pick *picks = cifar10_gpu_picks(d, ctx, n); /* (n) */
    if (!picks) return -1;
    for (int64_t i = 0; i < n; i++) picks[i] = augment_pick_for(&d->aug, d->seed, d->epoch, split, d->order[split][first + i], view);
    return cifar10_gpu_render(d, ctx, n, x, labels);
}
#endif

static const rx_plugin desc = {
    .abi = RX_ABI_VERSION,
    .size = sizeof(rx_plugin),
    .kind = RX_DATA,
    .name = "cifar10",
    .summary = "CIFAR-10 from the official binary files: 32x32 colour images, 10 classes; crop, flip, cutout, TTA",
    .params = params,
    .data = {
        .create = cifar10_create,
        .destroy = cifar10_destroy,
        .begin_epoch = cifar10_begin_epoch,
#ifdef RX_WITH_CUDA
        .batch = { [RX_CPU] = cifar10_batch_cpu, [RX_CUDA] = cifar10_batch_cuda },
#else
        .batch = { [RX_CPU] = cifar10_batch_cpu },
#endif
    },
};

RX_EXPORT(cifar10) { return &desc; }
