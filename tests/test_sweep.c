/* test_sweep.c: runexp.map and its folder. Results come back in the order given, a failed or
 * crashed training fills only its own slot; jobs=3, two ranks started by hand (SLURM_PROCID and
 * SLURM_NTASKS: no MPI starts)
 * and two shards give the same weights, bit for bit, and the same result tables as one process;
 * `runexp merge` names a missing shard's experiments; Ctrl-C stops the children and leaves no
 * process behind; bad jobs=, shard= and options are refused with what was expected; a result
 * file is decoded exactly, and a broken one is refused at its byte.
 *
 * Every sweep runs as build/runexp in its own process: a test process that has trained has
 * OpenMP's threads, which a forked child would wait for (runexp.map refuses that case). */
#include "helpers.h"

#include <errno.h>
#include <lauxlib.h>
#include <lualib.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "sweep_file.h"

/* Two epochs of a small synthetic experiment, a few hundredths of a second. */
static const char *experiment =
    "return {\n"
    "  data = { 'synthetic', classes = 10, size = 8, train = 1000, noise = 1.5, batch_size = 32 },\n"
    "  model = { { 'conv2d', out = 8, kernel = 3, padding = 1 }, { 'relu' }, { 'flatten' }, { 'linear', out = 10 } },\n"
    "  loss = 'cross_entropy',\n"
    "  optim = { 'sgd', lr = 0.01, momentum = 0.9 },\n"
    "  epochs = 2, threads = 1, device = 'cpu',\n"
    "}\n";

/* Three experiments (rates and seeds differ) into DIR; every result must be there and ok. */
static const char *three =
    "local opt = runexp.options { dir = 'x' }\n"
    "local base = dofile(runexp.dir .. '/base.lua')\n"
    "local exps = {}\n"
    "for i, lr in ipairs { 0.1, 0.03, 0.01 } do\n"
    "  exps[i] = runexp.with(base, { optim = { lr = lr }, seed = i, out = opt.dir .. '/e' .. i })\n"
    "end\n"
    "local rs = runexp.map(exps, { dir = opt.dir, labels = { 'a', 'b', 'c' } })\n"
    "assert(#rs == 3, 'three results')\n"
    "for i, r in ipairs(rs) do\n"
    "  assert(r.ok and r.label == ({ 'a', 'b', 'c' })[i] and r.run_dir == opt.dir .. '/e' .. i, 'result ' .. i)\n"
    "end\n";

static void write_text_file(const char *path, const char *text)
{
    char err[ERR_LEN];
    if (write_file_atomic(path, text, strlen(text), err) != 0) fail_msg("%s", err);
}

static int setup(void **state)
{
    char *dir = test_tmpdir(), path[700];
    snprintf(path, sizeof path, "%s/base.lua", dir);
    write_text_file(path, experiment);
    snprintf(path, sizeof path, "%s/three.lua", dir);
    write_text_file(path, three);
    *state = dir;
    return 0;
}

static int teardown(void **state)
{
    test_rmdir(*state);
    return 0;
}

/* Runs a shell line in dir with $RUNEXP; stdout and stderr both into out. */
static int run_line(const char *dir, const char *line, char *out, size_t len)
{
    char all[3000];
    snprintf(all, sizeof all, "(%s) 1>&2", line);
    return shell_in(dir, all, out, len);
}

static void expect_run(const char *dir, const char *line, int status, const char *fragment)
{
    static char out[1 << 16];
    int rc = run_line(dir, line, out, sizeof out);
    if (rc != status || (fragment && !strstr(out, fragment)))
        fail_msg("%s: exit %d (expected %d), expected '%s' in:\n%s", line, rc, status, fragment ? fragment : "", out);
}

static char *read_text(const char *dir, const char *name)
{
    char path[800], err[ERR_LEN], *text;
    size_t len;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (read_file(path, &text, &len, err) != 0) fail_msg("%s", err);
    return text;
}

/* ---- Order, failures, crashes ---- */

