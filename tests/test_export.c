/* test_export.c: `runexp export` checked against a real runtime. Three networks (configs/
 * cifar10.lua's tutorial, cifar10_tutorial_best.lua's, airbench94.lua's with its whitening and
 * batchnorm) are trained briefly on a fake CIFAR-10 folder, exported, and run by ONNX Runtime on
 * the same raw pixels as runexp's own forward (its C API, here): the logits must agree within
 * 1e-4 and onnx.checker must accept the file (scripts/onnx_compare.py). Then the out-of-tree
 * example plugins' own mappings, and the refusals: a layer without a mapping, a data plugin's
 * normalization that does not fit its samples, a missing run or checkpoint, an output that cannot
 * be written (the old file kept whole), a bad --opset.
 * Without onnx and onnxruntime (scripts/setup installs them in .deps/test-venv) the runtime checks skip,
 * saying why; the refusals run regardless. */
#include "helpers.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "config.h"
#include "trainer.h"

#define CIFAR_RECORD 3073
#define CIFAR_FILE   30730000L
#define FAKE_TRAIN   64 /* images with content in data_batch_1.bin; the rest of the files read as zeros */
#define FAKE_TEST    8
#define SAMPLES      4  /* the batch both sides compute */

typedef struct fixture {
    char *dir;
    char cifar[600];
    bool have_runtime;
} fixture;

/* A CIFAR-10 folder the plugin accepts without 180 MB of disk: files of the full size, sparse,
 * with random images and labels at the start of the first training file and of the test file. */
static void write_fake_cifar(const char *dir)
{
    static const char *const files[] = { "data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                                         "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin" };
    rx_rng r = { 7 };
    unsigned char record[CIFAR_RECORD];
    char path[700];
    for (size_t f = 0; f < sizeof files / sizeof *files; f++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[f]);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        assert_true(fd >= 0);
        int n = f == 0 ? FAKE_TRAIN : f == 5 ? FAKE_TEST : 0;
        for (int k = 0; k < n; k++) {
            record[0] = (unsigned char)rx_rng_below(&r, 10);
            for (int p = 1; p < CIFAR_RECORD; p++) record[p] = (unsigned char)rx_rng_below(&r, 256);
            assert_int_equal(write(fd, record, sizeof record), (ssize_t)sizeof record);
        }
        assert_int_equal(ftruncate(fd, CIFAR_FILE), 0);
        close(fd);
    }
    snprintf(path, sizeof path, "%s/batches.meta.txt", dir);
    FILE *m = fopen(path, "w");
    assert_non_null(m);
    fputs("airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n", m);
    fclose(m);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->dir = test_tmpdir();
    snprintf(f->cifar, sizeof f->cifar, "%s/cifar", f->dir);
    mkdir(f->cifar, 0755);
    write_fake_cifar(f->cifar);
    char probe[600];
    snprintf(probe, sizeof probe, "'%s' -c 'import onnxruntime, onnx' >/dev/null 2>&1", test_python());
    f->have_runtime = system(probe) == 0;
    *state = f;
    return 0;
}

/* Skips the test, saying why, where ONNX Runtime cannot be had. */
static void need_runtime(const fixture *f)
{
    if (f->have_runtime) return;
    printf("    skipped: %s cannot import onnxruntime and onnx (scripts/setup installs them in .deps/test-venv)\n",
           test_python());
    skip();
}

static int teardown(void **state)
{
    fixture *f = *state;
    test_rmdir(f->dir);
    free(f);
    return 0;
}

/* A short run of CONFIG (from configs/) on the fake data into dir/NAME, with extra overrides. */
static void train(const fixture *f, const char *file, const char *name, const char *extra)
{
    char line[2400], err[ERR_LEN];
    snprintf(line, sizeof line,
             "$RUNEXP %s/configs/%s out=%s/%s device=cpu epochs=1 threads=2 data.path=%s data.download=false "
             "data.train_limit=%d data.test_limit=%d data.batch_size=16 %s",
             RX_SOURCE_DIR, file, f->dir, name, f->cifar, FAKE_TRAIN, FAKE_TEST, extra);
    if (shell_in(f->dir, line, err, sizeof err) != 0) fail_msg("%s: %s", line, err);
}

