/* test_frictions.c: what a new user tripped on (issue 20, point 5), each as they met it: an
 * unknown plugin's message says where plugins were looked for; the resume hint names the command
 * as it was typed; device=cuda without an NVIDIA driver says so; summary.json records when, where
 * and with which runexp a run was made; a plugin declares a constant first value (the prelu
 * example's 0.25); eval_in_pytorch.py without PyTorch says how to get it. (sweep.html's links
 * only to reports that exist: test_report's test_sweep_report.) */
#include "helpers.h"

#include <dlfcn.h>
#include <unistd.h>

#include "version.h"

static const char *experiment =
    "return {\n"
    "  data = { 'synthetic', classes = 4, size = 8, train = 256, valid = 64, test = 64, batch_size = 64 },\n"
    "  model = { { 'conv2d', out = 4, kernel = 3, padding = 1 }, { 'relu' }, { 'flatten' }, { 'linear', out = 4 } },\n"
    "  loss = 'cross_entropy',\n"
    "  optim = { 'sgd', lr = function(step, steps)\n"
    "    if step == tonumber(os.getenv('RX_STOP_AT_STEP') or -1) then os.execute('kill -TERM $PPID') end\n"
    "    return 0.05\n"
    "  end },\n"
    "  epochs = 2, threads = 1, device = 'cpu',\n"
    "}\n";

/* Prints a tensor of a safetensors file as numbers: safetensors.py FILE NAME. */
static const char *safetensors_py =
    "import json, struct, sys\n"
    "b = open(sys.argv[1], 'rb').read()\n"
    "n = struct.unpack('<Q', b[:8])[0]\n"
    "t = json.loads(b[8:8 + n])[sys.argv[2]]\n"
    "lo, hi = t['data_offsets']\n"
    "data = b[8 + n + lo:8 + n + hi]\n"
    "print(' '.join('%g' % v for v in struct.unpack('<%df' % (len(data) // 4), data)))\n";

/* cmocka's state: the suite's folder (test_folder_with), with the config in it. */
static int setup(void **state)
{
    *state = test_folder_with((const char *const[]){ "exp.lua", experiment, "safetensors.py", safetensors_py, NULL });
    return 0;
}

/* Runs line with its stdout in out (stderr to stderr.txt); returns the exit status. */
static int sh_stdout(const char *dir, const char *line, char *out, size_t len)
{
    char wrapped[3000];
    snprintf(wrapped, sizeof wrapped, "(%s) > stdout.txt", line);
    int rc = shell_in(dir, wrapped, out, len);
    char path[800], err[ERR_LEN], *text;
    size_t n;
    snprintf(path, sizeof path, "%s/stdout.txt", dir);
    if (read_file(path, &text, &n, err) != 0) fail_msg("%s", err);
    snprintf(out, len, "%s", text);
    free(text);
    return rc;
}

static void test_unknown_plugin_says_where_it_looked(void **state)
{
    const char *dir = *state;
    char out[4096];
    assert_int_equal(shell_in(dir, "RUNEXP_PLUGIN_PATH=/nonexistent/a:/nonexistent/b $RUNEXP exp.lua out=run "
                           "'model={{\"prelu\"}}'", out, sizeof out), 1);
    if (!strstr(out, "unknown layer plugin 'prelu' (known: ") ||
        !strstr(out, "; searched layers/ in: /nonexistent/a, /nonexistent/b, " RX_BUILD_DIR "/plugins, ") ||
        !strstr(out, "(RUNEXP_PLUGIN_PATH, colon separated, puts folders before these)"))
        fail_msg("got: %s", out);
}

/* Invoked as ./here/runexp (a link): the hints say ./here/runexp, not runexp. */
static void test_resume_hint_names_the_command(void **state)
{
    const char *dir = *state;
    char out[4096];
    assert_int_equal(shell_in(dir, "mkdir here && ln -s \"$RUNEXP\" here/runexp && RX_STOP_AT_STEP=2 ./here/runexp exp.lua "
                           "out=run", out, sizeof out), 130);
    if (!strstr(out, "resume with: ./here/runexp resume run\n")) fail_msg("got: %s", out);
    assert_int_equal(shell_in(dir, "./here/runexp exp.lua out=run", out, sizeof out), 1);
    if (!strstr(out, "continue it with: ./here/runexp resume run\n")) fail_msg("got: %s", out);
    assert_int_equal(shell_in(dir, "./here/runexp resume run", out, sizeof out), 0);
}

static void test_no_driver_says_so(void **state)
{
#ifdef RX_WITH_CUDA
    const char *dir = *state;
    char out[4096];
    void *driver = dlopen("libcuda.so.1", RTLD_LAZY);
    if (driver) {
        dlclose(driver);
        printf("  (skipped: this machine has an NVIDIA driver)\n");
        return;
    }
    assert_int_equal(shell_in(dir, "$RUNEXP exp.lua out=run device=cuda", out, sizeof out), 1);
    if (!strstr(out, "device = \"cuda\", but no NVIDIA driver found (libcuda.so.1 missing) (use device=cpu"))
        fail_msg("got: %s", out);
    assert_null(strstr(out, "insufficient"));
    assert_int_equal(sh_stdout(dir, "$RUNEXP exp.lua out=auto device=auto epochs=1", out, sizeof out), 0);
    if (!strstr(out, "device: cpu (auto: no NVIDIA driver found (libcuda.so.1 missing))")) fail_msg("got: %s", out);
#else
    printf("  (skipped: this runexp was built without CUDA)\n");
#endif
}