static const char *mixed =
    "local opt = runexp.options { jobs = 1 }\n"
    "local base = dofile(runexp.dir .. '/base.lua')\n"
    "local third = runexp.with(base, { out = 'sw/third' })\n"
    "if opt.jobs > 1 then\n" /* dies at its first step, in its own process */
    "  third.optim.lr = function(step) if step == 0 then os.execute('kill -KILL $PPID') end return 0.01 end\n"
    "end\n"
    "local exps = { runexp.with(base, { out = 'sw/a' }), runexp.with(base, { model = { { paddin = 1 } }, out = 'sw/bad' }),\n"
    "               third, runexp.with(base, { optim = { lr = 0.1 }, out = 'sw/d' }) }\n"
    "local rs = runexp.map(exps, { dir = 'sw', jobs = opt.jobs, labels = { 'first' } })\n"
    "assert(#rs == 4, 'four results')\n"
    "assert(rs[1].ok and rs[1].label == 'first' and rs[1].run_dir == 'sw/a' and #rs[1].history == 2, 'first')\n"
    "assert(rs[2].ok == false and rs[2].error:find(\"unknown key 'paddin'\") and rs[2].label == 'sw/bad'\n"
    "       and rs[2].run_dir == 'sw/bad', 'second: ' .. tostring(rs[2].error))\n"
    "if opt.jobs > 1 then\n"
    "  assert(rs[3].ok == false and rs[3].error:find('experiment 3 %(sw/third%): its process died of signal 9')\n"
    "         and rs[3].error:find('sw/results/3.log') and rs[3].run_dir == 'sw/third', 'third: ' .. tostring(rs[3].error))\n"
    "else\n"
    "  assert(rs[3].ok, 'third')\n"
    "end\n"
    "assert(rs[4].ok and rs[4].run_dir == 'sw/d' and rs[4].best_valid_loss > 0, 'fourth')\n";

static void test_order_and_failures(void **state)
{
    char *dir = *state, path[700];
    snprintf(path, sizeof path, "%s/mixed.lua", dir);
    write_text_file(path, mixed);
    for (int jobs = 1; jobs <= 2; jobs++) {
        char line[200];
        snprintf(line, sizeof line, "rm -rf sw; $RUNEXP mixed.lua jobs=%d -v", jobs);
        expect_run(dir, line, 0, "wrote sw/sweep.csv and sw/sweep.html");
        char *csv = read_text(dir, "sw/sweep.csv");
        assert_int_equal(count_lines(csv), 5);
        assert_non_null(strstr(csv, "\n1,first,true,"));
        assert_non_null(strstr(csv, "\n2,sw/bad,false,,,,,sw/bad,\"mixed.lua: model[1] (conv2d): unknown key 'paddin'"));
        assert_non_null(strstr(csv, jobs > 1 ? "\n3,sw/third,false," : "\n3,sw/third,true,"));
        free(csv);
        free(read_text(dir, "sw/sweep.html"));
    }
}

/* ---- The same results however they are spread ---- */

/* The keys a result may differ in between two runs of the same experiment: times and where. */
static const char *compare_results =
    "local function same(a, b, path)\n"
    "  if type(a) ~= 'table' or type(b) ~= 'table' then\n"
    "    local both_nan = a ~= a and b ~= b -- a value not measured (grad_norm without clipping)\n"
    "    assert((a == b or both_nan) and math.type(a) == math.type(b), path .. ': ' .. tostring(a) .. ' vs ' .. tostring(b))\n"
    "    return\n"
    "  end\n"
    "  for k, v in pairs(a) do\n"
    "    local skip = type(k) == 'string' and (k:find('seconds') or k == 'images_per_second' or k == 'run_dir' or k == 'started')\n"
    "    if not skip then same(v, b[k], path .. '.' .. tostring(k)) end\n"
    "  end\n"
    "  for k in pairs(b) do assert(a[k] ~= nil, path .. '.' .. tostring(k) .. ' only in the second') end\n"
    "end\n"
    "return same\n";

