/* helpers.h: what every test program shares: cmocka, the build tree's plugins, plugin
 * arguments filled from a descriptor's defaults, and a layer rig (a layer with every buffer the
 * host would lend it) for the layer suites. Header-only so each test stays one file. */
#ifndef RUNEXP_TEST_HELPERS_H
#define RUNEXP_TEST_HELPERS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "device.h"
#include "error.h"
#include "files.h"
#include "plugin.h"

#ifdef RX_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

#define TEST_MAX_ARGS 64

/* How long a stop request (Ctrl-C) may take: a second, promised; the sanitizers' build runs
 * several times slower. */
#if defined(__SANITIZE_ADDRESS__)
#define TEST_STOP_SECONDS 3.0
#else
#define TEST_STOP_SECONDS 1.0
#endif

/* Only the plugins this build made: tests never see installed ones. */
static inline void test_plugin_path(plugin_path *p)
{
    p->n = 0;
    plugin_path_add(p, RX_BUILD_DIR "/plugins");
}

/* Loads a plugin from the plugin folder DIR (RX_BUILD_DIR "/examples") or fails the test with
 * the loader's message. */
static inline const rx_plugin *test_load_from(plugin *pl, const char *dir, rx_kind kind, const char *name)
{
    plugin_path p = { 0 };
    char err[1024] = "";
    plugin_path_add(&p, dir);
    if (plugin_load(&p, kind, name, pl, err, sizeof err) != 0) fail_msg("%s", err);
    return pl->desc;
}

/* Loads a build-tree plugin or fails the test with the loader's message. */
static inline const rx_plugin *test_load(plugin *pl, rx_kind kind, const char *name)
{
    return test_load_from(pl, RX_BUILD_DIR "/plugins", kind, name);
}

/* Fills args with the descriptor's defaults, in the order of its parameter list. */
static inline void test_default_args(const rx_plugin *d, rx_value *args)
{
    memset(args, 0, sizeof(rx_value) * TEST_MAX_ARGS);
    for (int i = 0; d->params[i].key; i++) args[i] = d->params[i].def;
}

/* The argument named KEY, e.g. test_arg(d, args, "out")->i = 8; fails the test if unknown. */
static inline rx_value *test_arg(const rx_plugin *d, rx_value *args, const char *key)
{
    int i = plugin_param_index(d, key);
    if (i < 0) fail_msg("plugin %s has no parameter '%s'", d->name, key);
    return &args[i];
}

/* An optimizer plugin as the optimizer suites (test_sgd, test_adam, test_muon) hold it. */
typedef struct test_optimizer {
    plugin pl;
    const rx_plugin *desc;
    rx_value args[TEST_MAX_ARGS];
    rx_ctx ctx;
    void *self;
    int state_per_param;
} test_optimizer;

/* Loads optimizer NAME with its default arguments, on the CPU with one thread (not created). */
static inline void test_optimizer_load(test_optimizer *o, const char *name)
{
    memset(o, 0, sizeof *o);
    o->ctx = (rx_ctx){ .device = RX_CPU, .threads = 1 };
    o->desc = test_load(&o->pl, RX_OPTIM, name);
    test_default_args(o->desc, o->args);
}

/* Destroys what create made (NULL-safe) and unloads the plugin. */
static inline void test_optimizer_close(test_optimizer *o)
{
    if (o->desc->optim.destroy) o->desc->optim.destroy(o->self);
    plugin_unload(&o->pl);
}

static inline rx_shape test_shape(int ndim, const int64_t *d)
{
    rx_shape s = { .ndim = ndim };
    for (int i = 0; i < ndim; i++) s.d[i] = d[i];
    return s;
}
#define TEST_SHAPE(...) test_shape((int)(sizeof((int64_t[]){ __VA_ARGS__ }) / sizeof(int64_t)), \
                                   (int64_t[]){ __VA_ARGS__ })

