/* test_e2e.c: whole runs on the synthetic data set: the network must learn, the run folder must
 * hold every promised file, and a bad start must fail with one line and leave nothing behind.
 * Also the command line itself (build/runexp), its exit codes and messages. */
#include "helpers.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "evaluate.h"
#include "files.h"
#include "train.h"

/* A task a linear model cannot solve perfectly and chance gets 10% of: the net has to learn. */
static const char *experiment =
    "return {\n"
    "  data = { 'synthetic', classes = 10, size = 8, train = 4000, noise = 1.5, batch_size = 32 },\n"
    "  model = {\n"
    "    { 'conv2d', out = 16, kernel = 3, padding = 1 }, { 'relu' }, { 'maxpool', size = 2, stride = 1 },\n"
    "    { 'flatten' }, { 'dropout', p = 0.1 }, { 'linear', out = 10 },\n"
    "  },\n"
    "  loss = 'cross_entropy',\n"
    "  optim = { 'sgd', lr = 0.01, momentum = 0.9 },\n"
    "  epochs = 4, threads = 2, device = 'cpu',\n" /* the CPU even where a GPU is usable */
    "}\n";

typedef struct fixture {
    char *dir;
    char config[512], run[512], log[512];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->dir = test_tmpdir();
    snprintf(f->config, sizeof f->config, "%s/exp.lua", f->dir);
    snprintf(f->run, sizeof f->run, "%s/run", f->dir);
    snprintf(f->log, sizeof f->log, "%s/log.txt", f->dir);
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

/* Loads the fixture's config with overrides and runs it; returns train_run's result. */
static int run(fixture *f, int n, char *const *overrides, run_summary *s, char *err)
{
    plugin_path pp;
    test_plugin_path(&pp);
    config c;
    FILE *log = fopen(f->log, "w");
    assert_non_null(log);
    int rc = config_load(&c, &pp, f->config, n, overrides, err);
    if (rc == 0) rc = train_run(&c, 0, log, s, err);
    run_summary_free(s); /* these tests read the summary, not its history */
    fclose(log);
    config_free(&c);
    return rc;
}

static char *slurp(const char *dir, const char *name)
{
    char path[700], err[ERR_LEN], *data;
    size_t len;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (read_file(path, &data, &len, err) != 0) fail_msg("%s", err);
    return data;
}

static void test_learns_and_writes_the_run(void **state)
{
    fixture *f = *state;
    char out[600], err[ERR_LEN];
    snprintf(out, sizeof out, "out=%s", f->run);
    char *ov[] = { out, "log=verbose" }; /* the lines checked below are the verbose level's */
    run_summary s;
    if (run(f, 2, ov, &s, err) != 0) fail_msg("%s", err);
    if (s.test.accuracy < 0.9) fail_msg("test accuracy %.3f, expected at least 0.9", s.test.accuracy);
    assert_true(s.best_epoch >= 1 && s.best_epoch <= 4);
    assert_true(s.best_valid_loss < 0.5);
    assert_string_equal(s.device, "cpu");

    char *csv = slurp(f->run, "metrics.csv");
    assert_int_equal(strncmp(csv, "epoch,seconds,train_loss,valid_loss,valid_accuracy,lr", 52), 0);
    assert_int_equal(count_lines(csv), 5);
    assert_non_null(strstr(csv, "\n4,"));
    free(csv);

    char *json = slurp(f->run, "summary.json");
    static const char *keys[] = { "\"test_accuracy\"", "\"test_loss\"", "\"per_class_accuracy\"", "\"class0\"",
                                  "\"best_valid_loss\"", "\"best_epoch\"", "\"epochs\": 4", "\"train_seconds_per_epoch\"",
                                  "\"images_per_second\"", "\"device\": \"cpu\"" };
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        if (!strstr(json, keys[i])) fail_msg("summary.json lacks %s:\n%s", keys[i], json);
    free(json);

    char *lua = slurp(f->run, "config.lua");
    assert_non_null(
        strstr(lua, "{ \"conv2d\", out = 16, kernel = 3, stride = 1, padding = 1, bias = true, precision = \"fp32\", pool = 0 }"));
    free(lua);

    char *log = slurp(f->dir, "log.txt");
    assert_non_null(strstr(log, "epoch 1/4"));
    assert_non_null(strstr(log, "validation loss decreased (inf -> "));
    assert_non_null(strstr(log, "  class0 "));
    assert_non_null(strstr(log, "test accuracy "));
    free(log);

    /* Exactly the promised files, and no temporary file left over. */
    const char *want[] = { "best.safetensors", "config.lua", "last.safetensors", "metrics.csv", "summary.json",
                           "report.html", "train_batch.png", "test_predictions.png", "started.lua" };
    int found = 0;
    DIR *d = opendir(f->run);
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        bool ok = false;
        for (size_t i = 0; i < sizeof want / sizeof *want; i++) ok |= strcmp(e->d_name, want[i]) == 0;
        if (!ok) fail_msg("unexpected file in the run folder: %s", e->d_name);
        found++;
    }
    closedir(d);
    assert_int_equal(found, (int)(sizeof want / sizeof *want));
    /* Nor the folder the run was made in before it was renamed into place. */
    d = opendir(f->dir);
    for (struct dirent *e; (e = readdir(d));)
        if (strstr(e->d_name, ".starting-")) fail_msg("left over: %s", e->d_name);
    closedir(d);

    /* A second run into the same folder is refused: nothing is overwritten. */
    assert_int_equal(run(f, 1, ov, &s, err), -1);
    assert_non_null(strstr(err, "already holds a run"));
}