static void expect_same_sweep(const char *dir, const char *a, const char *b)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    assert_int_equal(luaL_dostring(L, compare_results), LUA_OK);
    for (int i = 1; i <= 3; i++) {
        char da[700], db[700], run_a[800], run_b[800], err[ERR_LEN];
        snprintf(da, sizeof da, "%s/%s", dir, a);
        snprintf(db, sizeof db, "%s/%s", dir, b);
        lua_pushvalue(L, 1);
        if (sweep_read_result(L, da, i, 3, "", err) != 0) fail_msg("%s: result %d: %s", da, i, err);
        if (sweep_read_result(L, db, i, 3, "", err) != 0) fail_msg("%s: result %d: %s", db, i, err);
        lua_pushfstring(L, "result %d", i);
        if (lua_pcall(L, 3, 0, 0) != LUA_OK) fail_msg("%s vs %s: %s", a, b, lua_tostring(L, -1));
        snprintf(run_a, sizeof run_a, "%s/e%d", da, i);
        snprintf(run_b, sizeof run_b, "%s/e%d", db, i);
        size_t na, nb;
        char *x = read_text(run_a, "best.safetensors"), *y = read_text(run_b, "best.safetensors");
        assert_string_equal(x, y); /* the header too: no time in it */
        free(x);
        free(y);
        x = checkpoint_tensor_bytes(run_a, "last.safetensors", &na);
        y = checkpoint_tensor_bytes(run_b, "last.safetensors", &nb);
        assert_int_equal(na, nb);
        assert_memory_equal(x, y, na);
        free(x);
        free(y);
    }
    lua_close(L);
}

static void test_jobs_give_the_same_results(void **state)
{
    char *dir = *state;
    expect_run(dir, "$RUNEXP three.lua dir=s1", 0, "\nc: epoch 2/2 ");
    expect_run(dir, "$RUNEXP three.lua dir=s3 jobs=3", 0, "== experiment 3 of 3: c (process ");
    expect_same_sweep(dir, "s1", "s3");
    char *log = read_text(dir, "s3/results/2.log");
    assert_non_null(strstr(log, "epoch 2/2 ")); /* a child's log holds its run's lines */
    free(log);
}

/* Two ranks started by hand as mpirun would: rank 1 runs experiment 2 and ends; rank 0 runs 1
 * and 3, collects 2 and returns all three. */
static void test_ranks_share_a_sweep(void **state)
{
    char *dir = *state;
    expect_run(dir, "$RUNEXP three.lua dir=s1", 0, NULL);
    expect_run(dir,
               "(SLURM_PROCID=1 SLURM_NTASKS=2 $RUNEXP three.lua dir=r >rank1.txt 2>&1; echo $? >rank1.status) & "
               "SLURM_PROCID=0 SLURM_NTASKS=2 $RUNEXP three.lua dir=r -v >rank0.txt 2>&1; s=$?; wait; exit $s",
               0, NULL);
    char *r0 = read_text(dir, "rank0.txt"), *r1 = read_text(dir, "rank1.txt"), *status = read_text(dir, "rank1.status");
    if (!strstr(r0, "a: epoch 1/2 ") || !strstr(r0, "c: epoch 1/2 ") || strstr(r0, "b: epoch") ||
        !strstr(r0, "wrote r/sweep.csv"))
        fail_msg("rank 0:\n%s", r0);
    if (!strstr(r1, "b: epoch 2/2 ") || strstr(r1, "a: epoch") ||
        !strstr(r1, "rank 1 of 2: its share of the sweep is done"))
        fail_msg("rank 1:\n%s", r1);
    assert_string_equal(status, "0\n");
    free(r0);
    free(r1);
    free(status);
    expect_same_sweep(dir, "s1", "r");
}

/* Shard 0 of 2, a merge that names the missing experiment, then shard 1 (from a Slurm job
 * array whose ids start at 7), which completes the folder and merges it. */
static void test_shards_and_merge(void **state)
{
    char *dir = *state;
    expect_run(dir, "$RUNEXP three.lua dir=s1", 0, NULL);
    expect_run(dir, "$RUNEXP three.lua dir=sh shard=0/2", 0,
               "shard 0/2 done\nresults of 1 experiments of other shards are still to come; once they are in: runexp merge sh");
    expect_run(dir, "$RUNEXP merge sh", 1, "runexp: sh: 1 of 3 experiments have no result: 2 (shard 1/2); sweep.csv");
    char *csv = read_text(dir, "sh/sweep.csv");
    assert_non_null(strstr(csv, "\n2,experiment 2,false,,,,,,no result: results/2.result is missing (shard 1/2"));
    assert_non_null(strstr(csv, "\n3,c,true,"));
    free(csv);
    expect_run(dir, "SLURM_ARRAY_TASK_ID=8 SLURM_ARRAY_TASK_MIN=7 SLURM_ARRAY_TASK_COUNT=2 $RUNEXP three.lua dir=sh shard=auto",
               0, "shard 1/2 done\nmerged 3 experiments into sh/sweep.csv");
    expect_run(dir, "$RUNEXP merge sh", 0, "merged 3 experiments into sh/sweep.csv and sh/sweep.html");
    csv = read_text(dir, "sh/sweep.csv");
    assert_int_equal(count_lines(csv), 4);
    assert_null(strstr(csv, "false"));
    free(csv);
    expect_same_sweep(dir, "s1", "sh");
}

