/* test_script.c: configs as Lua programs (the runexp module), the command line's commands,
 * sweeps that survive a broken run, and resuming: after SIGKILL or Ctrl-C, a resumed run ends
 * with the same weights, bit for bit, as the same run left alone, even when stopped before its
 * first batch or in its first epoch; a Ctrl-C also stops a config's own Lua. */
#include "helpers.h"

#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "files.h"
#include "script.h"

/* A synthetic experiment; big enough (about 0.3 s an epoch) to be interrupted mid-epoch. */
static const char *experiment =
    "return {\n"
    "  data = { 'synthetic', classes = 10, size = 8, train = 12000, noise = 1.5, batch_size = 32 },\n"
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
    char base[600]; /* the experiment above, as a file */
} fixture;

static void write_text_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->dir = test_tmpdir();
    snprintf(f->base, sizeof f->base, "%s/base.lua", f->dir);
    write_text_file(f->base, experiment);
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

/* Writes `program` as DIR/NAME and runs it in-process with the overrides; the log goes to
 * DIR/log.txt. Returns script_run's status. */
static int run_program(fixture *f, const char *name, const char *program, int n, char **overrides, char *err)
{
    char file[700], log_path[700];
    snprintf(file, sizeof file, "%s/%s", f->dir, name);
    snprintf(log_path, sizeof log_path, "%s/log.txt", f->dir);
    write_text_file(file, program);
    script s = { .noverrides = n, .overrides = overrides };
    test_plugin_path(&s.path);
    s.log = fopen(log_path, "w");
    assert_non_null(s.log);
    err[0] = '\0';
    int rc = script_run(&s, file, err);
    fclose(s.log);
    return rc;
}

/* The program's checks run in Lua: it errors (and the test fails with its message) if one does
 * not hold. */
static void expect_program_ok(fixture *f, const char *program, int n, char **overrides)
{
    char err[ERR_LEN];
    int rc = run_program(f, "prog.lua", program, n, overrides, err);
    if (rc != SCRIPT_OK) fail_msg("status %d: %s", rc, err);
}

static void test_with_merges_deeply(void **state)
{
    expect_program_ok(*state,
        "local base = { optim = { 'sgd', lr = 0.1, momentum = 0.9 }, model = { { 'linear', out = 3 } }, epochs = 2 }\n"
        "local c = runexp.with(base, { optim = { lr = 0.5 }, model = { { out = 7 } }, seed = 3 })\n"
        "assert(c.optim[1] == 'sgd' and c.optim.lr == 0.5 and c.optim.momentum == 0.9, 'merge into optim')\n"
        "assert(c.model[1][1] == 'linear' and c.model[1].out == 7, 'merge into a list entry')\n"
        "assert(c.epochs == 2 and c.seed == 3, 'top level')\n"
        "assert(base.optim.lr == 0.1 and base.model[1].out == 3 and base.seed == nil, 'base untouched')\n"
        "c.optim.momentum = 0\n"
        "assert(base.optim.momentum == 0.9, 'a copy, not shared tables')\n"
        "assert(not pcall(runexp.with, 3, {}), 'base must be a table')\n",
        0, NULL);
}

