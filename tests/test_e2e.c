/* test_e2e.c: whole runs on the synthetic data set: the network must learn, the run folder must
 * hold every promised file, and a bad start must fail with one line and leave nothing behind.
 * Also the command line itself (build/runexp), its exit codes and messages. */
#include "helpers.h"

#include <dirent.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
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
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f->dir);
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
    if (rc == 0) rc = train_run(&c, log, s, err);
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

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

static void test_learns_and_writes_the_run(void **state)
{
    fixture *f = *state;
    char out[600], err[ERR_LEN];
    snprintf(out, sizeof out, "out=%s", f->run);
    char *ov[] = { out };
    run_summary s;
    if (run(f, 1, ov, &s, err) != 0) fail_msg("%s", err);
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
    assert_non_null(strstr(lua, "{ \"conv2d\", out = 16, kernel = 3, stride = 1, padding = 1, bias = true }"));
    free(lua);

    char *log = slurp(f->dir, "log.txt");
    assert_non_null(strstr(log, "epoch 1/4"));
    assert_non_null(strstr(log, "validation loss decreased (inf -> "));
    assert_non_null(strstr(log, "  class0 "));
    assert_non_null(strstr(log, "test accuracy "));
    free(log);

    /* Exactly the promised files, and no temporary file left over. */
    const char *want[] = { "best.safetensors", "config.lua", "last.safetensors", "metrics.csv", "summary.json",
                           "report.html", "train_batch.png", "test_predictions.png" };
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
    assert_string_equal(err, "runexp: command line: optim (sgd): unknown key 'momentun' (accepted: lr, momentum, "
                             "nesterov, weight_decay, dampening)\n");
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_learns_and_writes_the_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_same_seed_same_weights, setup, teardown),
        cmocka_unit_test_setup_teardown(test_learning_is_real, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_start_leaves_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_command_line, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