static void test_same_seed_same_weights(void **state)
{
    fixture *f = *state;
    char out[600], err[ERR_LEN];
    char *paths[2];
    for (int k = 0; k < 2; k++) {
        snprintf(out, sizeof out, "out=%s/same%d", f->dir, k);
        char *ov[] = { out, "epochs=2" };
        run_summary s;
        if (run(f, 2, ov, &s, err) != 0) fail_msg("%s", err);
        paths[k] = strdup(out + 4);
    }
    /* The tensors, byte for byte; the metadata holds timings, which differ. */
    size_t len[2];
    char *blob[2];
    for (int k = 0; k < 2; k++) {
        char path[700], err2[ERR_LEN];
        snprintf(path, sizeof path, "%s/last.safetensors", paths[k]);
        if (read_file(path, &blob[k], &len[k], err2) != 0) fail_msg("%s", err2);
    }
    uint64_t h[2] = { 0, 0 };
    for (int k = 0; k < 2; k++)
        for (int b = 0; b < 8; b++) h[k] |= (uint64_t)(unsigned char)blob[k][b] << (8 * b);
    assert_int_equal(len[0] - h[0], len[1] - h[1]);
    assert_memory_equal(blob[0] + 8 + h[0], blob[1] + 8 + h[1], len[0] - 8 - h[0]);
    free(blob[0]);
    free(blob[1]);
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "cmp -s '%s/best.safetensors' '%s/best.safetensors'", paths[0], paths[1]);
    assert_int_equal(system(cmd), 0);
    free(paths[0]);
    free(paths[1]);
}

static void test_learning_is_real(void **state)
{
    /* The same run with a learning rate of zero stays at chance: the accuracy above is earned. */
    fixture *f = *state;
    char out[600], err[ERR_LEN];
    snprintf(out, sizeof out, "out=%s/frozen", f->dir);
    char *ov[] = { out, "optim.lr=0", "epochs=1" };
    run_summary s;
    if (run(f, 3, ov, &s, err) != 0) fail_msg("%s", err);
    assert_true(s.test.accuracy < 0.3);
}

static void test_bad_start_leaves_nothing(void **state)
{
    fixture *f = *state;
    char out[600], err[ERR_LEN];
    snprintf(out, sizeof out, "out=%s", f->run);
    run_summary s;
    /* A kernel that does not fit the image, found when the network is built. */
    char *shapes[] = { out, "model.1.kernel=11" };
    assert_int_equal(run(f, 2, shapes, &s, err), -1);
    assert_non_null(strstr(err, "exp.lua: model[1] (conv2d): "));
    assert_non_null(strstr(err, "input shape (3, 8, 8)"));
    struct stat st;
    assert_int_equal(stat(f->run, &st), -1);
    /* A data set that cannot be read. */
    FILE *cfg = fopen(f->config, "w");
    fprintf(cfg, "%.*s", (int)(strstr(experiment, "  data =") - experiment), experiment);
    fputs("  data = { 'cifar10', path = '/nonexistent' },\n", cfg);
    fputs(strstr(experiment, "  model ="), cfg);
    fclose(cfg);
    assert_int_equal(run(f, 1, shapes, &s, err), -1);
    assert_non_null(strstr(err, "exp.lua: data (cifar10): "));
    assert_non_null(strstr(err, "/nonexistent"));
    assert_int_equal(stat(f->run, &st), -1);
}