/* runexp's logits for SAMPLES random images of the run in dir/NAME, through the C API: the
 * raw pixels (in [0, 1]) to dir/NAME/input.f32, the logits to dir/NAME/logits.f32. The
 * normalization the data plugin reports (none for synthetic) is done here as the data plugin
 * does it, since the graph must do it too (test_data checks that cifar10 reports its mean and std). Plugins: the build's, and the examples. */
static void runexp_logits(const fixture *f, const char *name)
{
    char file[700], ckpt[700], err[ERR_LEN];
    snprintf(file, sizeof file, "%s/%s/config.lua", f->dir, name);
    snprintf(ckpt, sizeof ckpt, "%s/%s/best.safetensors", f->dir, name);
    plugin_path pp;
    test_plugin_path(&pp);
    plugin_path_add(&pp, RX_BUILD_DIR "/examples");
    char *overrides[] = { "device=cpu", "data.batch_size=4" };
    config c;
    trainer t = { 0 };
    if (config_load(&c, &pp, file, 2, overrides, err) != 0 || trainer_setup(&t, &c, stderr, true, false, err) != 0 ||
        checkpoint_load_net(&t.nt, ckpt, NULL, 0, NULL, err) != 0)
        fail_msg("%s", err);
    const rx_data_info *in = &t.info;
    int64_t per = rx_numel(t.info.sample), plane = per / t.info.sample.d[0];
    float *raw = floats(SAMPLES * per);
    rx_rng r = { 11 };
    for (int64_t i = 0; i < SAMPLES * per; i++) {
        int ch = (int)(i / plane % t.info.sample.d[0]);
        raw[i] = rx_rng_uniform(&r);
        t.x[i] = in->norm_channels ? (raw[i] - (float)in->mean[ch]) / (float)in->std[ch] : raw[i];
    }
    rx_tensor x = trainer_tensor(&t, t.x, SAMPLES, t.info.sample), logits;
    t.ctx.training = false;
    if (net_forward(&t.nt, &t.ctx, &x, &logits, err) != 0) fail_msg("%s", err);
    snprintf(file, sizeof file, "%s/%s/input.f32", f->dir, name);
    if (write_file_atomic(file, raw, (size_t)(SAMPLES * per) * sizeof(float), err) != 0) fail_msg("%s", err);
    snprintf(file, sizeof file, "%s/%s/logits.f32", f->dir, name);
    if (write_file_atomic(file, logits.data, (size_t)rx_numel(logits.shape) * sizeof(float), err) != 0)
        fail_msg("%s", err);
    free(raw);
    trainer_free(&t);
    config_free(&c);
}

/* Exports dir/NAME (with `opset`, "" for the default) and has ONNX Runtime compare it. */
static void export_and_compare(const fixture *f, const char *name, const char *opset, int c, int h, int w)
{
    char line[1600], err[ERR_LEN];
    snprintf(line, sizeof line, "RUNEXP_PLUGIN_PATH=%s/examples $RUNEXP export %s %s/model.onnx %s", RX_BUILD_DIR,
             name, name, opset);
    if (shell_in(f->dir, line, err, sizeof err) != 0) fail_msg("%s: %s", line, err);
    snprintf(line, sizeof line, "\"$PYTHON\" %s/scripts/onnx_compare.py %s/model.onnx %s/input.f32 %s/logits.f32 "
             "%d %d %d %d >&2", RX_SOURCE_DIR, name, name, name, SAMPLES, c, h, w);
    int rc = shell_in(f->dir, line, err, sizeof err);
    printf("    %s %s: %s", name, opset, err);
    if (rc != 0) fail_msg("%s: ONNX Runtime disagrees with runexp or the checker refused the file", name);
}

static void check_network(void **state, const char *file, const char *extra)
{
    fixture *f = *state;
    need_runtime(f);
    char name[64];
    snprintf(name, sizeof name, "%.*s", (int)(strrchr(file, '.') - file), file);
    train(f, file, name, extra);
    runexp_logits(f, name);
    export_and_compare(f, name, "", 3, 32, 32);
}

