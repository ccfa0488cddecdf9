/* test_habits.c: the habits of a training tool (issue 20): gradient clipping by global norm
 * against a norm worked out from the weights' own change, early stopping on a scripted sequence of
 * validation losses, both carried bit for bit across a stop and a resume, and how much a run and
 * a sweep print at each log level (-q, -v, log = ...), counted line by line. Every run goes
 * through the command line (build/runexp), as a user's would. */
#include "helpers.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "files.h"
#include "progress.h"
#include "record.h"

/* cmocka's state: the suite's folder (test_folder_with), empty at the start. */
static int setup(void **state)
{
    *state = test_folder_with((const char *const[]){ NULL });
    return 0;
}

static char *read_in(const char *dir, const char *name)
{
    char path[900], err[ERR_LEN], *text;
    size_t len;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (read_file(path, &text, &len, err) != 0) fail_msg("%s", err);
    return text;
}

/* Runs `runexp ARGS` in the fixture's folder; its stdout and stderr are kept in out.txt and
 * err.txt there (read_in). Returns the exit status. */
static int runexp(const char *dir, const char *args)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s/runexp' %s >out.txt 2>err.txt", dir, RX_BUILD_DIR, args);
    int status = system(cmd);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void expect_runexp_ok(const char *dir, const char *args)
{
    int rc = runexp(dir, args);
    if (rc != 0) {
        char *err = read_in(dir, "err.txt");
        fail_msg("runexp %s exited %d: %s", args, rc, err);
    }
}

/* Row `epoch` (from 1) of RUN/metrics.csv. */
static epoch_record metrics_row(const char *dir, const char *run, int epoch)
{
    char name[700];
    snprintf(name, sizeof name, "%s/metrics.csv", run);
    char *csv = read_in(dir, name), *line = csv;
    for (int i = 0; i < epoch && line; i++) line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL;
    if (!line || !*line) fail_msg("%s has no row for epoch %d", name, epoch);
    line[strcspn(line, "\n")] = '\0';
    epoch_record e;
    if (epoch_csv_parse(line, &e) != 0) fail_msg("%s: not a metrics row: %s", name, line);
    free(csv);
    return e;
}

/* The floats of RUN/FILE's tensors, in the file's order; *n of them. */
static float *weights(const char *dir, const char *run, const char *file, size_t *n)
{
    char folder[800];
    snprintf(folder, sizeof folder, "%s/%s", dir, run);
    size_t bytes;
    float *w = (float *)(void *)checkpoint_tensor_bytes(folder, file, &bytes);
    *n = bytes / sizeof(float);
    return w;
}

/* ---- Clipping by global norm ---- */

/* A linear model on 8 samples of 2x2 pixels: one batch, so one step an epoch, and plain SGD, so
 * the step is exactly w - lr * g and the gradient g can be read back from the weights. */
static const char *tiny =
    "return {\n"
    "  data = { 'synthetic', classes = 3, channels = 1, size = 2, train = 8, valid = 8, test = 8, batch_size = 8 },\n"
    "  model = { { 'flatten' }, { 'linear', out = 3 } },\n"
    "  loss = 'cross_entropy',\n"
    "  optim = { 'sgd', lr = 0.5 },\n"
    "  epochs = 1, threads = 1, device = 'cpu',\n"
    "}\n";

/* lr = 0 keeps the initial weights w0; lr = 0.5 gives w1 = w0 - 0.5 g, so g = (w0 - w1) / 0.5 and
 * its norm is worked out here, apart from the host's sum. With clip_grad_norm = norm / 4 the run
 * must record that norm before clipping, count one clipped step, and step by g scaled by
 * (norm / 4) / (norm + 1e-6), torch.nn.utils.clip_grad_norm_'s factor; with a bound above the
 * norm nothing changes, bit for bit. */