/* n zeroed floats (at least one), or the test fails. */
static inline float *floats(int64_t n)
{
    float *p = calloc(n > 0 ? (size_t)n : 1, sizeof *p);
    assert_non_null(p);
    return p;
}

/* A zeroed host tensor of shape s. */
static inline rx_tensor tensor_new(rx_shape s)
{
    return (rx_tensor){ .data = floats(rx_numel(s)), .shape = s, .device = RX_CPU };
}

/* (N, per-sample...) */
static inline rx_shape batched(int64_t n, rx_shape per)
{
    rx_shape s = { .ndim = per.ndim + 1, .d = { n } };
    for (int i = 0; i < per.ndim; i++) s.d[i + 1] = per.d[i];
    return s;
}

/* U(lo, hi) in every entry of t. */
static inline void tensor_uniform(rx_rng *r, rx_tensor *t, float lo, float hi)
{
    for (int64_t i = 0; i < rx_numel(t->shape); i++) t->data[i] = lo + (hi - lo) * rx_rng_uniform(r);
}

/* ---- A layer with every buffer the host would lend it, driven the way the host drives it ---- */

typedef struct rig {
    plugin pl;
    const rx_plugin *desc;
    rx_value args[TEST_MAX_ARGS];
    void *self;
    rx_ctx ctx;
    rx_layer_info info;
    rx_tensor x, dx;                                 /* (N, in...) */
    rx_tensor y, dy;                                 /* (N, out...) */
    rx_tensor w[RX_MAX_TENSORS], dw[RX_MAX_TENSORS]; /* info.tensors[i].shape */
    void *state;                                     /* info.state_bytes * N */
    rx_rng rng;                                      /* the test's own random numbers, from `seed` */
} rig;

/* Loads layer NAME from the plugin folder DIR with its default arguments; training, one thread. */
static inline void rig_open_from(rig *r, const char *dir, const char *name, uint64_t seed)
{
    memset(r, 0, sizeof *r);
    r->desc = test_load_from(&r->pl, dir, RX_LAYER, name);
    test_default_args(r->desc, r->args);
    r->ctx = (rx_ctx){ .device = RX_CPU, .training = true, .rng = rx_rng_stream(42, 1), .threads = 1 };
    r->rng = rx_rng_stream(seed, 0);
}

/* The same from the build tree's plugins. */
static inline void rig_open(rig *r, const char *name, uint64_t seed)
{
    rig_open_from(r, RX_BUILD_DIR "/plugins", name, seed);
}

static inline rx_value *rig_arg(rig *r, const char *key) { return test_arg(r->desc, r->args, key); }

/* Only create; returns its result, with the reason in r->ctx.err. */
static inline int rig_create(rig *r, rx_shape in)
{
    return r->desc->layer.create(&r->self, &r->ctx, r->args, in, &r->info);
}

/* The declared tensors as the host initializes them (U(-scale, scale), ones, scale or zeros). */
static inline void rig_tensors(rig *r)
{
    for (int i = 0; i < r->info.ntensors; i++) {
        const rx_tensor_decl *t = &r->info.tensors[i];
        r->w[i] = tensor_new(t->shape);
        r->dw[i] = tensor_new(t->shape);
        if (t->init == RX_INIT_UNIFORM) tensor_uniform(&r->rng, &r->w[i], -t->scale, t->scale);
        else if (t->init == RX_INIT_ONES || t->init == RX_INIT_CONSTANT)
            for (int64_t j = 0; j < rx_numel(t->shape); j++)
                r->w[i].data[j] = t->init == RX_INIT_ONES ? 1.0f : t->scale;
    }
}

/* The most threads a rig's calls may use: its workspace holds workspace_thread_bytes for each. */
enum { RIG_MAX_THREADS = 8 };

