/* test_loader.c: the plugin loader accepts a good plugin and refuses, by name and with the
 * reason, each fixture that is wrong in one way (tests/fixtures/layers); a plugin's kind comes
 * from its folder and must be what its descriptor declares. */
#include "helpers.h"

#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

static void fixture_path(plugin_path *p)
{
    p->n = 0;
    plugin_path_add(p, RX_BUILD_DIR "/tests/fixtures");
}

/* Loading NAME must fail with a message that names the file and contains `why`. */
static void expect_refused(const char *name, const char *why)
{
    plugin_path p;
    plugin pl;
    char err[1024] = "";
    fixture_path(&p);
    assert_int_equal(plugin_load(&p, RX_LAYER, name, &pl, err, sizeof err), -1);
    assert_null(pl.handle);
    char file[64];
    snprintf(file, sizeof file, "layers/%s.so", name);
    if (!strstr(err, file) || !strstr(err, why)) fail_msg("loading %s: got \"%s\", wanted \"%s\"", name, err, why);
}

static void test_good_loads(void **state)
{
    plugin_path p;
    plugin pl;
    char err[1024] = "";
    fixture_path(&p);
    assert_int_equal(plugin_load(&p, RX_LAYER, "good", &pl, err, sizeof err), 0);
    assert_non_null(pl.desc);
    assert_string_equal(pl.desc->name, "good");
    assert_non_null(strstr(pl.file, "layers/good.so"));
    plugin_unload(&pl);
    assert_null(pl.handle);
}

static void test_refused(void **state)
{
    expect_refused("bad_abi", "built for plugin ABI 999");
    expect_refused("old_abi", "built for plugin ABI 2, this runexp speaks ABI 7 (rebuild it)");
    expect_refused("wrong_size", "descriptor is");
    expect_refused("wrong_kind", "is a plugin of kind optimizer, expected kind layer");
    expect_refused("wrong_folder", "is a plugin of kind loss, expected kind layer");
    expect_refused("wrong_name", "calls itself 'other', expected 'wrong_name'");
    expect_refused("no_backward", "layer.forward and layer.backward must be given for the same devices");
    expect_refused("no_create", "layer.create is missing");
    expect_refused("no_entry", "no entry function rx_plugin_no_entry()");
}

static void test_unknown_lists_known(void **state)
{
    plugin_path p;
    plugin pl;
    char err[1024] = "";
    fixture_path(&p);
    assert_int_equal(plugin_load(&p, RX_LAYER, "nonesuch", &pl, err, sizeof err), -1);
    assert_non_null(strstr(err, "unknown layer plugin 'nonesuch'"));
    assert_non_null(strstr(err, "known: bad_abi, bad_grad, bad_shape, crash, false_traits, good, no_backward"));
}

static void test_names_are_not_paths(void **state)
{
    plugin_path p;
    plugin pl;
    char err[1024] = "";
    fixture_path(&p);
    /* A name can never reach outside the search folders, nor into the current one. */
    assert_int_equal(plugin_load(&p, RX_LAYER, "../layers/good", &pl, err, sizeof err), -1);
    assert_int_equal(plugin_load(&p, RX_LAYER, "/tmp/good", &pl, err, sizeof err), -1);
    assert_int_equal(plugin_load(&p, RX_LAYER, "", &pl, err, sizeof err), -1);
    assert_non_null(strstr(err, "unknown layer plugin"));
}

static void test_not_a_shared_object(void **state)
{
    char *dir = test_tmpdir();
    char sub[512], file[600];
    snprintf(sub, sizeof sub, "%s/layers", dir);
    assert_int_equal(mkdir(sub, 0755), 0);
    snprintf(file, sizeof file, "%s/junk.so", sub);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fputs("not an ELF file\n", f);
    fclose(f);
    plugin_path p = { 0 };
    plugin_path_add(&p, dir);
    plugin pl;
    char err[1024] = "";
    assert_int_equal(plugin_load(&p, RX_LAYER, "junk", &pl, err, sizeof err), -1);
    assert_non_null(strstr(err, "junk.so: cannot load"));
    unlink(file);
    rmdir(sub);
    rmdir(dir);
    free(dir);
}

/* A FIFO where a plugin is looked for is refused, not opened: dlopen would block on it. */
static void test_fifo_is_not_opened(void **state)
{
    alarm(20); /* a blocking open would hang the suite: end it instead */
    char *dir = test_tmpdir();
    char sub[512], file[600];
    snprintf(sub, sizeof sub, "%s/layers", dir);
    assert_int_equal(mkdir(sub, 0755), 0);
    snprintf(file, sizeof file, "%s/pipe.so", sub);
    assert_int_equal(mkfifo(file, 0644), 0);
    plugin_path p = { 0 };
    plugin_path_add(&p, dir);
    plugin pl;
    char err[1024] = "";
    assert_int_equal(plugin_load(&p, RX_LAYER, "pipe", &pl, err, sizeof err), -1);
    assert_non_null(strstr(err, "pipe.so: is a FIFO, expected a regular file"));
    alarm(0);
    unlink(file);
    rmdir(sub);
    rmdir(dir);
    free(dir);
}