static void test_train_returns_results(void **state)
{
    fixture *f = *state;
    char program[2048];
    snprintf(program, sizeof program,
        "local base = dofile(runexp.dir .. '/base.lua')\n"
        "local r = runexp.train(runexp.with(base, { epochs = 2, data = { train = 2000 }, out = runexp.dir .. '/r1' }))\n"
        "assert(r.epochs == 2 and #r.history == 2, 'two epochs of history')\n"
        "assert(r.history[2].epoch == 2 and r.history[1].valid_loss > 0 and r.history[1].lr == 0.01, 'history rows')\n"
        "assert(r.test_accuracy > 0.5 and r.test_total == 500, 'test results ' .. r.test_accuracy)\n"
        "assert(r.per_class_accuracy.class0 ~= nil, 'per class')\n"
        "assert(r.best_epoch >= 1 and r.best_valid_loss < 2, 'best record')\n"
        "assert(r.run_dir == runexp.dir .. '/r1' and r.device == 'cpu', 'run folder and device')\n"
        "local e = runexp.evaluate(r.run_dir .. '/best.safetensors', runexp.with(base, { data = { train = 2000 } }))\n"
        "assert(e.accuracy == r.test_accuracy and e.correct == r.test_correct, 'evaluate agrees with train')\n"
        "local v = runexp.evaluate(r.run_dir .. '/best.safetensors', runexp.with(base, { data = { train = 2000 } }), 'valid')\n"
        "assert(math.abs(v.loss - r.best_valid_loss) < 1e-6, 'valid loss of the best checkpoint ' .. v.loss)\n"
        "assert(runexp.version ~= nil)\n"
        "-- A failing run raises the command line's message, and pcall carries on.\n"
        "local ok, msg = pcall(runexp.train, runexp.with(base, { model = { { paddin = 1 } }, out = runexp.dir .. '/r2' }))\n"
        "assert(not ok and msg:find(\"prog.lua: model%%[1%%] %%(conv2d%%): unknown key 'paddin'\"), msg)\n"
        "local ok2, msg2 = pcall(runexp.evaluate, runexp.dir .. '/nonexistent.safetensors', base)\n"
        "assert(not ok2 and msg2:find('nonexistent.safetensors'), msg2)\n");
    (void)f;
    expect_program_ok(f, program, 0, NULL);
}

static void test_options_and_overrides(void **state)
{
    /* lrs and tag are the script's own; epochs goes to every run. */
    char *ov[] = { "lrs={0.5,0.25}", "tag=quick", "epochs=1" };
    expect_program_ok(*state,
        "local opt = runexp.options { lrs = { 1 }, tag = 'full', keep = true }\n"
        "assert(#opt.lrs == 2 and opt.lrs[1] == 0.5 and opt.lrs[2] == 0.25, 'table literal from the command line')\n"
        "assert(opt.tag == 'quick' and opt.keep == true, 'string override, default kept')\n"
        "local base = dofile(runexp.dir .. '/base.lua')\n"
        "local r = runexp.train(runexp.with(base, { epochs = 3, data = { train = 1000 }, out = runexp.dir .. '/o' }))\n"
        "assert(r.epochs == 1, 'epochs=1 from the command line wins: ' .. r.epochs)\n",
        3, ov);
    fixture *f = *state;
    char err[ERR_LEN];
    char *bad[] = { "lrs={0.5,", "epochs=1" };
    assert_int_equal(run_program(f, "bad.lua", "runexp.options { lrs = {} }\n", 2, bad, err), SCRIPT_FAILED);
    assert_non_null(strstr(err, "command line: 'lrs={0.5,': the value is not a Lua table constructor"));
    /* An override no experiment accepts is an error that lists the accepted keys. */
    char *typo[] = { "optim.lrr=0.1" };
    char program[600];
    snprintf(program, sizeof program, "return dofile(runexp.dir .. '/base.lua')\n");
    assert_int_equal(run_program(f, "typo.lua", program, 1, typo, err), SCRIPT_FAILED);
    assert_non_null(strstr(err, "command line: optim (sgd): unknown key 'lrr' (accepted: lr, weight_decay, schedule, momentum"));
}

static void test_returns(void **state)
{
    fixture *f = *state;
    char err[ERR_LEN];
    assert_int_equal(run_program(f, "nothing.lua", "local x = 1\n", 0, NULL, err), SCRIPT_OK);
    assert_int_equal(run_program(f, "number.lua", "return 42\n", 0, NULL, err), SCRIPT_FAILED);
    assert_non_null(strstr(err, "number.lua: the config must return a table (the experiment) or nothing, got number"));
    assert_int_equal(run_program(f, "syntax.lua", "return {\n", 0, NULL, err), SCRIPT_FAILED);
    assert_non_null(strstr(err, "syntax.lua:2:"));
    assert_int_equal(run_program(f, "raise.lua", "error('my own failure')\n", 0, NULL, err), SCRIPT_FAILED);
    assert_non_null(strstr(err, "raise.lua:1: my own failure"));
}

