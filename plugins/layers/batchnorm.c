/* batchnorm.c: batch normalization, PyTorch's nn.BatchNorm2d on a per-sample (C, H, W) input and
 * nn.BatchNorm1d on (C) or (C, L): each channel c is normalized over the N * H * W values it has
 * in the batch (M of them), then scaled and shifted:
 *     y = (x - mean[c]) / sqrt(var[c] + eps) * weight[c] + bias[c]
 * Training: mean and the biased variance of the batch, and the running statistics updated in
 * place (w[2], w[3]) as PyTorch does, with the unbiased variance var * M / (M - 1):
 *     running = (1 - momentum) * running + momentum * batch statistic
 * Evaluation: the running statistics, read only.
 * activation = "gelu" fuses the GELU that follows batchnorm in airbench-style blocks:
 *     y = GELU(z), z = (x - mean[c]) / sqrt(var[c] + eps) * weight[c] + bias[c]
 * with gelu_math.h's exact form (the gelu layer's, bit for bit). Backward recomputes z from x and
 * the state and takes dz = dy * GELU'(z) in place of dy below (dz to rounding: see
 * batchnorm_backward_cpu). Fused, the pair passes over the batch's tensor once each way, where
 * the two layers took two passes and kept z's tensor besides (the recipe 0-2% faster, 10 MB
 * less at its peak: docs/benchmarks.md, "batchnorm with the GELU fused").
 * Backward, with xhat = (x - mean) * invstd and the sums over the channel's M values:
 *     dbias += sum(dy);   dweight += sum(dy * xhat)
 *     dx = weight * invstd * (dy - sum(dy) / M - xhat * sum(dy * xhat) / M)     (training)
 *     dx = weight * invstd * dy                                                   (evaluation)
 * (evaluation's backward is not needed by the host, which trains in training mode, but costs
 * nothing and keeps backward defined after any forward.)
 *
 * Numerics: per channel, the mean and then the squared deviations from it are summed in double
 * (two passes, no cancellation), as are the two sums of backward; the elementwise work is float.
 * Threads: channels are split across ctx->threads (OpenMP) once the tensor is large enough; each
 * channel is computed by one thread, in the same order, so the result never depends on the
 * thread count. CUDA path: batchnorm.cu; batchnorm.h holds what both files share. */
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batchnorm.h"
#include "gelu_math.h"
#include "threads.h"
#include "onnx_nodes.h"

static const rx_param params[] = {
    { .key = "eps", .type = RX_NUM, .def = { .num = 1e-5 },
      .help = "added to the variance before its square root, > 0" },
    { .key = "momentum", .type = RX_NUM, .def = { .num = 0.1 },
      .help = "running = (1 - momentum) * running + momentum * batch statistic, in [0, 1]" },
    { .key = "activation", .type = RX_STR, .def = { .s = "none" },
      .help = "'none', or 'gelu': GELU of the normalized output (the gelu layer's exact form), fused" },
    { 0 },
};
enum { ARG_EPS, ARG_MOMENTUM, ARG_ACTIVATION };

