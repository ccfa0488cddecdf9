/* test_config.c: reading a Lua config, key=value overrides, the resolved config, and every
 * kind of mistake a user makes, each with a message that names the file and the place. */
#include "helpers.h"

#include <lua.h>
#include <math.h>
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
    assert_string_equal(c.layers[3].path, "3");
    assert_int_equal(c.layers[0].opens + c.layers[3].closes, 0);
    assert_string_equal(c.layers[0].init, "default");
    assert_int_equal(c.layers[0].nrules, 0);
    assert_true(c.weight_decay == 0);
    assert_int_equal(c.sched.kind, SCHED_CONSTANT);
    assert_true(c.ema == 0);
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
    assert_non_null(
        strstr(b.s, "{ \"conv2d\", out = 4, kernel = 3, stride = 2, padding = 1, bias = true, precision = \"fp32\", pool = 0 }"));
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
                 "exp.lua: model[1] (conv2d): unknown key 'paddin'",
                 "(accepted: lr_scale, weight_decay, frozen, train_epochs, init, out, kernel, stride, padding, bias, precision, pool)");
    expect_error(f, variant("epochs = 2", "epoch = 2"), 0, NULL, "exp.lua: unknown key string 'epoch'", "accepted: data, model");
    expect_error(f, variant("out = 4, kernel", "out = '4', kernel"), 0, NULL,
                 "model[1] (conv2d): 'out' must be an integer, got string '4'", NULL);
    expect_error(f, variant("out = 4, kernel", "out = 4.5, kernel"), 0, NULL, "'out' must be an integer, got number 4.5", NULL);
    expect_error(f, variant("{ 'linear', out = 10 }", "{ 'linear' }"), 0, NULL,
                 "model[4] (linear): missing required key 'out'", NULL);
    expect_error(f, variant("{ 'relu' }", "{ 'rleu' }"), 0, NULL, "model[2]: unknown layer plugin 'rleu' (known: ",
                 "conv2d, dropout, flatten");
    expect_error(f, variant("'cross_entropy'", "'relu'"), 0, NULL, "loss: ", "expected kind loss");
    expect_error(f, variant("{ 'sgd',", "{ 'sgdd',"), 0, NULL, "optim: unknown optimizer plugin 'sgdd' (known: ", "sgd)");
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
    expect_error(f, base_config, 1, typo, "command line: optim (sgd): unknown key 'lrr'",
                 "accepted: lr, weight_decay, schedule, momentum, nesterov, dampening)");
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

/* ---- Memory a config's Lua may take, and sizes it may ask for ---- */

static void test_memory_limits(void **state)
{
    fixture *f = *state;
    /* a config that builds a 2 GB string: refused at 1 GiB, with no allocation that large tried */
    expect_error(f, "local s = ('a'):rep(2e9)\nreturn {}\n", 0, NULL,
                 "exp.lua: the config's Lua used more than 1024 MiB, the limit of a config", NULL);
    /* one that grows a table without end: stopped at the same limit */
    expect_error(f, "local t = {}\nfor i = 1, 1e9 do t[i] = i end\nreturn {}\n", 0, NULL,
                 "exp.lua: the config's Lua used more than 1024 MiB", NULL);
    /* a command-line value may take far less: 16 MiB */
    char *big[] = { "x={('a'):rep(1e8)}" };
    expect_error(f, base_config, 1, big, "command line: 'x={('a'):rep(1e8)}': evaluating the value took more than "
                 "16 MiB, the limit of a command-line value", NULL);
    /* under the limits, the same code runs: a 1 MB string, then a table value, both read */
    config c;
    char err[ERR_LEN];
    char *fine[] = { "data.batch_size={('8'):rep(1)}" };
    assert_int_equal(load(f, &c, "local s = ('a'):rep(1e6)\n" "return {\n"
                     "  data = { 'synthetic', batch_size = #s // 100000, size = 8 },\n"
                     "  model = { { 'flatten' }, { 'linear', out = 10 } },\n"
                     "  loss = 'cross_entropy', optim = { 'sgd', lr = 0.1 },\n}\n", 0, NULL, err), 0);
    assert_int_equal(c.batch_size, 10);
    config_free(&c);
    expect_error(f, base_config, 1, fine, "command line: data (synthetic): 'batch_size' must be an integer, got table", NULL);
}

static void test_size_bounds(void **state)
{
    fixture *f = *state;
    expect_error(f, variant("batch_size = 16", "batch_size = 2147483648"), 0, NULL,
                 "exp.lua: data (synthetic): 'batch_size' must be at most 2147483647 (no batch is larger), "
                 "got 2147483648", NULL);
    char *huge[] = { "data.batch_size=9223372036854775807" };
    expect_error(f, base_config, 1, huge, "command line: data (synthetic): 'batch_size' must be at most 2147483647",
                 "got 9223372036854775807");
    config c;
    char err[ERR_LEN];
    assert_int_equal(load(f, &c, variant("batch_size = 16", "batch_size = 2147483647"), 0, NULL, err), 0);
    config_free(&c);
}

/* ---- Residual blocks, training rules, init, schedules, weight averaging ---- */

/* An experiment with this model list, these optimizer keys (after 'sgd') and these extra
 * top-level keys. */
static const char *experiment(const char *model, const char *optim, const char *top)
{
    static char buf[8192];
    snprintf(buf, sizeof buf,
             "return {\n"
             "  data = { 'synthetic', batch_size = 16, size = 8 },\n"
             "  model = { %s },\n"
             "  loss = 'cross_entropy',\n"
             "  optim = { 'sgd', %s },\n"
             "  epochs = 2, %s\n"
             "}\n",
             model, optim ? optim : "lr = 0.1", top ? top : "");
    return buf;
}

#define CONV "{ 'conv2d', out = 4, kernel = 3, padding = 1 }"

/* model[1], model[2], then a block whose body holds a nested block, then two plain layers. */
static const char *residual_model =
    CONV ", { 'relu' },\n"
    "{ 'residual', { " CONV ", { 'relu' }, { 'residual', { " CONV " } } } },\n"
    "{ 'flatten' }, { 'linear', out = 10 }";