static void test_plugins_listed(void **state)
{
    expect_program_ok(*state,
        "local found = {}\n"
        "for _, p in ipairs(runexp.plugins()) do found[p.name] = p end\n"
        "local c = assert(found.conv2d, 'conv2d listed')\n"
        "assert(c.kind == 'layer' and #c.summary > 0 and c.file:find('conv2d.so'), 'kind, summary, file')\n"
        "local byname = {}\n"
        "for _, p in ipairs(c.params) do byname[p.name] = p end\n"
        "assert(byname.out.required and byname.out.type == 'integer' and byname.out.default == nil, 'required out')\n"
        "assert(byname.stride.default == 1 and #byname.stride.help > 0, 'stride default')\n"
        "assert(found.sgd.kind == 'optimizer' and found.cross_entropy.kind == 'loss' and found.cifar10.kind == 'data')\n"
        "local mean\n"
        "for _, p in ipairs(found.cifar10.params) do if p.name == 'mean' then mean = p end end\n"
        "assert(mean.type == 'numbers' and #mean.default == 3, 'list default')\n",
        0, NULL);
}

/* ---- The command line, as a user runs it ---- */

/* Runs build/runexp with args in the fixture's folder; returns the exit status. */
static int runexp_cli(fixture *f, const char *args, char *out, size_t len)
{
    char cmd[2048], path[700];
    snprintf(path, sizeof path, "%s/cli.txt", f->dir);
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s/runexp' %s >'%s' 2>&1", f->dir, RX_BUILD_DIR, args, path);
    int status = system(cmd);
    FILE *e = fopen(path, "r");
    size_t n = e ? fread(out, 1, len - 1, e) : 0;
    out[n] = '\0';
    if (e) fclose(e);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void test_commands(void **state)
{
    fixture *f = *state;
    static char out[1 << 16];
    assert_int_equal(runexp_cli(f, "--help", out, sizeof out), 0);
    assert_non_null(strstr(out, "runexp resume RUN_DIR"));
    assert_int_equal(runexp_cli(f, "plugins", out, sizeof out), 0);
    assert_non_null(strstr(out, "conv2d"));
    assert_non_null(strstr(out, "kernel"));
    assert_non_null(strstr(out, "(required)"));
    assert_int_equal(runexp_cli(f, "resume", out, sizeof out), 2);
    assert_int_equal(runexp_cli(f, "resume /nonexistent/run", out, sizeof out), 1);
    assert_non_null(strstr(out, "/nonexistent/run/config.lua"));
    /* The sweep: one broken rate is reported, the others run, the table is sorted and saved. */
    char args[1200];
    snprintf(args, sizeof args, "'%s/configs/sweep_lr.lua' 'lrs={0.05,-1,0.01}' epochs=1 data=synthetic dir=sweep",
             RX_SOURCE_DIR);
    int rc = runexp_cli(f, args, out, sizeof out);
    if (rc != 0) fail_msg("sweep exited %d:\n%s", rc, out);
    assert_non_null(strstr(out, "lr -1 failed: "));
    char *table = strstr(out, "best valid loss");
    assert_non_null(table);
    char *failed = strstr(table, "failed"), *a = strstr(table, "\n0.05 "), *b = strstr(table, "\n0.01 ");
    assert_true(a && b && failed && a < failed && b < failed);
    char path[700], err[ERR_LEN], *csv;
    size_t len;
    snprintf(path, sizeof path, "%s/sweep/sweep.csv", f->dir);
    if (read_file(path, &csv, &len, err) != 0) fail_msg("%s", err);
    int lines = 0;
    for (char *c = csv; *c; c++) lines += *c == '\n';
    assert_int_equal(lines, 4);
    free(csv);
}

/* ---- Resume ---- */

static void assert_same_file_tensors(const char *a, const char *b, const char *file)
{
    size_t na, nb;
    char *x = checkpoint_tensor_bytes(a, file, &na), *y = checkpoint_tensor_bytes(b, file, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(x, y, na);
    free(x);
    free(y);
}

static void assert_same_tensors(const char *a, const char *b)
{
    assert_same_file_tensors(a, b, "last.safetensors");
}

/* Starts runexp on the experiment in CONFIG into RUN, and sends it `sig` once its first epoch
 * is done (metrics.csv is written) and the second has begun; its stderr goes to STDERR_PATH.
 * Returns the exit status (or 128 + signal). */
static int run_and_signal(const char *config, const char *run, int sig, const char *stderr_path)
{
    char out[700], last[700];
    snprintf(out, sizeof out, "out=%s", run);
    snprintf(last, sizeof last, "%s/metrics.csv", run);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stdout) || !freopen(stderr_path, "w", stderr)) _exit(99);
        execl(RX_BUILD_DIR "/runexp", "runexp", config, out, (char *)NULL);
        _exit(98);
    }
    struct timespec pause = { 0, 2000000 };
    for (int i = 0; i < 30000 && access(last, F_OK) != 0; i++) nanosleep(&pause, NULL);
    struct timespec into = { 0, 60000000 }; /* into the second epoch */
    nanosleep(&into, NULL);
    kill(pid, sig);
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int metrics_rows(const char *run)
{
    char path[800], err[ERR_LEN], *csv;
    size_t len;
    snprintf(path, sizeof path, "%s/metrics.csv", run);
    if (read_file(path, &csv, &len, err) != 0) fail_msg("%s", err);
    int rows = -1;
    for (char *c = csv; *c; c++) rows += *c == '\n';
    free(csv);
    return rows;
}