static void test_clip_grad_norm_by_hand(void **state)
{
    const char *dir = *state;
    test_write_text(dir, "tiny.lua", tiny);
    expect_runexp_ok(dir, "tiny.lua out=w0 optim.lr=0");
    expect_runexp_ok(dir, "tiny.lua out=plain");
    size_t n, n1;
    float *w0 = weights(dir, "w0", "best.safetensors", &n), *w1 = weights(dir, "plain", "best.safetensors", &n1);
    assert_int_equal(n, 15); /* (3, 4) weights and 3 biases */
    assert_int_equal(n1, n);
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += ((double)w0[i] - w1[i]) / 0.5 * (((double)w0[i] - w1[i]) / 0.5);
    double norm = sqrt(sum);
    assert_true(norm > 1e-3); /* a real gradient */
    assert_true(isnan(metrics_row(dir, "plain", 1).grad_norm)); /* not measured without clipping */

    char args[256];
    snprintf(args, sizeof args, "tiny.lua out=clipped clip_grad_norm=%.17g", norm / 4);
    expect_runexp_ok(dir, args);
    epoch_record e = metrics_row(dir, "clipped", 1);
    if (fabs(e.grad_norm - norm) > 2e-5 * norm || e.grad_norm_max != e.grad_norm)
        fail_msg("grad_norm %.9g (max %.9g), worked out from the weights: %.9g", e.grad_norm, e.grad_norm_max, norm);
    assert_int_equal(e.clipped_steps, 1);
    char *json = read_in(dir, "clipped/summary.json");
    if (!strstr(json, "\"clipped_steps\": 1")) fail_msg("%s", json);
    free(json);
    float *w2 = weights(dir, "clipped", "best.safetensors", &n1);
    double coef = (norm / 4) / (norm + 1e-6);
    for (size_t i = 0; i < n; i++) {
        double want = (double)w0[i] - 0.5 * coef * (((double)w0[i] - w1[i]) / 0.5);
        if (fabs(w2[i] - want) > 1e-6) fail_msg("weight %zu: %.9g after the clipped step, %.9g by hand", i, w2[i], want);
    }

    snprintf(args, sizeof args, "tiny.lua out=loose clip_grad_norm=%.17g", norm * 4);
    expect_runexp_ok(dir, args);
    assert_int_equal(metrics_row(dir, "loose", 1).clipped_steps, 0);
    float *w3 = weights(dir, "loose", "best.safetensors", &n1);
    assert_memory_equal(w3, w1, n * sizeof(float));
    free(w0);
    free(w1);
    free(w2);
    free(w3);
}

/* ---- Early stopping ---- */

/* The learning rate is 0.1 for epoch 1's ten steps and 0 after: from epoch 2 on the weights and
 * so the validation loss stay exactly as they were, a scripted run of epochs without improvement. */
static const char *plateau =
    "return {\n"
    "  data = { 'synthetic', classes = 4, size = 4, train = 320, valid = 160, test = 160, batch_size = 32 },\n"
    "  model = { { 'flatten' }, { 'linear', out = 4 } },\n"
    "  loss = 'cross_entropy',\n"
    "  optim = { 'sgd', lr = function(step) return step < 10 and 0.1 or 0 end },\n"
    "  epochs = 8, threads = 1, device = 'cpu', early_stop = { patience = 2 },\n"
    "}\n";

/* Patience 2: epoch 1 improves (from nothing), epochs 2 and 3 do not, so the run stops after
 * epoch 3 of 8, a success: the test runs on the best weights (epoch 1's), summary.json and the
 * result line say it stopped early. */
