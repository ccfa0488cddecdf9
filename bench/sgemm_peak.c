/* sgemm_peak.c: the machine's measured single-precision matrix-multiply rate, the yardstick that
 * bench/cpu sets runexp's achieved GFLOP/s beside.
 *
 *     sgemm_peak THREADS       prints {"threads": T, "gflops_1": ..., "gflops_all": ...}
 *
 * OpenBLAS sgemm on square 2048-matrices (large enough to run at the kernel's full rate, small
 * enough to take a fraction of a second), best of five, on one thread and on THREADS threads.
 * bench/cpu builds it with `cc -O2 sgemm_peak.c $(pkg-config --cflags --libs openblas)`. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { SIDE = 2048, TRIES = 5 };

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Best rate of TRIES products C = A B on `threads` OpenBLAS threads, in GFLOP/s. */
static double best_gflops(const float *a, const float *b, float *c, int threads)
{
    openblas_set_num_threads(threads);
    const double flops = 2.0 * SIDE * SIDE * SIDE;
    double best = 0.0;
    for (int t = 0; t < TRIES; t++) {
        const double start = now_seconds();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, SIDE, SIDE, SIDE, 1.0f, a, SIDE, b, SIDE,
                    0.0f, c, SIDE);
        const double rate = flops / (now_seconds() - start) / 1e9;
        if (rate > best) best = rate;
    }
    return best;
}

int main(int argc, char **argv)
{
    const int threads = argc > 1 ? atoi(argv[1]) : 1;
    if (threads < 1) {
        fprintf(stderr, "usage: sgemm_peak THREADS (at least 1)\n");
        return 2;
    }
    const size_t n = (size_t)SIDE * SIDE;
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b), *c = malloc(n * sizeof *c);
    if (!a || !b || !c) {
        fprintf(stderr, "sgemm_peak: out of memory for three %dx%d matrices\n", SIDE, SIDE);
        return 1;
    }
    /* Values that stay finite and are not all equal: the rate must not depend on them anyway. */
    for (size_t i = 0; i < n; i++) {
        a[i] = (float)(i % 7) * 0.125f;
        b[i] = (float)(i % 5) * 0.25f;
    }
    const double one = best_gflops(a, b, c, 1);
    const double all = threads > 1 ? best_gflops(a, b, c, threads) : one;
    printf("{\"threads\": %d, \"side\": %d, \"gflops_1\": %.1f, \"gflops_all\": %.1f}\n", threads, SIDE, one, all);
    free(a);
    free(b);
    free(c);
    return 0;
}
