/* global_pool.c: global max or average pooling, (C, H, W) -> (C, 1, 1), like
 * torch.nn.AdaptiveMaxPool2d(1) and AdaptiveAvgPool2d(1).
 * Max: forward scans each plane in row-major order and a later element wins when it is larger or
 * NaN, maxpool's rule and PyTorch's: ties go to the first maximum, a NaN wins (the last one when
 * there are several). The state keeps, per channel, the int32 index of the maximum within its
 * sample, as maxpool's does; backward writes the upstream gradient there and 0 elsewhere.
 * Average: the mean of each plane, summed in the order a CUDA warp sums it (global_pool.h), so
 * the devices agree to the bit; backward spreads dy / (H * W) over the plane. No tensors.
 * Planes are split across ctx->threads when the batch is large enough to pay; each plane is one
 * thread's, so the result never depends on the thread count.
 * CUDA path: global_pool.cu, with the same state, tie rule and summation order. */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "global_pool.h"
#include "threads.h"
#include "onnx_nodes.h"

static const rx_param params[] = {
    { .key = "mode", .type = RX_STR, .def = { .s = "max" }, .help = "'max' or 'avg' (the mean)" },
    { 0 },
};
enum { ARG_MODE };

static int global_pool_create(void **self, rx_ctx *ctx, const rx_value *args, rx_shape in,
                              rx_layer_info *info)
{
    const char *mode = args[ARG_MODE].s;
    global_pool_mode m;
    if (mode && strcmp(mode, "max") == 0) m = GLOBAL_POOL_MAX;
    else if (mode && strcmp(mode, "avg") == 0) m = GLOBAL_POOL_AVG;
    else return rx_fail(ctx, "mode must be 'max' or 'avg', got '%s'", mode ? mode : "(nothing)");
    if (in.ndim != 3)
        return rx_fail(ctx, "expects a (C, H, W) input, got %d dimension%s", in.ndim, in.ndim == 1 ? "" : "s");
    const int64_t c = in.d[0], h = in.d[1], w = in.d[2];
    if (c < 1 || h < 1 || w < 1)
        return rx_fail(ctx, "input (%" PRId64 ", %" PRId64 ", %" PRId64 ") has an empty dimension", c, h, w);
    /* The argmax indices are int32 offsets into one sample. */
    if ((double)c * h * w > INT32_MAX)
        return rx_fail(ctx, "input (%" PRId64 ", %" PRId64 ", %" PRId64 ") has more than 2^31 - 1 elements",
                       c, h, w);
    global_pool *s = malloc(sizeof *s);
    if (!s) return rx_fail(ctx, "out of memory");
    *s = (global_pool){ .mode = m, .c = (int)c, .hw = (int)(h * w) };
    info->out = (rx_shape){ .ndim = 3, .d = { c, 1, 1 } };
    info->ntensors = 0;
    info->state_bytes = m == GLOBAL_POOL_MAX ? sizeof(int32_t) * (size_t)c : 0;
    info->workspace_bytes = 0;
    info->per_sample = true;  /* planes within a sample; argmax indices into the sample */
    *self = s;
    return 0;
}

static void global_pool_destroy(void *self) { free(self); }

/* Index in [0, hw) of the plane's maximum: the first of equal maxima, or the last NaN. */
static int global_pool_plane_argmax(const float *restrict xp, int hw)
{
    int best = 0;
    for (int i = 1; i < hw; i++)
        if (xp[i] > xp[best] || isnan(xp[i])) best = i;
    return best;
}

/* The plane's sum in the warp's order (global_pool.h): 32 running partial sums, then halves
 * folded onto the first. */
static float global_pool_plane_sum(const float *restrict xp, int hw)
{
    float part[GLOBAL_POOL_LANES] = { 0 };
    int i = 0;
    for (; i + GLOBAL_POOL_LANES <= hw; i += GLOBAL_POOL_LANES)
        for (int l = 0; l < GLOBAL_POOL_LANES; l++) part[l] += xp[i + l];
    for (int l = 0; i + l < hw; l++) part[l] += xp[i + l];
    for (int half = GLOBAL_POOL_LANES / 2; half > 0; half /= 2)
        for (int l = 0; l < half; l++) part[l] += part[l + half];
    return part[0];
}

