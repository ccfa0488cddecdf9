/* test_check.c: `runexp check` (core/check.c) is the one gradient and device checker: the table
 * below runs it over every in-tree layer and loss, with the arguments, shapes and tolerances the
 * layers' own suites need, on every device present (a CUDA build with a usable GPU compares the
 * devices in every row; elsewhere those rows skip and say why). The per-layer test files keep
 * only values worked out by hand, refusals and behaviour of their own. Here too: the two
 * out-of-tree examples pass, the deliberately broken fixtures are caught (a wrong gradient, and a
 * layer whose output shape does not match what it writes), and the command line. */
#include "helpers.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <sys/wait.h>

#include "check.h"
#include "checked.h"

/* Runs the checks with options o on NAME of KIND with ARGS ("key=value ...", may be NULL) from
 * the plugin folder DIR; returns the number of failures and leaves the table in out. */
static int check_named(const char *dir, rx_kind kind, const char *name, const char *args, check_options o, char *out,
                       size_t len)
{
    plugin_path path = { 0 };
    plugin_path_add(&path, dir);
    lua_State *L = luaL_newstate();
    lua_newtable(L);
    lua_pushstring(L, name);
    lua_rawseti(L, -2, 1);
    char err[ERR_LEN], words[256];
    snprintf(words, sizeof words, "%s", args ? args : "");
    for (char *save = NULL, *arg = strtok_r(words, " ", &save); arg; arg = strtok_r(NULL, " ", &save))
        if (config_override(L, -1, arg, err) != 0) fail_msg("%s", err);
    config c = { 0 };
    plugin_use u = { 0 };
    if (config_read_plugin(&c, L, -1, kind, &path, "test", &u, err) != 0) fail_msg("%s", err);
    FILE *f = tmpfile();
    assert_non_null(f);
    o.out = f;
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

/* The options `runexp check` takes by default, on shape `in` with a batch of 4. */
static check_options plain(rx_shape in)
{
    return (check_options){ .in = in, .batch = 4, .seed = 7 };
}

/* The rows of a check table that failed, for a message short enough to print whole (cmocka
 * cuts a failure's message at about a kilobyte). */
static const char *failed_rows(const char *table)
{
    static char rows[4096];
    size_t used = 0;
    for (const char *line = table; *line && used < sizeof rows;) {
        size_t len = strcspn(line, "\n");
        const char *fail = strstr(line, " FAIL ");
        if (fail && fail < line + len)
            used += (size_t)snprintf(rows + used, sizeof rows - used, "%.*s\n", (int)len, line);
        line += len + (line[len] == '\n');
    }
    return rows;
}

static void expect_pass(const char *dir, rx_kind kind, const char *name, const char *args, check_options o)
{
    static char out[16384];
    int failures = check_named(dir, kind, name, args, o, out, sizeof out);
    if (failures != 0 || strstr(out, "FAIL"))
        fail_msg("%s %s: %d checks failed:\n%s", name, args ? args : "", failures, failed_rows(out));
    assert_non_null(strstr(out, "gradient wrt "));
    assert_non_null(strstr(out, "determinism"));
#ifdef RX_WITH_CUDA
    /* A CUDA build compares every in-tree plugin's devices: none may lack a CUDA path. */
    if (strcmp(dir, RX_BUILD_DIR "/plugins") == 0 && strstr(out, "the plugin has no CUDA path"))
        fail_msg("%s has no CUDA path in a CUDA build:\n%s", name, out);
#endif
    /* A row is "  NAME (32 wide) VERDICT (5 wide) DETAIL": say once why the devices skip. */
    const char *row = strstr(out, "\n  cpu vs cuda ");
    static bool told;
    if (row && !told && strncmp(row + 36, "skip", 4) == 0) {
        print_message("cpu vs cuda skipped in every row: %.*s\n", (int)strcspn(row + 42, "\n"), row + 42);
        told = true;
    }
}

/* ---- The table ---- */

typedef struct table_row {
    const char *name;
    const char *args;     /* "key=value ...", as on the command line */
    rx_shape in;          /* per sample */
    int64_t batch;
    check_options tol;    /* what the row tightens: probes, input_scale, device bounds, ... */
} table_row;

/* Tolerances. EVERY: finite differences on every entry, not a sample of 48, where the layer's
 * suite checked every entry; the larger shapes, there for the devices' index arithmetic, keep
 * the sample (SAMPLE). Device bounds (check.c's relative error |gpu - cpu| / (|cpu| + 1e-3)):
 * - BITS: layers that only select, copy or multiply elementwise do the same arithmetic in the
 *   same order on both devices (dropout's GPU draws the CPU's random numbers by their counter);
 * - GEMM (check.c's default 1e-3): cuBLAS and OpenBLAS add the products in other orders; the
 *   shapes keep every sum short (at most a few hundred terms), where the CPU's own error against
 *   double stayed below 3.3e-4, while a wrong index or a missing term gives errors of order 1;
 * - GELU 1e-5: CUDA's erff and tanhf are within 2 ulp where the C library's are within 1;
 * - BN 1e-5 in training (the devices sum each channel in other orders, in double), 1e-6 in
 *   evaluation (no sums: the same bits with gcc, room for a compiler that fuses a multiply-add),
 *   and the state (mean, 1 / sqrt(var + eps)) compared too;
 * - LOSS 1e-5: both compute exp of the same floats and sum in double; expf is within 2 ulp. */
#define EVERY .probes = CHECK_EVERY_ENTRY
#define SAMPLE .probes = 0
#define BITS .device_bound = CHECK_SAME_BITS
#define GELU .device_bound = 1e-5
#define BN .device_bound = 1e-5, .device_bound_eval = 1e-6, .compare_state = true
#define LOSS .device_bound = 1e-5
#define S(...) { (int)(sizeof((int64_t[]){ __VA_ARGS__ }) / sizeof(int64_t)), { __VA_ARGS__ } }

static const table_row table[] = {
    /* conv2d: stride, padding, 1x1 and wide kernels, the widths im2col and col2im copy as
     * constants (8, 16, 32) */
    { "conv2d", "out=3 kernel=3", S(2, 5, 6), 2, { EVERY } },
    { "conv2d", "out=2 kernel=3 stride=2 padding=1", S(3, 6, 5), 2, { EVERY } },
    { "conv2d", "out=2 kernel=1 bias=false", S(2, 4, 4), 3, { EVERY } },
    { "conv2d", "out=2 kernel=2 stride=3 padding=2", S(1, 4, 7), 1, { EVERY } },
    { "conv2d", "out=2 kernel=4 padding=1 bias=false", S(2, 3, 3), 2, { EVERY } },
    { "conv2d", "out=3 kernel=3 padding=1", S(2, 8, 8), 2, { EVERY } },
    { "conv2d", "out=2 kernel=3 padding=1", S(2, 16, 16), 1, { EVERY } },
    { "conv2d", "out=2 kernel=3 padding=1 bias=false", S(1, 32, 32), 1, { EVERY } },
    { "conv2d", "out=2 kernel=5 padding=2", S(1, 8, 8), 2, { EVERY } },
    { "conv2d", "out=5 kernel=3 padding=1 stride=2", S(3, 9, 9), 4, { EVERY } },
    /* Winograd (3x3, stride 1, padding up to 2, 8 or more channels in and out): partial tiles,
     * the row widths it passes as constants (4 and 8 tiles), a wider one, padding 0 and 2 */
    { "conv2d", "out=8 kernel=3", S(8, 5, 6), 2, { EVERY } },
    { "conv2d", "out=9 kernel=3 padding=1", S(8, 8, 8), 2, { EVERY } },
    { "conv2d", "out=8 kernel=3 padding=1 bias=false", S(9, 16, 16), 1, { EVERY } },
    { "conv2d", "out=8 kernel=3 padding=1", S(8, 20, 22), 1, { EVERY } },
    { "conv2d", "out=8 kernel=3 padding=2", S(8, 7, 5), 2, { EVERY } },
    { "conv2d", "out=12 kernel=3 padding=1", S(8, 6, 6), 2, { EVERY } },
    /* the devices' index arithmetic: odd and non-square sizes, a batch of 1, col < x */
    { "conv2d", "out=8 kernel=3 padding=1", S(3, 16, 16), 1, { EVERY } },
    { "conv2d", "out=7 kernel=5 stride=3 bias=false", S(2, 11, 13), 3, { EVERY } },
    { "conv2d", "out=8 kernel=1", S(6, 5, 7), 5, { EVERY } },
    /* pool = 2 (the CPU only): Winograd with one sample a group and with several, odd sizes,
     * im2col; the weight's probes move many windows' winners at once, so the planes stay small */
    { "conv2d", "out=8 kernel=3 padding=1 pool=2", S(8, 8, 8), 3, { EVERY, .cpu_only = true } },
    { "conv2d", "out=8 kernel=3 padding=1 pool=2 bias=false", S(8, 9, 7), 2, { EVERY, .cpu_only = true } },
    { "conv2d", "out=3 kernel=3 padding=1 pool=2", S(2, 7, 6), 2, { EVERY, .cpu_only = true } },
    { "conv2d", "out=4 kernel=2 padding=2 stride=3", S(5, 4, 6), 1, { EVERY } },
    { "conv2d", "out=3 kernel=1 stride=2", S(3, 6, 6), 2, { EVERY } },
    /* linear */
    { "linear", "out=4", S(2, 3, 2), 3, { EVERY } },
    { "linear", "out=3 bias=false", S(7), 2, { EVERY } },
    { "linear", "out=7", S(3, 4, 4), 4, { EVERY } },
    { "linear", "out=32", S(128), 8, { SAMPLE } },
    { "linear", "out=10 bias=false", S(60), 1, { EVERY } },
    { "linear", "out=20", S(40), 33, { SAMPLE } },
    /* relu: many blocks, one partial block */
    { "relu", NULL, S(3, 4, 5), 2, { EVERY, BITS } },
    { "relu", NULL, S(3, 8, 8), 4, { EVERY, BITS } },
    { "relu", NULL, S(16, 32, 32), 20, { BITS } },
    { "relu", NULL, S(7), 1, { EVERY, BITS } },
    /* maxpool: disjoint, overlapping (an input can win two windows), gapped windows (some
     * inputs never win), an uncovered edge; the devices also on ties and NaNs */
    { "maxpool", "size=2 stride=0", S(2, 4, 6), 2, { EVERY, BITS, .device_ties = true } },
    { "maxpool", "size=3 stride=2", S(2, 5, 5), 2, { EVERY, BITS, .device_ties = true } },
    { "maxpool", "size=2 stride=3", S(1, 5, 6), 2, { EVERY, BITS, .device_ties = true } },
    { "maxpool", NULL, S(4, 8, 8), 4, { EVERY, BITS, .device_ties = true } },
    { "maxpool", "size=3 stride=2", S(3, 9, 9), 5, { EVERY, BITS, .device_ties = true } },
    { "maxpool", "size=2 stride=3", S(2, 8, 7), 3, { EVERY, BITS, .device_ties = true } },
    { "maxpool", NULL, S(3, 7, 9), 2, { EVERY, BITS, .device_ties = true } },
    { "maxpool", NULL, S(16, 32, 32), 20, { BITS, .device_ties = true } },
    /* flatten */
    { "flatten", NULL, S(3, 2, 4), 2, { EVERY, BITS } },
    { "flatten", NULL, S(3, 8, 8), 4, { EVERY, BITS } },
    { "flatten", NULL, S(64, 4, 4), 20, { BITS } },
    /* dropout: the mask is the same in every forward (check.c rewinds the RNG) */
    { "dropout", "p=0.5", S(4, 5), 3, { EVERY, BITS } },
    { "dropout", "p=0.5", S(3, 4), 2, { EVERY, BITS } },
    { "dropout", "p=0.3", S(3, 8, 8), 4, { EVERY, BITS } },
    { "dropout", "p=0.25", S(1024), 20, { BITS } },
    { "dropout", "p=0.9", S(5, 3, 3), 7, { EVERY, BITS } },
    /* batchnorm: (C, H, W), BatchNorm1d on (C) and (C, L), one sample, 1x1 images, M = 4, and
     * M = 2 (the least training takes) */
    { "batchnorm", NULL, S(3, 4, 5), 2, { EVERY, BN } },
    { "batchnorm", NULL, S(4), 5, { EVERY, BN } },
    { "batchnorm", NULL, S(2, 7), 2, { EVERY, BN } },
    { "batchnorm", NULL, S(2, 3, 3), 1, { EVERY, BN } },
    { "batchnorm", NULL, S(3, 1, 1), 4, { EVERY, BN } },
    { "batchnorm", NULL, S(1, 1, 2), 2, { EVERY, BN } },
    { "batchnorm", NULL, S(1), 2, { EVERY, BN } },
    { "batchnorm", NULL, S(5, 6, 7), 3, { EVERY, BN } },
    /* the devices' block sizes: fewer values per channel than a warp, more than a block, many
     * channels */
    { "batchnorm", "momentum=0.3", S(3, 5, 7), 4, { EVERY, BN } },
    { "batchnorm", "eps=1e-3", S(16), 64, { EVERY, BN } },
    { "batchnorm", NULL, S(1, 1, 3), 2, { EVERY, BN } },
    { "batchnorm", NULL, S(3, 17, 19), 3, { BN } },
    { "batchnorm", NULL, S(40), 300, { BN } },
    { "batchnorm", NULL, S(4, 33), 3, { EVERY, BN } },
    { "batchnorm", NULL, S(16, 32, 32), 8, { BN } },
    { "batchnorm", NULL, S(1000), 2, { BN } },
    { "batchnorm", NULL, S(64, 8, 8), 20, { BN } },
    /* batchnorm with its GELU fused: the shapes above that differ in layout, blocks of the
     * backward's 256 values and a partial one (17 x 19 = 323 a row) */
    { "batchnorm", "activation=gelu", S(3, 4, 5), 2, { EVERY, BN } },
    { "batchnorm", "activation=gelu", S(4), 5, { EVERY, BN } },
    { "batchnorm", "activation=gelu", S(2, 7), 2, { EVERY, BN } },
    { "batchnorm", "activation=gelu momentum=0.4 eps=1e-12", S(3, 17, 19), 3, { EVERY, BN } },
    { "batchnorm", "activation=gelu", S(16, 32, 32), 8, { BN } },
    /* gelu, both forms, on [-4, 4] and on [-6, 6]: many blocks, one partial block */
    { "gelu", "approximate=none", S(2, 3, 4), 2, { EVERY, GELU, .input_scale = 4 } },
    { "gelu", "approximate=tanh", S(2, 3, 4), 2, { EVERY, GELU, .input_scale = 4 } },
    { "gelu", "approximate=none", S(3, 8, 8), 4, { EVERY, GELU, .input_scale = 6 } },
    { "gelu", "approximate=tanh", S(3, 8, 8), 4, { EVERY, GELU, .input_scale = 6 } },
    { "gelu", "approximate=none", S(16, 32, 32), 20, { GELU, .input_scale = 6 } },
    { "gelu", "approximate=tanh", S(16, 32, 32), 20, { GELU, .input_scale = 6 } },
    { "gelu", "approximate=none", S(1, 1, 7), 1, { EVERY, GELU, .input_scale = 6 } },
    { "gelu", "approximate=tanh", S(1, 1, 7), 1, { EVERY, GELU, .input_scale = 6 } },
    /* global_pool, both modes: two elements a lane, fewer elements than lanes, one element (31
     * idle lanes), warps in a partly full block, planes of 1024, one lane with two elements;
     * the state (each maximum's index) the same on both devices, and ties and NaNs */
    { "global_pool", "mode=max", S(2, 3, 3), 2, { EVERY, BITS, .compare_state = true, .device_ties = true } },
    { "global_pool", "mode=max", S(3, 5, 4), 2, { EVERY, BITS, .compare_state = true, .device_ties = true } },
    { "global_pool", "mode=max", S(2, 1, 6), 2, { EVERY, BITS, .compare_state = true, .device_ties = true } },
    { "global_pool", "mode=max", S(3, 8, 8), 4, { EVERY, BITS, .compare_state = true, .device_ties = true } },
    { "global_pool", "mode=max", S(5, 3, 3), 7, { EVERY, BITS, .compare_state = true, .device_ties = true } },
    { "global_pool", "mode=max", S(4, 1, 1), 3, { EVERY, BITS, .compare_state = true, .device_ties = true } },
    { "global_pool", "mode=max", S(3, 5, 7), 33, { BITS, .compare_state = true, .device_ties = true } },
    { "global_pool", "mode=max", S(16, 32, 32), 20, { BITS, .compare_state = true, .device_ties = true } },
    { "global_pool", "mode=max", S(2, 33, 1), 2, { EVERY, BITS, .compare_state = true, .device_ties = true } },
    { "global_pool", "mode=avg", S(2, 3, 3), 2, { EVERY, BITS } },
    { "global_pool", "mode=avg", S(3, 5, 4), 2, { EVERY, BITS } },
    { "global_pool", "mode=avg", S(2, 1, 6), 2, { EVERY, BITS } },
    { "global_pool", "mode=avg", S(3, 8, 8), 4, { EVERY, BITS } },
    { "global_pool", "mode=avg", S(5, 3, 3), 7, { EVERY, BITS } },
    { "global_pool", "mode=avg", S(4, 1, 1), 3, { EVERY, BITS } },
    { "global_pool", "mode=avg", S(3, 5, 7), 33, { BITS } },
    { "global_pool", "mode=avg", S(16, 32, 32), 20, { BITS } },
    { "global_pool", "mode=avg", S(2, 33, 1), 2, { EVERY, BITS } },
    /* scale: airbench94's 1/9 (its logits), negative and large factors, on [-4, 4] */
    { "scale", "by=0.1111111111111111", S(3, 2, 2), 2, { EVERY, BITS, .input_scale = 4 } },
    { "scale", "by=-2.5", S(3, 2, 2), 2, { EVERY, BITS, .input_scale = 4 } },
    { "scale", "by=40", S(3, 2, 2), 2, { EVERY, BITS, .input_scale = 4 } },
    { "scale", "by=0.1111111111111111", S(10, 1, 1), 4, { EVERY, BITS, .input_scale = 4 } },
    { "scale", "by=-2.5", S(16, 32, 32), 20, { BITS, .input_scale = 4 } },
    { "scale", "by=3", S(1, 1, 7), 1, { EVERY, BITS, .input_scale = 4 } },
    /* cross_entropy, with and without label smoothing: the tutorial's 10 classes over several
     * blocks, 1000 (each lane strides over 31 or 32 classes), 2 (30 idle lanes a warp) */
    { "cross_entropy", NULL, S(5), 4, { EVERY, LOSS } },
    { "cross_entropy", "label_smoothing=0.05", S(5), 4, { EVERY, LOSS } },
    { "cross_entropy", "label_smoothing=0.3", S(5), 4, { EVERY, LOSS } },
    { "cross_entropy", "label_smoothing=0.9", S(5), 4, { EVERY, LOSS } },
    { "cross_entropy", NULL, S(10), 37, { EVERY, LOSS } },
    { "cross_entropy", NULL, S(1000), 5, { LOSS } },
    { "cross_entropy", NULL, S(2), 2, { EVERY, LOSS } },
    { "cross_entropy", "label_smoothing=0.1", S(10), 37, { EVERY, LOSS } },
    { "cross_entropy", "label_smoothing=0.3", S(1000), 5, { LOSS } },
    { "cross_entropy", "label_smoothing=0.5", S(2), 2, { EVERY, LOSS } },
};

/* Every row passes every check. */
static void test_table(void **state)
{
    const size_t rows = sizeof table / sizeof table[0];
    for (size_t i = 0; i < rows; i++) {
        const table_row *r = &table[i];
        check_options o = r->tol;
        o.in = r->in;
        o.batch = r->batch;
        o.seed = 7;
        o.no_speed = true;
        rx_kind kind = strcmp(r->name, "cross_entropy") == 0 ? RX_LOSS : RX_LAYER;
        expect_pass(RX_BUILD_DIR "/plugins", kind, r->name, r->args, o);
    }
    print_message("%zu rows passed\n", rows);
}

static void test_examples_pass(void **state)
{
    const char *dir = RX_BUILD_DIR "/examples";
    expect_pass(dir, RX_LAYER, "leaky_relu", "slope=0.1", plain(TEST_SHAPE(3, 8, 8)));
    expect_pass(dir, RX_LAYER, "channel_scale", NULL, plain(TEST_SHAPE(4, 5, 5)));
}

static void test_broken_plugins_caught(void **state)
{
    static char out[8192];
    const char *dir = RX_BUILD_DIR "/tests/fixtures";
    check_options o = plain(TEST_SHAPE(3, 8, 8));
    /* a wrong gradient fails in training and in evaluation, and with a table row's options */
    assert_int_equal(check_named(dir, RX_LAYER, "bad_grad", NULL, o, out, sizeof out), 2);
    assert_non_null(strstr(out, "\n  gradient wrt input               FAIL"));
    assert_non_null(strstr(out, "\n  eval: gradient wrt input         FAIL"));
    check_options every = o;
    every.probes = CHECK_EVERY_ENTRY;
    every.device_bound = CHECK_SAME_BITS;
    assert_int_equal(check_named(dir, RX_LAYER, "bad_grad", NULL, every, out, sizeof out), 2);
    assert_non_null(strstr(out, "gradient wrt input               FAIL  768 of 768 entries differ"));
    assert_int_equal(check_named(dir, RX_LAYER, "good", NULL, o, out, sizeof out), 0);
    /* a layer that declares per_sample but reaches across samples: only the parts row fails */
    assert_int_equal(check_named(dir, RX_LAYER, "not_per_sample", NULL, o, out, sizeof out), 2);
    assert_non_null(strstr(out, "\n  per_sample: two parts            FAIL"));
    assert_non_null(strstr(out, "\n  gradient wrt input               pass"));
    /* a layer that declares traits it breaks (y = -x): only the trait rows fail, in training and
     * in evaluation */
    assert_int_equal(check_named(dir, RX_LAYER, "false_traits", NULL, o, out, sizeof out), 4);
    assert_non_null(strstr(out, "\n  trait: monotone                  FAIL  decreasing: f("));
    assert_non_null(strstr(out, "\n  trait: max_pool                  FAIL  y[0] is "));
    assert_non_null(strstr(out, "\n  eval: trait: monotone            FAIL"));
    assert_non_null(strstr(out, "\n  gradient wrt input               pass"));
    assert_true(check_named(dir, RX_LAYER, "bad_shape", NULL, o, out, sizeof out) >= 2);
    assert_non_null(strstr(out, "forward writes y                 FAIL  256 of 1024 outputs unwritten"));
    assert_non_null(strstr(out, "backward writes dx, dw           FAIL  wrote past the end of dx"));
}

/* Sizes: a plugin's declared sizes past the bounds fail create's row; a batch or shape whose
 * buffers cannot be had is refused before any check runs, never checked on zero elements. */
static void test_sizes(void **state)
{
    static char out[8192];
    const char *dir = RX_BUILD_DIR "/tests/fixtures";
    assert_int_equal(check_named(dir, RX_LAYER, "overflow", NULL, plain(TEST_SHAPE(1, 2, 2)), out, sizeof out), 1);
    assert_non_null(strstr(out, "create                           FAIL  create reported the output shape "
                                "(2147483647, 2147483647, 2147483647): past the bounds of a size"));
    assert_int_equal(check_named(dir, RX_LAYER, "overflow", NULL, plain(TEST_SHAPE(2, 2, 2)), out, sizeof out), 1);
    assert_non_null(strstr(out, "create declared state_bytes = 18446744073709551615"));

    plugin_path path = { 0 };
    plugin_path_add(&path, RX_BUILD_DIR "/plugins");
    plugin_use u = { 0 };
    char err[ERR_LEN];
    assert_int_equal(plugin_load(&path, RX_LAYER, "relu", &u.pl, err, sizeof err), 0);
    check_options o = plain(TEST_SHAPE(3, 8, 8));
    o.out = tmpfile();
    o.batch = (int64_t)1 << 56; /* x 192 x 4 bytes wraps to 0: every check passed on nothing */
    assert_int_equal(check_plugin(&u, &o, err), -1);
    assert_string_equal(err, "command line: --batch = 72057594037927936: a batch is 1 to 2147483647 samples");
    o.batch = CHECKED_MAX_DIM;
    assert_int_equal(check_plugin(&u, &o, err), -1);
    assert_non_null(strstr(err, "command line: --batch = 2147483647: relu's checks (x, y and their gradients with "
                                "guards, state, workspace) needs 1.32e+13 bytes"));
    o.batch = 4;
    o.in = TEST_SHAPE(1 << 20, 1 << 20, 2);
    assert_int_equal(check_plugin(&u, &o, err), -1);
    assert_string_equal(err, "command line: --shape = (1048576, 1048576, 2): each dimension must be 1 to 2147483647, "
                             "at most 4 of them and 2^40 elements in all");
    fclose(o.out);
    plugin_unload(&u.pl);
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
    /* --speed: how long the speed row times; it says how many repetitions that was */
    snprintf(cmd, sizeof cmd, "'%s/runexp' check relu --speed=0.05 | grep -q 'speed .*repetition'", RX_BUILD_DIR);
    assert_int_equal(WEXITSTATUS(system(cmd)), 0);
    static const char *const bad_speeds[] = { "0", "-1", "abc", "1e9", "0.5s", "nan", "" };
    for (size_t i = 0; i < sizeof bad_speeds / sizeof bad_speeds[0]; i++) {
        snprintf(cmd, sizeof cmd, "'%s/runexp' check relu --speed=%s 2>&1 >/dev/null | grep -q \"'--speed=%s': expected "
                 "the seconds the speed row takes\"", RX_BUILD_DIR, bad_speeds[i], bad_speeds[i]);
        if (WEXITSTATUS(system(cmd)) != 0) fail_msg("--speed=%s was not refused with its message", bad_speeds[i]);
    }
    /* a batch past the bound (atoll read it, and the buffers' sizes wrapped to nothing) */
    snprintf(cmd, sizeof cmd, "'%s/runexp' check relu --batch=9223372036854775807 >/dev/null 2>&1", RX_BUILD_DIR);
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
        test_rmdir(dir);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_examples_pass),
        cmocka_unit_test(test_broken_plugins_caught),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_command_line),
        cmocka_unit_test(test_examples_train),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