/* create, which must succeed, then every buffer as the host allocates it; x and dy zero. */
static inline void rig_alloc(rig *r, rx_shape in, int64_t n)
{
    if (rig_create(r, in) != 0) fail_msg("%s: create failed: %s", r->desc->name, r->ctx.err);
    rig_tensors(r);
    r->x = tensor_new(batched(n, in));
    r->dx = tensor_new(batched(n, in));
    r->y = tensor_new(batched(n, r->info.out));
    r->dy = tensor_new(batched(n, r->info.out));
    r->ctx.workspace_bytes = r->info.workspace_bytes * (size_t)n + r->info.workspace_thread_bytes * RIG_MAX_THREADS;
    r->ctx.workspace = r->ctx.workspace_bytes ? malloc(r->ctx.workspace_bytes) : NULL;
    r->state = r->info.state_bytes ? calloc(r->info.state_bytes, (size_t)n) : NULL;
    if ((r->ctx.workspace_bytes && !r->ctx.workspace) || (r->info.state_bytes && !r->state)) fail_msg("out of memory");
}

/* rig_alloc, then x U(-1, 1). */
static inline void rig_build(rig *r, rx_shape in, int64_t n)
{
    rig_alloc(r, in, n);
    tensor_uniform(&r->rng, &r->x, -1.0f, 1.0f);
}

static inline void rig_forward(rig *r)
{
    if (r->desc->layer.forward[RX_CPU](r->self, &r->ctx, &r->x, r->w, &r->y, r->state) != 0)
        fail_msg("%s: forward failed: %s", r->desc->name, r->ctx.err);
}

static inline void rig_backward(rig *r, bool want_dx)
{
    if (r->desc->layer.backward[RX_CPU](r->self, &r->ctx, &r->x, &r->y, &r->dy, r->w, r->state,
                                        want_dx ? &r->dx : NULL, r->dw) != 0)
        fail_msg("%s: backward failed: %s", r->desc->name, r->ctx.err);
}

static inline void rig_zero_grads(rig *r)
{
    for (int i = 0; i < r->info.ntensors; i++)
        memset(r->dw[i].data, 0, sizeof(float) * (size_t)rx_numel(r->dw[i].shape));
}

static inline void rig_free(rig *r)
{
    if (r->desc->layer.destroy) r->desc->layer.destroy(r->self);
    for (int i = 0; i < r->info.ntensors; i++) {
        free(r->w[i].data);
        free(r->dw[i].data);
    }
    free(r->x.data);
    free(r->dx.data);
    free(r->y.data);
    free(r->dy.data);
    free(r->ctx.workspace);
    free(r->state);
    plugin_unload(&r->pl);
}

static inline void expect_message(const char *err, const char *fragment)
{
    if (!strstr(err, fragment)) fail_msg("message \"%s\" lacks \"%s\"", err, fragment);
}

/* create must fail, leave self NULL, and say every one of the given fragments. */
static inline void rig_expect_refused(rig *r, rx_shape in, const char *const *fragments)
{
    r->ctx.err[0] = '\0';
    r->self = NULL;
    if (rig_create(r, in) == 0) {
        if (r->desc->layer.destroy) r->desc->layer.destroy(r->self);
        r->self = NULL;
        fail_msg("%s: create accepted what it should refuse (expected \"%s\")", r->desc->name, fragments[0]);
    }
    assert_null(r->self);
    for (int i = 0; fragments[i]; i++) expect_message(r->ctx.err, fragments[i]);
}
#define EXPECT_REFUSED(r, in, ...) rig_expect_refused((r), (in), (const char *const[]){ __VA_ARGS__, NULL })

/* ---- Threads: the same inputs through different thread counts ---- */

/* Forward and backward (with dx) at a given thread count, from the rig's x, w and dy. */
static inline void rig_pass(rig *r, int threads)
{
    assert_true(threads <= RIG_MAX_THREADS);
    r->ctx.threads = threads;
    rig_forward(r);
    rig_zero_grads(r);
    rig_backward(r, true);
}