static void test_early_stop_on_a_plateau(void **state)
{
    const char *dir = *state;
    test_write_text(dir, "plateau.lua", plateau);
    expect_runexp_ok(dir, "plateau.lua out=flat");
    for (int epoch = 1; epoch <= 3; epoch++)
        assert_int_equal(metrics_row(dir, "flat", epoch).epochs_without_improvement, epoch - 1);
    assert_true(metrics_row(dir, "flat", 2).valid_loss == metrics_row(dir, "flat", 1).valid_loss);
    char *csv = read_in(dir, "flat/metrics.csv");
    assert_int_equal(count_lines(csv), 4); /* the header and three epochs */
    free(csv);
    char *json = read_in(dir, "flat/summary.json");
    static const char *const want[] = { "\"epochs\": 8,", "\"best_epoch\": 1,", "\"stopped_early\": true,",
                                        "\"stopped_epoch\": 3,", "\"test_accuracy\": " };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        if (!strstr(json, want[i])) fail_msg("summary.json lacks %s:\n%s", want[i], json);
    free(json);
    char *out = read_in(dir, "out.txt");
    if (!strstr(out, "best epoch 1 (stopped early after epoch 3); report: flat/report.html\n")) fail_msg("%s", out);
    free(out);

    /* More patience than epochs: every epoch runs, and nothing says it stopped early. */
    expect_runexp_ok(dir, "plateau.lua out=patient early_stop={patience=9}");
    json = read_in(dir, "patient/summary.json");
    if (!strstr(json, "\"stopped_early\": false,") || !strstr(json, "\"stopped_epoch\": 0,")) fail_msg("%s", json);
    free(json);
    assert_int_equal(metrics_row(dir, "patient", 8).epochs_without_improvement, 7);

    /* A finished early stop is finished: a resume says so, and how to go on. */
    assert_int_equal(runexp(dir, "resume flat"), 1);
    char *err = read_in(dir, "err.txt");
    if (!strstr(err, "flat: the run stopped early after epoch 3, 2 epochs without improvement") ||
        !strstr(err, "--allow-changes"))
        fail_msg("%s", err);
    free(err);
}

/* min_delta: a fall of at most min_delta is no improvement for early stopping, though the best
 * checkpoint follows every fall. With a min_delta no loss can fall by, training that does improve
 * stops after 1 + patience epochs, its best epoch the last. Early stopping needs a validation
 * split, said before anything is made. */
static void test_early_stop_min_delta(void **state)
{
    const char *dir = *state;
    test_write_text(dir, "plateau.lua", plateau);
    expect_runexp_ok(dir, "plateau.lua out=delta optim.lr=0.1 'early_stop={patience=2,min_delta=1e9}'");
    epoch_record e1 = metrics_row(dir, "delta", 1), e3 = metrics_row(dir, "delta", 3);
    assert_true(e3.valid_loss < e1.valid_loss); /* it did improve, by less than min_delta */
    assert_int_equal(e3.epochs_without_improvement, 2);
    char *json = read_in(dir, "delta/summary.json");
    if (!strstr(json, "\"stopped_epoch\": 3,") || !strstr(json, "\"best_epoch\": 3,")) fail_msg("%s", json);
    free(json);

    assert_int_equal(runexp(dir, "plateau.lua out=novalid data.valid=0"), 1);
    char *err = read_in(dir, "err.txt");
    if (!strstr(err, "plateau.lua: early_stop watches the validation loss, but data (synthetic) has no validation split"))
        fail_msg("%s", err);
    free(err);
    char path[800];
    struct stat st;
    snprintf(path, sizeof path, "%s/novalid", dir);
    assert_int_not_equal(stat(path, &st), 0);
}

/* ---- Both across a stop and a resume ---- */

/* Big enough (about 0.3 s an epoch) to be stopped mid-epoch; early stopping with a min_delta no
 * fall reaches, so the run ends after epoch 3 of 6; clipping on most steps. */
static const char *long_run =
    "return {\n"
    "  data = { 'synthetic', classes = 10, size = 8, train = 12000, noise = 1.5, batch_size = 32 },\n"
    "  model = {\n"
    "    { 'conv2d', out = 16, kernel = 3, padding = 1 }, { 'relu' }, { 'maxpool', size = 2, stride = 1 },\n"
    "    { 'flatten' }, { 'dropout', p = 0.1 }, { 'linear', out = 10 },\n"
    "  },\n"
    "  loss = 'cross_entropy',\n"
    "  optim = { 'sgd', lr = 0.01, momentum = 0.9 },\n"
    "  epochs = 6, threads = 2, device = 'cpu', clip_grad_norm = 0.5,\n"
    "  early_stop = { patience = 2, min_delta = 1e9 },\n"
    "}\n";