/* One run left alone; the same run killed with SIGKILL, then resumed; and stopped with Ctrl-C
 * mid-epoch, then resumed: all three end with the same weights, bit for bit. */
static void test_resume(void **state)
{
    fixture *f = *state;
    char whole[700], killed[700], stopped[700], args[1600], log[700];
    static char out[1 << 16];
    snprintf(whole, sizeof whole, "%s/whole", f->dir);
    snprintf(killed, sizeof killed, "%s/killed", f->dir);
    snprintf(stopped, sizeof stopped, "%s/stopped", f->dir);
    snprintf(log, sizeof log, "%s/stderr.txt", f->dir);
    snprintf(args, sizeof args, "'%s' out='%s'", f->base, whole);
    assert_int_equal(runexp_cli(f, args, out, sizeof out), 0);

    /* SIGKILL mid-run: the last completed epoch survives. */
    assert_int_equal(run_and_signal(f->base, killed, SIGKILL, log), 128 + SIGKILL);
    int rows = metrics_rows(killed);
    assert_true(rows >= 1 && rows < 4);
    snprintf(args, sizeof args, "'%s' out='%s'", f->base, killed);
    assert_int_equal(runexp_cli(f, args, out, sizeof out), 1); /* a new run there is refused */
    assert_non_null(strstr(out, "already holds a run"));
    snprintf(args, sizeof args, "resume '%s'", killed);
    int rc = runexp_cli(f, args, out, sizeof out);
    if (rc != 0) fail_msg("resume exited %d:\n%s", rc, out);
    assert_non_null(strstr(out, "resuming "));
    assert_same_tensors(whole, killed);
    assert_int_equal(metrics_rows(killed), 4);

    /* Ctrl-C: the batch finishes, the checkpoint says how far into the epoch it got, and the
     * message says how to resume. */
    assert_int_equal(run_and_signal(f->base, stopped, SIGINT, log), 130);
    char err[ERR_LEN], *text;
    size_t len;
    if (read_file(log, &text, &len, err) != 0) fail_msg("%s", err);
    assert_non_null(strstr(text, "runexp: stopped at epoch 2, batch "));
    char want[800];
    snprintf(want, sizeof want, "resume with: runexp resume %s\n", stopped);
    assert_non_null(strstr(text, want));
    free(text);
    char path[800], *blob;
    snprintf(path, sizeof path, "%s/last.safetensors", stopped);
    if (read_file(path, &blob, &len, err) != 0) fail_msg("%s", err);
    char *batch = strstr(blob + 8, "\"batch\":\"");
    assert_non_null(batch);
    assert_true(atoi(batch + 9) > 0);
    free(blob);
    snprintf(args, sizeof args, "resume '%s'", stopped);
    rc = runexp_cli(f, args, out, sizeof out);
    if (rc != 0) fail_msg("resume exited %d:\n%s", rc, out);
    assert_non_null(strstr(out, "batches of epoch 2"));
    assert_same_tensors(whole, stopped);
}

