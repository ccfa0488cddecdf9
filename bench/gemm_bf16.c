/* gemm_bf16.c: conv2d's bfloat16 products (plugins/layers/conv2d/bf16.c) against OpenBLAS
 * sgemm, one thread, on the Winograd products of the networks runexp trains:
 *
 *     cc -O2 -Iplugins/layers/conv2d bench/gemm_bf16.c plugins/layers/conv2d/bf16.c \
 *        -o /tmp/gemm_bf16 $(pkg-config --cflags --libs openblas) && /tmp/gemm_bf16
 *
 * For each shape C (m x n) = A (m x k) B (k x n): GFLOP/s of sgemm, of bf16_gemm alone, and of
 * bf16_gemm with B packed first (what conv2d pays per product: A, the kernels, is packed once a
 * step), best of 5 interleaved rounds; and the largest difference from sgemm's C, relative to
 * C's largest value (bf16 keeps 8 bits of each operand: expect a few 1e-3). */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "bf16.h"

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void fill(float *x, size_t n, unsigned *seed)
{
    for (size_t i = 0; i < n; i++) x[i] = (float)rand_r(seed) / (float)RAND_MAX - 0.5f;
}

int main(void)
{
    /* (m, n, k): a Winograd plane's product M_e = U_e V_e, forward (cout, group tiles, cin) */
    static const int shapes[][3] = { { 192, 64, 192 }, { 192, 128, 192 }, { 192, 64, 48 }, { 48, 256, 48 },
                                     { 48, 256, 24 }, { 64, 64, 32 }, { 32, 64, 16 } };
    if (!bf16_supported()) {
        fprintf(stderr, "gemm_bf16: this CPU lacks AVX-512 BF16\n");
        return 1;
    }
    openblas_set_num_threads(1);
    unsigned seed = 1;
    printf("%5s %5s %5s %12s %12s %16s %10s\n", "m", "n", "k", "sgemm", "bf16", "bf16+pack B", "rel diff");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
        float *a = malloc(sizeof(float) * m * k), *b = malloc(sizeof(float) * k * n);
        float *c = malloc(sizeof(float) * m * n), *c2 = malloc(sizeof(float) * m * n);
        uint32_t *ap = malloc(4 * bf16_rows_words(m, k)), *bp = malloc(4 * bf16_cols_words(k, n));
        fill(a, (size_t)m * k, &seed);
        fill(b, (size_t)k * n, &seed);
        bf16_pack_rows(a, k, m, k, ap);
        bf16_pack_cols(b, n, k, n, bp);
        const int reps = (int)(2e8 / (2.0 * m * n * k)) + 1;
        const double flops = 2.0 * m * n * k * reps;
        double best[3] = { 0, 0, 0 };
        for (int round = 0; round < 5; round++) {
            double t = now_seconds();
            for (int r = 0; r < reps; r++)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a, k, b, n, 0.0f, c, n);
            double g = flops / (now_seconds() - t) * 1e-9;
            if (g > best[0]) best[0] = g;
            t = now_seconds();
            for (int r = 0; r < reps; r++) bf16_gemm(m, n, k, ap, bp, c2, n, false);
            g = flops / (now_seconds() - t) * 1e-9;
            if (g > best[1]) best[1] = g;
            t = now_seconds();
            for (int r = 0; r < reps; r++) {
                bf16_pack_cols(b, n, k, n, bp);
                bf16_gemm(m, n, k, ap, bp, c2, n, false);
            }
            g = flops / (now_seconds() - t) * 1e-9;
            if (g > best[2]) best[2] = g;
        }
        float big = 0.0f, diff = 0.0f;
        for (int i = 0; i < m * n; i++) {
            const float d = c2[i] > c[i] ? c2[i] - c[i] : c[i] - c2[i], v = c[i] > 0 ? c[i] : -c[i];
            if (d > diff) diff = d;
            if (v > big) big = v;
        }
        printf("%5d %5d %5d %12.1f %12.1f %16.1f %10.1e\n", m, n, k, best[0], best[1], best[2], diff / big);
        free(a), free(b), free(c), free(c2), free(ap), free(bp);
    }
    return 0;
}
