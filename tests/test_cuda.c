/* test_cuda.c: the CUDA path of every in-tree plugin against its CPU twin, and whole runs on the
 * GPU against the same runs on the CPU. Without a usable GPU, or in a build without CUDA, every
 * test is skipped and says why; nothing here fails for want of a GPU.
 *
 * Layers: every layer's CUDA path is compared with its CPU twin by core/check.c, in the rows of
 * test_check.c's table (shapes that exercise the kernels' index arithmetic, each layer's bound).
 * Loss and optimizers: cross_entropy (with and without label smoothing, with logits in the
 * thousands and a label out of range), sgd, adam and adamw are compared here, in this process,
 * through the plugins' own tables; the optimizers also take their steps on the GPU as two calls
 * on slices, the way the host steps parameter groups.
 * Whole runs: configs/synthetic.lua, and a network with every in-tree layer (with sgd's Nesterov
 * and weight decay too), on both devices: the same first-epoch loss and test accuracy within
 * the bounds given at expect_same_run.
 *
 * Loading: cuBLAS is loaded by its first call, not by a device=cpu run (test_cublas_loaded_on_first_use,
 * the one test that runs without a GPU in a CUDA build).
 *
 * Inputs are fresh each run: the seed is the time, printed with every result and failure, and
 * RX_TEST_SEED=N repeats a run. Whether a GPU is usable is read from `runexp check relu`'s own
 * row, so this process touches CUDA only in the in-process tests, which come last and run only
 * when a GPU is there (CUDA does not survive a fork, and `runexp check` forks). */
#include "helpers.h"

#include <math.h>
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>

#include "device.h"
#include "error.h"

#ifdef RX_WITH_CUDA
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#endif

#define OUTPUT_MAX 65536  /* bytes of a child's output kept */

/* What the probe found, shared by every test as cmocka's group state. */
typedef struct gpu_probe {
    bool usable;        /* a GPU is there and this build has CUDA */
    char why[1024];     /* when not usable: the reason, for the skip message */
    char problem[1024]; /* set when the probe itself shows a bug (e.g. relu without a CUDA path) */
    unsigned seed;      /* for every random input of this run */
} gpu_probe;

/* One row of `runexp check`'s table: "  NAME (padded)  VERDICT DETAIL". */
typedef struct check_row {
    char verdict[16];
    char detail[512];
} check_row;

/* Runs a shell command, keeping its output (stdout and stderr) in out; returns its exit status,
 * or -1 when it could not run or was killed. */
static int run_capture(const char *cmd, char *out, size_t len)
{
    char full[2048];
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    FILE *p = popen(full, "r");
    if (!p) {
        snprintf(out, len, "popen failed");
        return -1;
    }
    size_t n = 0, got;
    char chunk[4096];
    while ((got = fread(chunk, 1, sizeof chunk, p)) > 0)
        for (size_t i = 0; i < got && n + 1 < len; i++) out[n++] = chunk[i];
    out[n] = '\0';
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

#ifdef RX_WITH_CUDA
/* Read only where a GPU may be there: see probe_gpu. */
/* Finds the row named `name` in a check table; false when it is not there. */
static bool find_row(const char *table, const char *name, check_row *r)
{
    char key[64];
    snprintf(key, sizeof key, "  %s ", name);
    const char *at = strstr(table, key);
    if (!at) return false;
    at += strlen(key);
    while (*at == ' ') at++;
    size_t v = strcspn(at, " \n");
    snprintf(r->verdict, sizeof r->verdict, "%.*s", (int)v, at);
    at += v;
    while (*at == ' ') at++;
    snprintf(r->detail, sizeof r->detail, "%.*s", (int)strcspn(at, "\n"), at);
    return true;
}
#endif

static int probe_gpu(void **state)
{
    gpu_probe *g = calloc(1, sizeof *g);
    if (!g) return -1;
    const char *seed = getenv("RX_TEST_SEED");
    g->seed = seed ? (unsigned)strtoul(seed, NULL, 10) : (unsigned)time(NULL);
#ifndef RX_WITH_CUDA
    snprintf(g->why, sizeof g->why, "this build has no CUDA (make CUDA=1, with nvcc)");
#else
    static char out[OUTPUT_MAX];
    check_row r;
    run_capture(RX_BUILD_DIR "/runexp check relu", out, sizeof out);
    if (!find_row(out, "cpu vs cuda", &r))
        snprintf(g->problem, sizeof g->problem, "runexp check relu printed no 'cpu vs cuda' row:\n%s", out);
    else if (strstr(r.detail, "no CUDA path"))
        snprintf(g->problem, sizeof g->problem, "relu has no CUDA path in a CUDA build: %s", r.detail);
    else if (strcmp(r.verdict, "skip") == 0)
        snprintf(g->why, sizeof g->why, "%s", r.detail);
    else
        g->usable = true;
#endif
    if (!g->usable && !g->problem[0]) printf("test_cuda: every test that needs a GPU skips: %s\n", g->why);
    else if (g->usable) printf("test_cuda: a GPU is usable; random inputs from seed %u (RX_TEST_SEED=%u repeats)\n",
                               g->seed, g->seed);
    *state = g;
    return 0;
}

static int free_probe(void **state)
{
    free(*state);
    return 0;
}

/* Skips the calling test, saying why, unless a GPU is usable. */
#define REQUIRE_GPU(state)                                                          \
    do {                                                                            \
        const gpu_probe *g_ = *(state);                                             \
        if (g_->problem[0]) fail_msg("%s", g_->problem);                            \
        if (!g_->usable) {                                                          \
            print_message("skipped: %s\n", g_->why);                                \
            skip();                                                                 \
        }                                                                           \
    } while (0)

/* ---- Loss and optimizer, in this process ---- */

#ifdef RX_WITH_CUDA
/* Largest |a - b| / (|b| + 1e-3) over n values, check.c's measure; NaN counts as the worst. */
static double max_relative_error(const float *a, const float *b, size_t n)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]) / (fabs((double)b[i]) + 1e-3);
        if (!(e <= worst)) worst = e;
    }
    return worst;
}