/* With a moving average of the weights and a schedule, which both follow the step count: Ctrl-C
 * in epoch 2, then resume, ends with the same weights, average and optimizer state, bit for
 * bit, as the run left alone. */
static void test_resume_with_average(void **state)
{
    fixture *f = *state;
    char config[700], whole[700], stopped[700], args[1600], log[700], program[1200];
    static char out[1 << 16];
    snprintf(config, sizeof config, "%s/ema.lua", f->dir);
    snprintf(program, sizeof program,
             "local e = dofile('%s')\n"
             "e.ema, e.epochs = 0.9, 3\n"
             "e.optim.schedule = { 'onecycle', warmup = 0.25, start = 0.1 }\n"
             "return e\n", f->base);
    write_text_file(config, program);
    snprintf(whole, sizeof whole, "%s/whole", f->dir);
    snprintf(stopped, sizeof stopped, "%s/stopped", f->dir);
    snprintf(log, sizeof log, "%s/stderr.txt", f->dir);
    snprintf(args, sizeof args, "'%s' out='%s'", config, whole);
    int rc = runexp_cli(f, args, out, sizeof out);
    if (rc != 0) fail_msg("exited %d:\n%s", rc, out);

    assert_int_equal(run_and_signal(config, stopped, SIGINT, log), 130);
    char err[ERR_LEN], *text;
    size_t len;
    if (read_file(log, &text, &len, err) != 0) fail_msg("%s", err);
    assert_non_null(strstr(text, "runexp: stopped at epoch 2, batch "));
    free(text);
    snprintf(args, sizeof args, "resume '%s'", stopped);
    rc = runexp_cli(f, args, out, sizeof out);
    if (rc != 0) fail_msg("resume exited %d:\n%s", rc, out);
    assert_non_null(strstr(out, "batches of epoch 2"));
    assert_same_tensors(whole, stopped);
    char path[800], *blob;
    snprintf(path, sizeof path, "%s/last.safetensors", stopped);
    if (read_file(path, &blob, &len, err) != 0) fail_msg("%s", err);
    assert_non_null(strstr(blob + 8, "\"ema.weights\":{"));
    free(blob);
    /* The best checkpoints (averages) agree too. */
    assert_same_file_tensors(whole, stopped, "best.safetensors");
}