/* "(2, 3, 4)" into buf, for messages. */
static void format_shape(rx_shape s, char *buf, size_t len)
{
    size_t used = (size_t)snprintf(buf, len, "(");
    for (int i = 0; i < s.ndim && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s%" PRId64, i ? ", " : "", s.d[i]);
    if (used < len) snprintf(buf + used, len - used, ")");
}

static int batchnorm_create(void **self, rx_ctx *ctx, const rx_value *args, rx_shape in,
                            rx_layer_info *info)
{
    const double eps = args[ARG_EPS].num, momentum = args[ARG_MOMENTUM].num;
    if (!(eps > 0.0 && isfinite(eps))) return rx_fail(ctx, "eps must be > 0, got %g", eps);
    if (!(momentum >= 0.0 && momentum <= 1.0))
        return rx_fail(ctx, "momentum must be in [0, 1], got %g", momentum);
    const char *activation = args[ARG_ACTIVATION].s ? args[ARG_ACTIVATION].s : "(nothing)";
    if (strcmp(activation, "none") != 0 && strcmp(activation, "gelu") != 0)
        return rx_fail(ctx, "activation must be 'none' or 'gelu', got '%s'", activation);
    char got[128];
    format_shape(in, got, sizeof got);
    if (in.ndim < 1 || in.ndim > 3)
        return rx_fail(ctx, "expects a per-sample input (C), (C, L) or (C, H, W), got %d dimensions %s",
                       in.ndim, got);
    for (int i = 0; i < in.ndim; i++)
        if (in.d[i] < 1) return rx_fail(ctx, "expects every dimension of the input to be at least 1, got %s", got);
    /* C bounds the CUDA grid: one block per channel. */
    if (in.d[0] > INT_MAX)
        return rx_fail(ctx, "expects at most %d channels, got %" PRId64, INT_MAX, in.d[0]);
    const int64_t c = in.d[0];

    batchnorm *s = malloc(sizeof *s);
    if (!s) return rx_fail(ctx, "out of memory");
    *s = (batchnorm){ .c = c, .hw = rx_numel(in) / c, .eps = eps, .momentum = momentum,
                      .gelu = strcmp(activation, "gelu") == 0 };
    const rx_shape per_channel = { .ndim = 1, .d = { c } };
    info->out = in;
    info->ntensors = BN_NTENSORS;
    info->tensors[BN_WEIGHT] = (rx_tensor_decl){ .name = "weight", .shape = per_channel, .init = RX_INIT_ONES };
    info->tensors[BN_BIAS] = (rx_tensor_decl){ .name = "bias", .shape = per_channel, .init = RX_INIT_ZEROS };
    info->tensors[BN_RUNNING_MEAN] = (rx_tensor_decl){ .name = "running_mean", .shape = per_channel,
                                                       .init = RX_INIT_ZEROS, .buffer = true };
    info->tensors[BN_RUNNING_VAR] = (rx_tensor_decl){ .name = "running_var", .shape = per_channel,
                                                      .init = RX_INIT_ONES, .buffer = true };
    /* The state is per sample, but what backward needs is per batch: mean and invstd, 2C floats
     * whatever N is. Training accepts a batch of one sample (when H * W > 1), whose block is
     * exactly state_bytes, so state_bytes must hold all 2C floats; in a larger batch they sit at
     * the start of the block and the rest, 2C (N - 1) floats, goes unused. That is 2 / (H * W) of
     * the input's size (twice it for a (C) input). Recomputing the statistics from x in backward
     * would save it, at the price of two more passes over x. */
    info->state_bytes = 2 * sizeof(float) * (size_t)c;
    info->workspace_bytes = 0;
    *self = s;
    return 0;
}

static void batchnorm_destroy(void *self) { free(self); }

/* The sums over one sample's H * W values of a channel. Rows of 16 or more take vector sums
 * (`omp simd` keeps several partial sums: a fixed order for a build); shorter ones one running
 * sum, which is faster there (docs/benchmarks.md: `runexp check batchnorm`, before and after). */
enum { BN_VECTOR_ROW = 16 };

static double row_sum(const float *restrict v, int64_t n)
{
    double sum = 0.0;
    if (n < BN_VECTOR_ROW) {
        for (int64_t j = 0; j < n; j++) sum += v[j];
        return sum;
    }
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < n; j++) sum += v[j];
    return sum;
}

/* Sum of (v - mu)^2. */
static double row_squares(const float *restrict v, int64_t n, double mu)
{
    double sum = 0.0;
    if (n < BN_VECTOR_ROW) {
        for (int64_t j = 0; j < n; j++) sum += ((double)v[j] - mu) * ((double)v[j] - mu);
        return sum;
    }
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < n; j++) sum += ((double)v[j] - mu) * ((double)v[j] - mu);
    return sum;
}

/* Adds sum(g) and sum(g * xhat), xhat = (x - mu) * is, into *sum_g and *sum_g_xhat. */
static void row_grad_sums(const float *restrict x, const float *restrict g, int64_t n, float mu, float is,
                          double *sum_g, double *sum_g_xhat)
{
    double a = 0.0, b = 0.0;  /* float * float is exact in double */
    if (n < BN_VECTOR_ROW) {
        for (int64_t j = 0; j < n; j++) {
            a += g[j];
            b += (double)g[j] * ((x[j] - mu) * is);
        }
    } else {
#pragma omp simd reduction(+ : a, b)
        for (int64_t j = 0; j < n; j++) {
            a += g[j];
            b += (double)g[j] * ((x[j] - mu) * is);
        }
    }
    *sum_g += a;
    *sum_g_xhat += b;
}

/* row_grad_sums for activation = "gelu": dz = dy * GELU'(z), z = (x - mu) * scale + shift as
 * forward computed it, in blocks of GELU_BLOCK values on the stack, summed as row_grad_sums sums
 * them; dz is left in out[0, n) for the dx pass when out is not NULL. */
enum { GELU_BLOCK = 256 };