/* ---- Ctrl-C ---- */

/* Two long trainings side by side; SIGINT to runexp alone (as `kill -INT` would send it) once
 * both run folders exist: it stops both children, waits for them, exits 130, and no process of
 * its group is left. */
static void test_ctrl_c_stops_the_children(void **state)
{
    char *dir = *state, path[700], first[700], second[700], log[700];
    snprintf(path, sizeof path, "%s/long.lua", dir);
    write_text_file(path,
                    "local base = dofile(runexp.dir .. '/base.lua')\n"
                    "base.epochs, base.data.train = 50, 12000\n"
                    "runexp.map({ runexp.with(base, { out = 'cc/e1' }), runexp.with(base, { out = 'cc/e2' }) },\n"
                    "           { dir = 'cc', jobs = 2 })\n");
    snprintf(first, sizeof first, "%s/cc/e1/last.safetensors", dir);
    snprintf(second, sizeof second, "%s/cc/e2/last.safetensors", dir);
    snprintf(log, sizeof log, "%s/stderr.txt", dir);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setpgid(0, 0); /* its own group: the children must be gone with it */
        if (chdir(dir) != 0 || !freopen("/dev/null", "w", stdout) || !freopen(log, "w", stderr)) _exit(99);
        execl(RX_BUILD_DIR "/runexp", "runexp", path, (char *)NULL);
        _exit(98);
    }
    struct timespec pause = { 0, 1000000 };
    for (int i = 0; i < 120000 && (access(first, F_OK) != 0 || access(second, F_OK) != 0); i++) nanosleep(&pause, NULL);
    kill(pid, SIGINT);
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 130);
    errno = 0;
    assert_int_equal(kill(-pid, 0), -1);
    assert_int_equal(errno, ESRCH);
    char *text = read_text(dir, "stderr.txt");
    if (!strstr(text, "long.lua:3: stopped by a signal: 0 of 2 experiments finished; their results are in cc/results"))
        fail_msg("got: %s", text);
    free(text);
    text = read_text(dir, "cc/results/1.result");
    /* Stopped within an epoch or between two, as the signal fell: either way kept for a resume. */
    if (!strstr(text, "stopped ") || !strstr(text, "cc/e1/last.safetensors")) fail_msg("got: %s", text);
    free(text);
}

/* ---- Refusals ---- */