/* started, host, runexp_version and revision: the last two as `runexp --version` says them. */
static void test_summary_records_the_build(void **state)
{
    const char *dir = *state;
    char out[4096], line[2000];
    if (shell_in(dir, "$RUNEXP exp.lua out=run epochs=1", out, sizeof out) != 0) fail_msg("%s", out);
    snprintf(line, sizeof line,
             "$RUNEXP --version > version.txt && python3 -c 'import json, re, socket, sys, time\n"
             "s = json.load(open(\"run/summary.json\"))\n"
             "assert re.fullmatch(r\"\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ\", s[\"started\"]), s\n"
             "t = time.mktime(time.strptime(s[\"started\"], \"%%Y-%%m-%%dT%%H:%%M:%%SZ\")) - time.timezone\n"
             "assert abs(time.time() - t) < 3600, s[\"started\"]\n"
             "assert s[\"host\"] == socket.gethostname(), s\n"
             "v = open(\"version.txt\").read()\n"
             "assert v == \"runexp %%s (plugin ABI %%d, revision %%s)\\n\" %% (s[\"runexp_version\"], %d, s[\"revision\"]), (v, s)\n"
             "assert s[\"runexp_version\"] == \"%s\", s' >&2",
             RX_ABI_VERSION, RUNEXP_VERSION);
    if (shell_in(dir, line, out, sizeof out) != 0) fail_msg("%s", out);
    /* In a git tree the Makefile passes the revision in. */
    snprintf(line, sizeof line, "git -C '%s' rev-parse --git-dir", RX_SOURCE_DIR);
    if (shell_in(dir, line, out, sizeof out) == 0) assert_string_not_equal(build_revision(), "unknown");
}

/* The prelu example declares its slopes with RX_INIT_CONSTANT: frozen, they are still their first
 * value in the checkpoint. */
static void test_constant_init(void **state)
{
    const char *dir = *state;
    char out[4096];
    const char *run = "RUNEXP_PLUGIN_PATH=" RX_BUILD_DIR "/examples $RUNEXP exp.lua epochs=1 ";
    char line[1200];
    snprintf(line, sizeof line, "%s out=a 'model={{\"conv2d\", out=3, kernel=3, padding=1}, {\"prelu\", frozen=true}, "
             "{\"flatten\"}, {\"linear\", out=4}}' >/dev/null && python3 safetensors.py a/best.safetensors 1.weight", run);
    if (sh_stdout(dir, line, out, sizeof out) != 0) fail_msg("%s", out);
    assert_string_equal(out, "0.25 0.25 0.25\n");
    snprintf(line, sizeof line, "%s out=b 'model={{\"conv2d\", out=3, kernel=3, padding=1}, {\"prelu\", frozen=true, "
             "per_channel=false, init=-0.5}, {\"flatten\"}, {\"linear\", out=4}}' >/dev/null && "
             "python3 safetensors.py b/best.safetensors 1.weight", run);
    if (sh_stdout(dir, line, out, sizeof out) != 0) fail_msg("%s", out);
    assert_string_equal(out, "-0.5\n");
    /* Trained, they move. */
    snprintf(line, sizeof line, "%s out=c 'model={{\"conv2d\", out=3, kernel=3, padding=1}, {\"prelu\"}, "
             "{\"flatten\"}, {\"linear\", out=4}}' >/dev/null && python3 safetensors.py c/best.safetensors 1.weight", run);
    if (sh_stdout(dir, line, out, sizeof out) != 0) fail_msg("%s", out);
    assert_string_not_equal(out, "0.25 0.25 0.25\n");
}

static void test_pytorch_missing_says_how_to_get_it(void **state)
{
    const char *dir = *state;
    char out[4096], line[1200];
    if (shell_in(dir, "python3 -c 'import torch'", out, sizeof out) == 0) {
        printf("  (skipped: python3 has PyTorch)\n");
        return;
    }
    snprintf(line, sizeof line, "python3 '%s/scripts/eval_in_pytorch.py' nothing.safetensors", RX_SOURCE_DIR);
    assert_int_equal(shell_in(dir, line, out, sizeof out), 1);
    if (!strstr(out, "PyTorch is missing") || !strstr(out, "scripts/setup --with-pytorch")) fail_msg("got: %s", out);
    snprintf(line, sizeof line, "'%s/scripts/setup' --with-pytroch", RX_SOURCE_DIR); /* refused before any install */
    assert_int_equal(shell_in(dir, line, out, sizeof out), 2);
    assert_non_null(strstr(out, "setup: unknown option '--with-pytroch' (known: --with-pytorch)"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_unknown_plugin_says_where_it_looked, setup, test_folder_teardown),
        cmocka_unit_test_setup_teardown(test_resume_hint_names_the_command, setup, test_folder_teardown),
        cmocka_unit_test_setup_teardown(test_no_driver_says_so, setup, test_folder_teardown),
        cmocka_unit_test_setup_teardown(test_summary_records_the_build, setup, test_folder_teardown),
        cmocka_unit_test_setup_teardown(test_constant_init, setup, test_folder_teardown),
        cmocka_unit_test_setup_teardown(test_pytorch_missing_says_how_to_get_it, setup, test_folder_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