static void test_residual_blocks(void **state)
{
    fixture *f = *state;
    config c;
    char err[ERR_LEN];
    if (load(f, &c, experiment(residual_model, NULL, NULL), 0, NULL, err) != 0) fail_msg("%s", err);
    static const struct { const char *where, *path; int opens, closes; } want[] = {
        { "model[1] (conv2d)", "0", 0, 0 },         { "model[2] (relu)", "1", 0, 0 },
        { "model[3][1] (conv2d)", "2.0", 1, 0 },    { "model[3][2] (relu)", "2.1", 0, 0 },
        { "model[3][3][1] (conv2d)", "2.2.0", 1, 2 }, { "model[4] (flatten)", "3", 0, 0 },
        { "model[5] (linear)", "4", 0, 0 },
    };
    assert_int_equal(c.nlayers, 7);
    for (int i = 0; i < 7; i++) {
        assert_string_equal(c.layers[i].where, want[i].where);
        assert_string_equal(c.layers[i].path, want[i].path);
        assert_int_equal(c.layers[i].opens, want[i].opens);
        assert_int_equal(c.layers[i].closes, want[i].closes);
    }
    config_free(&c);

    /* Blocks at the very start, two opening (and closing) at one layer; an override reaches
     * inside a block by its list indices, and the counts survive the second read. */
    const char *twice = "{ 'residual', { { 'residual', { " CONV " } } } }, { 'residual', { { 'relu' } } },\n"
                        "{ 'flatten' }, { 'linear', out = 10 }";
    char *ov[] = { "model.1.2.1.2.1.out=4", "model.2.2.1.1=relu" };
    if (load(f, &c, experiment(twice, NULL, NULL), 2, ov, err) != 0) fail_msg("%s", err);
    assert_int_equal(c.nlayers, 4);
    assert_string_equal(c.layers[0].path, "0.0.0");
    assert_string_equal(c.layers[0].where, "model[1][1][1] (conv2d)");
    assert_int_equal(c.layers[0].opens, 2);
    assert_int_equal(c.layers[0].closes, 2);
    assert_int_equal(c.layers[1].opens, 1);
    assert_int_equal(c.layers[1].closes, 1);
    assert_string_equal(c.layers[2].path, "2");
    config_free(&c);
    char *deep[] = { "model.3.2.3.2.1.out=8" };
    if (load(f, &c, experiment(residual_model, NULL, NULL), 1, deep, err) != 0) fail_msg("%s", err);
    assert_int_equal(config_arg(&c.layers[4], "out")->i, 8);
    assert_int_equal(c.layers[2].opens + c.layers[4].opens + c.layers[4].closes, 4);
    config_free(&c);
}

static void test_residual_errors(void **state)
{
    fixture *f = *state;
    const char *shape = "exp.lua: model[3]: a residual block is {\"residual\", {layers...}}";
    expect_error(f, experiment(CONV ", { 'relu' }, { 'residual' }", NULL, NULL), 0, NULL, shape, NULL);
    expect_error(f, experiment(CONV ", { 'relu' }, { 'residual', 'relu' }", NULL, NULL), 0, NULL, shape, NULL);
    expect_error(f, experiment(CONV ", { 'relu' }, { 'residual', { { 'relu' } }, p = 1 }", NULL, NULL), 0, NULL, shape, NULL);
    expect_error(f, experiment(CONV ", { 'relu' }, { 'residual', { { 'relu' } }, { 'relu' } }", NULL, NULL), 0, NULL,
                 shape, NULL);
    expect_error(f, experiment(CONV ", { 'relu' }, { 'residual', {} }", NULL, NULL), 0, NULL,
                 "exp.lua: model[3]: the list of layers is empty", NULL);
    /* Mistakes inside a block are placed by both indices. */
    expect_error(f, experiment(CONV ", { 'residual', { { 'relu' }, { 'conv2d', out = 4 } } }", NULL, NULL), 0, NULL,
                 "exp.lua: model[2][2] (conv2d): missing required key 'kernel'", NULL);
    expect_error(f, experiment("{ 'residual', { { 'relu' }, { 'residual', { { 'rleu' } } } } }", NULL, NULL), 0, NULL,
                 "exp.lua: model[1][2][1]: unknown layer plugin 'rleu'", NULL);
    expect_error(f, experiment("{ 'residual', { { 'relu' }, x = 2 } }", NULL, NULL), 0, NULL,
                 "exp.lua: model[1]: unexpected key string 'x' (model[1] is a list of layers)", NULL);
    char *ov[] = { "model.1.2.1.lr_scale=-1" };
    expect_error(f, experiment("{ 'residual', { { 'relu' } } }", NULL, NULL), 1, ov,
                 "command line: model[1][1] (relu): 'lr_scale' must be a finite number >= 0, got -1", NULL);
    /* Nested too deep: 17 blocks inside each other. */
    char model[2048] = "", *p = model;
    for (int i = 0; i < 17; i++) p += sprintf(p, "{ 'residual', { ");
    p += sprintf(p, "{ 'relu' }");
    for (int i = 0; i < 17; i++) p += sprintf(p, " } }");
    expect_error(f, experiment(model, NULL, NULL), 0, NULL, "residual blocks nested more than 16 deep", NULL);
}

/* The rule that applies to tensor `name` of layer u. */
static tensor_rule rule_of(const config *c, int layer, const char *name)
{
    tensor_rule t;
    config_tensor_rule(c, &c->layers[layer], name, &t);
    assert_string_equal(t.tensor, name);
    return t;
}

static const char *rules_model =
    "{ 'conv2d', out = 4, kernel = 3, padding = 1, lr_scale = 2, weight_decay = { bias = 0 },\n"
    "  frozen = { weight = true }, train_epochs = { bias = 3, ['*'] = 5 } },\n"
    "{ 'relu' }, { 'flatten' },\n"
    "{ 'linear', out = 10, lr_scale = { weight = 0.5, bias = 64 }, frozen = true, weight_decay = 0.25,\n"
    "  train_epochs = 1 }";