static inline void expect_same_bits_at(const float *got, const float *want, int64_t n, const char *what, int threads)
{
    if (memcmp(got, want, sizeof(float) * (size_t)n) != 0)
        for (int64_t i = 0; i < n; i++)
            if (memcmp(&got[i], &want[i], sizeof(float)) != 0)
                fail_msg("%s[%lld] with %d threads is %.9g, with 1 thread %.9g", what, (long long)i, threads,
                         got[i], want[i]);
}

/* A copy of every output of a pass: y, dx, then each dw. */
static inline float *rig_outputs(const rig *r, int64_t *n)
{
    *n = rx_numel(r->y.shape) + rx_numel(r->dx.shape);
    for (int i = 0; i < r->info.ntensors; i++) *n += rx_numel(r->dw[i].shape);
    float *all = floats(*n), *at = all;
    memcpy(at, r->y.data, sizeof(float) * (size_t)rx_numel(r->y.shape));
    at += rx_numel(r->y.shape);
    memcpy(at, r->dx.data, sizeof(float) * (size_t)rx_numel(r->dx.shape));
    at += rx_numel(r->dx.shape);
    for (int i = 0; i < r->info.ntensors; i++) {
        memcpy(at, r->dw[i].data, sizeof(float) * (size_t)rx_numel(r->dw[i].shape));
        at += rx_numel(r->dw[i].shape);
    }
    return all;
}

/* The same bits with 1 thread and with 2: y, dx and every dw, from the rig's x, w and dy (y and
 * dx are zeroed in between, so an output one count leaves unwritten shows). */
static inline void expect_threads_agree(rig *r, const char *what)
{
    int64_t n;
    rig_pass(r, 1);
    float *one = rig_outputs(r, &n);
    memset(r->y.data, 0, sizeof(float) * (size_t)rx_numel(r->y.shape));
    memset(r->dx.data, 0, sizeof(float) * (size_t)rx_numel(r->dx.shape));
    rig_pass(r, 2);
    float *two = rig_outputs(r, &n);
    expect_same_bits_at(two, one, n, what, 2);
    free(one);
    free(two);
}

#ifdef RX_WITH_CUDA
/* GPU memory, or the test fails. */
static inline void *gpu_alloc_or_fail(size_t bytes)
{
    void *p = device_alloc(RX_CUDA, bytes);
    if (!p) fail_msg("out of GPU memory for %zu bytes", bytes);
    return p;
}

/* Fails the test unless everything queued on the GPU so far ran without error. */
static inline void expect_gpu_clean(const char *what)
{
    cudaError_t e = cudaDeviceSynchronize();
    if (e == cudaSuccess) e = cudaGetLastError();
    if (e != cudaSuccess) fail_msg("%s: %s", what, cudaGetErrorString(e));
    char err[ERR_LEN];
    if (device_check(RX_CUDA, err) != 0) fail_msg("%s: %s", what, err);
}
#endif

static inline double seconds_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static inline int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* The Python the tests check runexp's files with, where they need PyPI packages (onnx,
 * onnxruntime, tensorboard): scripts/setup's .deps/test-venv, else python3 from the PATH. */
static inline const char *test_python(void)
{
    static const char venv[] = RX_SOURCE_DIR "/.deps/test-venv/bin/python";
    return access(venv, X_OK) == 0 ? venv : "python3";
}

/* Runs a shell command line in dir (build/runexp is $RUNEXP, test_python() is $PYTHON); returns
 * the exit status; its stderr lands in out (len bytes), its stdout nowhere. */
static inline int shell_in(const char *dir, const char *line, char *out, size_t len)
{
    char cmd[4096], path[700];
    snprintf(path, sizeof path, "%s/stderr.txt", dir);
    snprintf(cmd, sizeof cmd, "cd '%s' && RUNEXP='%s/runexp'; PYTHON='%s'; (%s) >/dev/null 2>'%s'", dir, RX_BUILD_DIR,
             test_python(), line, path);
    int status = system(cmd);
    FILE *e = fopen(path, "r");
    size_t n = e ? fread(out, 1, len - 1, e) : 0;
    out[n] = '\0';
    if (e) fclose(e);
    return WEXITSTATUS(status);
}

