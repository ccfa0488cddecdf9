/* muon.c: Muon (Keller Jordan, 2024), the optimizer of airbench94_muon.py: momentum whose update
 * for a convolution's filters is replaced by the nearest orthogonal matrix, so that every
 * direction of the filters moves at the same rate whatever the gradient's scale.
 *
 * A tensor of 4 dims (a convolution's filters, (out, in, kh, kw)) is the matrix of out rows and
 * in * kh * kw columns, and takes
 *
 *     buf = momentum * buf + g
 *     u   = nesterov ? g + momentum * buf : buf
 *     w   = w * sqrt(out) / |w|                  (normalize = true: airbench's filters of norm sqrt(out))
 *     w   = w * (1 - lr * weight_decay)          (decoupled, when the step's weight_decay != 0)
 *     w   = w - lr * NS(u)
 *
 * NS(u): ns_steps of the quintic Newton-Schulz iteration X = a X + (b A + c A^2) X, A = X X^T,
 * a, b, c = 3.4445, -4.7750, 2.0315, from X = u / (|u| + 1e-7), worked on the transpose when u has
 * more rows than columns. It approximates u's orthogonal factor U V^T (u = U S V^T); its
 * coefficients trade exactness for speed: after 5 steps the singular values lie in about
 * [0.7, 1.2] instead of at 1 (Jordan: no worse for training).
 *
 * Every other tensor (biases, batchnorm's, a linear layer's weights) takes sgd's step
 * (sgd.h's sgd_update_cpu) with sgd_momentum, no dampening and the same nesterov, its weight
 * decay L2:
 *
 *     d = g + weight_decay * w,  buf = sgd_momentum * buf + d,  w = w - lr * (nesterov ? d + sgd_momentum * buf : buf)
 *
 * (with sgd_momentum 0, buf is left as it is: sgd keeps no buffer then).
 *
 * The host calls step once per tensor (per_tensor), with its shape; the one float of state per
 * parameter is the momentum buffer, which step t = 1 starts afresh (buf = g, or d) as sgd's. The
 * products are OpenBLAS's, in float32, rows of each split over ctx->threads. The CPU only: a run
 * on the GPU is refused (no CUDA entry), not run otherwise.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"
#include "runexp.h"
#include "sgd.h"

enum { ARG_MOMENTUM, ARG_NESTEROV, ARG_NS_STEPS, ARG_NORMALIZE, ARG_SGD_MOMENTUM };

static const rx_param params[] = {
    { .key = "momentum", .type = RX_NUM, .def = { .num = 0.95 }, .help = "momentum of the filters' updates" },
    { .key = "nesterov", .type = RX_BOOL, .def = { .b = true }, .help = "Nesterov momentum, for both rules" },
    { .key = "ns_steps", .type = RX_INT, .def = { .i = 5 }, .help = "Newton-Schulz steps (airbench94_muon: 3)" },
    { .key = "normalize", .type = RX_BOOL, .def = { .b = false },
      .help = "rescale each filter tensor to norm sqrt(out) before its step (airbench94_muon)" },
    { .key = "sgd_momentum", .type = RX_NUM, .def = { .num = 0.9 },
      .help = "momentum of every other tensor's sgd step" },
    { 0 },
};

typedef struct muon {
    float momentum;
    bool nesterov, normalize;
    int ns_steps;
    sgd others;     /* every tensor that is not 4-D: sgd's step, sgd_momentum, no dampening */
} muon;

static void muon_destroy(void *self) { free(self); }

static int muon_create(void **self, rx_ctx *ctx, const rx_value *args, int *state_per_param)
{
    *self = NULL;
    double mu = args[ARG_MOMENTUM].num, sgd_mu = args[ARG_SGD_MOMENTUM].num;
    int64_t steps = args[ARG_NS_STEPS].i;
    if (!(mu >= 0 && mu < 1)) return rx_fail(ctx, "momentum must be in [0, 1), got %g", mu);
    if (!(sgd_mu >= 0 && sgd_mu < 1)) return rx_fail(ctx, "sgd_momentum must be in [0, 1), got %g", sgd_mu);
    if (steps < 1 || steps > 20) return rx_fail(ctx, "ns_steps must be in 1..20, got %lld", (long long)steps);
    muon *o = malloc(sizeof *o);
    if (!o) return rx_fail(ctx, "out of memory");
    *o = (muon){ .momentum = (float)mu, .nesterov = args[ARG_NESTEROV].b, .normalize = args[ARG_NORMALIZE].b,
                 .ns_steps = (int)steps,
                 .others = { .momentum = (float)sgd_mu, .keep = 1, .nesterov = args[ARG_NESTEROV].b } };
    *state_per_param = 1;
    *self = o;
    return 0;
}

/* C (m x n) = alpha * A op(B) + beta * C, row-major, A m x k; C's rows split over `threads`
 * blocks, each its own products (gemm_in_blocks). */
static void matmul(int threads, CBLAS_TRANSPOSE tb, int m, int n, int k, float alpha, const float *a,
                   const float *b, float beta, float *c)
{
#pragma omp parallel for num_threads(threads) schedule(static, 1)
    for (int t = 0; t < threads; t++) {
        int r0 = (int)((int64_t)m * t / threads), r1 = (int)((int64_t)m * (t + 1) / threads);
        if (r1 > r0)
            gemm_in_blocks(CblasNoTrans, tb, r1 - r0, n, k, alpha, a + (size_t)r0 * k, k, b,
                           tb == CblasNoTrans ? n : k, beta, c + (size_t)r0 * n, n);
    }
}

