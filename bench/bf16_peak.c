/* bf16_peak.c: the core's arithmetic ceilings in float32 and in bfloat16, from registers alone:
 * how much a `precision = "bf16"` path could buy on a CPU with AVX-512 BF16 (issue 17), beside
 * what OpenBLAS sgemm reaches (bench/sgemm_peak.c).
 *
 *     cc -O2 -mavx512f -mavx512bf16 bench/bf16_peak.c -o /tmp/bf16_peak && /tmp/bf16_peak
 *
 * One thread. Each loop keeps 12 independent accumulators in zmm registers (enough to cover the
 * instructions' latency), with no memory traffic: vfmadd231ps does 16 multiply-adds an
 * instruction, vdpbf16ps 32 (pairs of bf16 products summed into float32). Best of five runs of
 * 2^22 x 12 instructions each. Prints {"fp32_fma_gflops": ..., "bf16_dot_gflops": ..., "ratio": ...}.
 * A CPU without avx512_bf16 (see /proc/cpuinfo) stops with SIGILL at the second loop. */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

enum { ROUNDS = 1 << 22, TRIES = 5 }; /* a run: ROUNDS x ACCS instructions */

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* The sum of every lane of the accumulators, printed so the compiler cannot drop the loops. */
static float lanes(const __m512 *acc, int n)
{
    __m512 s = _mm512_setzero_ps();
    for (int i = 0; i < n; i++) s = _mm512_add_ps(s, acc[i]);
    return _mm512_reduce_add_ps(s);
}

#define ACCS 12
#define TWELVE(OP) OP(0) OP(1) OP(2) OP(3) OP(4) OP(5) OP(6) OP(7) OP(8) OP(9) OP(10) OP(11)

static double fp32_run(float *sink)
{
    __m512 acc[ACCS];
    for (int i = 0; i < ACCS; i++) acc[i] = _mm512_set1_ps((float)i);
    const __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(1e-3f);
    const double start = now_seconds();
    for (int r = 0; r < ROUNDS; r++) {
#define FMA(i) acc[i] = _mm512_fmadd_ps(a, acc[i], b);
        TWELVE(FMA)
#undef FMA
    }
    const double seconds = now_seconds() - start;
    *sink += lanes(acc, ACCS);
    return 2.0 * 16 * ACCS * (double)ROUNDS / seconds * 1e-9;
}

static double bf16_run(float *sink)
{
    __m512 acc[ACCS];
    for (int i = 0; i < ACCS; i++) acc[i] = _mm512_set1_ps((float)i);
    const __m512bh a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f), _mm512_set1_ps(1e-3f));
    const __m512bh b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(0.5f), _mm512_set1_ps(0.5f));
    const double start = now_seconds();
    for (int r = 0; r < ROUNDS; r++) {
#define DOT(i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
        TWELVE(DOT)
#undef DOT
    }
    const double seconds = now_seconds() - start;
    *sink += lanes(acc, ACCS);
    return 2.0 * 32 * ACCS * (double)ROUNDS / seconds * 1e-9;
}

int main(void)
{
    float sink = 0.0f;
    double fp32 = 0.0, bf16 = 0.0;
    for (int t = 0; t < TRIES; t++) { /* interleaved, so that a noisy moment hits both */
        const double f = fp32_run(&sink), b = bf16_run(&sink);
        if (f > fp32) fp32 = f;
        if (b > bf16) bf16 = b;
    }
    printf("{\"fp32_fma_gflops\": %.1f, \"bf16_dot_gflops\": %.1f, \"ratio\": %.2f, \"sink\": %g}\n", fp32, bf16,
           bf16 / fp32, (double)sink);
    return 0;
}