/* The tensors of the checkpoint dir/file: the bytes after its header (whose metadata holds
 * timings), in a new buffer of *n bytes. */
static inline char *checkpoint_tensor_bytes(const char *dir, const char *file, size_t *n)
{
    char path[800], err[ERR_LEN], *blob;
    size_t len;
    snprintf(path, sizeof path, "%s/%s", dir, file);
    if (read_file(path, &blob, &len, err) != 0) fail_msg("%s", err);
    uint64_t h = 0;
    for (int b = 0; b < 8; b++) h |= (uint64_t)(unsigned char)blob[b] << (8 * b);
    *n = len - 8 - h;
    memmove(blob, blob + 8 + h, *n);
    return blob;
}

/* A data plugin called as the host calls it: load, create (or see create refused), close. */
typedef struct data_rig {
    plugin pl;
    const rx_plugin *desc;
    rx_value args[TEST_MAX_ARGS];
    rx_ctx ctx;
    void *self;
    rx_data_info info;
} data_rig;

/* The build's plugin NAME with its default arguments. */
static inline void data_rig_load(data_rig *ds, const char *name)
{
    memset(ds, 0, sizeof *ds);
    ds->desc = test_load(&ds->pl, RX_DATA, name);
    test_default_args(ds->desc, ds->args);
}

static inline void data_rig_create(data_rig *ds, uint64_t seed)
{
    memset(&ds->info, 0, sizeof ds->info);
    if (ds->desc->data.create(&ds->self, &ds->ctx, ds->args, seed, &ds->info) != 0)
        fail_msg("create failed: %s", ds->ctx.err);
    assert_non_null(ds->self);
}

/* create must fail, leave nothing behind, and say WANT in its message. */
static inline void data_rig_refused(data_rig *ds, const char *want)
{
    ds->ctx.err[0] = '\0';
    ds->self = NULL;
    assert_int_equal(ds->desc->data.create(&ds->self, &ds->ctx, ds->args, 1, &ds->info), -1);
    assert_null(ds->self);
    if (!strstr(ds->ctx.err, want)) fail_msg("error '%s' does not say '%s'", ds->ctx.err, want);
}

static inline void data_rig_close(data_rig *ds)
{
    ds->desc->data.destroy(ds->self);
    plugin_unload(&ds->pl);
}

static inline char *test_tmpdir(void)
{
    char *dir = strdup("/tmp/runexp-test-XXXXXX");
    if (!dir || !mkdtemp(dir)) fail_msg("cannot make a temporary folder");
    return dir;
}

/* Writes text to dir/name, a file of a test's own. */
static inline void test_write_text(const char *dir, const char *name, const char *text)
{
    char path[800];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *out = fopen(path, "w");
    if (!out) fail_msg("cannot write %s", path);
    fputs(text, out);
    fclose(out);
}

/* A new test_tmpdir holding files: name, text, name, text, ..., NULL. A suite that runs runexp
 * as a user does keeps it as cmocka's state, and test_folder_teardown removes it. */
static inline char *test_folder_with(const char *const *files)
{
    char *dir = test_tmpdir();
    for (int i = 0; files[i]; i += 2) test_write_text(dir, files[i], files[i + 1]);
    return dir;
}

/* Removes a folder test_tmpdir made, with all it holds (read-only parts too), and frees its name. */
static inline void test_rmdir(char *dir)
{
    char cmd[1600];
    snprintf(cmd, sizeof cmd, "chmod -R u+w '%s' 2>/dev/null; rm -rf '%s'", dir, dir);
    assert_int_equal(system(cmd), 0);
    free(dir);
}

/* cmocka's teardown for a suite whose state is a test_folder_with folder. */
static inline int test_folder_teardown(void **state)
{
    test_rmdir(*state);
    return 0;
}

#endif
