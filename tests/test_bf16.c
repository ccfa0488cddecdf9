/* test_bf16.c: conv2d's bfloat16 products (plugins/layers/conv2d/bf16.c), compiled in here, on
 * shapes with a remainder in every dimension (K odd, below and past 32; N past a panel; M past a
 * tile of 8 rows):
 * - bf16_pack_cols_t of B's transpose packs the same words as bf16_pack_cols of B, and packing
 *   rounds every value to the nearest bf16, ties to even, odd K's last pair getting a zero;
 * - bf16_gemm from packed operands gives the product of the rounded operands (against double,
 *   to float32's rounding of the sums), written or added into C, and nothing past its columns.
 * conv2d's own tests (test_layers.c) take the whole layer in bf16 against the definition. */
#include "helpers.h"

#include <math.h>

#include "../plugins/layers/conv2d/bf16.c"

/* v rounded to bf16 (nearest, ties to even; every value here is normal), as a float. */
static float round_bf16(float v)
{
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    memcpy(&v, &u, sizeof v);
    return v;
}

/* The float a packed half-word holds. */
static float unpack(uint32_t word, int high)
{
    uint32_t u = (high ? word >> 16 : word & 0xffffu) << 16;
    float v;
    memcpy(&v, &u, sizeof v);
    return v;
}

static const int shapes[][3] = { /* m, n, k */
    { 1, 1, 1 }, { 3, 5, 2 }, { 8, 16, 31 }, { 9, 17, 33 }, { 13, 40, 7 }, { 16, 33, 64 }, { 20, 48, 65 },
};

static void fill(float *v, size_t n, rx_rng *rng)
{
    for (size_t i = 0; i < n; i++) v[i] = 4.0f * rx_rng_uniform(rng) - 2.0f;
}

static void test_packing(void **unused)
{
    if (!bf16_supported()) skip();
    rx_rng rng = rx_rng_stream(5, 0);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int n = shapes[s][1], k = shapes[s][2], k2 = (k + 1) / 2, ld = k + 3;
        float *b = malloc(sizeof(float) * (size_t)k * n), *bt = malloc(sizeof(float) * (size_t)n * ld);
        const size_t words = bf16_cols_words(k, n);
        uint32_t *p = malloc(words * 4), *pt = malloc(words * 4);
        assert_true(b && bt && p && pt);
        fill(b, (size_t)k * n, &rng);
        for (int j = 0; j < n; j++)
            for (int q = 0; q < ld; q++) bt[(size_t)j * ld + q] = q < k ? b[(size_t)q * n + j] : NAN;  /* never read */
        memset(p, 0xAB, words * 4);
        memset(pt, 0xCD, words * 4);
        bf16_pack_cols(b, n, k, n, p);
        bf16_pack_cols_t(bt, ld, k, n, pt);
        if (memcmp(p, pt, words * 4) != 0) fail_msg("%d x %d: bf16_pack_cols_t packs other words than bf16_pack_cols", k, n);
        for (int j = 0; j < (n + BF16_PANEL - 1) / BF16_PANEL * BF16_PANEL; j++)
            for (int q = 0; q < k2; q++) {
                const uint32_t w = p[((size_t)(j / BF16_PANEL) * k2 + q) * BF16_PANEL + j % BF16_PANEL];
                for (int h = 0; h < 2; h++) {
                    const int row = 2 * q + h;
                    const float want = j < n && row < k ? round_bf16(b[(size_t)row * n + j]) : 0.0f;
                    if (unpack(w, h) != want)
                        fail_msg("%d x %d: B[%d][%d] packed as %g, want %g", k, n, row, j, (double)unpack(w, h), (double)want);
                }
            }
        free(b), free(bt), free(p), free(pt);
    }
}

static void test_products(void **unused)
{
    if (!bf16_supported()) skip();
    rx_rng rng = rx_rng_stream(6, 0);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2], ldc = n + 5;
        float *a = malloc(sizeof(float) * (size_t)m * k), *b = malloc(sizeof(float) * (size_t)k * n);
        float *c = malloc(sizeof(float) * (size_t)m * ldc), *c0 = malloc(sizeof(float) * (size_t)m * ldc);
        uint32_t *pa = malloc(bf16_rows_words(m, k) * 4), *pb = malloc(bf16_cols_words(k, n) * 4);
        assert_true(a && b && c && c0 && pa && pb);
        fill(a, (size_t)m * k, &rng);
        fill(b, (size_t)k * n, &rng);
        fill(c0, (size_t)m * ldc, &rng);
        bf16_pack_rows(a, k, m, k, pa);
        bf16_pack_cols(b, n, k, n, pb);
        for (int add = 0; add < 2; add++) {
            memcpy(c, c0, sizeof(float) * (size_t)m * ldc);
            bf16_gemm(m, n, k, pa, pb, c, ldc, add);
            for (int i = 0; i < m; i++)
                for (int j = 0; j < ldc; j++) {
                    const float got = c[(size_t)i * ldc + j], before = c0[(size_t)i * ldc + j];
                    if (j >= n) {
                        if (memcmp(&got, &before, sizeof got) != 0) fail_msg("%dx%dx%d: C[%d][%d] past n written", m, n, k, i, j);
                        continue;
                    }
                    double want = add ? before : 0.0, size = fabs(want);
                    for (int q = 0; q < k; q++) {
                        const double t = (double)round_bf16(a[(size_t)i * k + q]) * round_bf16(b[(size_t)q * n + j]);
                        want += t;
                        size += fabs(t);
                    }
                    if (fabs(got - want) > 1e-6 * size + 1e-7)
                        fail_msg("%dx%dx%d%s: C[%d][%d] = %.9g, the rounded operands give %.9g", m, n, k, add ? " (add)" : "",
                                 i, j, (double)got, want);
                }
        }
        free(a), free(b), free(c), free(c0), free(pa), free(pb);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_packing),
        cmocka_unit_test(test_products),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