/* Runs build/runexp with args; returns its exit status, its stderr in err_out. */
static int runexp(fixture *f, const char *args, char *err_out, size_t len)
{
    char cmd[2048], path[600];
    snprintf(path, sizeof path, "%s/stderr.txt", f->dir);
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s/runexp' %s >/dev/null 2>'%s'", f->dir, RX_BUILD_DIR, args, path);
    int status = system(cmd);
    FILE *e = fopen(path, "r");
    size_t n = e ? fread(err_out, 1, len - 1, e) : 0;
    err_out[n] = '\0';
    if (e) fclose(e);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void test_command_line(void **state)
{
    fixture *f = *state;
    char err[4096];
    assert_int_equal(runexp(f, "--version", err, sizeof err), 0);
    assert_int_equal(runexp(f, "", err, sizeof err), 2);
    assert_non_null(strstr(err, "usage: runexp CONFIG.lua"));
    assert_int_equal(runexp(f, "--frobnicate", err, sizeof err), 2);
    assert_int_equal(runexp(f, "exp.lua optim.momentun=0.5", err, sizeof err), 1);
    assert_string_equal(err, "runexp: command line: optim (sgd): unknown key 'momentun' (accepted: lr, weight_decay, "
                             "schedule, momentum, nesterov, dampening)\n");
    /* Where no GPU is usable (or CUDA is not built in), device=cuda is a clear one-line error. */
    if (runexp(f, "exp.lua epochs=1 out=cli-cuda device=cuda", err, sizeof err) != 0) {
        assert_non_null(strstr(err, "device = \"cuda\", but "));
        assert_int_equal(count_lines(err), 1);
    }
    assert_int_equal(runexp(f, "missing.lua", err, sizeof err), 1);
    assert_non_null(strstr(err, "missing.lua"));
    assert_int_equal(runexp(f, "exp.lua epochs=1 out=cli", err, sizeof err), 0);
    assert_string_equal(err, "");
}

/* ---- Runs without validation, frozen tensors, schedules, weight averaging ---- */

/* A copy of tensor NAME of a safetensors file; *n: its length in floats. */
static float *tensor_in(const char *dir, const char *file, const char *name, size_t *n)
{
    char path[700], err[ERR_LEN], *blob, key[128];
    size_t len;
    snprintf(path, sizeof path, "%s/%s", dir, file);
    if (read_file(path, &blob, &len, err) != 0) fail_msg("%s", err);
    uint64_t h = 0;
    for (int b = 0; b < 8; b++) h |= (uint64_t)(unsigned char)blob[b] << (8 * b);
    snprintf(key, sizeof key, "\"%s\":{", name);
    char *at = strstr(blob + 8, key), *offsets = at ? strstr(at, "\"data_offsets\":[") : NULL;
    if (!at || at > blob + 8 + h || !offsets) fail_msg("%s has no tensor '%s'", path, name);
    unsigned long long from, to;
    assert_int_equal(sscanf(offsets + 16, "%llu,%llu", &from, &to), 2);
    assert_true(from <= to && 8 + h + to <= len);
    *n = (size_t)(to - from) / sizeof(float);
    float *t = malloc(to - from + 1);
    memcpy(t, blob + 8 + h + from, to - from);
    free(blob);
    return t;
}

/* Whether tensor NAME holds the same bytes in two checkpoints. */
static bool same_tensor(const char *dir_a, const char *file_a, const char *dir_b, const char *file_b, const char *name)
{
    size_t na, nb;
    float *a = tensor_in(dir_a, file_a, name, &na), *b = tensor_in(dir_b, file_b, name, &nb);
    bool same = na == nb && memcmp(a, b, na * sizeof(float)) == 0;
    free(a);
    free(b);
    return same;
}

/* The experiment's four trained tensors, in checkpoint order. */
static const char *const tensors[] = { "0.weight", "0.bias", "5.weight", "5.bias" };

/* Runs the fixture's experiment into DIR/NAME (1000 training images) with more overrides. */
static void run_into(fixture *f, const char *name, int n, char *const *more, run_summary *s)
{
    char out[600], err[ERR_LEN];
    char *ov[12] = { out, "data.train=1000" };
    snprintf(out, sizeof out, "out=%s/%s", f->dir, name);
    assert_true(n <= 10);
    for (int i = 0; i < n; i++) ov[2 + i] = more[i];
    if (run(f, 2 + n, ov, s, err) != 0) fail_msg("%s", err);
}

static void test_without_validation(void **state)
{
    fixture *f = *state;
    char *ov[] = { "data.valid=0", "epochs=2", "log=verbose" };
    run_summary s;
    run_into(f, "novalid", 3, ov, &s);
    char run_dir[600];
    snprintf(run_dir, sizeof run_dir, "%s/novalid", f->dir);
    assert_true(isnan(s.best_valid_loss));
    assert_int_equal(s.best_epoch, 2);
    assert_int_equal(s.test.total, 500);
    assert_true(s.test.accuracy > 0.5);
    /* The best checkpoint is the last epoch's weights. */
    for (size_t i = 0; i < sizeof tensors / sizeof *tensors; i++)
        assert_true(same_tensor(run_dir, "best.safetensors", run_dir, "last.safetensors", tensors[i]));
    char *json = slurp(run_dir, "summary.json");
    if (!strstr(json, "\"best_valid_loss\": null,") || !strstr(json, "\"best_epoch\": 2,")) fail_msg("%s", json);
    free(json);
    char *csv = slurp(run_dir, "metrics.csv");
    assert_int_equal(count_lines(csv), 3);
    assert_non_null(strstr(csv, "\n2,"));
    free(csv);
    char *log = slurp(f->dir, "log.txt");
    assert_non_null(strstr(log, "no validation split: saved the last epoch's weights as "));
    assert_null(strstr(log, "valid loss"));
    free(log);
    struct stat st;
    char report[700];
    snprintf(report, sizeof report, "%s/report.html", run_dir);
    assert_int_equal(stat(report, &st), 0);
}

static void test_frozen_tensors(void **state)
{
    fixture *f = *state;
    run_summary s;
    char a[600], b[600], c[600];
    snprintf(a, sizeof a, "%s/init", f->dir);
    snprintf(b, sizeof b, "%s/frozen", f->dir);
    snprintf(c, sizeof c, "%s/still", f->dir);
    /* A learning rate of 0 keeps the initial weights. */
    char *init[] = { "optim.lr=0", "epochs=1" };
    run_into(f, "init", 2, init, &s);
    /* The first layer frozen, and the last one's bias: those stay at their initial values
     * through two epochs; the last layer's weight learns. */
    char *frozen[] = { "epochs=2", "model.1.frozen=true", "model.6.frozen={bias=true}" };
    run_into(f, "frozen", 3, frozen, &s);
    assert_true(same_tensor(a, "last.safetensors", b, "last.safetensors", "0.weight"));
    assert_true(same_tensor(a, "last.safetensors", b, "last.safetensors", "0.bias"));
    assert_true(same_tensor(a, "last.safetensors", b, "best.safetensors", "5.bias"));
    assert_false(same_tensor(a, "last.safetensors", b, "last.safetensors", "5.weight"));
    /* The same tensors at lr_scale 0 instead: the very same weights, bit for bit. */
    char *still[] = { "epochs=2", "model.1.lr_scale=0", "model.6.lr_scale={bias=0}" };
    run_into(f, "still", 3, still, &s);
    for (size_t i = 0; i < sizeof tensors / sizeof *tensors; i++)
        assert_true(same_tensor(b, "last.safetensors", c, "last.safetensors", tensors[i]));
    /* The resolved config keeps the rules. */
    char *lua = slurp(b, "config.lua");
    assert_non_null(strstr(lua, "bias = true, precision = \"fp32\", pool = 0, frozen = true }"));
    assert_non_null(strstr(lua, "frozen = { [\"bias\"] = true } }"));
    free(lua);
}

static void test_train_epochs(void **state)
{
    fixture *f = *state;
    run_summary s;
    char one[600], three[600], init[600];
    snprintf(one, sizeof one, "%s/one", f->dir);
    snprintf(three, sizeof three, "%s/three", f->dir);
    snprintf(init, sizeof init, "%s/init", f->dir);
    char *ov1[] = { "epochs=1", "model.6.train_epochs={bias=1}" }, *ov3[] = { "epochs=3", "model.6.train_epochs={bias=1}" };
    char *ov0[] = { "epochs=1", "optim.lr=0" };
    run_into(f, "one", 2, ov1, &s);
    run_into(f, "three", 2, ov3, &s);
    run_into(f, "init", 2, ov0, &s);
    /* Trained in epoch 1, then left as it was; the other tensors go on. */
    assert_false(same_tensor(init, "last.safetensors", one, "last.safetensors", "5.bias"));
    assert_true(same_tensor(one, "last.safetensors", three, "last.safetensors", "5.bias"));
    assert_false(same_tensor(one, "last.safetensors", three, "last.safetensors", "5.weight"));
    assert_false(same_tensor(one, "last.safetensors", three, "last.safetensors", "0.bias"));
}

/* The lr column of a run's metrics.csv; returns the rows. */
static int lr_column(const char *dir, double *lr, int max)
{
    char *csv = slurp(dir, "metrics.csv"), *line = strchr(csv, '\n');
    int n = 0;
    for (; line && line[1] && n < max; line = strchr(line + 1, '\n')) {
        double v[6];
        long long epoch;
        if (sscanf(line + 1, "%lld,%lf,%lf,%lf,%lf,%lf", &epoch, &v[0], &v[1], &v[2], &v[3], &v[4]) != 6)
            fail_msg("bad metrics row: %.80s", line + 1);
        assert_int_equal(epoch, n + 1);
        lr[n++] = v[4];
    }
    free(csv);
    return n;
}

static void assert_near(double got, double want)
{
    if (fabs(got - want) > 1e-5 * fabs(want) + 1e-12) fail_msg("got %.9g, wanted %.9g", got, want);
}

static void test_schedules(void **state)
{
    fixture *f = *state;
    run_summary s;
    char dir[600], err[ERR_LEN];
    double lr[8];
    /* Built in: each epoch's row has the learning rate of its last step. */
    char *step[] = { "epochs=3", "optim.schedule={'step', every=1, gamma=0.5}" };
    run_into(f, "step", 2, step, &s);
    snprintf(dir, sizeof dir, "%s/step", f->dir);
    assert_int_equal(lr_column(dir, lr, 8), 3);
    assert_near(lr[0], 0.01);
    assert_near(lr[1], 0.005);
    assert_near(lr[2], 0.0025);
    char *cosine[] = { "epochs=2", "optim.schedule={'cosine', final=0.1}" };
    run_into(f, "cosine", 2, cosine, &s);
    snprintf(dir, sizeof dir, "%s/cosine", f->dir);
    assert_int_equal(lr_column(dir, lr, 8), 2);
    /* 32 batches an epoch, 64 steps: epoch 1 ends at step 31 of 0 .. 63; epoch 2 at the last. */
    assert_near(lr[0], 0.01 * (0.1 + 0.9 * 0.5 * (1 + cos(M_PI * 31.0 / 63.0))));
    assert_near(lr[1], 0.001);

    /* A Lua function of the step. */
    char file[600];
    snprintf(file, sizeof file, "%s/function.lua", f->dir);
    FILE *out = fopen(file, "w");
    assert_non_null(out);
    fprintf(out, "local e = dofile('%s')\n"
                 "e.optim = { 'sgd', momentum = 0.9,\n"
                 "  lr = function(step, steps) return 0.1 * (1 - step / steps) end }\n"
                 "e.epochs, e.data.train, e.out = 3, 1000, '%s/function'\n"
                 "return e\n", f->config, f->dir);
    fclose(out);
    plugin_path pp;
    test_plugin_path(&pp);
    config c;
    FILE *log = fopen(f->log, "w");
    if (config_load(&c, &pp, file, 0, NULL, err) != 0 || train_run(&c, 0, log, &s, err) != 0) fail_msg("%s", err);
    fclose(log);
    assert_int_equal(s.nhistory, 3);
    for (int e = 0; e < 3; e++) assert_near(s.history[e].lr, 0.1 * (1 - (32.0 * (e + 1) - 1) / 96.0));
    run_summary_free(&s);
    config_free(&c);
    snprintf(dir, sizeof dir, "%s/function", f->dir);
    assert_int_equal(lr_column(dir, lr, 8), 3);
    for (int e = 0; e < 3; e++) assert_near(lr[e], 0.1 * (1 - (32.0 * (e + 1) - 1) / 96.0));
    /* The run's config.lua carries the function, so that a resume follows the same schedule. */
    char again[700];
    snprintf(again, sizeof again, "%s/config.lua", dir);
    if (config_load(&c, &pp, again, 0, NULL, err) != 0) fail_msg("%s", err);
    assert_int_equal(c.sched.kind, SCHED_FUNCTION);
    double v;
    assert_int_equal(config_lr_factor(&c, 48, 96, 2, &v, err), 0);
    assert_near(v, 0.05);
    config_free(&c);
    char *log_text = slurp(f->dir, "log.txt");
    assert_non_null(strstr(log_text, "epoch 3/3"));
    assert_non_null(strstr(log_text, "  lr 0.001042  "));
    free(log_text);
}

static void test_weight_average(void **state)
{
    fixture *f = *state;
    run_summary s;
    char dir[600];
    snprintf(dir, sizeof dir, "%s/ema", f->dir);
    /* Without validation, the best checkpoint is the last epoch's average. */
    char *ov[] = { "epochs=2", "ema=0.9", "data.valid=0" };
    run_into(f, "ema", 3, ov, &s);
    assert_true(s.test.accuracy > 0.5);
    size_t n, k;
    float *avg = tensor_in(dir, "last.safetensors", "ema.weights", &n), *at = avg;
    size_t total = 0;
    for (size_t i = 0; i < sizeof tensors / sizeof *tensors; i++) {
        float *best = tensor_in(dir, "best.safetensors", tensors[i], &k), *last = tensor_in(dir, "last.safetensors", tensors[i], &k);
        assert_true(total + k <= n);
        assert_memory_equal(best, at, k * sizeof(float));
        assert_true(memcmp(best, last, k * sizeof(float)) != 0); /* the average is not the weights */
        at += k;
        total += k;
        free(best);
        free(last);
    }
    assert_int_equal(total, n);
    free(avg);
}

/* The tensors of two runs' last.safetensors, equal to within `bound` of each one's largest value. */
static void expect_close_runs(const char *a_dir, const char *b_dir, const char *const *names, size_t count, double bound)
{
    for (size_t i = 0; i < count; i++) {
        size_t na, nb;
        float *a = tensor_in(a_dir, "last.safetensors", names[i], &na), *b = tensor_in(b_dir, "last.safetensors", names[i], &nb);
        assert_int_equal(na, nb);
        double worst = 0, scale = 1e-30;
        for (size_t k = 0; k < na; k++) {
            worst = fmax(worst, fabs((double)a[k] - b[k]));
            scale = fmax(scale, fabs((double)b[k]));
        }
        if (!(worst <= bound * scale)) fail_msg("%s: differs by %.3g of its largest value %.3g", names[i], worst / scale, scale);
        free(a);
        free(b);
    }
}

/* muon (one call per tensor, each with its shape: rx_optim_ops.per_tensor) learns the task: its
 * filters' update orthogonalized, the linear layer's and the biases' sgd's. A run that handed it
 * a slice or a group of tensors would stop at its first step with muon's refusal. */
static void test_muon_learns(void **state)
{
    fixture *f = *state;
    char out[600], err[ERR_LEN];
    snprintf(out, sizeof out, "out=%s/muon", f->dir);
    char *ov[] = { out, "optim={'muon', lr=0.02, momentum=0.9, sgd_momentum=0.9}" };
    run_summary s;
    if (run(f, 2, ov, &s, err) != 0) fail_msg("%s", err);
    if (s.test.accuracy < 0.9) fail_msg("test accuracy %.3f, expected at least 0.9", s.test.accuracy);
}

/* Two threads take a step in lanes: forward, loss, backward and the update in one parallel region
 * (train.c's train_in_lanes), each thread updating a range of the parameters that cuts across
 * groups. Clipping that never clips takes the step as before (the whole batch's loss, then each
 * group's update with both threads): the same weights, average and momentum, to rounding,
 * through an epoch with dropout, two learning rates, weight decay on some tensors and a moving
 * average. Adam (two state values per parameter, which a range would lay out by its own length)
 * keeps each group's state where a whole group's call has it; muon gets each tensor whole. The synthetic data set declares
 * rx_data_info.parts, so each lane draws its own rows of the batch, where the other path draws
 * the whole batch at once. */
static void test_step_in_lanes(void **state)
{
    fixture *f = *state;
    run_summary s;
    const char *names[] = { "0.weight", "0.bias", "5.weight", "5.bias", "ema.weights", "optim.state" };
    const char *optims[] = { "optim={'sgd', lr=0.01, momentum=0.9}", "optim={'adam', lr=0.001}",
                             "optim={'muon', lr=0.02, momentum=0.9}" };
    for (int k = 0; k < 3; k++) {
        char lanes[600], apart[600];
        snprintf(lanes, sizeof lanes, "lanes%d", k);
        snprintf(apart, sizeof apart, "apart%d", k);
        char *ov[] = { (char *)optims[k], "epochs=1", "ema=0.9", "model.6.lr_scale={bias=0.5}",
                       "optim.weight_decay=0.01", "model.1.weight_decay={bias=0}", "clip_grad_norm=1e30" };
        run_into(f, lanes, 6, ov, &s);
        run_into(f, apart, 7, ov, &s);
        snprintf(lanes, sizeof lanes, "%s/lanes%d", f->dir, k);
        snprintf(apart, sizeof apart, "%s/apart%d", f->dir, k);
        expect_close_runs(lanes, apart, names, 6, 1e-4);
    }
}

/* Evaluation in lanes, each drawing its own rows of every batch (the synthetic set declares
 * rx_data_info.parts), measures a checkpoint as one thread drawing whole batches does: the
 * same accuracy, and the loss to rounding (lanes group a layer's samples otherwise). Batches of
 * 32 over 2 lanes, 400 test samples. */
static void test_evaluation_in_lanes(void **state)
{
    fixture *f = *state;
    run_summary s;
    char *ov[] = { "epochs=1" };
    run_into(f, "eval", 1, ov, &s);
    char checkpoint[700], err[ERR_LEN];
    snprintf(checkpoint, sizeof checkpoint, "%s/eval/best.safetensors", f->dir);
    plugin_path pp;
    test_plugin_path(&pp);
    eval_result e[2];
    for (int threads = 1; threads <= 2; threads++) {
        config c;
        char tv[32];
        snprintf(tv, sizeof tv, "threads=%d", threads);
        char *o[] = { tv, "data.train=1000" };
        if (config_load(&c, &pp, f->config, 2, o, err) != 0 ||
            evaluate_checkpoint(&c, checkpoint, RX_TEST, &e[threads - 1], err) != 0)
            fail_msg("%s", err);
        config_free(&c);
    }
    assert_true(e[0].total > 0 && e[0].total == e[1].total);
    assert_int_equal(e[0].correct, e[1].correct);
    if (!(fabs(e[0].loss - e[1].loss) <= 1e-5 * fabs(e[0].loss)))
        fail_msg("test loss %.9g with one thread, %.9g in lanes", e[0].loss, e[1].loss);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_learns_and_writes_the_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_same_seed_same_weights, setup, teardown),
        cmocka_unit_test_setup_teardown(test_learning_is_real, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_start_leaves_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_command_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_without_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_frozen_tensors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_train_epochs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_schedules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_weight_average, setup, teardown),
        cmocka_unit_test_setup_teardown(test_step_in_lanes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_muon_learns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_evaluation_in_lanes, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