static void fill_uniform(float *v, size_t n, rx_rng *rng, float scale)
{
    for (size_t i = 0; i < n; i++) v[i] = scale * (2.0f * rx_rng_uniform(rng) - 1.0f);
}

#endif

/* Bound for the loss: both sides compute exp of the same floats and sum in double, but CUDA's
 * expf is within 2 ulp, not correctly rounded, so losses and gradients differ by a few 1e-7;
 * 1e-5 is far below what a wrong label, class or scale gives. */
#define LOSS_BOUND 1e-5

#ifdef RX_WITH_CUDA
static void compare_cross_entropy(const rx_plugin *d, const gpu_probe *g, int64_t n, int64_t c, double smoothing)
{
    rx_ctx cpu = { .device = RX_CPU, .threads = 1 }, gpu = { .device = RX_CUDA, .threads = 1 };
    char why[ERR_LEN];
    if (device_open_context(RX_CUDA, &gpu, why) != 0) fail_msg("%s", why);
    rx_value args[TEST_MAX_ARGS];
    test_default_args(d, args);
    test_arg(d, args, "label_smoothing")->num = smoothing;
    void *self = NULL;
    rx_shape in = { .ndim = 1, .d = { c } };
    if (d->loss.create(&self, &cpu, args, in, (int)c) != 0) fail_msg("create: %s", cpu.err);

    const size_t nz = (size_t)(n * c);
    float *z = malloc(nz * sizeof(float)), *dz_cpu = malloc(nz * sizeof(float)), *dz_gpu = malloc(nz * sizeof(float));
    float *loss_cpu = malloc((size_t)n * sizeof(float)), *loss_gpu = malloc((size_t)n * sizeof(float));
    float *loss_nograd = malloc((size_t)n * sizeof(float));
    int32_t *labels = malloc((size_t)n * sizeof(int32_t));
    assert_true(z && dz_cpu && dz_gpu && loss_cpu && loss_gpu && loss_nograd && labels);
    rx_rng rng = rx_rng_stream(g->seed, (uint64_t)c);
    fill_uniform(z, nz, &rng, 3.0f);
    for (int64_t j = 0; j < c; j++) z[j] += 1000.0f;  /* row 0: logits in the thousands must stay finite */
    for (int64_t i = 0; i < n; i++) labels[i] = (int32_t)rx_rng_below(&rng, (uint64_t)c);

    rx_tensor logits = { .data = z, .shape = { .ndim = 2, .d = { n, c } }, .device = RX_CPU };
    rx_tensor dl = logits;
    dl.data = dz_cpu;
    if (d->loss.forward[RX_CPU](self, &cpu, &logits, labels, loss_cpu, &dl) != 0) fail_msg("cpu: %s", cpu.err);

    float *z_d = gpu_alloc_or_fail(nz * sizeof(float)), *dz_d = gpu_alloc_or_fail(nz * sizeof(float));
    float *loss_d = gpu_alloc_or_fail((size_t)n * sizeof(float));
    int32_t *labels_d = gpu_alloc_or_fail((size_t)n * sizeof(int32_t));
    host_to_device(RX_CUDA, z_d, z, nz * sizeof(float));
    host_to_device(RX_CUDA, labels_d, labels, (size_t)n * sizeof(int32_t));
    rx_tensor logits_d = logits, dl_d = logits;
    logits_d.data = z_d;
    dl_d.data = dz_d;
    logits_d.device = dl_d.device = RX_CUDA;
    if (d->loss.forward[RX_CUDA](self, &gpu, &logits_d, labels_d, loss_d, &dl_d) != 0) fail_msg("cuda: %s", gpu.err);
    expect_gpu_clean("cross_entropy forward");
    device_to_host(RX_CUDA, loss_gpu, loss_d, (size_t)n * sizeof(float));
    device_to_host(RX_CUDA, dz_gpu, dz_d, nz * sizeof(float));
    double el = max_relative_error(loss_gpu, loss_cpu, (size_t)n), edz = max_relative_error(dz_gpu, dz_cpu, nz);
    if (el > LOSS_BOUND || edz > LOSS_BOUND)
        fail_msg("cross_entropy N=%lld C=%lld label_smoothing %g (seed %u): relative error losses %.3g, dlogits %.3g "
                 "(bound %g)", (long long)n, (long long)c, smoothing, g->seed, el, edz, LOSS_BOUND);
    print_message("  cross_entropy  N=%-4lld C=%-5lld label_smoothing %-4g relative error losses %.2g, dlogits %.2g "
                  "(bound %g)\n", (long long)n, (long long)c, smoothing, el, edz, LOSS_BOUND);

    /* Without the gradient: the same losses, to the bit. */
    if (d->loss.forward[RX_CUDA](self, &gpu, &logits_d, labels_d, loss_d, NULL) != 0) fail_msg("cuda: %s", gpu.err);
    expect_gpu_clean("cross_entropy forward without dlogits");
    device_to_host(RX_CUDA, loss_nograd, loss_d, (size_t)n * sizeof(float));
    assert_memory_equal(loss_nograd, loss_gpu, (size_t)n * sizeof(float));

    /* A label outside [0, C): the CPU refuses the batch; the GPU, which cannot stop without
     * waiting, gives that sample a NaN loss and gradient row and leaves the others alone. */
    labels[n - 1] = (int32_t)c;
    if (d->loss.forward[RX_CPU](self, &cpu, &logits, labels, loss_cpu, &dl) == 0) fail_msg("cpu took label %lld", (long long)c);
    host_to_device(RX_CUDA, labels_d, labels, (size_t)n * sizeof(int32_t));
    if (d->loss.forward[RX_CUDA](self, &gpu, &logits_d, labels_d, loss_d, &dl_d) != 0) fail_msg("cuda: %s", gpu.err);
    expect_gpu_clean("cross_entropy forward with a bad label");
    device_to_host(RX_CUDA, loss_gpu, loss_d, (size_t)n * sizeof(float));
    device_to_host(RX_CUDA, dz_gpu, dz_d, nz * sizeof(float));
    assert_true(isnan(loss_gpu[n - 1]));
    for (int64_t j = 0; j < c; j++) assert_true(isnan(dz_gpu[(n - 1) * c + j]));
    for (int64_t i = 0; i < n - 1; i++) assert_true(isfinite(loss_gpu[i]));

    device_free(RX_CUDA, z_d);
    device_free(RX_CUDA, dz_d);
    device_free(RX_CUDA, loss_d);
    device_free(RX_CUDA, labels_d);
    free(z);
    free(dz_cpu);
    free(dz_gpu);
    free(loss_cpu);
    free(loss_gpu);
    free(loss_nograd);
    free(labels);
    if (d->loss.destroy) d->loss.destroy(self);
    device_close_context(RX_CUDA, &gpu);
}
#endif

