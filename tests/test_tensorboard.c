/* test_tensorboard.c: `tensorboard = true` (core/tensorboard.c, observer.c's tensorboard_observe).
 * The event files are read back twice: by a reader of our own here, which checks the TFRecord
 * framing (each length and each record's masked CRC-32C, the CRC checked against RFC 3720's test
 * vector first) and decodes the Event and Summary messages; and by the `tensorboard` package's
 * own EventAccumulator from PyPI (scripts/setup installs it in .deps/test-venv; without it that
 * part is skipped, saying why). Both check the tags, steps and values against metrics.csv and
 * summary.json. A resumed run and a run stopped mid-epoch write new files without writing any
 * step twice; a folder that cannot be written fails the run at its end, the run kept. */
#include "helpers.h"

#include <glob.h>
#include <math.h>
#include <unistd.h>

#include "tensorboard.h"

/* 640 training images in batches of 64: 10 batches, 10 optimizer steps an epoch. */
#define BATCHES_PER_EPOCH 10
static const char *experiment =
    "return {\n"
    "  data = { 'synthetic', classes = 4, size = 8, train = 640, valid = 128, test = 128, batch_size = 64 },\n"
    "  model = { { 'conv2d', out = 4, kernel = 3, padding = 1 }, { 'relu' }, { 'flatten' }, { 'linear', out = 4 } },\n"
    "  loss = 'cross_entropy',\n"
    "  optim = { 'sgd', lr = function(step, steps)\n"
    "    if step == tonumber(os.getenv('RX_STOP_AT_STEP') or -1) then os.execute('kill -TERM $PPID') end\n"
    "    return 0.05\n"
    "  end },\n"
    "  epochs = 2, threads = 1, device = 'cpu', tensorboard = true,\n"
    "}\n";

/* cmocka's state: the suite's folder (test_folder_with), with the config in it. */
static int setup(void **state)
{
    *state = test_folder_with((const char *const[]){ "exp.lua", experiment, NULL });
    return 0;
}

/* ---- Our own reader: TFRecord framing, then Event { wall_time, step, file_version, summary } ---- */

typedef struct event {
    double wall_time;
    int64_t step;
    char tag[64];             /* the summary value's tag, or "" */
    float value;
    char version[32];         /* file_version, or "" */
} event;

typedef struct events {
    event e[4096];
    int n;
    int files;
} events;

static uint64_t le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static uint64_t varint(const unsigned char **p, const unsigned char *end)
{
    uint64_t v = 0;
    for (int shift = 0; *p < end && shift < 64; shift += 7) {
        unsigned char c = *(*p)++;
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) return v;
    }
    fail_msg("a varint runs past its message");
    return 0;
}

/* Calls field(number, wire type, value or NULL, bytes' start, bytes' length) for each field. */
typedef void field_fn(event *e, uint64_t number, const unsigned char *p, uint64_t v, size_t len);
static void fields(event *e, const unsigned char *p, const unsigned char *end, field_fn *fn)
{
    while (p < end) {
        uint64_t key = varint(&p, end), len;
        switch (key & 7) {
        case 0: fn(e, key >> 3, NULL, varint(&p, end), 0); break;
        case 1: assert_true(end - p >= 8); fn(e, key >> 3, p, le(p, 8), 8); p += 8; break;
        case 5: assert_true(end - p >= 4); fn(e, key >> 3, p, le(p, 4), 4); p += 4; break;
        case 2:
            len = varint(&p, end);
            assert_true(len <= (uint64_t)(end - p));
            fn(e, key >> 3, p, 0, len);
            p += len;
            break;
        default: fail_msg("wire type %d", (int)(key & 7));
        }
    }
}

static void value_field(event *e, uint64_t number, const unsigned char *p, uint64_t v, size_t len)
{
    if (number == 1) snprintf(e->tag, sizeof e->tag, "%.*s", (int)len, (const char *)p);
    if (number == 2) {
        uint32_t bits = (uint32_t)v;
        memcpy(&e->value, &bits, sizeof e->value);
    }
}

static void summary_field(event *e, uint64_t number, const unsigned char *p, uint64_t v, size_t len)
{
    assert_int_equal(number, 1); /* one Value per Summary */
    fields(e, p, p + len, value_field);
}

static void event_field(event *e, uint64_t number, const unsigned char *p, uint64_t v, size_t len)
{
    if (number == 1) memcpy(&e->wall_time, &v, sizeof e->wall_time);
    else if (number == 2) e->step = (int64_t)v;
    else if (number == 3) snprintf(e->version, sizeof e->version, "%.*s", (int)len, (const char *)p);
    else if (number == 5) fields(e, p, p + len, summary_field);
    else fail_msg("unexpected Event field %d", (int)number);
}

