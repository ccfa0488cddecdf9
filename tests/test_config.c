/* test_config.c: reading a Lua config, key=value overrides, the resolved config, and every
 * kind of mistake a user makes, each with a message that names the file and the place. */
#include "helpers.h"

#include <stdio.h>
#include <unistd.h>

#include "config.h"

static const char *base_config =
    "return {\n"
    "  data = { 'synthetic', batch_size = 16, size = 8 },\n"
    "  model = { { 'conv2d', out = 4, kernel = 3, padding = 1 }, { 'relu' }, { 'flatten' },\n"
    "            { 'linear', out = 10 } },\n"
    "  loss = 'cross_entropy',\n"
    "  optim = { 'sgd', lr = 0.1, momentum = 0.9 },\n"
    "  epochs = 2,\n"
    "}\n";

typedef struct fixture {
    char *dir;
    char file[512];
    plugin_path path;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->dir = test_tmpdir();
    snprintf(f->file, sizeof f->file, "%s/exp.lua", f->dir);
    test_plugin_path(&f->path);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    unlink(f->file);
    rmdir(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static void write_config(fixture *f, const char *text)
{
    FILE *out = fopen(f->file, "w");
    assert_non_null(out);
    fputs(text, out);
    fclose(out);
}

/* Loads text with the overrides; returns load's result, the message in err. */
static int load(fixture *f, config *c, const char *text, int n, char *const *overrides, char *err)
{
    write_config(f, text);
    err[0] = '\0';
    return config_load(c, &f->path, f->file, n, overrides, err);
}

/* The config must be refused with a message holding every one of the fragments. */
static void expect_error(fixture *f, const char *text, int n, char *const *overrides, const char *a, const char *b)
{
    config c;
    char err[ERR_LEN];
    int rc = load(f, &c, text, n, overrides, err);
    config_free(&c);
    if (rc == 0) fail_msg("accepted a config that should fail with \"%s\"", a);
    if (!strstr(err, a) || (b && !strstr(err, b)))
        fail_msg("got \"%s\", wanted \"%s\" and \"%s\"", err, a, b ? b : "");
    assert_null(strchr(err, '\n')); /* one line */
}

static void test_valid(void **state)
{
    fixture *f = *state;
    config c;
    char err[ERR_LEN];
    assert_int_equal(load(f, &c, base_config, 0, NULL, err), 0);
    assert_int_equal(c.epochs, 2);
    assert_int_equal(c.seed, 1);         /* default */
    assert_string_equal(c.device, "auto");
    assert_int_equal(c.batch_size, 16);
    assert_true(c.lr == 0.1);
    assert_int_equal(c.nlayers, 4);
    assert_string_equal(c.layers[0].name, "conv2d");
    assert_string_equal(c.layers[0].where, "model[1] (conv2d)");
    assert_int_equal(config_arg(&c.layers[0], "out")->i, 4);
    assert_int_equal(config_arg(&c.layers[0], "stride")->i, 1); /* default filled in */
    assert_true(config_arg(&c.optim, "momentum")->num == 0.9);
    assert_false(config_arg(&c.optim, "nesterov")->b);
    assert_string_equal(c.loss.name, "cross_entropy");
    assert_int_equal(c.layers[3].index, 3);
    config_free(&c);
}

static void test_overrides(void **state)
{
    fixture *f = *state;
    config c;
    char err[ERR_LEN];
    char *ov[] = { "epochs=5", "optim.lr=5e-2", "device=cpu", "out=runs/x", "model.1.out=8",
                   "optim.nesterov=true", "data.noise=0.25", "seed=7" };
    int rc = load(f, &c, base_config, 8, ov, err);
    if (rc != 0) fail_msg("%s", err);
    assert_int_equal(c.epochs, 5);
    assert_true(c.lr == 0.05);
    assert_string_equal(c.device, "cpu");
    assert_string_equal(c.out, "runs/x");
    assert_int_equal(config_arg(&c.layers[0], "out")->i, 8);
    assert_true(config_arg(&c.optim, "nesterov")->b);
    assert_true(config_arg(&c.data, "noise")->num == 0.25);
    assert_int_equal(c.seed, 7);
    config_free(&c);
}

static void assert_same_args(const plugin_use *a, const plugin_use *b)
{
    const rx_param *ps = a->pl.desc->params;
    for (int i = 0; ps[i].key; i++) {
        const rx_value *x = &a->args[i], *y = &b->args[i];
        switch (ps[i].type) {
        case RX_INT: assert_int_equal(x->i, y->i); break;
        case RX_NUM: assert_true(x->num == y->num); break;
        case RX_BOOL: assert_int_equal(x->b, y->b); break;
        case RX_STR: assert_string_equal(x->s, y->s); break;
        case RX_NUMS:
            assert_int_equal(x->len, y->len);
            for (int k = 0; k < x->len; k++) assert_true(x->list[k] == y->list[k]);
            break;
        }
    }
}

static void test_resolved_round_trip(void **state)
{
    fixture *f = *state;
    config c, again;
    char err[ERR_LEN];
    char *ov[] = { "optim.lr=0.3", "model.1.stride=2" };
    assert_int_equal(load(f, &c, base_config, 2, ov, err), 0);
    strbuf b = { 0 };
    config_to_lua(&c, &b);
    assert_non_null(strstr(b.s, "lr = 0.3"));
    assert_non_null(strstr(b.s, "{ \"conv2d\", out = 4, kernel = 3, stride = 2, padding = 1, bias = true }"));
    assert_int_equal(load(f, &again, b.s, 0, NULL, err), 0);
    assert_true(again.lr == c.lr);
    assert_int_equal(again.nlayers, c.nlayers);
    for (int i = 0; i < c.nlayers; i++) assert_same_args(&c.layers[i], &again.layers[i]);
    assert_same_args(&c.data, &again.data);
    assert_same_args(&c.optim, &again.optim);
    strbuf b2 = { 0 };
    config_to_lua(&again, &b2);
    assert_string_equal(b.s, b2.s);
    sb_free(&b);
    sb_free(&b2);
    config_free(&c);
    config_free(&again);
}

static void test_lua_errors(void **state)
{
    fixture *f = *state;
    expect_error(f, "return {\n  epochs = 3,\n  model = { \n", 0, NULL, "exp.lua:4:", "expected");
    expect_error(f, "error('no data here')\n", 0, NULL, "exp.lua:1: no data here", NULL);
    expect_error(f, "return 42\n", 0, NULL, "exp.lua: the config must return a table (the experiment), got number 42", NULL);
    config c;
    char err[ERR_LEN];
    assert_int_equal(config_load(&c, &f->path, "/nonexistent/exp.lua", 0, NULL, err), -1);
    assert_non_null(strstr(err, "/nonexistent/exp.lua"));
    config_free(&c);
}

/* base_config with one piece of text replaced. */
static char *variant(const char *from, const char *to)
{
    static char buf[4096];
    const char *at = strstr(base_config, from);
    assert_non_null(at);
    snprintf(buf, sizeof buf, "%.*s%s%s", (int)(at - base_config), base_config, to, at + strlen(from));
    return buf;
}

static void test_key_errors(void **state)
{
    fixture *f = *state;
    expect_error(f, variant("padding = 1", "paddin = 1"), 0, NULL,
                 "exp.lua: model[1] (conv2d): unknown key 'paddin'", "(accepted: out, kernel, stride, padding, bias)");
    expect_error(f, variant("epochs = 2", "epoch = 2"), 0, NULL, "exp.lua: unknown key string 'epoch'", "accepted: data, model");
    expect_error(f, variant("out = 4, kernel", "out = '4', kernel"), 0, NULL,
                 "model[1] (conv2d): 'out' must be an integer, got string '4'", NULL);
    expect_error(f, variant("out = 4, kernel", "out = 4.5, kernel"), 0, NULL, "'out' must be an integer, got number 4.5", NULL);
    expect_error(f, variant("{ 'linear', out = 10 }", "{ 'linear' }"), 0, NULL,
                 "model[4] (linear): missing required key 'out'", NULL);
    expect_error(f, variant("{ 'relu' }", "{ 'rleu' }"), 0, NULL, "model[2]: unknown layer plugin 'rleu'", "known: conv2d");
    expect_error(f, variant("'cross_entropy'", "'relu'"), 0, NULL, "loss: ", "expected kind loss");
    expect_error(f, variant("{ 'sgd',", "{ 'sgdd',"), 0, NULL, "optim: unknown optimizer plugin 'sgdd' (known: sgd", NULL);
    expect_error(f, variant("lr = 0.1", "lr = 'fast'"), 0, NULL, "optim (sgd): 'lr' must be a number, got string 'fast'", NULL);
    expect_error(f, variant("batch_size = 16", "batch_size = 0"), 0, NULL, "data (synthetic): 'batch_size' must be at least 1", NULL);
    expect_error(f, variant("epochs = 2", "epochs = 0"), 0, NULL, "'epochs' must be at least 1, got 0", NULL);
    expect_error(f, variant("epochs = 2", "epochs = 2, device = 'tpu'"), 0, NULL, "'device' must be auto, cpu or cuda, got 'tpu'", NULL);
    expect_error(f, variant("loss = 'cross_entropy',", ""), 0, NULL, "missing key 'loss'", NULL);
    expect_error(f, variant("{ { 'conv2d'", "{ x = 1, { 'conv2d'"), 0, NULL, "model: unexpected key string 'x'", NULL);
    expect_error(f, variant("{ 'relu' }", "{ 'relu', 3 }"), 0, NULL, "model[2] (relu): unexpected positional value", NULL);
    expect_error(f, variant("{ 'relu' }", "42"), 0, NULL, "model[2]: expected a layer plugin name", "got number 42");
}

static void test_override_errors(void **state)
{
    fixture *f = *state;
    char *typo[] = { "optim.lrr=0.1" };
    expect_error(f, base_config, 1, typo, "command line: optim (sgd): unknown key 'lrr'", "accepted: lr, momentum");
    char *not_kv[] = { "epochs" };
    expect_error(f, base_config, 1, not_kv, "command line: 'epochs' is not key=value", NULL);
    char *not_table[] = { "epochs.max=3" };
    expect_error(f, base_config, 1, not_table, "command line: 'epochs.max=3': 'epochs' is number 2 in the config, not a table", NULL);
    char *bad_index[] = { "model.9.out=3" };
    expect_error(f, base_config, 1, bad_index, "'model.9' is nil in the config, not a table", NULL);
    char *bad_type[] = { "epochs=many" };
    expect_error(f, base_config, 1, bad_type, "command line: 'epochs' must be an integer, got string 'many'", NULL);
    char *empty[] = { "=3" };
    expect_error(f, base_config, 1, empty, "'=3' is not key=value", NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_valid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overrides, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resolved_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lua_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_override_errors, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