static void test_cross_entropy_cpu_vs_cuda(void **state)
{
    REQUIRE_GPU(state);
#ifdef RX_WITH_CUDA
    const gpu_probe *g = *state;
    plugin pl;
    const rx_plugin *d = test_load(&pl, RX_LOSS, "cross_entropy");
    if (!d->loss.forward[RX_CUDA]) fail_msg("cross_entropy has no CUDA path");
    compare_cross_entropy(d, g, 37, 10, 0);    /* the tutorial's classes; rows spread over 5 blocks */
    compare_cross_entropy(d, g, 5, 1000, 0);   /* each lane strides over 31 or 32 classes */
    compare_cross_entropy(d, g, 2, 2, 0);      /* 30 idle lanes per warp */
    compare_cross_entropy(d, g, 37, 10, 0.1);  /* label smoothing: its sum over the classes too */
    compare_cross_entropy(d, g, 5, 1000, 0.3);
    compare_cross_entropy(d, g, 2, 2, 0.5);
    plugin_unload(&pl);
#endif
}

/* Bound for sgd: the GPU rounds every product and sum on its own, as the CPU build does (gcc in
 * ISO C mode fuses no multiply-adds), so the same bits are expected after every step; 1e-6
 * leaves room for a CPU compiler that fuses them (clang does by default: an ulp or two), far
 * below what a wrong momentum, dampening or decay term gives. */
#define SGD_BOUND 1e-6

#ifdef RX_WITH_CUDA
/* CPU: one call per step on the whole vector. GPU: the same steps as two calls, one per half
 * (with its own slice of w, g and the state, as the host steps parameter groups), so the
 * slicing is compared too. */
