/* test_faults.c: the faults a long run meets, each injected for real: a full disk (a file-size
 * limit, ulimit -f), an unwritable run folder, SIGKILL at random moments (during checkpoint
 * writes among them), a loss that turns NaN, a checkpoint that does not fit the config, and a
 * plugin that crashes. Each ends with a one-line message and a non-zero status, and nothing that
 * was saved before is lost. Then the run folder's rules (issue 16): Ctrl-C during validation and
 * during the test stops within a second and resumes; a folder of the user's is never written
 * into; a run folder is never taken over, nor started over when a file is missing; a resumed run
 * whose config was edited is refused unless the changes are accepted. The experiment runs on the
 * CPU on every machine: these are the host's faults, and the stops' timing assumes the CPU's pace
 * (on a GPU, setting up CUDA outlasts the wait before a Ctrl-C). */
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
    "  epochs = 2, threads = 1, device = 'cpu',\n"
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
    test_rmdir(f->dir);
    free(f);
    return 0;
}

/* Runs a shell command line in the fixture's folder (see shell_in). */
static int sh(fixture *f, const char *line, char *out, size_t len)
{
    return shell_in(f->dir, line, out, len);
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
     * resumes, and the resumed run finishes (a run that finished before the kill needs none). */
    fixture *f = *state;
    char out[4096], cmd[1200];
    rx_rng rng = rx_rng_stream(7, 7);
    for (int k = 0; k < 8; k++) {
        int ms = 20 + (int)rx_rng_below(&rng, 400);
        snprintf(cmd, sizeof cmd,
                 "$RUNEXP exp.lua out=k%d epochs=6 & pid=$!; sleep %d.%03d; kill -9 $pid; wait $pid; "
                 "if [ -f k%d/config.lua ] && [ ! -f k%d/summary.json ]; then $RUNEXP resume k%d; fi", k, ms / 1000,
                 ms % 1000, k, k, k);
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
    assert_int_equal(sh(f, "$RUNEXP resume run epochs=3 optim.lr=1e30 --allow-changes", out, sizeof out), 1);
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
    /* The edit is named first; accepted, it no longer fits the checkpoint: both shapes named. */
    assert_int_equal(sh(f, "$RUNEXP resume run model.1.out=8", out, sizeof out), 1);
    assert_non_null(strstr(out, "model[1].out was 16, now 8"));
    assert_int_equal(count_lines(out), 1);
    assert_int_equal(sh(f, "$RUNEXP resume run model.1.out=8 --allow-changes", out, sizeof out), 1);
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

/* ---- Issue 16: the run folder's rules, and stops at any moment ---- */

static bool file_in(fixture *f, const char *name)
{
    char path[800];
    snprintf(path, sizeof path, "%s/%s", f->dir, name);
    return access(path, F_OK) == 0;
}

/* Starts `runexp exp.lua out=run ARGS` in the fixture's folder (stderr to stderr.txt), waits
 * until run/FILE exists and `after_ms` more, sends SIGINT, and returns the exit status; *took
 * gets the seconds from the signal to the exit. */
static int run_and_interrupt(fixture *f, const char *args, const char *file, int after_ms, double *took)
{
    char cmd[1500], wait_for[800];
    snprintf(wait_for, sizeof wait_for, "%s/run/%s", f->dir, file);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        snprintf(cmd, sizeof cmd, "exec '%s/runexp' exp.lua out=run %s >/dev/null 2>stderr.txt", RX_BUILD_DIR, args);
        if (chdir(f->dir) != 0) _exit(99);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(98);
    }
    struct timespec pause = { 0, 1000000 };
    for (int i = 0; i < 60000 && access(wait_for, F_OK) != 0; i++) nanosleep(&pause, NULL);
    struct timespec after = { after_ms / 1000, (after_ms % 1000) * 1000000L };
    nanosleep(&after, NULL);
    double sent = seconds_now();
    kill(pid, SIGINT);
    int status;
    waitpid(pid, &status, 0);
    *took = seconds_now() - sent;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void expect_same_tensors(fixture *f, const char *a, const char *b)
{
    size_t na, nb;
    char *x = checkpoint_tensor_bytes(f->dir, a, &na), *y = checkpoint_tensor_bytes(f->dir, b, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(x, y, na);
    free(x);
    free(y);
}

static char *stderr_text(fixture *f)
{
    char path[800], err[ERR_LEN], *text;
    size_t len;
    snprintf(path, sizeof path, "%s/stderr.txt", f->dir);
    if (read_file(path, &text, &len, err) != 0) fail_msg("%s", err);
    return text;
}

/* Two training batches and a long validation: a Ctrl-C lands in epoch 1's validation, stops it
 * within a second, and saves the epoch as trained; the resume validates it and ends as a run
 * left alone does (metrics without times, weights). Before issue 16 the stop waited for the
 * next epoch's first batch, and the resume looked for a metrics.csv that was not there. */
static void test_stop_during_validation(void **state)
{
    fixture *f = *state;
    char out[4096];
    const char *sizes = "data.train=64 data.valid=400000 data.test=100 epochs=2";
    char whole[600];
    snprintf(whole, sizeof whole, "$RUNEXP exp.lua out=whole %s", sizes);
    assert_int_equal(sh(f, whole, out, sizeof out), 0);
    double took;
    int rc = run_and_interrupt(f, sizes, "last.safetensors", 150, &took);
    char *text = stderr_text(f);
    if (rc != 130) fail_msg("exit %d: %s", rc, text);
    if (took > TEST_STOP_SECONDS) fail_msg("the stop took %.2f s", took);
    expect_message(text, "runexp: stopped at epoch 1, batch 2 (trained, not yet validated): saved run/last.safetensors; "
                         "resume with: " RX_BUILD_DIR "/runexp resume run\n");
    free(text);
    assert_false(file_in(f, "run/metrics.csv"));
    assert_int_equal(sh(f, "$RUNEXP resume run", out, sizeof out), 0);
    assert_int_equal(sh(f, "cut -d, -f1,3-6 whole/metrics.csv > a && cut -d, -f1,3-6 run/metrics.csv > b && cmp a b && "
                           "cmp whole/best.safetensors run/best.safetensors", out, sizeof out), 0);
    expect_same_tensors(f, "whole/last.safetensors", "run/last.safetensors");
}

/* A long test: a Ctrl-C there stops within a second with 130 (it used to finish and exit 0),
 * writes no summary.json, and the resume runs the test and finishes. */
static void test_stop_during_test(void **state)
{
    fixture *f = *state;
    char out[4096];
    const char *sizes = "data.train=64 data.valid=64 data.test=400000 epochs=1";
    double took;
    int rc = run_and_interrupt(f, sizes, "metrics.csv", 150, &took);
    char *text = stderr_text(f);
    if (rc != 130) fail_msg("exit %d: %s", rc, text);
    if (took > TEST_STOP_SECONDS) fail_msg("the stop took %.2f s", took);
    expect_message(text, "runexp: stopped during the test: run/last.safetensors holds the run so far; resume with: "
                         RX_BUILD_DIR "/runexp resume run\n");
    free(text);
    assert_false(file_in(f, "run/summary.json"));
    assert_int_equal(sh(f, "$RUNEXP resume run", out, sizeof out), 0);
    assert_true(file_in(f, "run/summary.json"));
    /* Finished: a resume says so, and changes nothing. */
    assert_int_equal(sh(f, "$RUNEXP resume run", out, sizeof out), 1);
    expect_message(out, "runexp: run: the run is finished (its results are in run/summary.json); to train it further, "
                        "give it more epochs: " RX_BUILD_DIR "/runexp resume run epochs=2\n");
}

/* A folder with a config of the user's in it is not a run folder: nothing is written there. An
 * empty folder may be used. */
static void test_folder_of_the_user_refused(void **state)
{
    fixture *f = *state;
    char out[4096];
    assert_int_equal(sh(f, "mkdir mine && cp exp.lua mine/config.lua", out, sizeof out), 0);
    assert_int_equal(sh(f, "$RUNEXP exp.lua out=mine epochs=1", out, sizeof out), 1);
    expect_message(out, "runexp: mine holds files runexp did not make (config.lua): it is not a run folder, and nothing "
                        "is written into it; choose another out=\n");
    assert_int_equal(sh(f, "$RUNEXP resume mine", out, sizeof out), 1);
    expect_message(out, "runexp: mine holds files runexp did not make (config.lua)");
    assert_int_equal(sh(f, "cmp exp.lua mine/config.lua && [ \"$(ls -A mine)\" = config.lua ]", out, sizeof out), 0);
    assert_int_equal(sh(f, "mkdir empty && $RUNEXP exp.lua out=empty epochs=1 && [ -f empty/summary.json ]", out,
                        sizeof out), 0);
}

/* A run stopped before its first epoch ended (no metrics.csv yet) is still a run: a new run
 * with the same out= is refused (it used to take the folder over), and the resume continues it.
 * A run whose last.safetensors is gone is not started over unless asked to. */
static void test_run_folder_never_taken_over(void **state)
{
    fixture *f = *state;
    char out[4096];
    double took;
    int rc = run_and_interrupt(f, "data.train=20000 epochs=1", "last.safetensors", 30, &took);
    if (rc != 130) fail_msg("exit %d", rc);
    assert_false(file_in(f, "run/metrics.csv"));
    assert_int_equal(sh(f, "$RUNEXP exp.lua out=run", out, sizeof out), 1);
    expect_message(out, "runexp: run already holds a run; choose another out=, remove it, or continue it with: "
                        RX_BUILD_DIR "/runexp resume run\n");
    assert_int_equal(sh(f, "$RUNEXP resume run", out, sizeof out), 0);
    assert_true(file_in(f, "run/summary.json"));
    assert_int_equal(sh(f, "rm run/last.safetensors; $RUNEXP resume run epochs=2", out, sizeof out), 1);
    expect_message(out, "runexp: run: last.safetensors is missing, so the run cannot continue (nothing was changed); "
                        "start it over with: " RX_BUILD_DIR "/runexp resume run --restart\n");
    assert_true(file_in(f, "run/summary.json"));
    assert_int_equal(sh(f, "$RUNEXP resume run --restart epochs=1 && [ -f run/last.safetensors ]", out, sizeof out), 0);
}

/* A resumed run whose config was edited (in its config.lua or on the command line) is refused,
 * naming each change, unless the changes are accepted; more epochs are always accepted. */
static void test_edited_config_refused(void **state)
{
    fixture *f = *state;
    char out[4096];
    assert_int_equal(sh(f, "$RUNEXP exp.lua out=run epochs=1", out, sizeof out), 0);
    assert_int_equal(sh(f, "sed -i 's/seed = 1,/seed = 5,/' run/config.lua && $RUNEXP resume run epochs=2 "
                           "data.batch_size=64", out, sizeof out), 1);
    expect_message(out, "runexp: run: the config differs from the one the run started with (run/started.lua): "
                        "data.batch_size was 32, now 64; seed was 1, now 5; a resumed run goes on bit for bit only "
                        "unchanged: undo the changes (in run/config.lua or the command line), or accept them with: "
                        RX_BUILD_DIR "/runexp resume run --allow-changes\n");
    assert_int_equal(count_lines(out), 1);
    assert_int_equal(sh(f, "$RUNEXP resume run epochs=2 --allow-changes && grep -c 'seed = 5' run/started.lua", out,
                        sizeof out), 0);
    assert_int_equal(sh(f, "$RUNEXP resume run epochs=3", out, sizeof out), 0);
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
        cmocka_unit_test_setup_teardown(test_stop_during_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_during_test, setup, teardown),
        cmocka_unit_test_setup_teardown(test_folder_of_the_user_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_folder_never_taken_over, setup, teardown),
        cmocka_unit_test_setup_teardown(test_edited_config_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