static double sum_squares(const float *x, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return s;
}

/* The scratch of one filters' step: the update u (n floats), the iterate and its next (each n),
 * and two r x r products (r: the smaller side), in one allocation. */
static float *filters_scratch(size_t n, int rows, int cols)
{
    const size_t r = (size_t)(rows <= cols ? rows : cols);
    return malloc((3 * n + 2 * r * r) * sizeof(float));
}

/* u (rows x cols) into its Newton-Schulz approximation of U V^T, in place; u heads a
 * filters_scratch, whose rest holds the iterates and products. */
static void newton_schulz(const muon *o, rx_ctx *ctx, float *u, int rows, int cols)
{
    const float a = 3.4445f, b = -4.7750f, c = 2.0315f;
    const bool wide = rows <= cols;
    const int r = wide ? rows : cols, k = wide ? cols : rows; /* X is r x k, r <= k */
    const size_t nx = (size_t)r * (size_t)k;
    float *x = u + nx, *y = x + nx, *am = y + nx, *bm = am + (size_t)r * r;
    const float scale = (float)(1.0 / (sqrt(sum_squares(u, nx)) + 1e-7));
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++)
            x[wide ? (size_t)i * k + j : (size_t)j * k + i] = u[(size_t)i * cols + j] * scale;
    const int threads = ctx->threads > 1 && r / ctx->threads >= 16 ? ctx->threads : 1; /* 16 rows a thread */
    for (int step = 0; step < o->ns_steps; step++) {
        matmul(threads, CblasTrans, r, r, k, 1.0f, x, x, 0.0f, am);     /* A = X X^T */
        memcpy(bm, am, (size_t)r * r * sizeof *bm);
        matmul(threads, CblasNoTrans, r, r, r, c, am, am, b, bm);       /* B = b A + c A A */
        memcpy(y, x, nx * sizeof *y);
        matmul(threads, CblasNoTrans, r, k, r, 1.0f, bm, x, a, y);      /* Y = a X + B X */
        float *t = x;
        x = y, y = t;
    }
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) u[(size_t)i * cols + j] = x[wide ? (size_t)i * k + j : (size_t)j * k + i];
}

/* The filters' rule: g, w, buf of one (out, in, kh, kw) tensor of n floats. Its scratch is
 * taken before anything is written, so that a step short of memory changes nothing. It is taken
 * per step: step may run on several lanes at once and must not write self, and its cost measured
 * within noise (docs/benchmarks.md, "muon": what muon costs). */
static int filters_step(const muon *o, rx_ctx *ctx, const float *g, float *w, float *buf, size_t n, rx_step s)
{
    const int rows = (int)s.shape.d[0], cols = (int)(n / (size_t)rows);
    float *u = filters_scratch(n, rows, cols);
    if (!u) return rx_fail(ctx, "out of memory for a %d x %d update", rows, cols);
    const float mu = o->momentum, keep_buf = s.t == 1 ? 0.0f : mu;
    for (size_t i = 0; i < n; i++) {
        buf[i] = keep_buf * buf[i] + g[i];
        u[i] = o->nesterov ? g[i] + mu * buf[i] : buf[i];
    }
    newton_schulz(o, ctx, u, rows, cols);
    float keep = 1.0f - s.lr * s.weight_decay;
    if (o->normalize) {
        double norm = sqrt(sum_squares(w, n));
        if (norm > 0) keep *= (float)(sqrt((double)rows) / norm);
    }
    for (size_t i = 0; i < n; i++) w[i] = w[i] * keep - s.lr * u[i];
    free(u);
    return 0;
}

static int muon_step_cpu(void *self, rx_ctx *ctx, const float *g, float *w, float *buf, size_t n, rx_step s)
{
    const muon *o = self;
    if (!(s.lr >= 0 && isfinite(s.lr))) return rx_fail(ctx, "learning rate must be >= 0, got %g", (double)s.lr);
    if (!(s.weight_decay >= 0 && isfinite(s.weight_decay)))
        return rx_fail(ctx, "weight decay must be >= 0, got %g", (double)s.weight_decay);
    if (s.t < 1) return rx_fail(ctx, "step t must be >= 1, got %lld", (long long)s.t);
    if (!buf) return rx_fail(ctx, "muon needs its state buffer, got NULL");
    if (s.shape.ndim < 1 || (size_t)rx_numel(s.shape) != n)
        return rx_fail(ctx, "muon steps one whole tensor a call: got %zu floats and a shape of %d dims", n,
                       s.shape.ndim);
    if (s.shape.ndim == 4) return filters_step(o, ctx, g, w, buf, n, s);
    sgd_update_cpu(&o->others, ctx, g, w, buf, n, s);
    return 0;
}

static const rx_plugin desc = {
    .abi = RX_ABI_VERSION,
    .size = sizeof(rx_plugin),
    .kind = RX_OPTIM,
    .name = "muon",
    .summary = "Muon: orthogonalized momentum for convolution filters, sgd for the rest (airbench94_muon)",
    .params = params,
    .optim = {
        .create = muon_create,
        .destroy = muon_destroy,
        .step = { [RX_CPU] = muon_step_cpu },
        .per_tensor = true,
    },
};

RX_EXPORT(muon) { return &desc; }