/* metrics.csv without its times (seconds, train_seconds, images_per_second): what must repeat. */
static void metrics_without_times(const char *dir, const char *run, char *buf, size_t len)
{
    char name[700];
    snprintf(name, sizeof name, "%s/metrics.csv", run);
    char *csv = read_in(dir, name), *save = NULL;
    size_t used = 0;
    for (char *line = strtok_r(csv, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
        for (int col = 0; *line; col++) {
            size_t k = strcspn(line, ",");
            if (col != 1 && col != 6 && col != 7) used += (size_t)snprintf(buf + used, len - used, "%.*s,", (int)k, line);
            line += k + (line[k] == ',');
        }
    free(csv);
}

/* Starts the long run into RUN and sends SIGINT once metrics.csv has `rows` rows and the next
 * epoch has begun; returns the exit status. */
static int stop_in_epoch(const char *dir, const char *run, int rows)
{
    char out[700], metrics[800];
    snprintf(out, sizeof out, "out=%s/%s", dir, run);
    snprintf(metrics, sizeof metrics, "%s/%s/metrics.csv", dir, run);
    char config[700];
    snprintf(config, sizeof config, "%s/long.lua", dir);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr)) _exit(99);
        execl(RX_BUILD_DIR "/runexp", "runexp", config, out, (char *)NULL);
        _exit(98);
    }
    struct timespec pause = { 0, 2000000 };
    for (int i = 0; i < 30000; i++) {
        char *text, err[ERR_LEN];
        size_t len;
        if (access(metrics, F_OK) == 0 && read_file(metrics, &text, &len, err) == 0) {
            int lines = count_lines(text);
            free(text);
            if (lines > rows) break;
        }
        nanosleep(&pause, NULL);
    }
    struct timespec into = { 0, 60000000 }; /* into the next epoch */
    nanosleep(&into, NULL);
    kill(pid, SIGINT);
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Stopped mid-epoch 2 (the gradient norms' partial sums and early stopping's best in
 * last.safetensors) and mid-epoch 3 (its count of epochs without improvement too), then
 * resumed: both end as the run left alone, bit for bit: weights, the rows of metrics.csv with
 * their norms, clipped steps and counts, and the epoch it stopped at. */
static void test_resume_carries_both(void **state)
{
    const char *dir = *state;
    test_write_text(dir, "long.lua", long_run);
    expect_runexp_ok(dir, "long.lua out=whole");
    static char want[8192], got[8192];
    metrics_without_times(dir, "whole", want, sizeof want);
    epoch_record e = metrics_row(dir, "whole", 3);
    assert_true(e.clipped_steps > 0 && e.grad_norm > 0 && e.epochs_without_improvement == 2);
    char *json = read_in(dir, "whole/summary.json");
    if (!strstr(json, "\"stopped_epoch\": 3,")) fail_msg("%s", json);
    free(json);
    static const char *const runs[] = { "two", "three" };
    for (int i = 0; i < 2; i++) {
        assert_int_equal(stop_in_epoch(dir, runs[i], i + 1), 130);
        char args[128];
        snprintf(args, sizeof args, "resume %s", runs[i]);
        expect_runexp_ok(dir, args);
        metrics_without_times(dir, runs[i], got, sizeof got);
        assert_string_equal(got, want);
        size_t na, nb;
        float *a = weights(dir, "whole", "last.safetensors", &na), *b = weights(dir, runs[i], "last.safetensors", &nb);
        assert_int_equal(na, nb);
        assert_memory_equal(a, b, na * sizeof(float));
        free(a);
        free(b);
        char name[64];
        snprintf(name, sizeof name, "%s/summary.json", runs[i]);
        json = read_in(dir, name);
        if (!strstr(json, "\"stopped_epoch\": 3,")) fail_msg("%s: %s", runs[i], json);
        free(json);
    }
}