static void test_bad_values(void **state)
{
    static const char *const cases[][2] = {
        { "$RUNEXP three.lua dir=b jobs=0", "runexp: jobs=0: expected jobs=N, a whole number of processes from 1 to 1024" },
        { "$RUNEXP three.lua dir=b jobs=two", "runexp: jobs=two: expected jobs=N" },
        { "$RUNEXP three.lua dir=b jobs=1025", "runexp: jobs=1025: expected jobs=N" },
        { "$RUNEXP three.lua dir=b jobs=", "runexp: jobs=: expected jobs=N" },
        { "$RUNEXP three.lua dir=b shard=2/2", "runexp: shard=2/2: I must be less than N (shards count from 0: 0/2 to 1/2)" },
        { "$RUNEXP three.lua dir=b shard=0/0", "runexp: shard=0/0: N, the number of shards, must be at least 1" },
        { "$RUNEXP three.lua dir=b shard=1", "runexp: shard=1: expected I/N, shard I of N counted from 0" },
        { "$RUNEXP three.lua dir=b shard=-1/2", "runexp: shard=-1/2: expected I/N" },
        { "$RUNEXP three.lua dir=b shard=1/2x", "runexp: shard=1/2x: expected I/N" },
        { "env -u SLURM_ARRAY_TASK_ID $RUNEXP three.lua dir=b shard=auto",
          "runexp: shard=auto: SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT are not set" },
        { "SLURM_ARRAY_TASK_ID=9 SLURM_ARRAY_TASK_COUNT=2 SLURM_ARRAY_TASK_MIN=0 $RUNEXP three.lua dir=b shard=auto",
          "runexp: shard=auto: task 9 of an array from 0 with 2 tasks is not shard 0 to 1" },
        { "SLURM_ARRAY_TASK_ID=x SLURM_ARRAY_TASK_COUNT=2 $RUNEXP three.lua dir=b shard=auto",
          "SLURM_ARRAY_TASK_ID=x, SLURM_ARRAY_TASK_COUNT=2, SLURM_ARRAY_TASK_MIN=(unset): expected whole numbers" },
        { "SLURM_PROCID=2 SLURM_NTASKS=2 $RUNEXP three.lua dir=b", "SLURM_PROCID=2 with SLURM_NTASKS=2: expected a rank from 0 to the size - 1" },
        { "$RUNEXP base.lua jobs=2", "base.lua returns one experiment; jobs= and shard= are for configs that call runexp.map" },
        { "$RUNEXP merge", "runexp: merge needs the sweep's folder" },
        { "$RUNEXP merge nowhere", "runexp: nowhere/results: No such file or directory: not a sweep's folder" },
    };
    char *dir = *state;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        expect_run(dir, cases[i][0], strcmp(cases[i][0], "$RUNEXP merge") == 0 ? 2 : 1, cases[i][1]);
    char path[700];
    snprintf(path, sizeof path, "%s/options.lua", dir);
    write_text_file(path,
                    "local base = dofile(runexp.dir .. '/base.lua')\n"
                    "local function refused(fragment, ...)\n"
                    "  local ok, msg = pcall(runexp.map, ...)\n"
                    "  assert(not ok and msg:find(fragment, 1, true), fragment .. ' -- got: ' .. tostring(msg))\n"
                    "end\n"
                    "refused(\"runexp.map: unknown option 'jobz' (known: dir, jobs, labels)\", {}, { jobz = 1 })\n"
                    "refused('runexp.map: experiments[2] is a number, expected an experiment table', { base, 1 })\n"
                    "refused('runexp.map: options.jobs: expected a whole number of processes from 1 to 1024, got 0',\n"
                    "        { base }, { jobs = 0, dir = 'x' })\n"
                    "refused('runexp.map: options.dir: expected the sweep', { base }, { dir = 3 })\n"
                    "refused('runexp.map: options.labels: expected a list of strings', { base }, { labels = 'a' })\n"
                    "refused(\"runexp.map: options.dir, the sweep's folder, is needed to run on several processes (jobs=2\",\n"
                    "        { base }, { jobs = 2 })\n"
                    "assert(#runexp.map({}) == 0, 'nothing to run')\n"
                    "runexp.train(runexp.with(base, { out = 'trained' }))\n"
                    "refused('runexp.map: jobs=2 cannot start processes after this config has trained or evaluated',\n"
                    "        { base }, { jobs = 2, dir = 'x' })\n");
    expect_run(dir, "$RUNEXP options.lua", 0, NULL);
}

/* ---- Result files ---- */

/* Every kind of value the encoding has, read back equal: integers stay integers, floats keep
 * every bit (inf, nan, the smallest subnormal), strings keep every byte. */
static void test_values_round_trip(void **state)
{
    char *dir = *state, path[700], err[ERR_LEN];
    snprintf(path, sizeof path, "%s/v.result", dir);
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    const char *value =
        "return { 1, -2, 3.5, 2.0, 0.1, 1/0, -1/0, 0/0, 4.9e-324, math.mininteger, true, false, 'a\\0b,\"\\n\\255',\n"
        "  nested = { deeper = { [7] = 'x', empty = {} } }, [''] = 'empty key', [-5] = 'negative key' }";
    assert_int_equal(luaL_dostring(L, value), LUA_OK);
    if (sweep_write_value(L, 1, path, err) != 0) fail_msg("%s", err);
    if (sweep_read_value(L, path, err) != 0) fail_msg("%s", err);
    assert_int_equal(luaL_dostring(L,
        "local a, b = ...\n"
        "return function(a, b)\n"
        "  local function same(x, y)\n"
        "    if type(x) == 'table' then\n"
        "      for k, v in pairs(x) do if not same(v, y[k]) then return false end end\n"
        "      for k in pairs(y) do if x[k] == nil then return false end end\n"
        "      return true\n"
        "    end\n"
        "    if x ~= x then return y ~= y end\n"
        "    return x == y and math.type(x) == math.type(y) and (x ~= 0 or 1/x == 1/y)\n"
        "  end\n"
        "  return same(a, b)\n"
        "end"), LUA_OK);
    lua_insert(L, 1);
    assert_int_equal(lua_pcall(L, 2, 1, 0), LUA_OK);
    assert_true(lua_toboolean(L, -1));
    lua_close(L);
}