static void test_resume_errors(void **state)
{
    fixture *f = *state;
    static char out[1 << 16];
    char run[700], args[1600];
    snprintf(run, sizeof run, "%s/short", f->dir);
    snprintf(args, sizeof args, "'%s' out='%s' epochs=2 data.train=1000", f->base, run);
    assert_int_equal(runexp_cli(f, args, out, sizeof out), 0);
    /* Fewer epochs than the run has done. */
    snprintf(args, sizeof args, "resume '%s' epochs=1", run);
    assert_int_equal(runexp_cli(f, args, out, sizeof out), 1);
    assert_non_null(strstr(out, "last.safetensors: the run has done 2 epochs, more than epochs=1"));
    /* A network that no longer fits the checkpoint: the edit named, and with the edit accepted,
     * both shapes. */
    snprintf(args, sizeof args, "resume '%s' model.1.out=8", run);
    assert_int_equal(runexp_cli(f, args, out, sizeof out), 1);
    assert_non_null(strstr(out, "the config differs from the one the run started with"));
    assert_non_null(strstr(out, "model[1].out was 16, now 8"));
    snprintf(args, sizeof args, "resume '%s' model.1.out=8 --allow-changes", run);
    assert_int_equal(runexp_cli(f, args, out, sizeof out), 1);
    assert_non_null(strstr(out, "tensor '0.weight' has shape (16, 3, 3, 3), the network expects (8, 3, 3, 3)"));
    /* resume = true needs to know which folder. */
    char err[ERR_LEN];
    char *ov[] = { "resume=true" };
    char program[600];
    snprintf(program, sizeof program, "return dofile(runexp.dir .. '/base.lua')\n");
    assert_int_equal(run_program(f, "noout.lua", program, 1, ov, err), SCRIPT_FAILED);
    assert_non_null(strstr(err, "resume = true needs out="));
    /* Extending a finished run continues it. */
    snprintf(args, sizeof args, "resume '%s' epochs=3", run);
    assert_int_equal(runexp_cli(f, args, out, sizeof out), 0);
    assert_non_null(strstr(out, "resuming "));
    assert_int_equal(metrics_rows(run), 3);
}

/* ---- Stops at any moment (issue 16) ---- */

/* A config whose Lua never ends: one Ctrl-C stops it within a second, exit 130, with the line
 * it was running. It used to be ignored (the flag was read only between batches). */
static void test_stop_while_lua_runs(void **state)
{
    fixture *f = *state;
    char config[700], log[700], looping[700], program[1600];
    snprintf(config, sizeof config, "%s/loop.lua", f->dir);
    snprintf(log, sizeof log, "%s/stderr.txt", f->dir);
    snprintf(looping, sizeof looping, "%s/looping", f->dir);
    /* The signal goes once the loop runs: sent earlier (a slow start under the sanitizers), it
     * would meet a process without its handler yet and test nothing. */
    snprintf(program, sizeof program, "io.open('%s', 'w'):close()\nlocal n = 0\nwhile true do n = n + 1 end\n",
             looping);
    write_text_file(config, program);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stdout) || !freopen(log, "w", stderr)) _exit(99);
        execl(RX_BUILD_DIR "/runexp", "runexp", config, (char *)NULL);
        _exit(98);
    }
    struct timespec pause = { 0, 1000000 }, into = { 0, 50000000 };
    for (int i = 0; i < 60000 && access(looping, F_OK) != 0; i++) nanosleep(&pause, NULL);
    nanosleep(&into, NULL);
    double sent = seconds_now();
    kill(pid, SIGINT);
    int status;
    waitpid(pid, &status, 0);
    double took = seconds_now() - sent;
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 130);
    if (took > TEST_STOP_SECONDS) fail_msg("the stop took %.2f s", took);
    char err[ERR_LEN], *text;
    size_t len;
    if (read_file(log, &text, &len, err) != 0) fail_msg("%s", err);
    if (!strstr(text, "loop.lua:3: stopped by a signal")) fail_msg("got: %s", text);
    free(text);
}

/* Killed before the first batch (by its lr function, at step 0, when told to): the folder holds
 * the run at its start, and the resume ends as the run left alone does, bit for bit. Ctrl-C in
 * the first epoch: the resume continues from the batch reached (it used to look for a
 * metrics.csv the first epoch had not written). */