static void test_search_order(void **state)
{
    /* RUNEXP_PLUGIN_PATH comes first; the first folder holding the name wins. */
    setenv("RUNEXP_PLUGIN_PATH", RX_BUILD_DIR "/tests/fixtures:/nonexistent", 1);
    plugin_path p;
    plugin_path_default(&p);
    assert_true(p.n >= 3);
    assert_string_equal(p.dir[0], RX_BUILD_DIR "/tests/fixtures");
    assert_string_equal(p.dir[1], "/nonexistent");
    plugin pl;
    char err[1024] = "";
    assert_int_equal(plugin_load(&p, RX_LAYER, "good", &pl, err, sizeof err), 0);
    assert_non_null(strstr(pl.file, "tests/fixtures/layers/good.so"));
    plugin_unload(&pl);
    unsetenv("RUNEXP_PLUGIN_PATH");
}

static void test_in_tree_plugins_load(void **state)
{
    /* Every plugin the build made passes the loader's checks, in its own folder. */
    static const struct { rx_kind kind; const char *name; } all[] = {
        { RX_LAYER, "conv2d" }, { RX_LAYER, "linear" }, { RX_LAYER, "relu" }, { RX_LAYER, "maxpool" },
        { RX_LAYER, "flatten" }, { RX_LAYER, "dropout" }, { RX_LOSS, "cross_entropy" },
        { RX_OPTIM, "sgd" }, { RX_DATA, "cifar10" }, { RX_DATA, "synthetic" },
    };
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
        plugin pl;
        test_load(&pl, all[i].kind, all[i].name);
        assert_int_equal(pl.desc->kind, all[i].kind);
        plugin_unload(&pl);
    }
    /* And a layer asked for as a loss is refused. */
    plugin_path p;
    plugin pl;
    char err[1024] = "";
    test_plugin_path(&p);
    assert_int_equal(plugin_load(&p, RX_LOSS, "relu", &pl, err, sizeof err), -1);
    assert_non_null(strstr(err, "is a plugin of kind layer, expected kind loss"));
}

static void test_load_any_kind(void **state)
{
    /* runexp check asks for a layer or a loss; the folder's kind must be the descriptor's. */
    static const rx_kind layer_or_loss[] = { RX_LAYER, RX_LOSS };
    plugin_path p;
    plugin pl;
    char err[1024] = "";
    fixture_path(&p);
    assert_int_equal(plugin_load_any(&p, layer_or_loss, 2, "good", &pl, err, sizeof err), 0);
    assert_int_equal(pl.desc->kind, RX_LAYER);
    plugin_unload(&pl);
    assert_int_equal(plugin_load_any(&p, layer_or_loss, 2, "wrong_folder", &pl, err, sizeof err), -1);
    assert_null(pl.handle);
    if (!strstr(err, "layers/wrong_folder.so: is a plugin of kind loss, expected kind layer")) fail_msg("got \"%s\"", err);
    assert_int_equal(plugin_load_any(&p, layer_or_loss, 2, "nonesuch", &pl, err, sizeof err), -1);
    if (!strstr(err, "unknown layer or loss plugin 'nonesuch' (known layer: bad_abi, bad_grad, ") ||
        !strstr(err, "; loss: none)"))
        fail_msg("got \"%s\"", err);
    /* The in-tree loss is found in loss/ with its kind, a layer in layers/ with its. */
    test_plugin_path(&p);
    assert_int_equal(plugin_load_any(&p, layer_or_loss, 2, "cross_entropy", &pl, err, sizeof err), 0);
    assert_int_equal(pl.desc->kind, RX_LOSS);
    assert_non_null(strstr(pl.file, "loss/cross_entropy.so"));
    plugin_unload(&pl);
    assert_int_equal(plugin_load_any(&p, layer_or_loss, 2, "relu", &pl, err, sizeof err), 0);
    assert_int_equal(pl.desc->kind, RX_LAYER);
    plugin_unload(&pl);
    /* Asked for as a layer, the loss is refused with the layers listed, not the losses. */
    assert_int_equal(plugin_load(&p, RX_LAYER, "rleu", &pl, err, sizeof err), -1);
    if (!strstr(err, "unknown layer plugin 'rleu'") || strstr(err, "cross_entropy")) fail_msg("got \"%s\"", err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_loads),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_unknown_lists_known),
        cmocka_unit_test(test_names_are_not_paths),
        cmocka_unit_test(test_not_a_shared_object),
        cmocka_unit_test(test_fifo_is_not_opened),
        cmocka_unit_test(test_search_order),
        cmocka_unit_test(test_in_tree_plugins_load),
        cmocka_unit_test(test_load_any_kind),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
