/* helpers.h: what every test program shares: cmocka, the build tree's plugins, and plugin
 * arguments filled from a descriptor's defaults. Header-only so each test stays one file. */
#ifndef RUNEXP_TEST_HELPERS_H
#define RUNEXP_TEST_HELPERS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "device.h"
#include "plugin.h"

#ifdef RX_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

#define TEST_MAX_ARGS 64

/* Only the plugins this build made: tests never see installed ones. */
static inline void test_plugin_path(plugin_path *p)
{
    p->n = 0;
    plugin_path_add(p, RX_BUILD_DIR "/plugins");
}

/* Loads a build-tree plugin or fails the test with the loader's message. */
static inline const rx_plugin *test_load(plugin *pl, rx_kind kind, const char *name)
{
    plugin_path p;
    char err[1024] = "";
    test_plugin_path(&p);
    if (plugin_load(&p, kind, name, pl, err, sizeof err) != 0) fail_msg("%s", err);
    return pl->desc;
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
}
#endif

static inline char *test_tmpdir(void)
{
    char *dir = strdup("/tmp/runexp-test-XXXXXX");
    if (!dir || !mkdtemp(dir)) fail_msg("cannot make a temporary folder");
    return dir;
}

#endif