static void compare_sgd(const rx_plugin *d, const gpu_probe *g, size_t n, double momentum, bool nesterov,
                        double dampening, float weight_decay)
{
    rx_ctx cpu = { .device = RX_CPU, .threads = 2 }, gpu = { .device = RX_CUDA, .threads = 1 };
    char why[ERR_LEN];
    if (device_open_context(RX_CUDA, &gpu, why) != 0) fail_msg("%s", why);
    rx_value args[TEST_MAX_ARGS];
    test_default_args(d, args);
    test_arg(d, args, "momentum")->num = momentum;
    test_arg(d, args, "nesterov")->b = nesterov;
    test_arg(d, args, "dampening")->num = dampening;
    void *self = NULL;
    int per_param = 0;
    if (d->optim.create(&self, &cpu, args, &per_param) != 0) fail_msg("create: %s", cpu.err);
    const size_t nbuf = (size_t)per_param * n;

    float *gr = malloc(n * sizeof(float)), *w = malloc(n * sizeof(float)), *buf = calloc(nbuf + 1, sizeof(float));
    float *w_back = malloc(n * sizeof(float)), *buf_back = malloc((nbuf + 1) * sizeof(float));
    assert_true(gr && w && buf && w_back && buf_back);
    rx_rng rng = rx_rng_stream(g->seed, n);
    fill_uniform(w, n, &rng, 1.0f);
    float *g_d = gpu_alloc_or_fail(n * sizeof(float)), *w_d = gpu_alloc_or_fail(n * sizeof(float));
    float *buf_d = gpu_alloc_or_fail((nbuf + 1) * sizeof(float));  /* zeroed, as the host's state */
    host_to_device(RX_CUDA, w_d, w, n * sizeof(float));
    for (int64_t t = 1; t <= 3; t++) {
        fill_uniform(gr, n, &rng, 0.1f);
        host_to_device(RX_CUDA, g_d, gr, n * sizeof(float));
        rx_step s = { .lr = 0.05f, .weight_decay = weight_decay, .t = t };
        if (d->optim.step[RX_CPU](self, &cpu, gr, w, buf, n, s) != 0) fail_msg("cpu: %s", cpu.err);
        const size_t half = n / 2;  /* momentum's state is 1 block of n: the halves' buffers are its halves */
        if (d->optim.step[RX_CUDA](self, &gpu, g_d, w_d, per_param ? buf_d : NULL, half, s) != 0 ||
            d->optim.step[RX_CUDA](self, &gpu, g_d + half, w_d + half, per_param ? buf_d + half : NULL, n - half, s) != 0)
            fail_msg("cuda: %s", gpu.err);
        expect_gpu_clean("sgd step");
        device_to_host(RX_CUDA, w_back, w_d, n * sizeof(float));
        device_to_host(RX_CUDA, buf_back, buf_d, nbuf * sizeof(float));
        double ew = max_relative_error(w_back, w, n), eb = max_relative_error(buf_back, buf, nbuf);
        if (ew > SGD_BOUND || eb > SGD_BOUND)
            fail_msg("sgd n=%zu momentum %g nesterov %d dampening %g weight_decay %g, step %lld (seed %u): relative "
                     "error w %.3g, momentum buffer %.3g (bound %g)", n, momentum, nesterov, dampening, weight_decay,
                     (long long)t, g->seed, ew, eb, SGD_BOUND);
    }
    print_message("  sgd  n=%-8zu momentum %-3g nesterov %d dampening %-3g weight_decay %-6g: 3 steps within %g\n", n,
                  momentum, nesterov, dampening, weight_decay, SGD_BOUND);
    device_free(RX_CUDA, g_d);
    device_free(RX_CUDA, w_d);
    device_free(RX_CUDA, buf_d);
    free(gr);
    free(w);
    free(buf);
    free(w_back);
    free(buf_back);
    d->optim.destroy(self);
    device_close_context(RX_CUDA, &gpu);
}
#endif

static void test_sgd_cpu_vs_cuda(void **state)
{
    REQUIRE_GPU(state);
#ifdef RX_WITH_CUDA
    const gpu_probe *g = *state;
    plugin pl;
    const rx_plugin *d = test_load(&pl, RX_OPTIM, "sgd");
    if (!d->optim.step[RX_CUDA]) fail_msg("sgd has no CUDA path");
    compare_sgd(d, g, 100003, 0.0, false, 0.0, 0.0f);        /* plain: no state */
    compare_sgd(d, g, 100003, 0.9, false, 0.0, 0.0f);        /* the tutorial's */
    compare_sgd(d, g, 100003, 0.9, true, 0.0, 5e-4f);        /* Nesterov with weight decay */
    compare_sgd(d, g, (1 << 21) + 5, 0.9, false, 0.1, 1e-4f); /* dampening; more than one grid-stride pass */
    plugin_unload(&pl);
#endif
}

/* Bound for adam and adamw: as for sgd, every operation is rounded on its own on both devices
 * (adam.h's adam_update is the one function both run; division and square root are correctly
 * rounded on both) and the step's scalars are worked out on the host, so the same bits are
 * expected; 1e-6 leaves room for a CPU compiler that fuses multiply-adds. A wrong bias
 * correction, beta or decay term gives errors of 1e-3 and more. */
#define ADAM_BOUND 1e-6

#ifdef RX_WITH_CUDA
/* CPU: one call per step on the whole vector, state (2, n). GPU: two calls per step, one per
 * half, each with its own state slice (2, half), the way the host steps parameter groups. */