static void gelu_grad_sums(const float *x, const float *dy, float *out, int64_t n, float mu, float scale,
                           float shift, float is, double *sum_g, double *sum_g_xhat)
{
    float block[GELU_BLOCK];
    for (int64_t j0 = 0; j0 < n; j0 += GELU_BLOCK) {
        const int64_t len = n - j0 < GELU_BLOCK ? n - j0 : GELU_BLOCK;
        const float *restrict in = x + j0, *restrict g = dy + j0;
        /* cppcheck-suppress legacyUninitvar ; block is written (dz) before it is read */
        float *restrict dz = out ? out + j0 : block;
#pragma omp simd
        for (int64_t j = 0; j < len; j++) dz[j] = g[j] * gelu_exact_grad((in[j] - mu) * scale + shift);
        row_grad_sums(in, dz, len, mu, is, sum_g, sum_g_xhat);
    }
}

/* Mean and biased variance of channel c of x (N, C, HW), over its n * hw values, in double: the
 * sum, then the squared deviations from the mean. */
static void batchnorm_moments(const batchnorm *s, const float *x, int64_t n, int64_t c, double *mean,
                              double *var)
{
    const double m = (double)(n * s->hw);
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += row_sum(x + (i * s->c + c) * s->hw, s->hw);
    const double mu = sum / m;
    double squares = 0.0;
    for (int64_t i = 0; i < n; i++) squares += row_squares(x + (i * s->c + c) * s->hw, s->hw, mu);
    *mean = mu;
    *var = squares / m;
}

/* Shared with batchnorm.cu (see batchnorm.h): one message for both devices. */
int batchnorm_check_batch(const batchnorm *s, rx_ctx *ctx, int64_t n)
{
    const int64_t m = n * s->hw;
    if (ctx->training && n > 0 && m < 2)
        return rx_fail(ctx, "expected more than 1 value per channel when training, got %" PRId64
                       " (a batch of %" PRId64 " with %" PRId64 " per sample and channel)", m, n, s->hw);
    return 0;
}

static int batchnorm_forward_cpu(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w,
                                 rx_tensor *y, void *state)
{
    const batchnorm *s = self;
    const int64_t n = x->shape.d[0], m = n * s->hw;  /* m: values per channel in the batch */
    if (batchnorm_check_batch(s, ctx, n) != 0) return -1;
    if (n < 1) return 0;  /* nothing to normalize, and nothing learnt about the statistics */
    const float *weight = w[BN_WEIGHT].data, *bias = w[BN_BIAS].data;  /* (C) */
    float *running_mean = w[BN_RUNNING_MEAN].data, *running_var = w[BN_RUNNING_VAR].data;  /* (C) */
    float *mean = state, *invstd = mean + s->c;  /* (C) each, what backward reads */
    const bool training = ctx->training;
    const int threads = threads_for(ctx, n * s->c * s->hw, THREADS_MIN_WORK);
    (void)threads;  /* read only by the pragma, which a build without OpenMP ignores */

#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t c = 0; c < s->c; c++) {
        double mu, var;
        if (training) {
            batchnorm_moments(s, x->data, n, c, &mu, &var);
            const double unbiased = var * (double)m / (double)(m - 1);
            running_mean[c] = (float)((1.0 - s->momentum) * running_mean[c] + s->momentum * mu);
            running_var[c] = (float)((1.0 - s->momentum) * running_var[c] + s->momentum * unbiased);
        } else {
            mu = running_mean[c];
            var = running_var[c];
        }
        const double is = 1.0 / sqrt(var + s->eps);
        mean[c] = (float)mu;
        invstd[c] = (float)is;
        /* The CUDA path rounds the same expressions the same way (see batchnorm.cu). */
        const float mean_c = (float)mu, scale = (float)((double)weight[c] * is), shift = bias[c];
        for (int64_t i = 0; i < n; i++) {
            const float *restrict in = x->data + (i * s->c + c) * s->hw;  /* (HW) */
            float *restrict out = y->data + (i * s->c + c) * s->hw;       /* (HW) */
            if (s->gelu) {
#pragma omp simd
                for (int64_t j = 0; j < s->hw; j++) out[j] = gelu_exact((in[j] - mean_c) * scale + shift);
            } else {
                for (int64_t j = 0; j < s->hw; j++) out[j] = (in[j] - mean_c) * scale + shift;
            }
        }
    }
    return 0;
}