/* ---- Log levels ---- */

static const char *sweep =
    "local base = {\n"
    "  data = { 'synthetic', classes = 4, size = 4, train = 64, valid = 32, test = 32, batch_size = 32 },\n"
    "  model = { { 'flatten' }, { 'linear', out = 4 } },\n"
    "  loss = 'cross_entropy', optim = { 'sgd', lr = 0.1 }, epochs = 2, threads = 1,\n"
    "}\n"
    "for i = 1, 6 do\n"
    "  runexp.train(runexp.with(base, { optim = { lr = 0.02 * i }, out = RUNS .. '/lr' .. i }))\n"
    "end\n";

/* The same six runs through runexp.map, which names each run before its epoch lines. */
static const char *sweep_map =
    "local base = {\n"
    "  data = { 'synthetic', classes = 4, size = 4, train = 64, valid = 32, test = 32, batch_size = 32 },\n"
    "  model = { { 'flatten' }, { 'linear', out = 4 } },\n"
    "  loss = 'cross_entropy', optim = { 'sgd', lr = 0.1 }, epochs = 2, threads = 1,\n"
    "}\n"
    "local exps, labels = {}, {}\n"
    "for i = 1, 6 do\n"
    "  exps[i] = runexp.with(base, { optim = { lr = 0.02 * i }, out = 'm/lr' .. i })\n"
    "  labels[i] = 'lr' .. i\n"
    "end\n"
    "runexp.map(exps, { dir = 'm', labels = labels })\n";

static int count_of(const char *text, const char *what)
{
    int n = 0;
    for (const char *at = text; (at = strstr(at, what)); at += strlen(what)) n++;
    return n;
}

/* The measure: a sweep of 6 short runs prints one line per epoch per run and nothing
 * else at the default level (device = "auto" included: where it chooses the CPU, a script's
 * runs say so only when verbose); nothing at all with -q; every run's resolved config with -v. The
 * same through runexp.map: its lines are the runs' epoch lines, each after its run's label. */
static void test_sweep_prints_a_line_per_epoch(void **state)
{
    const char *dir = *state;
    static const struct { const char *flag, *runs; } levels[] = { { "", "a" }, { "-q", "b" }, { "-v", "c" } };
    for (int k = 0; k < 3; k++) {
        char program[1200], args[128];
        snprintf(program, sizeof program, "local RUNS = '%s'\n%s", levels[k].runs, sweep);
        test_write_text(dir, "sweep.lua", program);
        snprintf(args, sizeof args, "%s sweep.lua", levels[k].flag);
        expect_runexp_ok(dir, args);
        char *out = read_in(dir, "out.txt"), *err = read_in(dir, "err.txt");
        if (err[0]) fail_msg("runexp %s wrote on stderr: %s", args, err);
        if (k == 0) {
            if (count_lines(out) != 12 || count_of(out, "\nepoch ") != 11 || strncmp(out, "epoch 1/2  ", 11) != 0)
                fail_msg("a sweep of 6 runs of 2 epochs printed %d lines, not 12 epoch lines:\n%s", count_lines(out), out);
        } else if (k == 1) {
            if (out[0]) fail_msg("-q: a sweep printed:\n%s", out);
        } else if (count_of(out, "-- The resolved experiment") != 6 || count_of(out, "test accuracy ") != 6) {
            fail_msg("-v: every run's config and result expected:\n%s", out);
        }
        free(out);
        free(err);
    }
    test_write_text(dir, "map.lua", sweep_map);
    expect_runexp_ok(dir, "map.lua");
    char *out = read_in(dir, "out.txt");
    for (int i = 1; i <= 6; i++)
        for (int e = 1; e <= 2; e++) {
            char line[32];
            snprintf(line, sizeof line, "lr%d: epoch %d/2  ", i, e);
            if (!strstr(out, line)) fail_msg("runexp.map: no \"%s\" in:\n%s", line, out);
        }
    if (count_lines(out) != 12) fail_msg("runexp.map: 6 runs of 2 epochs printed %d lines, not 12:\n%s", count_lines(out), out);
    free(out);
}

