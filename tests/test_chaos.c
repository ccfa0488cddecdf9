/* test_chaos.c: a small run (validation, a final test, two threads) killed at 50 random moments
 * of its life, with SIGKILL, SIGINT or SIGTERM: in its start, its epochs, validation, checkpoint
 * writes and the final test. Each is then resumed until it finishes (or started again when it
 * was killed before its folder existed), and must end bit for bit as a run left alone: the
 * same best.safetensors, the same tensors in last.safetensors, the same metrics.csv and
 * summary.json but for the times. A SIGINT or SIGTERM must stop the run within a second. The
 * moments come from a fixed seed, printed, so that a failure can be repeated. */
#include "helpers.h"

#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "files.h"

#define KILLS 50
#define CHAOS_SEED 16


static const char *experiment =
    "return {\n"
    "  data = { 'synthetic', classes = 10, size = 8, train = 3000, valid = 1500, test = 3000, noise = 1.5,\n"
    "           batch_size = 32 },\n"
    "  model = {\n"
    "    { 'conv2d', out = 16, kernel = 3, padding = 1 }, { 'relu' }, { 'maxpool', size = 2, stride = 1 },\n"
    "    { 'flatten' }, { 'dropout', p = 0.1 }, { 'linear', out = 10 },\n"
    "  },\n"
    "  loss = 'cross_entropy',\n"
    "  optim = { 'sgd', lr = 0.01, momentum = 0.9 },\n"
    "  epochs = 3, threads = 2, device = 'cpu',\n"
    "}\n";

/* Starts runexp in dir with the arguments (NULL-terminated), output to dir/log.txt. */
static pid_t start(const char *dir, char *const *argv)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (chdir(dir) != 0 || !freopen("log.txt", "a", stdout) || !freopen("log.txt", "a", stderr)) _exit(99);
        execv(RX_BUILD_DIR "/runexp", argv);
        _exit(98);
    }
    return pid;
}

/* The exit status, or 128 + the signal that ended it. */
static int finish(pid_t pid)
{
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Runs the experiment into run (a new run, or the resume of the one there) to its end. */
static int run_to_end(const char *dir, const char *run)
{
    char out[300], folder[800];
    snprintf(out, sizeof out, "out=%s", run);
    snprintf(folder, sizeof folder, "%s/%s", dir, run);
    char *fresh[] = { "runexp", "exp.lua", out, NULL }, *resume[] = { "runexp", "resume", (char *)run, NULL };
    return finish(start(dir, access(folder, F_OK) == 0 ? resume : fresh));
}

static int sh(const char *dir, const char *line)
{
    char cmd[2000];
    snprintf(cmd, sizeof cmd, "cd '%s' && (%s) >>log.txt 2>&1", dir, line);
    int status = system(cmd);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* run ended as the run left alone ("whole") did. */
static void expect_same_as_whole(const char *dir, const char *run, const char *what)
{
    char line[1500];
    snprintf(line, sizeof line,
             "cmp whole/best.safetensors %s/best.safetensors && "
             "cut -d, -f1,3-6 whole/metrics.csv > a.csv && cut -d, -f1,3-6 %s/metrics.csv > b.csv && cmp a.csv b.csv && "
             "grep -v -e '\"config\"' -e '\"run_dir\"' -e _second -e '\"started\"' whole/summary.json > a.json && "
             "grep -v -e '\"config\"' -e '\"run_dir\"' -e _second -e '\"started\"' %s/summary.json > b.json && "
             "cmp a.json b.json",
             run, run, run);
    if (sh(dir, line) != 0) fail_msg("%s: the results differ from the run left alone (see %s/log.txt)", what, dir);
    size_t na, nb;
    char last[600];
    snprintf(last, sizeof last, "%s/last.safetensors", run);
    char *x = checkpoint_tensor_bytes(dir, "whole/last.safetensors", &na), *y = checkpoint_tensor_bytes(dir, last, &nb);
    if (na != nb || memcmp(x, y, na) != 0) fail_msg("%s: last.safetensors' tensors differ from the run left alone", what);
    free(x);
    free(y);
}

static void test_chaos(void **state)
{
    (void)state;
    char *dir = test_tmpdir(), config[600];
    snprintf(config, sizeof config, "%s/exp.lua", dir);
    FILE *f = fopen(config, "w");
    assert_non_null(f);
    fputs(experiment, f);
    fclose(f);
    double t0 = seconds_now();
    assert_int_equal(run_to_end(dir, "whole"), 0);
    double life = seconds_now() - t0;
    printf("chaos: seed %d, %d kills within the %.2f s a run takes, in %s\n", CHAOS_SEED, KILLS, life, dir);
    fflush(stdout); /* before the children are forked: they would print it again */
    static const int sigs[] = { SIGKILL, SIGINT, SIGTERM };
    rx_rng rng = rx_rng_stream(CHAOS_SEED, 16);
    for (int k = 0; k < KILLS; k++) {
        char run[32], what[160], out[300];
        int sig = sigs[rx_rng_below(&rng, 3)];
        double at = life * 1.05 * rx_rng_uniform(&rng);
        snprintf(run, sizeof run, "k%d", k);
        snprintf(out, sizeof out, "out=%s", run);
        snprintf(what, sizeof what, "kill %d (%s after %.3f s; seed %d)", k, strsignal(sig), at, CHAOS_SEED);
        char *argv[] = { "runexp", "exp.lua", out, NULL };
        pid_t pid = start(dir, argv);
        struct timespec wait = { (time_t)at, (long)((at - (double)(time_t)at) * 1e9) };
        nanosleep(&wait, NULL);
        double sent = seconds_now();
        kill(pid, sig);
        int rc = finish(pid);
        double took = seconds_now() - sent;
        /* A stop's latency; a run that exits 0 got the signal after its last check (while writing
         * its last files) and finished, which a loaded machine can stretch past the bound. */
        if (sig != SIGKILL && rc != 0 && took > TEST_STOP_SECONDS)
            fail_msg("%s: the run took %.2f s to stop (exit %d)", what, took, rc);
        if (rc != 0 && rc != 130 && rc != 128 + sig) fail_msg("%s: exit %d (see %s/log.txt)", what, rc, dir);
        char summary[800];
        snprintf(summary, sizeof summary, "%s/%s/summary.json", dir, run);
        /* Killed after its summary.json was written: finished (a resume would say so). */
        for (int tries = 0; rc != 0 && access(summary, F_OK) != 0; tries++) {
            if (tries == 3) fail_msg("%s: the resume keeps failing (exit %d; see %s/log.txt)", what, rc, dir);
            rc = run_to_end(dir, run);
        }
        expect_same_as_whole(dir, run, what);
        sh(dir, "rm -rf k[0-9]*"); /* keep the folder small */
    }
    test_rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chaos),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