static void compare_adam(const rx_plugin *d, const gpu_probe *g, size_t n, double beta1, double beta2, double eps,
                         float weight_decay)
{
    enum { T = 5 };
    rx_ctx cpu = { .device = RX_CPU, .threads = 2 }, gpu = { .device = RX_CUDA, .threads = 1 };
    char why[ERR_LEN];
    if (device_open_context(RX_CUDA, &gpu, why) != 0) fail_msg("%s", why);
    rx_value args[TEST_MAX_ARGS];
    test_default_args(d, args);
    test_arg(d, args, "beta1")->num = beta1;
    test_arg(d, args, "beta2")->num = beta2;
    test_arg(d, args, "eps")->num = eps;
    void *self = NULL;
    int per_param = 0;
    if (d->optim.create(&self, &cpu, args, &per_param) != 0) fail_msg("create: %s", cpu.err);
    assert_int_equal(per_param, 2);
    const size_t half = n / 2, rest = n - half;

    float *gr = malloc(n * sizeof(float)), *w = malloc(n * sizeof(float)), *st = calloc(2 * n, sizeof(float));
    float *w_back = malloc(n * sizeof(float)), *st_back = malloc(2 * n * sizeof(float));
    float *st_gathered = malloc(2 * n * sizeof(float)); /* the GPU's slices in the CPU's (2, n) order */
    assert_true(gr && w && st && w_back && st_back && st_gathered);
    rx_rng rng = rx_rng_stream(g->seed, 0xADA0 + n);
    fill_uniform(w, n, &rng, 1.0f);
    float *g_d = gpu_alloc_or_fail(n * sizeof(float)), *w_d = gpu_alloc_or_fail(n * sizeof(float));
    float *st_d = gpu_alloc_or_fail(2 * n * sizeof(float));  /* zeroed, as the host's state */
    float *st_a = st_d, *st_b = st_d + 2 * half;             /* (2, half) and (2, rest) */
    host_to_device(RX_CUDA, w_d, w, n * sizeof(float));
    for (int64_t t = 1; t <= T; t++) {
        fill_uniform(gr, n, &rng, 0.1f);
        if (t == 3) gr[0] = 0.0f;  /* a zero gradient: the moments decay, eps keeps the step finite */
        host_to_device(RX_CUDA, g_d, gr, n * sizeof(float));
        rx_step s = { .lr = 1e-3f, .weight_decay = weight_decay, .t = t };
        if (d->optim.step[RX_CPU](self, &cpu, gr, w, st, n, s) != 0) fail_msg("cpu: %s", cpu.err);
        if (d->optim.step[RX_CUDA](self, &gpu, g_d, w_d, st_a, half, s) != 0 ||
            d->optim.step[RX_CUDA](self, &gpu, g_d + half, w_d + half, st_b, rest, s) != 0)
            fail_msg("cuda: %s", gpu.err);
        expect_gpu_clean("adam step");
        device_to_host(RX_CUDA, w_back, w_d, n * sizeof(float));
        device_to_host(RX_CUDA, st_back, st_d, 2 * n * sizeof(float));
        memcpy(st_gathered, st_back, half * sizeof(float));                              /* m, first half */
        memcpy(st_gathered + half, st_back + 2 * half, rest * sizeof(float));            /* m, second half */
        memcpy(st_gathered + n, st_back + half, half * sizeof(float));                   /* v, first half */
        memcpy(st_gathered + n + half, st_back + 2 * half + rest, rest * sizeof(float)); /* v, second half */
        double ew = max_relative_error(w_back, w, n), em = max_relative_error(st_gathered, st, n);
        double ev = max_relative_error(st_gathered + n, st + n, n);
        if (ew > ADAM_BOUND || em > ADAM_BOUND || ev > ADAM_BOUND)
            fail_msg("%s n=%zu betas %g %g eps %g weight_decay %g, step %lld (seed %u): relative error w %.3g, "
                     "m %.3g, v %.3g (bound %g)", d->name, n, beta1, beta2, eps, weight_decay, (long long)t, g->seed,
                     ew, em, ev, ADAM_BOUND);
    }
    print_message("  %-5s n=%-8zu betas %-3g %-5g eps %-5g weight_decay %-6g: %d steps within %g\n", d->name, n, beta1,
                  beta2, eps, weight_decay, T, ADAM_BOUND);
    device_free(RX_CUDA, g_d);
    device_free(RX_CUDA, w_d);
    device_free(RX_CUDA, st_d);
    free(gr);
    free(w);
    free(st);
    free(w_back);
    free(st_back);
    free(st_gathered);
    d->optim.destroy(self);
    device_close_context(RX_CUDA, &gpu);
}
#endif

static void test_adam_cpu_vs_cuda(void **state)
{
    REQUIRE_GPU(state);
#ifdef RX_WITH_CUDA
    const gpu_probe *g = *state;
    static const char *const names[2] = { "adam", "adamw" };
    for (int p = 0; p < 2; p++) {
        plugin pl;
        const rx_plugin *d = test_load(&pl, RX_OPTIM, names[p]);
        if (!d->optim.step[RX_CUDA]) fail_msg("%s has no CUDA path", names[p]);
        compare_adam(d, g, 100003, 0.9, 0.999, 1e-8, 0.0f);         /* PyTorch's defaults */
        compare_adam(d, g, 100003, 0.9, 0.999, 1e-8, 1e-2f);        /* with weight decay (L2 or decoupled) */
        compare_adam(d, g, 100003, 0.5, 0.9, 1e-3, 5e-2f);          /* other betas and eps */
        compare_adam(d, g, (1 << 21) + 5, 0.9, 0.999, 1e-8, 1e-4f); /* more than one grid-stride pass */
        plugin_unload(&pl);
    }
#endif
}

/* ---- Whole runs ---- */

/* Every in-tree layer in one small network, on a synthetic task hard enough (noise 1.5) that
 * three epochs end near 80% rather than at 100%, so that a difference between the devices
 * would show in the accuracy. */
static const char *every_layer =
    "return {\n"
    "  data = { 'synthetic', classes = 10, size = 8, train = 2000, noise = 1.5, batch_size = 32 },\n"
    "  model = {\n"
    "    { 'conv2d', out = 16, kernel = 3, padding = 1 }, { 'relu' }, { 'maxpool', size = 2 },\n"
    "    { 'flatten' }, { 'dropout', p = 0.25 }, { 'linear', out = 32 }, { 'relu' }, { 'linear', out = 10 },\n"
    "  },\n"
    "  loss = 'cross_entropy',\n"
    "  optim = { 'sgd', lr = 0.02, momentum = 0.9 },\n"
    "  epochs = 3,\n"
    "}\n";

typedef struct run_result {
    double train_loss;  /* epoch 1's, from metrics.csv */
    double accuracy;    /* on the test split, from summary.json */
} run_result;