static void test_tutorial(void **state)
{
    check_network(state, "cifar10.lua", "");
    /* The newest opset the exporter knows gives the same graph, as ONNX Runtime reads it. */
    export_and_compare(*state, "cifar10", "--opset 22", 3, 32, 32);
}

static void test_tutorial_best(void **state) { check_network(state, "cifar10_tutorial_best.lua", ""); }

/* airbench94's network at its full width: the frozen whitening convolution, batchnorm with the
 * running statistics of a real (short) run, exact gelu. */
static void test_airbench(void **state) { check_network(state, "airbench94.lua", ""); }

/* The CPU recipe's network, whose convolutions pool their own outputs (conv2d's pool = 2: a Conv
 * and a MaxPool in the graph). */
static void test_cpu_recipe(void **state) { check_network(state, "cifar10_cpu.lua", ""); }

static void write_text(const char *path, const char *text)
{
    char err[ERR_LEN];
    if (write_file_atomic(path, text, strlen(text), err) != 0) fail_msg("%s", err);
}

/* A synthetic-data run of `model` (Lua) into dir/NAME, with plugins also from `plugin_dir`. */
static void train_synthetic(const fixture *f, const char *name, const char *model, const char *plugin_dir)
{
    char path[700], text[2048], line[2400], err[ERR_LEN];
    snprintf(path, sizeof path, "%s/%s.lua", f->dir, name);
    snprintf(text, sizeof text,
             "return { data = { 'synthetic', size = 8, train = 64, valid = 16, test = 16, batch_size = 16 },\n"
             "  model = %s, loss = 'cross_entropy', optim = { 'sgd', lr = 0.01 }, epochs = 1, device = 'cpu',\n"
             "  threads = 2, out = '%s/%s' }\n", model, f->dir, name);
    write_text(path, text);
    snprintf(line, sizeof line, "RUNEXP_PLUGIN_PATH=%s $RUNEXP %s.lua", plugin_dir, name);
    if (shell_in(f->dir, line, err, sizeof err) != 0) fail_msg("%s: %s", line, err);
}

/* The example plugins' own mappings (LeakyRelu; Unsqueeze and Mul), through the same builder;
 * synthetic data reports no normalization, so the graph starts at the first layer. */
static void test_plugin_mappings(void **state)
{
    fixture *f = *state;
    need_runtime(f);
    train_synthetic(f, "examples",
                    "{ { 'conv2d', out = 4, kernel = 3 }, { 'channel_scale' }, { 'leaky_relu', slope = 0.2 },"
                    "  { 'flatten' }, { 'channel_scale' }, { 'linear', out = 10 } }",
                    RX_BUILD_DIR "/examples");
    runexp_logits(f, "examples");
    export_and_compare(f, "examples", "", 3, 8, 8);
    char line[1200], err[ERR_LEN];
    snprintf(line, sizeof line, "\"$PYTHON\" -c \"import onnx; m = onnx.load('examples/model.onnx'); "
             "print(sorted({n.op_type for n in m.graph.node}))\" >&2");
    assert_int_equal(shell_in(f->dir, line, err, sizeof err), 0);
    expect_message(err, "'LeakyRelu'");
    expect_message(err, "'Unsqueeze'");
    assert_null(strstr(err, "'Sub'")); /* no normalization nodes */
}

/* What the three configs leave out: gelu's tanh form, both global pools, batchnorm on a flat
 * input, scale, residual blocks nested to end at one layer, and a dropout last (the logits then
 * come through an Identity). */