static int batchnorm_backward_cpu(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y,
                                  const rx_tensor *dy, const rx_tensor *w, const void *state,
                                  rx_tensor *dx, rx_tensor *dw)
{
    const batchnorm *s = self;
    const int64_t n = x->shape.d[0], m = n * s->hw;
    if (n < 1) return 0;
    const float *weight = w[BN_WEIGHT].data;                   /* (C) */
    float *dweight = dw[BN_WEIGHT].data, *dbias = dw[BN_BIAS].data;  /* (C); the buffers get none */
    const float *mean = state, *invstd = mean + s->c;          /* (C) each, from forward */
    const float *bias = w[BN_BIAS].data;                       /* (C): z's shift, for activation = "gelu" */
    const bool training = ctx->training;
    const int threads = threads_for(ctx, n * s->c * s->hw, THREADS_MIN_WORK);
    (void)threads;  /* read only by the pragma, which a build without OpenMP ignores */

#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t c = 0; c < s->c; c++) {
        const float mu = mean[c], is = invstd[c];
        /* z's scale from the state's float invstd (forward had the double): z may differ from
         * forward's in its last bit, which moves GELU'(z) by as little */
        const float scale = (float)((double)weight[c] * (double)is), shift = bias[c];
        double sum_dy = 0.0, sum_dy_xhat = 0.0;
        for (int64_t i = 0; i < n; i++) {
            const size_t at = (size_t)(i * s->c + c) * (size_t)s->hw;
            if (s->gelu)
                gelu_grad_sums(x->data + at, dy->data + at, dx ? dx->data + at : NULL, s->hw, mu, scale, shift,
                               is, &sum_dy, &sum_dy_xhat);
            else
                row_grad_sums(x->data + at, dy->data + at, s->hw, mu, is, &sum_dy, &sum_dy_xhat);
        }
        dweight[c] += (float)sum_dy_xhat;
        dbias[c] += (float)sum_dy;
        if (!dx) continue;
        const float k = (float)((double)weight[c] * is);
        const float a = training ? (float)(sum_dy / (double)m) : 0.0f;
        const float b = training ? (float)(sum_dy_xhat / (double)m) : 0.0f;
        for (int64_t i = 0; i < n; i++) {
            const float *restrict in = x->data + (i * s->c + c) * s->hw;  /* (HW) */
            const float *restrict g = dy->data + (i * s->c + c) * s->hw;  /* (HW) */
            float *restrict out = dx->data + (i * s->c + c) * s->hw;      /* (HW) */
            if (s->gelu) {  /* dz is in out already (gelu_grad_sums) */
                if (training)
                    for (int64_t j = 0; j < s->hw; j++) out[j] = k * (out[j] - a - (in[j] - mu) * is * b);
                else
                    for (int64_t j = 0; j < s->hw; j++) out[j] = k * out[j];
            } else if (training) {
                for (int64_t j = 0; j < s->hw; j++) out[j] = k * (g[j] - a - (in[j] - mu) * is * b);
            } else {
                for (int64_t j = 0; j < s->hw; j++) out[j] = k * g[j];
            }
        }
    }
    return 0;
}

/* BatchNormalization in inference form: the running statistics, epsilon as a float; then, with
 * activation = "gelu", the gelu layer's nodes. */
static int batchnorm_export_onnx(void *self, rx_ctx *ctx, rx_onnx *g)
{
    const batchnorm *s = self;
    const rx_onnx_attr eps = { .name = "epsilon", .type = RX_ATTR_FLOAT, .f = (float)s->eps };
    const char *inputs[] = { g->input, g->tensors[BN_WEIGHT], g->tensors[BN_BIAS], g->tensors[BN_RUNNING_MEAN],
                             g->tensors[BN_RUNNING_VAR] };
    const char *z = s->gelu ? onnx_temp(ctx, g) : g->output;
    if (!z || onnx_op(ctx, g, "BatchNormalization", inputs, 5, z, &eps, 1) != 0) return -1;
    return s->gelu ? onnx_gelu(ctx, g, z, g->output, false) : 0;
}

static const rx_plugin desc = {
    .abi = RX_ABI_VERSION,
    .size = sizeof(rx_plugin),
    .kind = RX_LAYER,
    .name = "batchnorm",
    .summary = "batch normalization per channel, like torch.nn.BatchNorm2d (and BatchNorm1d)",
    .params = params,
    .layer = {
        .create = batchnorm_create,
        .destroy = batchnorm_destroy,
#ifdef RX_WITH_CUDA
        .forward = { [RX_CPU] = batchnorm_forward_cpu, [RX_CUDA] = batchnorm_forward_cuda },
        .backward = { [RX_CPU] = batchnorm_backward_cpu, [RX_CUDA] = batchnorm_backward_cuda },
#else
        .forward = { [RX_CPU] = batchnorm_forward_cpu },
        .backward = { [RX_CPU] = batchnorm_backward_cpu },
#endif
        .export_onnx = batchnorm_export_onnx,
    },
};

RX_EXPORT(batchnorm) { return &desc; }
