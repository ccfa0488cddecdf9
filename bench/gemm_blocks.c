/* bench/gemm_blocks.c: the products behind gemm_in_blocks (plugins/common/gemm.h), on one thread,
 * whole (one cblas_sgemm) against cut into blocks within OpenBLAS's small-matrix size:
 *   - the 36 planes of one Winograd group of a 192 -> 192 layer: forward (192 x 64 x 192 each), and
 *     the kernel gradient's dU += Z V^T (192 x 192 x 64, V transposed), which winograd.c leaves
 *     whole since blocks do not help it;
 *   - the tutorial's first linear layer (1024 -> 120): forward, weight and input gradients, at a
 *     lane's batch of 10 to 128 (linear.c keeps its products whole: docs/benchmarks.md says why).
 *
 *   cc -O2 -Iplugins/common bench/gemm_blocks.c plugins/common/gemm.c -o /tmp/gemm_blocks \
 *       $(pkg-config --cflags --libs openblas) && /tmp/gemm_blocks
 *
 * Each figure is the best of three rounds, the two forms interleaved (this project's machines
 * are shared). docs/benchmarks.md has a run's output. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "gemm.h"

typedef void (*gemm_fn)(CBLAS_TRANSPOSE, CBLAS_TRANSPOSE, int, int, int, float, const float *, int, const float *,
                        int, float, float *, int);

static void whole(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, float alpha, const float *a, int lda,
                  const float *b, int ldb, float beta, float *c, int ldc)
{
    cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static float *filled(size_t n, int mod)
{
    float *v = malloc(n * sizeof *v);
    if (!v) {
        fprintf(stderr, "gemm_blocks: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++) v[i] = 1e-3f * (float)(i % (size_t)mod);
    return v;
}

/* Microseconds of one Winograd group's 36 planes, C (m, n) = A (m, k) op(B) each: B (k, n), or
 * with tb B^T, B stored (n, k), added into C (the kernel gradient). */
static double planes(gemm_fn g, CBLAS_TRANSPOSE tb, int m, int n, int k, const float *a, const float *b, float *c,
                     int reps)
{
    const bool t = tb == CblasTrans;
    double t0 = now();
    for (int r = 0; r < reps; r++)
        for (int e = 0; e < 36; e++)
            g(CblasNoTrans, tb, m, n, k, 1.0f, a + (size_t)e * m * k, k, b + (size_t)e * k * n, t ? k : n,
              t ? 1.0f : 0.0f, c + (size_t)e * m * n, n);
    return 1e6 * (now() - t0) / reps;
}

/* Microseconds of linear's three products (as plugins/layers/linear.c makes them) at batch n. */
static void linear(gemm_fn g, int n, int in, int out, const float *x, const float *w, float *y, float *dw, float *dx,
                   int reps, double us[3])
{
    double t0 = now();
    for (int r = 0; r < reps; r++) g(CblasNoTrans, CblasTrans, out, n, in, 1.0f, w, in, x, in, 0.0f, y, n);
    double t1 = now();
    for (int r = 0; r < reps; r++) g(CblasTrans, CblasNoTrans, out, in, n, 1.0f, y, out, x, in, 1.0f, dw, in);
    double t2 = now();
    for (int r = 0; r < reps; r++) g(CblasNoTrans, CblasNoTrans, n, in, out, 1.0f, y, out, w, in, 0.0f, dx, in);
    double t3 = now();
    us[0] = 1e6 * (t1 - t0) / reps, us[1] = 1e6 * (t2 - t1) / reps, us[2] = 1e6 * (t3 - t2) / reps;
}

static double min2(double a, double b) { return a < b ? a : b; }

int main(void)
{
    openblas_set_num_threads(1);
    gemm_fn forms[2] = { whole, gemm_in_blocks };
    enum { M = 192, N = 64, K = 192 };
    float *a = filled((size_t)36 * M * K, 7), *b = filled((size_t)36 * M * K, 5), *c = filled((size_t)36 * M * M, 3);
    const struct { const char *what; CBLAS_TRANSPOSE tb; int m, n, k; } shapes[] = {
        { "forward", CblasNoTrans, M, N, K }, { "kernel gradient", CblasTrans, M, K, N } };
    for (int s = 0; s < 2; s++) {
        const int m = shapes[s].m, n = shapes[s].n, k = shapes[s].k;
        double best[2] = { 1e30, 1e30 };
        for (int round = 0; round < 3; round++)
            for (int f = 0; f < 2; f++) best[f] = min2(best[f], planes(forms[f], shapes[s].tb, m, n, k, a, b, c, 100));
        printf("winograd group, %s, 36 planes of %d x %d x %d: whole %.0f us (%.1f GFLOP/s), blocks %.0f us (%.1f "
               "GFLOP/s)\n", shapes[s].what, m, n, k, best[0], 2.0 * 36 * m * n * k / best[0] / 1e3, best[1],
               2.0 * 36 * m * n * k / best[1] / 1e3);
    }

    const int in = 1024, out = 120, batches[] = { 10, 16, 32, 64, 128 };
    float *x = filled((size_t)128 * in, 7), *w = filled((size_t)out * in, 5), *y = filled((size_t)128 * out, 3);
    float *dw = filled((size_t)out * in, 1), *dx = filled((size_t)128 * in, 1);
    printf("linear %d -> %d, microseconds whole -> blocks:\n", in, out);
    for (size_t i = 0; i < sizeof batches / sizeof *batches; i++) {
        const int n = batches[i], reps = 20000 / n;
        double us[2][3] = { { 1e30, 1e30, 1e30 }, { 1e30, 1e30, 1e30 } };
        for (int round = 0; round < 3; round++)
            for (int f = 0; f < 2; f++) {
                double t[3];
                linear(forms[f], n, in, out, x, w, y, dw, dx, reps, t);
                for (int j = 0; j < 3; j++) us[f][j] = min2(us[f][j], t[j]);
            }
        printf("  batch %3d: forward %6.1f -> %6.1f, weight gradient %6.1f -> %6.1f, input gradient %6.1f -> %6.1f\n",
               n, us[0][0], us[1][0], us[0][1], us[1][1], us[0][2], us[1][2]);
    }
    return 0;
}