static void test_other_layers(void **state)
{
    fixture *f = *state;
    need_runtime(f);
    train_synthetic(f, "others",
                    "{ { 'conv2d', out = 6, kernel = 3, padding = 1, stride = 2 }, { 'batchnorm' },"
                    "  { 'residual', { { 'gelu', approximate = 'tanh' },"
                    "                  { 'residual', { { 'conv2d', out = 6, kernel = 3, padding = 1 } } } } },"
                    "  { 'global_pool', mode = 'max' }, { 'flatten' }, { 'linear', out = 12 }, { 'batchnorm' },"
                    "  { 'scale', by = 0.5 }, { 'linear', out = 10 }, { 'dropout', p = 0.3 } }",
                    RX_BUILD_DIR "/plugins");
    runexp_logits(f, "others");
    export_and_compare(f, "others", "", 3, 8, 8);
    train_synthetic(f, "avg", "{ { 'conv2d', out = 4, kernel = 3 }, { 'global_pool', mode = 'avg' },"
                              "  { 'flatten' }, { 'linear', out = 10 } }", RX_BUILD_DIR "/plugins");
    runexp_logits(f, "avg");
    export_and_compare(f, "avg", "", 3, 8, 8);
}

/* Runs the shell line in dir, which must end with `status` and say `message` on stderr. */
static void expect_fails(const fixture *f, const char *line, int status, const char *message)
{
    char err[ERR_LEN];
    assert_int_equal(shell_in(f->dir, line, err, sizeof err), status);
    expect_message(err, message);
}

/* A layer whose plugin has no export_onnx: refused by name and place, nothing written. */
static void test_layer_without_mapping(void **state)
{
    fixture *f = *state;
    train_synthetic(f, "unmapped",
                    "{ { 'conv2d', out = 4, kernel = 3 }, { 'good' }, { 'flatten' }, { 'linear', out = 10 } }",
                    RX_BUILD_DIR "/tests/fixtures");
    char line[1200], err[ERR_LEN], out[700];
    snprintf(line, sizeof line, "RUNEXP_PLUGIN_PATH=%s/tests/fixtures $RUNEXP export unmapped out.onnx", RX_BUILD_DIR);
    assert_int_equal(shell_in(f->dir, line, err, sizeof err), 1);
    expect_message(err, "runexp: export: ");
    expect_message(err, "config.lua: model[2] (good): the plugin 'good' (");
    expect_message(err, "has no ONNX mapping (the optional operation layer.export_onnx");
    snprintf(out, sizeof out, "%s/out.onnx", f->dir);
    assert_int_equal(access(out, F_OK), -1);
}

/* A mapping that fails: the plugin's reason, with the layer and the plugin's file. */
static void test_mapping_refused(void **state)
{
    fixture *f = *state;
    train_synthetic(f, "refused", "{ { 'refuses_export' }, { 'flatten' }, { 'linear', out = 10 } }",
                    RX_BUILD_DIR "/tests/fixtures");
    expect_fails(f, "RUNEXP_PLUGIN_PATH=" RX_BUILD_DIR "/tests/fixtures $RUNEXP export refused out.onnx", 1,
                 "runexp: export: refused/config.lua: model[1] (refuses_export): ");
    expect_fails(f, "RUNEXP_PLUGIN_PATH=" RX_BUILD_DIR "/tests/fixtures $RUNEXP export refused out.onnx", 1,
                 "layers/refuses_export.so: export_onnx failed: no ONNX operator for this setting");
}

/* The normalization a data plugin reports is what export and predict index by channel: one that
 * does not fit the samples (more channels than they have, a std of 0) is refused at the start of
 * the run, naming the data set. */
static void test_bad_normalization_refused(void **state)
{
    fixture *f = *state;
    static const struct { const char *args, *message; } cases[] = {
        { "channels = 5", "the plugin reported a normalization of 5 channels that does not fit samples of 3 channels" },
        { "channels = -1", "the plugin reported a normalization of -1 channels" },
        { "std = 0", "expected 0, or one finite mean and std > 0 per channel, at most 4" },
    };
    char text[600], line[900];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        snprintf(text, sizeof text, "return { data = { 'bad_norm', %s, batch_size = 4 },\n"
                 "  model = { { 'flatten' }, { 'linear', out = 2 } }, loss = 'cross_entropy',\n"
                 "  optim = { 'sgd', lr = 0.01 }, epochs = 1, device = 'cpu', threads = 1, out = 'badnorm' }\n",
                 cases[i].args);
        snprintf(line, sizeof line, "%s/badnorm.lua", f->dir);
        write_text(line, text);
        expect_fails(f, "RUNEXP_PLUGIN_PATH=" RX_BUILD_DIR "/tests/fixtures $RUNEXP badnorm.lua", 1,
                     "badnorm.lua: data (bad_norm): ");
        expect_fails(f, "RUNEXP_PLUGIN_PATH=" RX_BUILD_DIR "/tests/fixtures $RUNEXP badnorm.lua", 1, cases[i].message);
        snprintf(line, sizeof line, "%s/badnorm", f->dir);
        assert_int_equal(access(line, F_OK), -1);
    }
}