static char *read_text(const char *path, const char *cmd)
{
    FILE *f = fopen(path, "r");
    if (!f) fail_msg("%s: no %s", cmd, path);
    static char text[OUTPUT_MAX];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    return text;
}

/* Runs `config` with `overrides` on `device` into dir/device and reads what it reached; checks
 * that it ran on that device. */
static run_result run_on(const char *dir, const char *config, const char *device, const char *overrides)
{
    static char out[OUTPUT_MAX];
    char cmd[2048], path[700];
    snprintf(cmd, sizeof cmd, "cd " RX_SOURCE_DIR " && " RX_BUILD_DIR "/runexp %s device=%s out=%s/%s %s", config,
             device, dir, device, overrides);
    if (run_capture(cmd, out, sizeof out) != 0) fail_msg("%s failed:\n%s", cmd, out);
    run_result r;
    snprintf(path, sizeof path, "%s/%s/metrics.csv", dir, device);
    const char *csv = strchr(read_text(path, cmd), '\n');  /* past the header */
    if (!csv || sscanf(csv + 1, "1,%*[^,],%lf", &r.train_loss) != 1) fail_msg("%s: no epoch 1 in %s", cmd, path);
    snprintf(path, sizeof path, "%s/%s/summary.json", dir, device);
    const char *json = read_text(path, cmd);
    char want[64];
    snprintf(want, sizeof want, "\"device\": \"%s\"", device);
    if (!strstr(json, want)) fail_msg("%s: summary.json lacks %s:\n%s", cmd, want, json);
    const char *at = strstr(json, "\"test_accuracy\": ");
    if (!at || sscanf(at + strlen("\"test_accuracy\": "), "%lf", &r.accuracy) != 1)
        fail_msg("%s: no test_accuracy in summary.json:\n%s", cmd, json);
    return r;
}

/* The same run on both devices: the same data order, initial weights and dropout masks (the
 * GPU draws the CPU's random numbers), so the two differ only by float rounding in the sums.
 * Bounds: epoch 1's mean training loss within 1e-3 relative (after an epoch the weights differ
 * by rounding, about 1e-6 relative, while a wrong gradient changes the loss in the first
 * digits); test accuracy within one point (1% of the test images: rounding flips at most the
 * few predictions that sit on a decision boundary). `config` is a path from the source tree, or
 * NULL for every_layer. */
static void expect_same_run(const char *config, const char *overrides)
{
    char *dir = test_tmpdir(), file[600];
    if (!config) {
        snprintf(file, sizeof file, "%s/every_layer.lua", dir);
        FILE *f = fopen(file, "w");
        assert_non_null(f);
        fputs(every_layer, f);
        fclose(f);
        config = file;
    }
    run_result cpu = run_on(dir, config, "cpu", overrides), gpu = run_on(dir, config, "cuda", overrides);
    test_rmdir(dir);
    const double loss_error = fabs(gpu.train_loss - cpu.train_loss) / fabs(cpu.train_loss);
    print_message("  %s%s%s: epoch 1 train loss cpu %.6f, cuda %.6f; test accuracy cpu %.4f, cuda %.4f\n", config,
                  overrides[0] ? " " : "", overrides, cpu.train_loss, gpu.train_loss, cpu.accuracy, gpu.accuracy);
    if (!(loss_error <= 1e-3))
        fail_msg("%s %s: epoch 1 train loss %.6f on the CPU, %.6f on the GPU (bound: 1e-3 relative)", config,
                 overrides, cpu.train_loss, gpu.train_loss);
    if (fabs(cpu.accuracy - gpu.accuracy) > 0.01)
        fail_msg("%s %s: test accuracy %.4f on the CPU, %.4f on the GPU (bound: 1 point)", config, overrides,
                 cpu.accuracy, gpu.accuracy);
}

static void test_synthetic_run_cpu_vs_cuda(void **state)
{
    REQUIRE_GPU(state);
    expect_same_run("configs/synthetic.lua", "");
}

static void test_every_layer_run_cpu_vs_cuda(void **state)
{
    REQUIRE_GPU(state);
    expect_same_run(NULL, "");
}

/* device = "auto" with a plugin that has no CUDA path (the example leaky_relu) trains on the CPU
 * and says which plugin kept it there; device = "cuda" refuses the same run, naming it. */
static void test_auto_keeps_a_cpu_only_plugin_on_the_cpu(void **state)
{
    REQUIRE_GPU(state);
    static char out[OUTPUT_MAX];
    char *dir = test_tmpdir(), cmd[2048];
    const char *run = "RUNEXP_PLUGIN_PATH='" RX_BUILD_DIR "/examples' '" RX_BUILD_DIR "/runexp' '" RX_SOURCE_DIR
                      "/examples/plugins/leaky_relu/leaky_relu.lua' epochs=1 data.train=256";
    snprintf(cmd, sizeof cmd, "%s device=auto out='%s/auto'", run, dir);
    int rc = run_capture(cmd, out, sizeof out);
    if (rc != 0 || !strstr(out, "device: cpu (auto: model[2] (leaky_relu) has no CUDA path)"))
        fail_msg("exit %d:\n%s", rc, out);
    snprintf(cmd, sizeof cmd, "%s device=cuda out='%s/cuda'", run, dir);
    rc = run_capture(cmd, out, sizeof out);
    if (rc != 1 || !strstr(out, "model[2] (leaky_relu): the plugin has no cuda implementation"))
        fail_msg("exit %d:\n%s", rc, out);
    test_rmdir(dir);
}

