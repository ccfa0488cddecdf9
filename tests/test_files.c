/* test_files.c: runexp given what an adversary would give it (issue 16, families 4-6), run as a
 * user runs it: a FIFO where a config or a checkpoint is expected (refused at once, the kind of
 * file named, never waited on); last.safetensors' metadata rewritten to contradict the run
 * (refused, the field and its value named); a run folder whose path is not UTF-8 (summary.json
 * still parses, report.html is still UTF-8); and a report that cannot be written (an error and a
 * non-zero exit at the end, the weights kept). */
#include "helpers.h"

#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *experiment =
    "return {\n"
    "  data = { 'synthetic', classes = 10, size = 8, train = 2000, noise = 1.5, batch_size = 32 },\n"
    "  model = { { 'conv2d', out = 8, kernel = 3, padding = 1 }, { 'relu' }, { 'flatten' }, { 'linear', out = 10 } },\n"
    "  loss = 'cross_entropy',\n"
    "  optim = { 'sgd', lr = 0.01, momentum = 0.9 },\n"
    "  epochs = 1, threads = 1, device = 'cpu',\n"
    "}\n";

/* edit_meta.py FILE KEY VALUE: sets one metadata value of a safetensors file, the header
 * rewritten (padded to 8 bytes) and the data left as it was. */
static const char *edit_meta =
    "import json, struct, sys\n"
    "path, key, value = sys.argv[1:4]\n"
    "b = open(path, 'rb').read()\n"
    "n = struct.unpack('<Q', b[:8])[0]\n"
    "h = json.loads(b[8:8 + n])\n"
    "h['__metadata__'][key] = value\n"
    "t = json.dumps(h, separators=(',', ':')).encode()\n"
    "t += b' ' * (-len(t) % 8)\n"
    "open(path, 'wb').write(struct.pack('<Q', len(t)) + t + b[8 + n:])\n";

typedef struct fixture {
    char *dir;
} fixture;

static void write_text(const char *dir, const char *name, const char *text)
{
    char path[700];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *out = fopen(path, "w");
    assert_non_null(out);
    fputs(text, out);
    fclose(out);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->dir = test_tmpdir();
    write_text(f->dir, "exp.lua", experiment);
    write_text(f->dir, "edit_meta.py", edit_meta);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    test_rmdir(f->dir);
    free(f);
    return 0;
}

/* Runs a shell command line in the fixture's folder (see shell_in). */
static int sh(fixture *f, const char *line, char *out, size_t len)
{
    return shell_in(f->dir, line, out, len);
}

/* `line` must fail (exit 1) at once, saying `want` on stderr. "At once" is a bound that tells a
 * refusal from a blocked open (which `timeout 10` ends), not a speed: a CUDA build's start on a
 * busy 2-core machine has taken 1.3 s. */
#define REFUSAL_SECONDS 5.0
static void expect_quick_refusal(fixture *f, const char *line, const char *want)
{
    char out[4096];
    double start = seconds_now();
    int rc = sh(f, line, out, sizeof out);
    double took = seconds_now() - start;
    if (rc != 1 || !strstr(out, want)) fail_msg("'%s' exited %d saying: %s(wanted \"%s\")", line, rc, out, want);
    if (took > REFUSAL_SECONDS) fail_msg("'%s' took %.2f s to refuse", line, took);
}

static void test_fifo_config_and_checkpoint(void **state)
{
    fixture *f = *state;
    char out[4096];
    /* timeout: a blocking open would hang the suite; it ends the command instead (exit 124). */
    assert_int_equal(sh(f, "mkfifo fifo.lua", out, sizeof out), 0);
    expect_quick_refusal(f, "timeout 10 $RUNEXP fifo.lua", "fifo.lua: is a FIFO, expected a regular file");
    assert_int_equal(sh(f, "$RUNEXP exp.lua out=run", out, sizeof out), 0);
    assert_int_equal(sh(f, "cp -r run run2 && rm run/last.safetensors && mkfifo run/last.safetensors", out, sizeof out), 0);
    expect_quick_refusal(f, "timeout 10 $RUNEXP resume run epochs=2",
                         "run/last.safetensors: is a FIFO, expected a regular file");
    assert_int_equal(sh(f, "rm run2/config.lua && mkfifo run2/config.lua", out, sizeof out), 0);
    expect_quick_refusal(f, "timeout 10 $RUNEXP resume run2 epochs=2", "config.lua: is a FIFO, expected a regular file");
}