/* Every record of one file, its CRCs checked; the first must be the version. */
static void read_event_file(const char *path, events *all)
{
    char err[ERR_LEN], *data;
    size_t len;
    if (read_file(path, &data, &len, err) != 0) fail_msg("%s", err);
    const unsigned char *p = (const unsigned char *)data, *end = p + len;
    int first = all->n;
    while (p < end) {
        assert_true(end - p >= 12);
        uint64_t n = le(p, 8);
        assert_int_equal(le(p + 8, 4), crc32c_mask(crc32c(p, 8)));
        p += 12;
        assert_true(n + 4 <= (uint64_t)(end - p));
        assert_int_equal(le(p + n, 4), crc32c_mask(crc32c(p, n)));
        assert_true(all->n < (int)(sizeof all->e / sizeof *all->e));
        event *e = &all->e[all->n++];
        memset(e, 0, sizeof *e);
        fields(e, p, p + n, event_field);
        assert_true(e->wall_time > 1.5e9); /* seconds since 1970, not since the run began */
        p += n + 4;
    }
    assert_true(all->n > first);
    assert_string_equal(all->e[first].version, "brain.Event:2");
    for (int i = first + 1; i < all->n; i++) assert_string_equal(all->e[i].version, "");
    all->files++;
    free(data);
}

static void read_events(const char *dir, const char *run, events *all)
{
    char pattern[800];
    glob_t g;
    snprintf(pattern, sizeof pattern, "%s/%s/tensorboard/events.out.tfevents.*", dir, run);
    all->n = all->files = 0;
    assert_int_equal(glob(pattern, 0, NULL, &g), 0);
    for (size_t i = 0; i < g.gl_pathc; i++) read_event_file(g.gl_pathv[i], all);
    globfree(&g);
}

/* How many events hold tag at step. */
static int count(const events *all, const char *tag, int64_t step)
{
    int n = 0;
    for (int i = 0; i < all->n; i++) n += strcmp(all->e[i].tag, tag) == 0 && all->e[i].step == step;
    return n;
}

static float value_of(const events *all, const char *tag, int64_t step)
{
    for (int i = 0; i < all->n; i++)
        if (strcmp(all->e[i].tag, tag) == 0 && all->e[i].step == step) return all->e[i].value;
    fail_msg("no %s at step %lld", tag, (long long)step);
    return NAN;
}

/* Each epoch's scalars and each batch's loss exactly once; the epoch's values are metrics.csv's. */
static void expect_whole_run(const char *dir, const char *run, const events *all)
{
    static const char *const epoch_tags[] = { "train/loss", "valid/loss", "valid/accuracy", "lr",
                                              "images_per_second", "epoch_seconds" };
    for (int64_t s = 1; s <= 2 * BATCHES_PER_EPOCH; s++) assert_int_equal(count(all, "batch/train_loss", s), 1);
    assert_int_equal(count(all, "batch/train_loss", 0), 0);
    assert_int_equal(count(all, "batch/train_loss", 2 * BATCHES_PER_EPOCH + 1), 0);
    for (int64_t epoch = 1; epoch <= 2; epoch++)
        for (size_t t = 0; t < sizeof epoch_tags / sizeof *epoch_tags; t++)
            assert_int_equal(count(all, epoch_tags[t], epoch), 1);
    assert_int_equal(count(all, "test/accuracy", 2), 1);
    assert_int_equal(count(all, "test/loss", 2), 1);
    char path[800], err[ERR_LEN], *csv;
    size_t len;
    snprintf(path, sizeof path, "%s/%s/metrics.csv", dir, run);
    if (read_file(path, &csv, &len, err) != 0) fail_msg("%s", err);
    double train_loss, valid_loss, lr;
    const char *row = strchr(csv, '\n') + 1; /* epoch,seconds,train_loss,valid_loss,valid_accuracy,lr,... */
    assert_int_equal(sscanf(row, "1,%*f,%lf,%lf,%*f,%lf", &train_loss, &valid_loss, &lr), 3);
    assert_float_equal(value_of(all, "train/loss", 1), train_loss, 1e-5);
    assert_float_equal(value_of(all, "valid/loss", 1), valid_loss, 1e-5);
    assert_float_equal(value_of(all, "lr", 1), lr, 1e-7);
    free(csv);
    /* The batches' mean losses average to the epoch's training loss (equal batches). */
    double sum = 0;
    for (int64_t s = 1; s <= BATCHES_PER_EPOCH; s++) sum += value_of(all, "batch/train_loss", s);
    assert_float_equal(sum / BATCHES_PER_EPOCH, train_loss, 1e-5);
}

/* ---- The tests ---- */

static void test_crc32c(void **state)
{
    assert_int_equal(crc32c("123456789", 9), 0xE3069283u); /* RFC 3720, B.4 */
    assert_int_equal(crc32c("", 0), 0);
    unsigned char zeros[32] = { 0 };
    assert_int_equal(crc32c(zeros, sizeof zeros), 0x8A9136AAu); /* RFC 3720, B.4: 32 bytes of zeros */
    assert_int_equal(crc32c_mask(0), 0xa282ead8u);
}