/* A run from the command line: a line per epoch and the result line naming report.html; with -q
 * the result line alone; log = "quiet" in the config, -v on the command line: the command line
 * wins. */
static void test_run_levels(void **state)
{
    const char *dir = *state;
    char program[1200];
    snprintf(program, sizeof program, "local RUNS = 'x'\n%s", sweep);
    char *body = strstr(program, "for i = 1");
    snprintf(body, sizeof program - (size_t)(body - program), "base.device = 'cpu'\nreturn base\n");
    test_write_text(dir, "one.lua", program);
    expect_runexp_ok(dir, "one.lua out=normal");
    char *out = read_in(dir, "out.txt");
    if (count_lines(out) != 3 || strncmp(out, "epoch 1/2  ", 11) != 0 || !strstr(out, "\nepoch 2/2  ") ||
        !strstr(out, "\ntest accuracy ") || !strstr(out, "; report: normal/report.html\n"))
        fail_msg("expected two epoch lines and the result:\n%s", out);
    free(out);
    expect_runexp_ok(dir, "one.lua out=quiet -q");
    out = read_in(dir, "out.txt");
    if (count_lines(out) != 1 || strncmp(out, "test accuracy ", 14) != 0) fail_msg("-q: expected the result:\n%s", out);
    free(out);
    snprintf(body, sizeof program - (size_t)(body - program), "base.device, base.log = 'cpu', 'quiet'\nreturn base\n");
    test_write_text(dir, "quiet.lua", program);
    expect_runexp_ok(dir, "quiet.lua out=still");
    out = read_in(dir, "out.txt");
    assert_int_equal(count_lines(out), 1);
    free(out);
    expect_runexp_ok(dir, "quiet.lua out=loud --verbose");
    out = read_in(dir, "out.txt");
    if (!strstr(out, "run folder: loud\n") || !strstr(out, "validation loss decreased")) fail_msg("%s", out);
    free(out);
}

/* The progress bar's time left for the whole run: the rest of this epoch at its pace, then each
 * epoch to come as long as those done took, or as this one will. */
static void test_progress_time_left(void **state)
{
    progress p = { .total = 10, .epoch = 2, .epochs = 5 };
    assert_true(progress_run_left(&p, 0, 0) < 0);                  /* nothing to go by yet */
    assert_true(fabs(progress_run_left(&p, 5, 10) - 70) < 1e-9);   /* 10 s of this epoch, 3 x 20 s */
    p.later_epoch_seconds = 30;
    assert_true(fabs(progress_run_left(&p, 5, 10) - 100) < 1e-9);  /* 10 s, then 3 x 30 s */
    p.epoch = 5;
    assert_true(fabs(progress_run_left(&p, 10, 20)) < 1e-9);       /* the last batch of the last epoch */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_clip_grad_norm_by_hand, setup, test_folder_teardown),
        cmocka_unit_test_setup_teardown(test_early_stop_on_a_plateau, setup, test_folder_teardown),
        cmocka_unit_test_setup_teardown(test_early_stop_min_delta, setup, test_folder_teardown),
        cmocka_unit_test_setup_teardown(test_resume_carries_both, setup, test_folder_teardown),
        cmocka_unit_test_setup_teardown(test_sweep_prints_a_line_per_epoch, setup, test_folder_teardown),
        cmocka_unit_test_setup_teardown(test_run_levels, setup, test_folder_teardown),
        cmocka_unit_test(test_progress_time_left),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