/* Gradient clipping end to end: the global norm from cuBLAS's snrm2 against the CPU's sum, and
 * the scaling, on a bound most steps pass. */
static void test_clip_run_cpu_vs_cuda(void **state)
{
    REQUIRE_GPU(state);
    expect_same_run("configs/synthetic.lua", "clip_grad_norm=0.05");
}

/* device_sum_squares, the norm clip_grad_norm measures: the GPU's (snrm2 over chunks) against the
 * CPU's (in order, in double), within float rounding (1e-5 relative); a vector past one of
 * snrm2's thread blocks, and one value whose square is known. */
static void test_sum_squares_cpu_vs_cuda(void **state)
{
    REQUIRE_GPU(state);
#ifdef RX_WITH_CUDA
    const gpu_probe *g = *state;
    rx_ctx cpu = { .device = RX_CPU, .threads = 1 }, gpu = { .device = RX_CUDA, .threads = 1 };
    char why[ERR_LEN];
    if (device_open_context(RX_CUDA, &gpu, why) != 0) fail_msg("%s", why);
    const size_t n = (1 << 20) + 3;
    float *x = malloc(n * sizeof(float));
    assert_non_null(x);
    rx_rng rng = rx_rng_stream(g->seed, 0x5503);
    fill_uniform(x, n, &rng, 1.0f);
    float *x_d = gpu_alloc_or_fail(n * sizeof(float));
    host_to_device(RX_CUDA, x_d, x, n * sizeof(float));
    double want = device_sum_squares(RX_CPU, &cpu, n, x), got = device_sum_squares(RX_CUDA, &gpu, n, x_d);
    expect_gpu_clean("device_sum_squares");
    print_message("  sum of %zu squares: cpu %.9g, cuda %.9g\n", n, want, got);
    if (!(fabs(got - want) <= 1e-5 * want)) fail_msg("sum of squares: %.9g on the CPU, %.9g on the GPU", want, got);
    x[0] = 3;
    x[1] = -4;
    host_to_device(RX_CUDA, x_d, x, 2 * sizeof(float));
    got = device_sum_squares(RX_CUDA, &gpu, 2, x_d);
    if (fabs(got - 25) > 1e-5) fail_msg("3^2 + 4^2 on the GPU: %.9g", got);
    device_free(RX_CUDA, x_d);
    free(x);
    device_close_context(RX_CUDA, &gpu);
#endif
}

/* sgd's other options end to end: Nesterov and weight decay, two epochs. */
static void test_sgd_run_cpu_vs_cuda(void **state)
{
    REQUIRE_GPU(state);
    expect_same_run(NULL, "epochs=2 optim.nesterov=true optim.weight_decay=5e-4");
}

/* ---- device_check: the host's own CUDA and cuBLAS calls (core/device.c) ---- */

/* On the CPU nothing can fail and CUDA is not touched: 0, err untouched. Runs in every build. */
static void test_device_check_cpu(void **state)
{
    char err[ERR_LEN] = "untouched";
    assert_int_equal(device_check(RX_CPU, err), 0);
    assert_string_equal(err, "untouched");
}

#ifdef RX_WITH_CUDA
/* Every function of device.c on the GPU, each result read back: no failure may be kept, and the
 * values are exact (halves and small integers). */
static void test_device_check_clean_on_gpu(void **state)
{
    REQUIRE_GPU(state);
    enum { N = 1000 };
    rx_ctx ctx = { .device = RX_CUDA, .threads = 1 };
    char err[ERR_LEN];
    if (device_open_context(RX_CUDA, &ctx, err) != 0) fail_msg("%s", err);
    float *host = host_alloc_pinned(RX_CUDA, N * sizeof(float)), back[N];
    assert_non_null(host);
    float *x = gpu_alloc_or_fail(N * sizeof(float)), *y = gpu_alloc_or_fail(N * sizeof(float));
    for (int i = 0; i < N; i++) host[i] = (float)i;
    host_to_device(RX_CUDA, x, host, N * sizeof(float));
    device_copy(RX_CUDA, y, x, N * sizeof(float));
    device_axpby(RX_CUDA, &ctx, N, 2.0f, x, 0.5f, y);
    device_to_host(RX_CUDA, back, y, N * sizeof(float));
    if (device_check(RX_CUDA, err) != 0) fail_msg("%s", err);
    for (int i = 0; i < N; i++)
        if (back[i] != 2.5f * (float)i) fail_msg("device_axpby: y[%d] = %g, want %g", i, back[i], 2.5 * i);
    device_zero(RX_CUDA, y, N * sizeof(float));
    device_to_host(RX_CUDA, back, y, N * sizeof(float));
    for (int i = 0; i < N; i++)
        if (back[i] != 0) fail_msg("device_zero: y[%d] = %g", i, back[i]);
    device_free(RX_CUDA, x);
    device_free(RX_CUDA, y);
    host_free_pinned(RX_CUDA, host);
    device_close_context(RX_CUDA, &ctx);
    if (device_check(RX_CUDA, err) != 0) fail_msg("%s", err);
}

/* The failing call is named as written, with file and line; the first of two failures is the
 * one kept. Freeing a stack address fails on any machine (an invalid pointer on a GPU, and with
 * no GPU CUDA cannot start), and changes nothing. On a GPU the failure is then reported once;
 * without one CUDA keeps failing to start, and says so at every check. */