static void test_rules(void **state)
{
    fixture *f = *state;
    config c;
    char err[ERR_LEN];
    if (load(f, &c, experiment(rules_model, "lr = 0.1, weight_decay = 5e-4", NULL), 0, NULL, err) != 0) fail_msg("%s", err);
    assert_true(c.weight_decay == 5e-4);
    /* "*" first, then the tensor's own rule over it; optim.weight_decay where no rule says. */
    tensor_rule w = rule_of(&c, 0, "weight"), b = rule_of(&c, 0, "bias");
    assert_true(w.lr_scale == 2 && w.weight_decay == 5e-4 && w.frozen == 1 && w.train_epochs == 5);
    assert_true(b.lr_scale == 2 && b.weight_decay == 0 && b.frozen == 0 && b.train_epochs == 3);
    tensor_rule r = rule_of(&c, 1, "anything");
    assert_true(r.lr_scale == 1 && r.weight_decay == 5e-4 && r.frozen == 0 && r.train_epochs == 0);
    w = rule_of(&c, 3, "weight");
    b = rule_of(&c, 3, "bias");
    assert_true(w.lr_scale == 0.5 && w.weight_decay == 0.25 && w.frozen == 1 && w.train_epochs == 1);
    assert_true(b.lr_scale == 64 && b.weight_decay == 0.25 && b.frozen == 1 && b.train_epochs == 1);
    config_free(&c);

    /* A tensor's own rule overrides "*" in both directions, and 0 is a valid scale. */
    const char *thaw = "{ 'linear', out = 10, frozen = { ['*'] = true, bias = false }, lr_scale = { ['*'] = 0 } }";
    if (load(f, &c, experiment(thaw, NULL, NULL), 0, NULL, err) != 0) fail_msg("%s", err);
    assert_int_equal(rule_of(&c, 0, "weight").frozen, 1);
    assert_int_equal(rule_of(&c, 0, "bias").frozen, 0);
    assert_true(rule_of(&c, 0, "bias").lr_scale == 0);
    assert_true(rule_of(&c, 0, "bias").weight_decay == 0); /* optim.weight_decay's default */
    config_free(&c);

    /* Rules from the command line, a table constructor among them. */
    char *ov[] = { "model.1.frozen=true", "model.2.lr_scale={bias=3}", "optim.weight_decay=0.01" };
    if (load(f, &c, experiment("{ 'relu' }, { 'linear', out = 10 }", NULL, NULL), 3, ov, err) != 0) fail_msg("%s", err);
    assert_int_equal(rule_of(&c, 0, "x").frozen, 1);
    assert_true(rule_of(&c, 1, "bias").lr_scale == 3 && rule_of(&c, 1, "weight").lr_scale == 1);
    assert_true(rule_of(&c, 1, "weight").weight_decay == 0.01);
    config_free(&c);
}

/* A model of one linear layer with these extra keys. */
static const char *linear_with(const char *keys)
{
    static char buf[512];
    snprintf(buf, sizeof buf, "{ 'flatten' }, { 'linear', out = 10, %s }", keys);
    return experiment(buf, NULL, NULL);
}