/* A copy of the finished one-epoch run with one metadata value of last.safetensors changed must
 * be refused on resume with `want`. */
static void expect_meta_refused(fixture *f, const char *key, const char *value, const char *want)
{
    char out[4096], line[600];
    snprintf(line, sizeof line, "rm -rf bad && cp -r run bad && python3 edit_meta.py bad/last.safetensors %s '%s'", key,
             value);
    assert_int_equal(sh(f, line, out, sizeof out), 0);
    expect_quick_refusal(f, "$RUNEXP resume bad epochs=3", want);
}

static void test_resume_metadata_that_contradicts_the_run(void **state)
{
    fixture *f = *state;
    char out[4096];
    assert_int_equal(sh(f, "$RUNEXP exp.lua out=run", out, sizeof out), 0);
    /* The edit itself keeps the file valid: the unchanged value resumes. */
    assert_int_equal(sh(f, "cp -r run same && python3 edit_meta.py same/last.safetensors step 63 && "
                           "$RUNEXP resume same epochs=2", out, sizeof out), 0);
    /* 2000 images of 32: 63 batches an epoch, so one epoch done is 63 steps. */
    expect_meta_refused(f, "batch", "500", "last.safetensors: metadata 'batch' is 500, past the end of an epoch of 63 batches");
    expect_meta_refused(f, "epoch", "7", "last.safetensors: the run has done 7 epochs, more than epochs=3");
    expect_meta_refused(f, "step", "5", "metadata 'step' is 5, but 1 epochs of 63 batches and 0 batches more make 63");
    expect_meta_refused(f, "step", "99999999999999999999", "metadata 'step' is ");
    expect_meta_refused(f, "step", "-3", "metadata 'step' is missing or not a count");
    expect_meta_refused(f, "best_epoch", "2", "metadata 'best_epoch' is 2, past the 1 epochs done");
    expect_meta_refused(f, "train_seconds", "0", "metadata 'train_seconds' is 0, expected a finite number above 0");
    expect_meta_refused(f, "loss_sum", "inf", "metadata 'loss_sum' is inf, expected a finite number");
    expect_meta_refused(f, "epoch_seconds", "-1", "metadata 'epoch_seconds' is -1, expected a finite number of 0 or more");
}

static void test_run_folder_not_utf8(void **state)
{
    fixture *f = *state;
    char out[4096];
    /* out= with the byte 0xff (and a control character) in the folder's name. */
    assert_int_equal(sh(f, "d=\"$(printf 'bad\\377\\001name')\" && $RUNEXP exp.lua out=\"$d/run\" && "
                           "python3 -c 'import json, sys; json.load(open(sys.argv[1], \"rb\"))' \"$d/run/summary.json\" && "
                           "python3 -c 'import sys; open(sys.argv[1], \"rb\").read().decode(\"utf-8\")' \"$d/run/report.html\"",
                        out, sizeof out), 0);
}

static void test_report_not_written_fails_the_run(void **state)
{
    fixture *f = *state;
    char out[4096];
    assert_int_equal(sh(f, "$RUNEXP exp.lua out=run && rm run/report.html && mkdir run/report.html", out, sizeof out), 0);
    assert_int_equal(sh(f, "$RUNEXP resume run epochs=2", out, sizeof out), 1);
    if (!strstr(out, "runexp: report.html not written: ") || !strstr(out, "run/report.html: cannot write: "))
        fail_msg("got: %s", out);
    assert_non_null(strstr(out, "(the run finished; its weights and metrics are in run)"));
    /* What was computed is all there. */
    assert_int_equal(sh(f, "test -f run/best.safetensors && test -f run/summary.json && "
                           "test $(wc -l < run/metrics.csv) -eq 3", out, sizeof out), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fifo_config_and_checkpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_metadata_that_contradicts_the_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_folder_not_utf8, setup, teardown),
        cmocka_unit_test_setup_teardown(test_report_not_written_fails_the_run, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