static void test_device_check_names_failed_call(void **state)
{
    const gpu_probe *g = *state;
    char err[ERR_LEN];
    float not_gpu_memory = 0;
    device_free(RX_CUDA, &not_gpu_memory);
    host_free_pinned(RX_CUDA, &not_gpu_memory);
    assert_int_equal(device_check(RX_CUDA, err), -1);
    print_message("  device_check: %s\n", err);
    const char *want = "on the GPU: cudaFree(p) failed at core/device.c:";
    if (strncmp(err, want, strlen(want)) != 0) fail_msg("want \"%s<line>: <reason>\", got \"%s\"", want, err);
    char *end;
    long line = strtol(err + strlen(want), &end, 10);
    if (line < 1 || strncmp(end, ": ", 2) != 0 || strlen(end) < 3)
        fail_msg("want a line number and CUDA's reason after \"%s\", got \"%s\"", want, err);
    if (g->usable) assert_int_equal(device_check(RX_CUDA, err), 0);
}

/* An error CUDA holds from a call device.c did not make (a plugin's, unchecked) is reported too
 * (once, on a GPU). Asking for an attribute of a device that does not exist fails and changes
 * nothing. */
static void test_device_check_reports_unchecked_call(void **state)
{
    const gpu_probe *g = *state;
    char err[ERR_LEN];
    int warp = 0;
    assert_int_not_equal(cudaDeviceGetAttribute(&warp, cudaDevAttrWarpSize, 1 << 20), cudaSuccess);
    assert_int_equal(device_check(RX_CUDA, err), -1);
    print_message("  device_check: %s\n", err);
    assert_non_null(strstr(err, "on the GPU: an unchecked CUDA call or kernel launch of a plugin's failed"));
    if (g->usable) assert_int_equal(device_check(RX_CUDA, err), 0);
}

/* True when this process has libcublas mapped. */
static bool cublas_mapped(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    assert_non_null(f);
    char line[4096];
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) found = strstr(line, "libcublas") != NULL;
    fclose(f);
    return found;
}

/* cuBLAS is loaded by its first call (plugins/common/cublas_lazy.c), not with the program: a
 * device=cpu run of a CUDA build maps no libcublas (linked, it cost every run 210 MB of resident
 * memory), and the first call in this process loads the real library. Runs without a GPU: loading
 * and asking cuBLAS for a status name need none. */
static void test_cublas_loaded_on_first_use(void **state)
{
    (void)state;
    char *dir = test_tmpdir(), config[600], cmd[2000], out[OUTPUT_MAX];
    snprintf(config, sizeof config, "%s/maps.lua", dir);
    FILE *f = fopen(config, "w");
    assert_non_null(f);
    fprintf(f, "local e = dofile('%s/configs/synthetic.lua')\n"
               "e.epochs, e.device, e.out = 1, 'cpu', '%s/run'\n"
               "runexp.train(e)\n"
               "local maps = io.open('/proc/self/maps'):read('a')\n"
               "print(maps:find('libcublas') and 'cublas mapped' or 'no cublas')\n",
            RX_SOURCE_DIR, dir);
    fclose(f);
    snprintf(cmd, sizeof cmd, RX_BUILD_DIR "/runexp %s", config);
    int rc = run_capture(cmd, out, sizeof out);
    if (rc != 0 || !strstr(out, "no cublas")) fail_msg("exit %d:\n%s", rc, out);
    test_rmdir(dir);

    assert_false(cublas_mapped()); /* runs first: nothing here has called cuBLAS yet */
    assert_string_equal(cublasGetStatusName(CUBLAS_STATUS_SUCCESS), "CUBLAS_STATUS_SUCCESS");
    assert_true(cublas_mapped());
}
#else
static void test_device_check_clean_on_gpu(void **state) { REQUIRE_GPU(state); }
static void test_device_check_names_failed_call(void **state) { REQUIRE_GPU(state); }
static void test_device_check_reports_unchecked_call(void **state) { REQUIRE_GPU(state); }
static void test_cublas_loaded_on_first_use(void **state) { REQUIRE_GPU(state); }
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        /* Child processes first: this process has not touched CUDA yet. */
        cmocka_unit_test(test_cublas_loaded_on_first_use),
        cmocka_unit_test(test_synthetic_run_cpu_vs_cuda),
        cmocka_unit_test(test_every_layer_run_cpu_vs_cuda),
        cmocka_unit_test(test_sgd_run_cpu_vs_cuda),
        cmocka_unit_test(test_clip_run_cpu_vs_cuda),
        cmocka_unit_test(test_auto_keeps_a_cpu_only_plugin_on_the_cpu),
        /* Then the tests that use the GPU from this process. */
        cmocka_unit_test(test_cross_entropy_cpu_vs_cuda),
        cmocka_unit_test(test_sgd_cpu_vs_cuda),
        cmocka_unit_test(test_adam_cpu_vs_cuda),
        cmocka_unit_test(test_sum_squares_cpu_vs_cuda),
        /* Last: the failures these provoke must not meet another test's GPU work. */
        cmocka_unit_test(test_device_check_cpu),
        cmocka_unit_test(test_device_check_clean_on_gpu),
        cmocka_unit_test(test_device_check_names_failed_call),
        cmocka_unit_test(test_device_check_reports_unchecked_call),
    };
    return cmocka_run_group_tests(tests, probe_gpu, free_probe);
}