static void test_rule_errors(void **state)
{
    fixture *f = *state;
    static const struct { const char *keys, *want; } cases[] = {
        { "lr_scale = -1", "model[2] (linear): 'lr_scale' must be a finite number >= 0, got -1" },
        { "lr_scale = 'big'", "model[2] (linear): 'lr_scale' must be a number, got string 'big'" },
        { "lr_scale = 0/0", "model[2] (linear): 'lr_scale' must be a finite number >= 0, got " },
        { "lr_scale = math.huge", "'lr_scale' must be a finite number >= 0, got inf" },
        { "lr_scale = { 2 }", "model[2] (linear): 'lr_scale': expected tensor names as keys ({bias = ...}), got number 1" },
        { "lr_scale = { [true] = 2 }", "'lr_scale': expected tensor names as keys ({bias = ...}), got boolean true" },
        { "weight_decay = -0.5", "'weight_decay' must be a finite number >= 0, got -0.5" },
        { "weight_decay = { bias = -0.1 }", "model[2] (linear): 'weight_decay.bias' must be a finite number >= 0, got -0.1" },
        { "weight_decay = { bias = 'x' }", "'weight_decay.bias' must be a number, got string 'x'" },
        { "frozen = 1", "model[2] (linear): 'frozen' must be a boolean, got number 1" },
        { "frozen = { weight = 'yes' }", "'frozen.weight' must be a boolean, got string 'yes'" },
        { "train_epochs = 0", "model[2] (linear): 'train_epochs' must be at least 1, got 0" },
        { "train_epochs = 1.5", "'train_epochs' must be an integer, got number 1.5" },
        { "train_epochs = { bias = -2 }", "'train_epochs.bias' must be at least 1, got -2" },
        { "train_epochs = { [1.5] = 2 }", "'train_epochs': expected tensor names as keys ({bias = ...}), got number 1.5" },
        { "lr_scale = { a = 1, b = 1, c = 1, d = 1, e = 1, f = 1, g = 1, h = 1, i = 1, j = 1 }",
          "model[2] (linear): 'lr_scale': more than 9 tensors named" },
        { "init = 'xavier'", "model[2] (linear): 'init' must be default, dirac or whiten, got 'xavier'" },
        { "init = true", "model[2] (linear): 'init' must be a string, got boolean true" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) expect_error(f, linear_with(cases[i].keys), 0, NULL, cases[i].want, NULL);
    char *ov[] = { "model.2.weight_decay=-3" };
    expect_error(f, linear_with("bias = true"), 1, ov,
                 "command line: model[2] (linear): 'weight_decay' must be a finite number >= 0, got -3", NULL);
}

static void test_init(void **state)
{
    fixture *f = *state;
    config c;
    char err[ERR_LEN];
    const char *model = "{ 'conv2d', out = 24, kernel = 2, init = 'whiten' }, { 'conv2d', out = 24, kernel = 3, init = 'dirac' },\n"
                        "{ 'flatten' }, { 'linear', out = 10, init = 'default' }";
    if (load(f, &c, experiment(model, NULL, NULL), 0, NULL, err) != 0) fail_msg("%s", err);
    assert_string_equal(c.layers[0].init, "whiten");
    assert_string_equal(c.layers[1].init, "dirac");
    assert_string_equal(c.layers[2].init, "default");
    assert_string_equal(c.layers[3].init, "default");
    config_free(&c);
    char *ov[] = { "model.2.init=default", "model.4.init=dirac" };
    if (load(f, &c, experiment(model, NULL, NULL), 2, ov, err) != 0) fail_msg("%s", err);
    assert_string_equal(c.layers[1].init, "default");
    assert_string_equal(c.layers[3].init, "dirac"); /* a linear layer: refused when the net is built */
    config_free(&c);
}

static void test_optim_host_keys(void **state)
{
    fixture *f = *state;
    config c;
    char err[ERR_LEN];
    static const struct { const char *optim; schedule_kind kind; double warmup, start, final, gamma; int64_t every; } ok[] = {
        { "lr = 0.1, schedule = 'constant'", SCHED_CONSTANT, 0, 0, 0, 0, 0 },
        { "lr = 0.1, schedule = { 'constant' }", SCHED_CONSTANT, 0, 0, 0, 0, 0 },
        { "lr = 0.1, schedule = { 'step', every = 3, gamma = 0.5 }", SCHED_STEP, 0, 0, 0, 0.5, 3 },
        { "lr = 0.1, schedule = { 'step', every = 2 }", SCHED_STEP, 0, 0, 0, 0.1, 2 },
        { "lr = 0.1, schedule = { 'cosine', warmup = 0.1, start = 0.2, final = 0.01 }", SCHED_COSINE, 0.1, 0.2, 0.01, 0, 0 },
        { "lr = 0.1, schedule = 'cosine'", SCHED_COSINE, 0, 0, 0, 0, 0 },
        { "lr = 0.1, schedule = 'onecycle'", SCHED_ONECYCLE, 0.3, 0, 0, 0, 0 },
        { "lr = 0.1, schedule = { 'onecycle', warmup = 0, start = 1, final = 2 }", SCHED_ONECYCLE, 0, 1, 2, 0, 0 },
    };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        if (load(f, &c, experiment(CONV, ok[i].optim, NULL), 0, NULL, err) != 0) fail_msg("%s: %s", ok[i].optim, err);
        assert_int_equal(c.sched.kind, ok[i].kind);
        if (ok[i].kind == SCHED_STEP) {
            assert_int_equal(c.sched.every, ok[i].every);
            assert_true(c.sched.gamma == ok[i].gamma);
        } else if (ok[i].kind != SCHED_CONSTANT) {
            assert_true(c.sched.warmup == ok[i].warmup && c.sched.start == ok[i].start && c.sched.final == ok[i].final);
        }
        assert_true(c.lr == 0.1);
        config_free(&c);
    }
    if (load(f, &c, experiment(CONV, "lr = 0.1, weight_decay = 5e-4", "ema = 0.99"), 0, NULL, err) != 0) fail_msg("%s", err);
    assert_true(c.weight_decay == 5e-4);
    assert_true(c.ema == 0.99);
    config_free(&c);
    char *ov[] = { "optim.schedule={'step', every=1, gamma=0.5}", "ema=0" };
    if (load(f, &c, experiment(CONV, "lr = 0.1, schedule = 'cosine'", "ema = 0.9"), 2, ov, err) != 0) fail_msg("%s", err);
    assert_int_equal(c.sched.kind, SCHED_STEP);
    assert_true(c.sched.gamma == 0.5 && c.ema == 0);
    config_free(&c);
}

