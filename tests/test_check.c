/* test_check.c: `runexp check` (core/check.c) passes every in-tree layer, the loss and the two
 * out-of-tree examples, and catches the deliberately broken fixtures: a wrong gradient, and a
 * layer whose output shape does not match what it writes. */
#include "helpers.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <sys/wait.h>

#include "check.h"

/* Runs the checks on NAME with ARGS ("key=value" ...) from the plugin folder DIR; returns the
 * number of failures and leaves the table in out. */
static int check_named(const char *dir, const char *name, const char *const *args, int nargs, rx_shape in,
                       char *out, size_t len)
{
    plugin_path path = { 0 };
    plugin_path_add(&path, dir);
    lua_State *L = luaL_newstate();
    lua_newtable(L);
    lua_pushstring(L, name);
    lua_rawseti(L, -2, 1);
    char err[ERR_LEN];
    for (int i = 0; i < nargs; i++)
        if (config_override(L, -1, args[i], err) != 0) fail_msg("%s", err);
    config c = { 0 };
    plugin_use u = { 0 };
    rx_kind kind = strcmp(name, "cross_entropy") == 0 ? RX_LOSS : RX_LAYER;
    if (config_read_plugin(&c, L, -1, kind, &path, "test", &u, err) != 0) fail_msg("%s", err);
    FILE *f = tmpfile();
    check_options o = { .in = in, .batch = 4, .seed = 7, .out = f };
    int failures = check_plugin(&u, &o, err);
    if (failures < 0) fail_msg("%s", err);
    rewind(f);
    size_t n = fread(out, 1, len - 1, f);
    out[n] = '\0';
    fclose(f);
    plugin_unload(&u.pl);
    config_free(&c);
    lua_close(L);
    return failures;
}

static void expect_pass(const char *dir, const char *name, const char *const *args, int nargs, rx_shape in)
{
    static char out[8192];
    int failures = check_named(dir, name, args, nargs, in, out, sizeof out);
    if (failures != 0) fail_msg("%s: %d checks failed:\n%s", name, failures, out);
    assert_non_null(strstr(out, "gradient wrt "));
    assert_non_null(strstr(out, "determinism"));
    assert_null(strstr(out, "FAIL"));
}

static void test_in_tree_plugins_pass(void **state)
{
    const char *dir = RX_BUILD_DIR "/plugins";
    const char *conv[] = { "out=5", "kernel=3", "padding=1", "stride=2" };
    expect_pass(dir, "conv2d", conv, 4, TEST_SHAPE(3, 9, 9));
    const char *linear[] = { "out=7" };
    expect_pass(dir, "linear", linear, 1, TEST_SHAPE(3, 4, 4));
    expect_pass(dir, "relu", NULL, 0, TEST_SHAPE(3, 8, 8));
    expect_pass(dir, "maxpool", NULL, 0, TEST_SHAPE(4, 8, 8));
    expect_pass(dir, "flatten", NULL, 0, TEST_SHAPE(3, 8, 8));
    const char *dropout[] = { "p=0.3" };
    expect_pass(dir, "dropout", dropout, 1, TEST_SHAPE(3, 8, 8));
    expect_pass(dir, "cross_entropy", NULL, 0, TEST_SHAPE(10));
}

static void test_examples_pass(void **state)
{
    const char *dir = RX_BUILD_DIR "/examples";
    const char *slope[] = { "slope=0.1" };
    expect_pass(dir, "leaky_relu", slope, 1, TEST_SHAPE(3, 8, 8));
    expect_pass(dir, "channel_scale", NULL, 0, TEST_SHAPE(4, 5, 5));
}

static void test_broken_plugins_caught(void **state)
{
    static char out[8192];
    const char *dir = RX_BUILD_DIR "/tests/fixtures";
    assert_int_equal(check_named(dir, "bad_grad", NULL, 0, TEST_SHAPE(3, 8, 8), out, sizeof out), 1);
    assert_non_null(strstr(out, "gradient wrt input           FAIL"));
    assert_int_equal(check_named(dir, "good", NULL, 0, TEST_SHAPE(3, 8, 8), out, sizeof out), 0);
    assert_true(check_named(dir, "bad_shape", NULL, 0, TEST_SHAPE(3, 8, 8), out, sizeof out) >= 2);
    assert_non_null(strstr(out, "forward writes y             FAIL  256 of 1024 outputs unwritten"));
    assert_non_null(strstr(out, "backward writes dx, dw       FAIL  wrote past the end of dx"));
}

static void test_command_line(void **state)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "RUNEXP_PLUGIN_PATH='%s/tests/fixtures' '%s/runexp' check bad_grad >/dev/null",
             RX_BUILD_DIR, RX_BUILD_DIR);
    assert_int_equal(WEXITSTATUS(system(cmd)), 1);
    snprintf(cmd, sizeof cmd, "'%s/runexp' check linear out=3 --shape=6 --batch=2 >/dev/null", RX_BUILD_DIR);
    assert_int_equal(WEXITSTATUS(system(cmd)), 0);
    snprintf(cmd, sizeof cmd, "'%s/runexp' check linear >/dev/null 2>&1", RX_BUILD_DIR); /* out is required */
    assert_int_equal(WEXITSTATUS(system(cmd)), 1);
    snprintf(cmd, sizeof cmd, "'%s/runexp' check conv2d out=2 kernel=3 --shape=x >/dev/null 2>&1", RX_BUILD_DIR);
    assert_int_equal(WEXITSTATUS(system(cmd)), 1);
}

static void test_examples_train(void **state)
{
    /* Each example's own config trains with the plugin found through RUNEXP_PLUGIN_PATH. */
    static const char *examples[] = { "leaky_relu", "channel_scale" };
    for (int i = 0; i < 2; i++) {
        char *dir = test_tmpdir();
        char cmd[2048];
        snprintf(cmd, sizeof cmd,
                 "RUNEXP_PLUGIN_PATH='%s/examples' '%s/runexp' '%s/examples/plugins/%s/%s.lua' out='%s/run' epochs=2 device=cpu "
                 ">'%s/log' 2>&1 && grep -q 'test accuracy 9' '%s/log'",
                 RX_BUILD_DIR, RX_BUILD_DIR, RX_SOURCE_DIR, examples[i], examples[i], dir, dir, dir);
        if (system(cmd) != 0) fail_msg("%s did not train to 90%%: see %s/log", examples[i], dir);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        assert_int_equal(system(cmd), 0);
        free(dir);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_in_tree_plugins_pass),
        cmocka_unit_test(test_examples_pass),
        cmocka_unit_test(test_broken_plugins_caught),
        cmocka_unit_test(test_command_line),
        cmocka_unit_test(test_examples_train),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
