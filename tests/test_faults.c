/* test_faults.c: the faults a long run meets, each injected for real: a full disk (a file-size
 * limit, ulimit -f), an unwritable run folder, SIGKILL at random moments (during checkpoint
 * writes among them), a loss that turns NaN, a checkpoint that does not fit the config, and a
 * plugin that crashes. Each ends with a one-line message and a non-zero status, and nothing that
 * was saved before is lost. */
#include "helpers.h"

#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "files.h"

static const char *experiment =
    "return {\n"
    "  data = { 'synthetic', classes = 10, size = 8, train = 2000, noise = 1.5, batch_size = 32 },\n"
    "  model = { { 'conv2d', out = 16, kernel = 3, padding = 1 }, { 'relu' }, { 'flatten' }, { 'linear', out = 10 } },\n"
    "  loss = 'cross_entropy',\n"
    "  optim = { 'sgd', lr = 0.01, momentum = 0.9 },\n"
    "  epochs = 2, threads = 1,\n"
    "}\n";

typedef struct fixture {
    char *dir;
    char config[600];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->dir = test_tmpdir();
    snprintf(f->config, sizeof f->config, "%s/exp.lua", f->dir);
    FILE *out = fopen(f->config, "w");
    fputs(experiment, out);
    fclose(out);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f->dir);
    free(f);
    return 0;
}

/* Runs a shell command line in the fixture's folder (build/runexp is $RUNEXP); returns the exit
 * status, or 128 + the signal that ended it; its stderr lands in out. */
static int sh(fixture *f, const char *line, char *out, size_t len)
{
    char cmd[4096], path[700];
    snprintf(path, sizeof path, "%s/stderr.txt", f->dir);
    snprintf(cmd, sizeof cmd, "cd '%s' && RUNEXP='%s/runexp'; (%s) >/dev/null 2>'%s'", f->dir, RX_BUILD_DIR, line, path);
    int status = system(cmd);
    FILE *e = fopen(path, "r");
    size_t n = e ? fread(out, 1, len - 1, e) : 0;
    out[n] = '\0';
    if (e) fclose(e);
    return WEXITSTATUS(status);
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

static bool same_file(const char *a, const char *b)
{
    char cmd[1500];
    snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", a, b);
    return system(cmd) == 0;
}

static void test_full_disk(void **state)
{
    fixture *f = *state;
    char out[4096], last[700], saved[700];
    assert_int_equal(sh(f, "$RUNEXP exp.lua out=run epochs=1", out, sizeof out), 0);
    snprintf(last, sizeof last, "%s/run/last.safetensors", f->dir);
    snprintf(saved, sizeof saved, "%s/saved.safetensors", f->dir);
    assert_int_equal(sh(f, "cp run/last.safetensors saved.safetensors", out, sizeof out), 0);
    /* 60 KB per file (120 blocks of 512 bytes in /bin/sh, which system() runs): metrics.csv and
     * the 43 KB best.safetensors fit, the 86 KB last.safetensors does not. */
    int rc = sh(f, "ulimit -f 120; $RUNEXP resume run epochs=2", out, sizeof out);
    assert_int_equal(rc, 1);
    if (!strstr(out, "run/last.safetensors: cannot write: File too large")) fail_msg("got: %s", out);
    assert_int_equal(count_lines(out), 1);
    assert_true(same_file(last, saved)); /* the previous checkpoint is whole */
    assert_int_equal(sh(f, "ls run | grep -c tmp", out, sizeof out), 1); /* no temporary left */
    /* With room again, the run continues from it. */
    assert_int_equal(sh(f, "$RUNEXP resume run epochs=2", out, sizeof out), 0);
}

static void test_unwritable_folder(void **state)
{
    fixture *f = *state;
    char out[4096];
    assert_int_equal(sh(f, "$RUNEXP exp.lua out=/dev/null/run", out, sizeof out), 1);
    assert_non_null(strstr(out, "runexp: /dev/null: exists and is not a folder"));
    assert_int_equal(count_lines(out), 1);
}

static void test_killed_at_random_moments(void **state)
{
    /* Kills land anywhere, in checkpoint writes among other places; every time, what is on disk
     * resumes, and the resumed run finishes. */
    fixture *f = *state;
    char out[4096], cmd[1200];
    rx_rng rng = rx_rng_stream(7, 7);
    for (int k = 0; k < 8; k++) {
        int ms = 20 + (int)rx_rng_below(&rng, 400);
        snprintf(cmd, sizeof cmd,
                 "$RUNEXP exp.lua out=k%d epochs=6 & pid=$!; sleep %d.%03d; kill -9 $pid; wait $pid; "
                 "if [ -f k%d/config.lua ]; then $RUNEXP resume k%d; fi", k, ms / 1000, ms % 1000, k, k);
        int rc = sh(f, cmd, out, sizeof out);
        if (rc != 0) fail_msg("killed after %d ms, the resume failed (%d): %s", ms, rc, out);
    }
}

static void test_nan_stops_and_keeps_best(void **state)
{
    fixture *f = *state;
    char out[4096], best[700], saved[700];
    assert_int_equal(sh(f, "$RUNEXP exp.lua out=run epochs=1 && cp run/best.safetensors saved.safetensors", out,
                        sizeof out), 0);
    assert_int_equal(sh(f, "$RUNEXP resume run epochs=3 optim.lr=1e30", out, sizeof out), 1);
    assert_non_null(strstr(out, "runexp: epoch 2, batch "));
    assert_non_null(strstr(out, "the loss is"));
    assert_int_equal(count_lines(out), 1);
    snprintf(best, sizeof best, "%s/run/best.safetensors", f->dir);
    snprintf(saved, sizeof saved, "%s/saved.safetensors", f->dir);
    assert_true(same_file(best, saved));
}

static void test_checkpoint_of_another_network(void **state)
{
    fixture *f = *state;
    char out[4096];
    assert_int_equal(sh(f, "$RUNEXP exp.lua out=run epochs=1", out, sizeof out), 0);
    assert_int_equal(sh(f, "$RUNEXP resume run model.1.out=8", out, sizeof out), 1);
    assert_non_null(strstr(out, "tensor '0.weight' has shape (16, 3, 3, 3), the network expects (8, 3, 3, 3)"));
    assert_int_equal(count_lines(out), 1);
}

static void test_plugin_crash_is_named(void **state)
{
    fixture *f = *state;
    char out[4096], line[1200];
    snprintf(line, sizeof line,
             /* Under AddressSanitizer (make test SANITIZE=1), leave SIGSEGV to runexp's own handler. */
             "ASAN_OPTIONS=handle_segv=0 RUNEXP_PLUGIN_PATH='%s/tests/fixtures' $RUNEXP exp.lua out=crashed "
             "'model.2=crash'", RX_BUILD_DIR);
    int rc = sh(f, line, out, sizeof out);
    assert_int_equal(rc, 128 + SIGSEGV);
    assert_non_null(strstr(out, "runexp: crashed with SIGSEGV in model[2] (crash): forward"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_full_disk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unwritable_folder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_killed_at_random_moments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nan_stops_and_keeps_best, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkpoint_of_another_network, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plugin_crash_is_named, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