/* Broken files: each refused with the file, the byte and what was expected; nothing pushed. */
static void test_broken_results_refused(void **state)
{
    static const char *const cases[][2] = {
        { "", "not a runexp sweep result (expected the line 'runexp-sweep-result 1' at its start)" },
        { "runexp-sweep-result 2\ni1;", "not a runexp sweep result" },
        { "R", "byte 22: the file ends where a value was expected" },
        { "Rx", "byte 22: expected a value (i, n, s, b or t)" },
        { "Ri12a;", "byte 22: expected an integer before ';'" },
        { "Ri99999999999999999999;", "expected an integer before ';'" },
        { "Ri1", "expected an integer and ';'" },
        { "Rn1.5x;", "expected a number before ';'" },
        { "Rb2", "byte 23: expected 0 or 1 after 'b'" },
        { "Rs3:ab", "a string runs past the end of the file" },
        { "Rs9:ab", "expected a string's length and ':'" },
        { "Rs-1:ab", "expected a string's length and ':'" },
        { "Rsx:", "expected a string's length and ':'" },
        { "Rt1{n1.5;i1;}", "byte 25: a table's key must be an integer or a string" },
        { "Rt1{t0{}i1;}", "a table's key must be an integer or a string" },
        { "Rt1{s1:ai1;", "expected '}' after a table's pairs" },
        { "Rt2{s1:ai1;}", "expected a value (i, n, s, b or t)" },
        { "Rt999999999{}", "expected a table's pair count and '{'" },
        { "Rt1{s1:a", "the file ends where a value was expected" },
        { "Ri1;i2;", "byte 25: unexpected bytes after the value" },
        { "Rt1{i1;t1{i1;t1{i1;t1{i1;t1{i1;t1{i1;t1{i1;t1{i1;t1{i1;t1{i1;t1{i1;t1{i1;t1{i1;t1{i1;t1{i1;t1{i1;t1{i1;i1;}"
          "}}}}}}}}}}}}}}}}}",
          "tables nested too deep" },
    };
    lua_State *L = luaL_newstate();
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char text[400], err[ERR_LEN];
        const char *c = cases[i][0];
        int n = c[0] == 'R' ? snprintf(text, sizeof text, "runexp-sweep-result 1\n%s", c + 1)
                            : snprintf(text, sizeof text, "%s", c);
        if (sweep_decode(L, text, (size_t)n, "t.result", err) == 0) fail_msg("case %zu accepted: %s", i, c);
        if (!strstr(err, cases[i][1]) || strncmp(err, "t.result: ", 10) != 0)
            fail_msg("case %zu (%s): expected '%s', got '%s'", i, c, cases[i][1], err);
        assert_int_equal(lua_gettop(L), 0);
    }
    lua_close(L);
}

/* A broken result file stops `runexp merge` with its name and byte; two sweeps' files in one
 * folder are told apart by their count. */
static void test_merge_refuses_broken_files(void **state)
{
    char *dir = *state;
    expect_run(dir, "mkdir -p mb/results && printf 'runexp-sweep-result 1\\nt1{s1:a' >mb/results/1.result && "
                    "$RUNEXP merge mb", 1, "runexp: mb/results/1.result: byte 29: the file ends where a value was expected");
    expect_run(dir, "mkdir -p mc/results && printf 'runexp-sweep-result 1\\ni1;' >mc/results/1.result && $RUNEXP merge mc",
               1, "mc/results/1.result: not experiment 1's result (expected experiment = 1, count, launch and result)");
    expect_run(dir, "mkdir -p md/results && $RUNEXP merge md", 1, "md/results: no result files (I.result) in it");
    expect_run(dir, "$RUNEXP three.lua dir=s1 && cp -r s1 two && $RUNEXP three.lua dir=x1 shard=0/2 && "
                    "sed -i 's/i3;/i4;/' two/results/2.result && $RUNEXP merge two",
               1, "from a sweep of 4 experiments, this one has 3");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_values_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_broken_results_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_order_and_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jobs_give_the_same_results, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ranks_share_a_sweep, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shards_and_merge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ctrl_c_stops_the_children, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_merge_refuses_broken_files, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