/* What export is pointed at must be there: the run, its config, its checkpoint. */
static void test_missing_inputs(void **state)
{
    fixture *f = *state;
    char path[700];
    expect_fails(f, "$RUNEXP export nonesuch out.onnx", 1,
                 "runexp: export: nonesuch: No such file or directory (expected a run folder or a checkpoint");
    expect_fails(f, "$RUNEXP export nonesuch/best.safetensors out.onnx", 1,
                 "nonesuch/best.safetensors: No such file or directory");
    /* A folder that is no run: no config.lua. */
    expect_fails(f, "mkdir -p empty && $RUNEXP export empty out.onnx", 1,
                 "empty/config.lua: No such file or directory (the run's resolved config");
    /* A run without its checkpoint (stopped before its first epoch ended). */
    train_synthetic(f, "nockpt", "{ { 'flatten' }, { 'linear', out = 10 } }", RX_BUILD_DIR "/plugins");
    expect_fails(f, "rm nockpt/best.safetensors && $RUNEXP export nockpt out.onnx", 1,
                 "nockpt/best.safetensors: No such file or directory (the run writes it after its first epoch)");
    /* A checkpoint that is not one: the checkpoint reader's own refusal. */
    expect_fails(f, "echo junk > nockpt/best.safetensors && $RUNEXP export nockpt/best.safetensors out.onnx", 1,
                 "nockpt/best.safetensors");
    snprintf(path, sizeof path, "%s/out.onnx", f->dir);
    assert_int_equal(access(path, F_OK), -1);
}

/* An output that cannot be written fails with the reason; one that fails midway (a file-size
 * limit) leaves the old file whole and no temporary beside it. */
static void test_unwritable_output(void **state)
{
    fixture *f = *state;
    char err[ERR_LEN], *old;
    size_t len;
    train_synthetic(f, "small", "{ { 'conv2d', out = 64, kernel = 3 }, { 'flatten' }, { 'linear', out = 10 } }",
                    RX_BUILD_DIR "/plugins");
    assert_int_equal(shell_in(f->dir, "$RUNEXP export small small/config.lua/model.onnx", err, sizeof err), 1);
    expect_message(err, "small/config.lua/model.onnx");
    expect_message(err, "Not a directory");
    expect_fails(f, "mkdir -p out && echo old > out/model.onnx && ulimit -f 8 && $RUNEXP export small out/model.onnx",
                 1, "out/model.onnx: ");
    char path[700];
    snprintf(path, sizeof path, "%s/out/model.onnx", f->dir);
    if (read_file(path, &old, &len, err) != 0) fail_msg("%s", err);
    assert_string_equal(old, "old\n");
    free(old);
    assert_int_equal(shell_in(f->dir, "test \"$(ls out)\" = model.onnx", err, sizeof err), 0);
}

static void test_bad_arguments(void **state)
{
    fixture *f = *state;
    expect_fails(f, "$RUNEXP export", 2, "export needs a run (or checkpoint) and the file to write");
    expect_fails(f, "$RUNEXP export a b --opset 16", 2, "--opset '16': expected an opset from 17 to 22");
    expect_fails(f, "$RUNEXP export a b --opset=17x", 2, "--opset '17x'");
    expect_fails(f, "$RUNEXP export a b c", 2, "unexpected 'c'");
    expect_fails(f, "$RUNEXP export a b --fast", 2, "unexpected '--fast'");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_tutorial, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tutorial_best, setup, teardown),
        cmocka_unit_test_setup_teardown(test_airbench, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cpu_recipe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plugin_mappings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_layers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_layer_without_mapping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mapping_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_normalization_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_inputs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unwritable_output, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