/* Runs check_events.py on run's folder with the tensorboard package's reader, or says why not. */
static void tensorboard_reads(const char *dir, const char *run)
{
    char out[4096], line[1200];
    const char *py = test_python();
    snprintf(line, sizeof line, "'%s' -c 'import tensorboard' 2>&1 >/dev/null | tail -1 >&2", py);
    shell_in(dir, line, out, sizeof out);
    out[strcspn(out, "\n")] = '\0';
    if (out[0]) {
        printf("  (skipped reading %s with TensorBoard's reader: %s cannot import tensorboard: %s; "
               "scripts/setup installs it)\n", run, py, out);
        return;
    }
    snprintf(line, sizeof line, "'%s' '%s/tests/check_tensorboard.py' %s/tensorboard %s/metrics.csv %s/summary.json %d",
             py, RX_SOURCE_DIR, run, run, run, BATCHES_PER_EPOCH);
    if (shell_in(dir, line, out, sizeof out) != 0) fail_msg("check_tensorboard.py: %s", out);
}

static void test_one_run(void **state)
{
    const char *dir = *state;
    char out[4096];
    events *all = calloc(1, sizeof *all);
    if (shell_in(dir, "$RUNEXP exp.lua out=run", out, sizeof out) != 0) fail_msg("%s", out);
    assert_int_equal(shell_in(dir, "grep -q 'tensorboard = \"tensorboard\"' run/config.lua", out, sizeof out), 0);
    read_events(dir, "run", all);
    assert_int_equal(all->files, 1);
    expect_whole_run(dir, "run", all);
    tensorboard_reads(dir, "run");
    free(all);
}

/* Extended by a resume, and stopped mid-epoch (SIGTERM at step 13, in epoch 2) then resumed:
 * each process writes a file of its own, and no step is written twice. */
static void test_resumed_runs_write_new_files(void **state)
{
    const char *dir = *state;
    char out[4096];
    events *all = calloc(1, sizeof *all);
    if (shell_in(dir, "$RUNEXP exp.lua out=extended epochs=1 && $RUNEXP resume extended epochs=2", out, sizeof out) != 0)
        fail_msg("%s", out);
    read_events(dir, "extended", all);
    assert_int_equal(all->files, 2);
    assert_int_equal(count(all, "test/loss", 1), 1); /* the first run's own test, at its last epoch */
    expect_whole_run(dir, "extended", all);
    tensorboard_reads(dir, "extended");

    assert_int_equal(shell_in(dir, "RX_STOP_AT_STEP=13 $RUNEXP exp.lua out=stopped", out, sizeof out), 130);
    assert_non_null(strstr(out, "stopped at epoch 2, batch "));
    if (shell_in(dir, "$RUNEXP resume stopped", out, sizeof out) != 0) fail_msg("%s", out);
    read_events(dir, "stopped", all);
    assert_int_equal(all->files, 2);
    expect_whole_run(dir, "stopped", all);
    tensorboard_reads(dir, "stopped");
    free(all);
}

/* A folder that cannot be made: the run ends with the error and exit 1, its results kept; a
 * value that is no folder is refused before the run starts. */
static void test_unwritable_and_bad_values(void **state)
{
    const char *dir = *state;
    char out[4096];
    assert_int_equal(shell_in(dir, "touch afile && $RUNEXP exp.lua out=run epochs=1 tensorboard=\"$PWD/afile/tb\"", out,
                        sizeof out), 1);
    if (!strstr(out, "TensorBoard events not written: ") || !strstr(out, "afile"))
        fail_msg("got: %s", out);
    assert_int_equal(shell_in(dir, "test -f run/summary.json && test -f run/best.safetensors", out, sizeof out), 0);
    assert_int_equal(shell_in(dir, "$RUNEXP exp.lua out=run2 'tensorboard={}'", out, sizeof out), 1);
    assert_non_null(strstr(out, "'tensorboard' must be a string, got table"));
    assert_int_equal(shell_in(dir, "test -e run2", out, sizeof out), 1);
    /* false: none, and the resolved config says nothing of it. */
    assert_int_equal(shell_in(dir, "$RUNEXP exp.lua out=off epochs=1 tensorboard=false && test ! -e off/tensorboard && "
                           "! grep -q tensorboard off/config.lua", out, sizeof out), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c),
        cmocka_unit_test_setup_teardown(test_one_run, setup, test_folder_teardown),
        cmocka_unit_test_setup_teardown(test_resumed_runs_write_new_files, setup, test_folder_teardown),
        cmocka_unit_test_setup_teardown(test_unwritable_and_bad_values, setup, test_folder_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