static void test_stop_in_the_first_epoch(void **state)
{
    fixture *f = *state;
    char config[700], program[1200], whole[700], killed[700], stopped[700], args[1600], log[700];
    static char out[1 << 16];
    snprintf(config, sizeof config, "%s/first.lua", f->dir);
    snprintf(program, sizeof program,
             "local e = dofile('%s')\n"
             "e.epochs = 2\n"
             "e.optim.lr = function(step, steps)\n"
             "  if step == 0 and os.getenv('RX_KILL_AT_START') then os.execute('kill -KILL $PPID') end\n"
             "  return 0.01\n"
             "end\n"
             "return e\n", f->base);
    write_text_file(config, program);
    snprintf(whole, sizeof whole, "%s/whole", f->dir);
    snprintf(killed, sizeof killed, "%s/killed", f->dir);
    snprintf(stopped, sizeof stopped, "%s/stopped", f->dir);
    snprintf(log, sizeof log, "%s/stderr.txt", f->dir);
    snprintf(args, sizeof args, "'%s' out='%s'", config, whole);
    assert_int_equal(runexp_cli(f, args, out, sizeof out), 0);

    snprintf(args, sizeof args, "sh -c \"RX_KILL_AT_START=1 exec '%s/runexp' '%s' out='%s'\"; echo $?", RX_BUILD_DIR,
             config, killed);
    char cmd[2000];
    snprintf(cmd, sizeof cmd, "cd '%s' && %s >'%s' 2>&1", f->dir, args, log);
    assert_int_equal(system(cmd), 0);
    char err[ERR_LEN], *text;
    size_t len;
    if (read_file(log, &text, &len, err) != 0) fail_msg("%s", err);
    if (!strstr(text, "137")) fail_msg("not killed: %s", text);
    free(text);
    snprintf(args, sizeof args, "resume '%s'", killed);
    int rc = runexp_cli(f, args, out, sizeof out);
    if (rc != 0) fail_msg("resume exited %d:\n%s", rc, out);
    assert_non_null(strstr(out, "resuming "));
    assert_non_null(strstr(out, ": 0 of 2 epochs done\n"));
    assert_same_tensors(whole, killed);
    assert_same_file_tensors(whole, killed, "best.safetensors");

    /* Ctrl-C once the folder exists: within the first epoch (a few tenths of a second long). */
    char last[800];
    snprintf(last, sizeof last, "%s/last.safetensors", stopped);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        snprintf(args, sizeof args, "out=%s", stopped);
        if (!freopen("/dev/null", "w", stdout) || !freopen(log, "w", stderr)) _exit(99);
        execl(RX_BUILD_DIR "/runexp", "runexp", config, args, (char *)NULL);
        _exit(98);
    }
    struct timespec pause = { 0, 1000000 }, into = { 0, 40000000 };
    for (int i = 0; i < 60000 && access(last, F_OK) != 0; i++) nanosleep(&pause, NULL);
    nanosleep(&into, NULL);
    kill(pid, SIGINT);
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 130);
    if (read_file(log, &text, &len, err) != 0) fail_msg("%s", err);
    if (!strstr(text, "runexp: stopped at epoch 1, batch ")) fail_msg("got: %s", text);
    free(text);
    snprintf(args, sizeof args, "resume '%s'", stopped);
    rc = runexp_cli(f, args, out, sizeof out);
    if (rc != 0) fail_msg("resume exited %d:\n%s", rc, out);
    assert_non_null(strstr(out, "batches of epoch 1"));
    assert_same_tensors(whole, stopped);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_with_merges_deeply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_train_returns_results, setup, teardown),
        cmocka_unit_test_setup_teardown(test_options_and_overrides, setup, teardown),
        cmocka_unit_test_setup_teardown(test_returns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plugins_listed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commands, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_with_average, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_while_lua_runs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_in_the_first_epoch, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