static int global_pool_forward_cpu(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w,
                                   rx_tensor *y, void *state)
{
    const global_pool *s = self;
    const int64_t planes = x->shape.d[0] * s->c;  /* every (sample, channel) pair */
    const int hw = s->hw;
    const int threads = threads_for(ctx, (size_t)planes * (size_t)hw, THREADS_MIN_WORK);
    (void)threads;  /* read only by the pragma, which a build without OpenMP ignores */
    float *out = y->data;  /* (N, C, 1, 1) */
    if (s->mode == GLOBAL_POOL_MAX) {
        int32_t *arg = state;  /* (N, C) */
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int64_t p = 0; p < planes; p++) {
            const float *xp = x->data + (size_t)p * (size_t)hw;  /* (H, W) */
            const int best = global_pool_plane_argmax(xp, hw);
            out[p] = xp[best];
            arg[p] = (int32_t)(p % s->c) * hw + best;
        }
    } else {
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int64_t p = 0; p < planes; p++)
            out[p] = global_pool_plane_sum(x->data + (size_t)p * (size_t)hw, hw) / (float)hw;
    }
    return 0;
}

static int global_pool_backward_cpu(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y,
                                    const rx_tensor *dy, const rx_tensor *w, const void *state,
                                    rx_tensor *dx, rx_tensor *dw)
{
    if (!dx) return 0;
    const global_pool *s = self;
    const int64_t planes = x->shape.d[0] * s->c;
    const int hw = s->hw;
    const float *g = dy->data;  /* (N, C, 1, 1) */
    const int threads = threads_for(ctx, (size_t)planes * (size_t)hw, THREADS_MIN_WORK);
    (void)threads;  /* read only by the pragma, which a build without OpenMP ignores */
    if (s->mode == GLOBAL_POOL_MAX) {
        const int32_t *arg = state;  /* (N, C) */
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int64_t p = 0; p < planes; p++) {
            float *d = dx->data + (size_t)p * (size_t)hw;  /* (H, W) */
            memset(d, 0, sizeof(float) * (size_t)hw);
            d[arg[p] - (int32_t)(p % s->c) * hw] = g[p];
        }
    } else {
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int64_t p = 0; p < planes; p++) {
            float *restrict d = dx->data + (size_t)p * (size_t)hw;  /* (H, W) */
            const float v = g[p] / (float)hw;
            for (int i = 0; i < hw; i++) d[i] = v;
        }
    }
    return 0;
}

/* GlobalMaxPool or GlobalAveragePool: (N, C, H, W) -> (N, C, 1, 1), the shape create declares. */
static int global_pool_export_onnx(void *self, rx_ctx *ctx, rx_onnx *g)
{
    const global_pool *s = self;
    return onnx_unary(ctx, g, s->mode == GLOBAL_POOL_MAX ? "GlobalMaxPool" : "GlobalAveragePool");
}

static const rx_plugin desc = {
    .abi = RX_ABI_VERSION,
    .size = sizeof(rx_plugin),
    .kind = RX_LAYER,
    .name = "global_pool",
    .summary = "global max or mean pooling (C, H, W) -> (C, 1, 1), like torch.nn.AdaptiveMax/AvgPool2d(1)",
    .params = params,
    .layer = {
        .create = global_pool_create,
        .destroy = global_pool_destroy,
#ifdef RX_WITH_CUDA
        .forward = { [RX_CPU] = global_pool_forward_cpu, [RX_CUDA] = global_pool_forward_cuda },
        .backward = { [RX_CPU] = global_pool_backward_cpu, [RX_CUDA] = global_pool_backward_cuda },
#else
        .forward = { [RX_CPU] = global_pool_forward_cpu },
        .backward = { [RX_CPU] = global_pool_backward_cpu },
#endif
        .export_onnx = global_pool_export_onnx,
    },
};

RX_EXPORT(global_pool) { return &desc; }