static void test_optim_host_errors(void **state)
{
    fixture *f = *state;
    static const struct { const char *optim, *want; } cases[] = {
        { "weight_decay = -1", "exp.lua: optim (sgd): 'weight_decay' must be a finite number >= 0, got -1" },
        { "weight_decay = 'x'", "optim (sgd): 'weight_decay' must be a number, got string 'x'" },
        { "lr = -0.1", "optim (sgd): 'lr' must be a finite number >= 0, got -0.1" },
        { "schedule = 'linear'", "optim (sgd): 'schedule' must be constant, step, cosine or onecycle (a name or "
                                 "{\"name\", key = value}), got string 'linear'" },
        { "schedule = 42", "'schedule' must be constant, step, cosine or onecycle" },
        { "schedule = {}", "'schedule' must be constant, step, cosine or onecycle (a name or {\"name\", key = value}), got table" },
        { "schedule = { 'cosine', warm = 0.1 }", "optim (sgd): schedule cosine: unknown key 'warm' (accepted: warmup, start, final)" },
        { "schedule = { 'constant', every = 2 }", "schedule constant: unknown key 'every' (accepted: none)" },
        { "schedule = 'step'", "optim (sgd): schedule step: missing key 'every' (epochs between decays)" },
        { "schedule = { 'step', gamma = 0.5 }", "schedule step: missing key 'every'" },
        { "schedule = { 'step', every = 0 }", "schedule step: 'every' must be at least 1 epoch, got 0" },
        { "schedule = { 'step', every = 'x' }", "optim (sgd): 'every' must be an integer, got string 'x'" },
        { "schedule = { 'step', every = 1, gamma = -1 }", "schedule step: 'gamma' must be a finite number >= 0, got -1" },
        { "schedule = { 'cosine', warmup = 1 }", "schedule cosine: 'warmup' is a share of the steps in [0, 1), got 1" },
        { "schedule = { 'onecycle', warmup = -0.1 }", "schedule onecycle: 'warmup' is a share of the steps in [0, 1), got -0.1" },
        { "schedule = { 'onecycle', start = -1 }", "schedule onecycle: 'start' must be a finite factor >= 0, got -1" },
        { "schedule = { 'cosine', final = -0.5 }", "schedule cosine: 'final' must be a finite factor >= 0, got -0.5" },
        { "schedule = { 'cosine', final = math.huge }", "schedule cosine: 'final' must be a finite factor >= 0, got inf" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        expect_error(f, experiment(CONV, cases[i].optim, NULL), 0, NULL, cases[i].want, NULL);
    expect_error(f, experiment(CONV, NULL, "ema = 1"), 0, NULL, "exp.lua: 'ema' must be a decay in [0, 1) (0: off), got 1", NULL);
    expect_error(f, experiment(CONV, NULL, "ema = -0.1"), 0, NULL, "'ema' must be a decay in [0, 1) (0: off), got -0.1", NULL);
    expect_error(f, experiment(CONV, NULL, "ema = 'slow'"), 0, NULL, "exp.lua: 'ema' must be a number, got string 'slow'", NULL);
    char *ov[] = { "optim.schedule=cosin" };
    expect_error(f, experiment(CONV, NULL, NULL), 1, ov, "command line: optim (sgd): 'schedule' must be constant", "got string 'cosin'");
}

/* The top-level keys, one table in config.c: each one's type and bounds refused with its own
 * message, the full list of keys for a typo, and the resolved config's last line, every key
 * given, exactly. */
static void test_top_keys(void **state)
{
    fixture *f = *state;
    static const struct { const char *top, *want; } cases[] = {
        { "seed = 1.5", "exp.lua: 'seed' must be an integer, got number 1.5" },
        { "threads = -1", "exp.lua: 'threads' must be 0 (every core) or more, got -1" },
        { "threads = 'all'", "exp.lua: 'threads' must be an integer, got string 'all'" },
        { "device = 3", "exp.lua: 'device' must be auto, cpu or cuda, got '3'" },
        { "device = 'cuda_but_a_name_longer_than_the_field'",
          "'device' must be auto, cpu or cuda, got 'cuda_but_a_name_longer_than_the_field'" },
        { "out = true", "exp.lua: 'out' must be a string, got boolean true" },
        { "resume = 1", "exp.lua: 'resume' must be a boolean, got number 1" },
        { "ema = 0 / 0", "exp.lua: 'ema' must be a decay in [0, 1) (0: off), got " },
        { "epochs = -3", "exp.lua: 'epochs' must be at least 1, got -3" },
        { "[1] = 2", "exp.lua: unknown key number 1 in the experiment table (accepted: data, model, loss, optim, "
                     "early_stop, epochs, seed, threads, device, out, resume, ema, clip_grad_norm, log, tensorboard)" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        expect_error(f, experiment(CONV, NULL, cases[i].top), 0, NULL, cases[i].want, NULL);

    config c;
    char err[ERR_LEN];
    const char *top = "seed = 7, threads = 3, device = 'cpu', out = '/tmp/x', resume = false, ema = 0.5";
    if (load(f, &c, experiment(CONV, NULL, top), 0, NULL, err) != 0) fail_msg("%s", err);
    assert_true(c.epochs == 2 && c.seed == 7 && c.threads == 3 && c.ema == 0.5 && !c.resume);
    assert_string_equal(c.device, "cpu");
    assert_string_equal(c.out, "/tmp/x");
    strbuf b = { 0 };
    config_to_lua(&c, &b);
    assert_non_null(strstr(b.s, ",\n  epochs = 2, seed = 7, threads = 3, ema = 0.5, device = \"cpu\",\n}\n"));
    assert_null(strstr(b.s, "/tmp/x")); /* no `out`: run again, the file makes a new folder */
    sb_free(&b);
    config_free(&c);
}

/* early_stop, clip_grad_norm and log: read, checked, and in the resolved config only when on
 * (log never: how much a run prints is no part of the experiment). */
static void test_habit_keys(void **state)
{
    fixture *f = *state;
    static const struct { const char *top, *want; } cases[] = {
        { "early_stop = 3", "exp.lua: 'early_stop' must be a table { patience = N, min_delta = d } (or false), got number 3" },
        { "early_stop = {}", "exp.lua: early_stop: 'patience' is required" },
        { "early_stop = { patience = 0 }", "exp.lua: early_stop: 'patience' must be at least 1, got 0" },
        { "early_stop = { patience = -2 }", "exp.lua: early_stop: 'patience' must be at least 1, got -2" },
        { "early_stop = { patience = 2.5 }", "exp.lua: early_stop: 'patience' must be an integer, got number 2.5" },
        { "early_stop = { patience = 2, min_delta = -0.1 }",
          "exp.lua: early_stop: 'min_delta' must be a finite number >= 0, got -0.1" },
        { "early_stop = { patience = 2, min_delta = 1 / 0 }", "'min_delta' must be a finite number >= 0, got inf" },
        { "early_stop = { patience = 2, min_delta = 'x' }", "early_stop: 'min_delta' must be a number, got string 'x'" },
        { "early_stop = { patience = 2, mode = 'max' }",
          "exp.lua: early_stop: unknown key string 'mode' (accepted: patience, min_delta)" },
        { "early_stop = { 5 }", "exp.lua: early_stop: unknown key number 1 (accepted: patience, min_delta)" },
        { "clip_grad_norm = -1", "exp.lua: 'clip_grad_norm' must be a finite number >= 0 (0: off), got -1" },
        { "clip_grad_norm = 1 / 0", "exp.lua: 'clip_grad_norm' must be a finite number >= 0 (0: off), got inf" },
        { "clip_grad_norm = 'big'", "exp.lua: 'clip_grad_norm' must be a number, got string 'big'" },
        { "log = 'loud'", "exp.lua: 'log' must be quiet, normal or verbose, got 'loud'" },
        { "log = true", "exp.lua: 'log' must be a string, got boolean true" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        expect_error(f, experiment(CONV, NULL, cases[i].top), 0, NULL, cases[i].want, NULL);
    char *bad[] = { "early_stop.patience=0" };
    expect_error(f, experiment(CONV, NULL, "early_stop = { patience = 2 }"), 1, bad,
                 "command line: early_stop: 'patience' must be at least 1, got 0", NULL);

    config c;
    char err[ERR_LEN];
    strbuf b = { 0 };
    if (load(f, &c, experiment(CONV, NULL, NULL), 0, NULL, err) != 0) fail_msg("%s", err);
    assert_true(c.early_stop_patience == 0 && c.clip_grad_norm == 0);
    assert_string_equal(c.log, "normal");
    config_to_lua(&c, &b);
    assert_non_null(strstr(b.s, ",\n  epochs = 2, seed = 1, threads = 0, ema = 0.0, device = \"auto\",\n}\n")); /* off: left out */
    sb_free(&b);
    config_free(&c);

    const char *top = "early_stop = { patience = 3, min_delta = 0.01 }, clip_grad_norm = 2, log = 'quiet'";
    char *ov[] = { "log=verbose", "clip_grad_norm=0.5" }; /* the command line wins */
    if (load(f, &c, experiment(CONV, NULL, top), 2, ov, err) != 0) fail_msg("%s", err);
    assert_true(c.early_stop_patience == 3 && c.early_stop_min_delta == 0.01 && c.clip_grad_norm == 0.5);
    assert_string_equal(c.log, "verbose");
    b = (strbuf){ 0 };
    config_to_lua(&c, &b);
    assert_non_null(strstr(b.s, "device = \"auto\", clip_grad_norm = 0.5, early_stop = { patience = 3, min_delta = 0.01 },\n}\n"));
    assert_null(strstr(b.s, "log"));
    sb_free(&b);
    config_free(&c);
    char *off[] = { "early_stop=false" }; /* read again with the overrides: off, not the file's */
    if (load(f, &c, experiment(CONV, NULL, top), 1, off, err) != 0) fail_msg("%s", err);
    assert_true(c.early_stop_patience == 0 && c.early_stop_min_delta == 0);
    config_free(&c);
}

/* The factor at step (0-based) of steps, in epoch. */
static double factor_at(const config *c, int64_t step, int64_t steps, int64_t epoch)
{
    double v = -1;
    char err[ERR_LEN];
    if (config_lr_factor(c, step, steps, epoch, &v, err) != 0) fail_msg("%s", err);
    return v;
}

static void assert_close(double got, double want)
{
    if (fabs(got - want) > 1e-12 * (1 + fabs(want))) fail_msg("got %.17g, wanted %.17g", got, want);
}

static void test_lr_factors(void **state)
{
    fixture *f = *state;
    config c;
    char err[ERR_LEN];
    /* 11 steps: t = step / 10, so a warm-up of 0.2 ends at step 2 and the middle of what follows is step 6. */
    if (load(f, &c, experiment(CONV, "schedule = 'constant'", NULL), 0, NULL, err) != 0) fail_msg("%s", err);
    for (int64_t s = 0; s < 11; s++) assert_close(factor_at(&c, s, 11, 1 + s / 4), 1);
    config_free(&c);

    if (load(f, &c, experiment(CONV, "schedule = { 'step', every = 2, gamma = 0.5 }", NULL), 0, NULL, err) != 0) fail_msg("%s", err);
    static const double by_epoch[] = { 1, 1, 0.5, 0.5, 0.25, 0.25, 0.125 };
    for (int e = 1; e <= 7; e++) assert_close(factor_at(&c, 0, 11, e), by_epoch[e - 1]);
    assert_close(factor_at(&c, 10, 11, 3), 0.5); /* the step within the run does not matter */
    config_free(&c);

    for (int kind = 0; kind < 2; kind++) {
        const char *optim = kind ? "schedule = { 'onecycle', warmup = 0.2, start = 0.1, final = 0.01 }"
                                 : "schedule = { 'cosine', warmup = 0.2, start = 0.1, final = 0.01 }";
        if (load(f, &c, experiment(CONV, optim, NULL), 0, NULL, err) != 0) fail_msg("%s", err);
        assert_close(factor_at(&c, 0, 11, 1), 0.1);                /* the first step: start */
        assert_close(factor_at(&c, 1, 11, 1), 0.1 + 0.9 * 0.5);    /* half way up */
        assert_close(factor_at(&c, 2, 11, 1), 1);                  /* the end of the warm-up: the peak */
        double down = kind ? 0.75 : 0.5 * (1 + cos(M_PI / 4));     /* a quarter of the way down */
        assert_close(factor_at(&c, 4, 11, 1), 0.01 + 0.99 * down);
        assert_close(factor_at(&c, 6, 11, 1), 0.01 + 0.99 * 0.5);  /* the middle of the decay */
        assert_close(factor_at(&c, 10, 11, 1), 0.01);              /* the last step: final */
        config_free(&c);
    }
    /* Without a warm-up the first step is already at the peak. */
    if (load(f, &c, experiment(CONV, "schedule = 'cosine'", NULL), 0, NULL, err) != 0) fail_msg("%s", err);
    assert_close(factor_at(&c, 0, 101, 1), 1);
    assert_close(factor_at(&c, 50, 101, 1), 0.5);
    assert_close(factor_at(&c, 100, 101, 1), 0);
    config_free(&c);
    if (load(f, &c, experiment(CONV, "schedule = 'onecycle'", NULL), 0, NULL, err) != 0) fail_msg("%s", err);
    assert_close(factor_at(&c, 0, 101, 1), 0);
    assert_close(factor_at(&c, 15, 101, 1), 0.5);
    assert_close(factor_at(&c, 30, 101, 1), 1);
    assert_close(factor_at(&c, 65, 101, 1), 0.5);
    assert_close(factor_at(&c, 100, 101, 1), 0);
    config_free(&c);
}

static void test_lr_function(void **state)
{
    fixture *f = *state;
    config c;
    char err[ERR_LEN];
    const char *linear = "function(step, steps) return 0.1 * (1 - step / steps) end";
    char optim[512];
    snprintf(optim, sizeof optim, "lr = %s, weight_decay = 0.001", linear);
    if (load(f, &c, experiment(CONV, optim, NULL), 0, NULL, err) != 0) fail_msg("%s", err);
    assert_int_equal(c.sched.kind, SCHED_FUNCTION);
    assert_true(c.lr == 1); /* the function gives the learning rate itself */
    assert_close(factor_at(&c, 0, 10, 1), 0.1);
    assert_close(factor_at(&c, 5, 10, 1), 0.05);
    assert_close(factor_at(&c, 9, 10, 3), 0.1 * 0.1);
    assert_string_equal(c.sched.source, linear);
    /* The resolved config carries the function's text, and reads back to the same schedule. */
    strbuf b = { 0 };
    config_to_lua(&c, &b);
    char want[600];
    snprintf(want, sizeof want, "lr = %s, weight_decay = 0.001,", linear);
    if (!strstr(b.s, want)) fail_msg("no \"%s\" in\n%s", want, b.s);
    assert_null(strstr(b.s, "schedule"));
    config again;
    if (load(f, &again, b.s, 0, NULL, err) != 0) fail_msg("%s", err);
    assert_int_equal(again.sched.kind, SCHED_FUNCTION);
    for (int64_t s = 0; s < 10; s++) assert_close(factor_at(&again, s, 10, 1), factor_at(&c, s, 10, 1));
    config_free(&again);
    sb_free(&b);
    config_free(&c);

    /* A number given on the command line replaces the function. */
    char *ov[] = { "optim.lr=0.5" };
    if (load(f, &c, experiment(CONV, optim, NULL), 1, ov, err) != 0) fail_msg("%s", err);
    assert_int_equal(c.sched.kind, SCHED_CONSTANT);
    assert_true(c.lr == 0.5);
    config_free(&c);

    /* Failures are found when it is called, and the message names the step. */
    static const struct { const char *fn, *want; int64_t step; } bad[] = {
        { "function(step, steps) if step == 3 then error('too far') end return 0.1 end",
          "exp.lua: optim: the lr function failed at step 3 of 10: /", 3 },
        { "function(step, steps) return 'fast' end",
          "exp.lua: optim: the lr function must return a finite number >= 0 at step 0 of 10: string 'fast'", 0 },
        { "function(step, steps) return -0.1 end", "must return a finite number >= 0 at step 0 of 10: number -0.1", 0 },
        { "function(step, steps) if step > 6 then return 0/0 end return 1 end",
          "must return a finite number >= 0 at step 7 of 10: number ", 7 },
        { "function(step, steps) end", "the lr function must return a finite number >= 0 at step 0 of 10: nil", 0 },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(optim, sizeof optim, "lr = %s", bad[i].fn);
        if (load(f, &c, experiment(CONV, optim, NULL), 0, NULL, err) != 0) fail_msg("%s", err);
        for (int64_t s = 0; s < bad[i].step; s++) factor_at(&c, s, 10, 1);
        double v = 0;
        err[0] = '\0';
        int top = lua_gettop(c.L);
        assert_int_equal(config_lr_factor(&c, bad[i].step, 10, 1, &v, err), -1);
        if (!strstr(err, bad[i].want) || (i == 0 && !strstr(err, "/exp.lua:5: too far")))
            fail_msg("got \"%s\", wanted \"%s\"", err, bad[i].want);
        assert_int_equal(lua_gettop(c.L), top); /* nothing left behind on the stack */
        config_free(&c);
    }
}

/* The resolved config of a run is what `runexp resume` reads again: the lr function's text must
 * come out whole, however the file wrote it. */
static void test_lr_function_source(void **state)
{
    fixture *f = *state;
    static const struct { const char *before, *lr, *after, *source; } cases[] = {
        /* A named local function: its name would make the copy a syntax error. */
        { "local function decay(step, steps)\n  return 0.5 * (1 - step / steps)\nend\n", "decay", "",
          "function(step, steps)\n  return 0.5 * (1 - step / steps)\nend" },
        /* Something after it on its line that holds "end". */
        { "", "function(step, steps) return 0.5 * (1 - step / steps) end, momentum = 0.5", " -- linear to the end",
          "function(step, steps) return 0.5 * (1 - step / steps) end" },
        /* The word "function" before it on its line, "end" in a string and a nested block. */
        { "local my_function = 1; local warm = function(step, steps)\n"
          "  if step < 2 then return 0.25 end -- not the end\n  return 0.5 * (1 - step / steps), 'end' end\n",
          "warm", "", NULL },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char text[2048];
        snprintf(text, sizeof text,
                 "%sreturn {\n"
                 "  data = { 'synthetic', batch_size = 16, size = 8 },\n"
                 "  model = { { 'flatten' }, { 'linear', out = 10 } },\n"
                 "  loss = 'cross_entropy',\n"
                 "  optim = { 'sgd', lr = %s },%s\n"
                 "}\n", cases[i].before, cases[i].lr, cases[i].after);
        config c, again;
        char err[ERR_LEN];
        if (load(f, &c, text, 0, NULL, err) != 0) fail_msg("%s", err);
        if (cases[i].source) assert_string_equal(c.sched.source, cases[i].source);
        strbuf b = { 0 };
        config_to_lua(&c, &b);
        if (load(f, &again, b.s, 0, NULL, err) != 0) fail_msg("case %zu: %s\n%s", i, err, b.s);
        assert_int_equal(again.sched.kind, SCHED_FUNCTION);
        for (int64_t s = 0; s < 10; s++) assert_close(factor_at(&again, s, 10, 1), factor_at(&c, s, 10, 1));
        assert_true(again.layers[1].args[0].i == 10);
        sb_free(&b);
        config_free(&c);
        config_free(&again);
    }
    /* A function with no file to copy it from: the resolved config refuses to run, rather than
     * run on at the default learning rate. */
    config c;
    char err[ERR_LEN];
    const char *made = experiment(CONV, "lr = load('return function(step, steps) return 1 end')()", NULL);
    if (load(f, &c, made, 0, NULL, err) != 0) fail_msg("%s", err);
    strbuf b = { 0 };
    config_to_lua(&c, &b);
    expect_error(f, b.s, 0, NULL, "the lr function defined in [string \"return function(step, steps) return 1 end\"], line 1, "
                 "cannot be copied into this file", NULL);
    sb_free(&b);
    config_free(&c);
    /* With a schedule beside it, which one was meant is unclear. */
    expect_error(f, experiment(CONV, "lr = function(step, steps) return 1 end, schedule = 'cosine'", NULL), 0, NULL,
                 "exp.lua: optim (sgd): 'schedule' cannot be given with lr as a function", NULL);
    expect_error(f, experiment(CONV, "schedule = 'cosine', lr = function(step, steps) return 1 end", NULL), 0, NULL,
                 "exp.lua: optim (sgd): 'schedule' cannot be given with lr as a function", NULL);
}

/* The same layer rules, whatever order the tensors were named in. */
static void assert_same_rules(const config *a, const config *b, int layer)
{
    static const char *const names[] = { "*", "weight", "bias" };
    assert_int_equal(a->layers[layer].nrules, b->layers[layer].nrules);
    for (int i = 0; i < 3; i++) {
        tensor_rule x = rule_of(a, layer, names[i]), y = rule_of(b, layer, names[i]);
        assert_true(x.lr_scale == y.lr_scale && x.weight_decay == y.weight_decay);
        assert_int_equal(x.frozen, y.frozen);
        assert_int_equal(x.train_epochs, y.train_epochs);
    }
    for (int i = 0; i < a->layers[layer].nrules; i++) {
        const tensor_rule *r = &a->layers[layer].rules[i];
        const tensor_rule *s = NULL;
        for (int k = 0; k < b->layers[layer].nrules; k++)
            if (strcmp(b->layers[layer].rules[k].tensor, r->tensor) == 0) s = &b->layers[layer].rules[k];
        if (!s) fail_msg("layer %d: no rule for '%s' after the round trip", layer, r->tensor);
        assert_true(isnan(r->lr_scale) ? isnan(s->lr_scale) : r->lr_scale == s->lr_scale);
        assert_true(isnan(r->weight_decay) ? isnan(s->weight_decay) : r->weight_decay == s->weight_decay);
        assert_int_equal(r->frozen, s->frozen);
        assert_int_equal(r->train_epochs, s->train_epochs);
    }
}

static void test_resolved_round_trip_v2(void **state)
{
    fixture *f = *state;
    char model[2048];
    snprintf(model, sizeof model,
             "{ 'conv2d', out = 24, kernel = 2, init = 'whiten', frozen = true },\n"
             "{ 'residual', { { 'residual', { { 'conv2d', out = 24, kernel = 3, padding = 1, init = 'dirac',\n"
             "                                  lr_scale = { bias = 64, ['*'] = 0.5 }, weight_decay = { weight = 0.125 } } } },\n"
             "                { 'relu' } } },\n"
             "{ 'residual', { { 'relu' } } },\n"
             "%s, { 'flatten' }, { 'linear', out = 10, train_epochs = { bias = 2 }, frozen = { weight = false } }",
             residual_model);
    static const char *const optims[] = {
        "lr = 0.2, weight_decay = 5e-4, schedule = { 'cosine', warmup = 0.25, start = 0.1, final = 0.05 }",
        "lr = 0.2, schedule = { 'onecycle', warmup = 0.5, start = 0, final = 0.001 }",
        "lr = 3, schedule = { 'step', every = 7, gamma = 0.3 }",
        "lr = 1e-3, schedule = 'constant', weight_decay = 0.1",
    };
    for (size_t k = 0; k < sizeof optims / sizeof *optims; k++) {
        config c, again;
        char err[ERR_LEN];
        if (load(f, &c, experiment(model, optims[k], "ema = 0.999"), 0, NULL, err) != 0) fail_msg("%s", err);
        strbuf b = { 0 };
        config_to_lua(&c, &b);
        if (load(f, &again, b.s, 0, NULL, err) != 0) fail_msg("%s\n%s", err, b.s);
        assert_int_equal(again.nlayers, c.nlayers);
        for (int i = 0; i < c.nlayers; i++) {
            const plugin_use *x = &c.layers[i], *y = &again.layers[i];
            assert_string_equal(x->name, y->name);
            assert_string_equal(x->where, y->where);
            assert_string_equal(x->path, y->path);
            assert_string_equal(x->init, y->init);
            assert_int_equal(x->opens, y->opens);
            assert_int_equal(x->closes, y->closes);
            assert_same_args(x, y);
            assert_same_rules(&c, &again, i);
        }
        assert_int_equal(again.sched.kind, c.sched.kind);
        assert_true(again.sched.warmup == c.sched.warmup && again.sched.start == c.sched.start &&
                    again.sched.final == c.sched.final && again.sched.gamma == c.sched.gamma &&
                    again.sched.every == c.sched.every);
        assert_true(again.lr == c.lr && again.weight_decay == c.weight_decay && again.ema == c.ema);
        for (int64_t s = 0; s < 21; s++) assert_close(factor_at(&again, s, 21, 1 + s / 3), factor_at(&c, s, 21, 1 + s / 3));
        assert_string_equal(c.layers[8].where, "model[6][3][1] (conv2d)");
        assert_string_equal(c.layers[8].path, "5.2.0");
        strbuf b2 = { 0 };
        config_to_lua(&again, &b2);
        assert_int_equal(b.len, b2.len); /* the same text up to the order of named tensors */
        sb_free(&b);
        sb_free(&b2);
        config_free(&c);
        config_free(&again);
    }
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
        cmocka_unit_test_setup_teardown(test_memory_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_size_bounds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_residual_blocks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_residual_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rule_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_init, setup, teardown),
        cmocka_unit_test_setup_teardown(test_optim_host_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_optim_host_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_top_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_habit_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lr_factors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lr_function, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lr_function_source, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resolved_round_trip_v2, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
