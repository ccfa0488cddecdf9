/* maxpool.c: 2-D max pooling over (C, H, W), like torch.nn.MaxPool2d without padding.
 * Forward records, per output, where the maximum came from (an int32 index into the sample) in
 * the per-sample state; backward routes each upstream gradient to that one input. Ties go to the
 * first maximum in row-major order; a NaN in a window wins, as in PyTorch. 2x2 windows at stride
 * 2 (the usual case) take a branch-free loop the compiler vectorizes; planes (forward) and
 * samples (backward) are split across ctx->threads when the batch is large enough to pay.
 * CUDA path: maxpool.cu, with the same state and tie rule; maxpool.h holds the struct both files
 * share. */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "maxpool.h"

static const rx_param params[] = {
    { .key = "size", .type = RX_INT, .def = { .i = 2 }, .help = "window height and width" },
    { .key = "stride", .type = RX_INT, .def = { .i = 0 }, .help = "step between windows (0: size)" },
    { 0 },
};
enum { ARG_SIZE, ARG_STRIDE };

static int maxpool_create(void **self, rx_ctx *ctx, const rx_value *args, rx_shape in,
                          rx_layer_info *info)
{
    const int64_t size = args[ARG_SIZE].i;
    const int64_t stride = args[ARG_STRIDE].i == 0 ? size : args[ARG_STRIDE].i;
    if (in.ndim != 3)
        return rx_fail(ctx, "expects a (C, H, W) input, got %d dimension%s", in.ndim,
                       in.ndim == 1 ? "" : "s");
    if (size < 1) return rx_fail(ctx, "size must be at least 1, got %" PRId64, size);
    if (stride < 1 || stride > INT32_MAX)
        return rx_fail(ctx, "stride must be at least 1 (or 0 for size), got %" PRId64, stride);
    const int64_t c = in.d[0], h = in.d[1], w = in.d[2];
    if (c < 1 || h < 1 || w < 1)
        return rx_fail(ctx, "input (%" PRId64 ", %" PRId64 ", %" PRId64 ") has an empty "
                       "dimension", c, h, w);
    if (size > h || size > w)
        return rx_fail(ctx, "size %" PRId64 " is larger than the input %" PRId64 "x%" PRId64,
                       size, h, w);
    /* The argmax indices are int32 offsets into one sample. */
    if ((double)c * h * w > INT32_MAX)
        return rx_fail(ctx, "input (%" PRId64 ", %" PRId64 ", %" PRId64 ") has more than "
                       "2^31 - 1 elements", c, h, w);
    const int64_t oh = (h - size) / stride + 1, ow = (w - size) / stride + 1;

    maxpool *s = malloc(sizeof *s);
    if (!s) return rx_fail(ctx, "out of memory");
    *s = (maxpool){ .c = (int)c, .h = (int)h, .w = (int)w, .oh = (int)oh, .ow = (int)ow,
                    .size = (int)size, .stride = (int)stride };
    info->out = (rx_shape){ .ndim = 3, .d = { c, oh, ow } };
    info->ntensors = 0;
    info->state_bytes = sizeof(int32_t) * (size_t)(c * oh * ow);
    info->workspace_bytes = 0;
    *self = s;
    return 0;
}

static void maxpool_destroy(void *self) { free(self); }

/* Whether a region of `work` elements is worth splitting across threads: a parallel region costs
 * a few microseconds, a pass over 32K floats about as much. */
static int maxpool_threads(const rx_ctx *ctx, size_t work)
{
    return work >= 32768 && ctx->threads > 1 ? ctx->threads : 1;
}

/* One (H, W) plane through 2x2 windows at stride 2, the tutorial's pooling: the four taps are
 * compared in row-major order with selects instead of branches, so the loop vectorizes. A later
 * tap wins when it is larger or NaN, as in the general loop below. `ow` is a parameter so that
 * maxpool_plane_2x2_any can pass small widths as constants. */
static inline __attribute__((always_inline)) void maxpool_plane_2x2(const maxpool *s,
                                                                    const float *restrict xp,
                                                                    float *restrict yp,
                                                                    int32_t *restrict arg,
                                                                    int32_t base, int ow)
{
    const int w = s->w;
    for (int i = 0; i < s->oh; i++) {
        const float *restrict top = xp + (size_t)2 * i * w, *restrict bottom = top + w;  /* (W) */
        const int32_t row = base + 2 * i * w;  /* index of the window row's first tap */
#pragma omp simd
        for (int j = 0; j < ow; j++) {
            float best = top[2 * j];
            int32_t at = row + 2 * j;
            const float b = top[2 * j + 1], c = bottom[2 * j], d = bottom[2 * j + 1];
            bool take = b > best || isnan(b);
            best = take ? b : best;
            at = take ? row + 2 * j + 1 : at;
            take = c > best || isnan(c);
            best = take ? c : best;
            at = take ? row + w + 2 * j : at;
            take = d > best || isnan(d);
            best = take ? d : best;
            at = take ? row + w + 2 * j + 1 : at;
            yp[i * ow + j] = best;
            arg[i * ow + j] = at;
        }
    }
}

/* With an output row of 4 or 8 the vectorizer needs the width as a constant to fill a vector,
 * and `omp simd` on the row loops to keep it from unrolling such short loops into scalar code
 * (together 2-3x faster on the tutorial's 8x8 and 4x4 outputs); wider rows vectorize either way. */
static void maxpool_plane_2x2_any(const maxpool *s, const float *xp, float *yp, int32_t *arg, int32_t base)
{
    switch (s->ow) {
    case 4: maxpool_plane_2x2(s, xp, yp, arg, base, 4); break;
    case 8: maxpool_plane_2x2(s, xp, yp, arg, base, 8); break;
    default: maxpool_plane_2x2(s, xp, yp, arg, base, s->ow);
    }
}

/* One (H, W) plane through any window and stride. */
static void maxpool_plane(const maxpool *s, const float *restrict xp, float *restrict yp,
                          int32_t *restrict arg, int32_t base)
{
    for (int i = 0; i < s->oh; i++)
        for (int j = 0; j < s->ow; j++) {
            int best = i * s->stride * s->w + j * s->stride;
            for (int ki = 0; ki < s->size; ki++) {
                const int row = (i * s->stride + ki) * s->w + j * s->stride;
                for (int kj = 0; kj < s->size; kj++)
                    if (xp[row + kj] > xp[best] || isnan(xp[row + kj])) best = row + kj;
            }
            yp[i * s->ow + j] = xp[best];
            arg[i * s->ow + j] = base + best;
        }
}

static int maxpool_forward_cpu(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w,
                               rx_tensor *y, void *state)
{
    const maxpool *s = self;
    const int64_t planes = x->shape.d[0] * s->c;  /* every (sample, channel) pair */
    const size_t in_plane = (size_t)s->h * s->w, out_plane = (size_t)s->oh * s->ow;
    const bool two_by_two = s->size == 2 && s->stride == 2;
    /* Planes are independent and each is written by one thread: the result never depends on
     * the thread count. */
    const int threads = maxpool_threads(ctx, (size_t)planes * in_plane);
    (void)threads;  /* read only by the pragma, which a build without OpenMP ignores */
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t p = 0; p < planes; p++) {
        const float *xp = x->data + (size_t)p * in_plane;         /* (H, W) */
        float *yp = y->data + (size_t)p * out_plane;              /* (OH, OW) */
        int32_t *arg = (int32_t *)state + (size_t)p * out_plane;  /* (OH, OW) */
        const int32_t base = (int32_t)((size_t)(p % s->c) * in_plane); /* channel start in the sample */
        if (two_by_two) maxpool_plane_2x2_any(s, xp, yp, arg, base);
        else maxpool_plane(s, xp, yp, arg, base);
    }
    return 0;
}

/* Backward through one plane of 2x2 windows at stride 2: the windows do not overlap, so every
 * input under a window is written once, with its gradient if it was the window's maximum and 0
 * if not, with no zeroing pass and no scattered adds. The row and column no window covers (odd
 * H or W) are zeroed. */
static inline __attribute__((always_inline)) void maxpool_plane_2x2_backward(const maxpool *s,
                                                                             const float *restrict g,
                                                                             const int32_t *restrict arg,
                                                                             int32_t base,
                                                                             float *restrict d, int ow)
{
    const int w = s->w;
    for (int i = 0; i < s->oh; i++) {
        float *restrict top = d + (size_t)2 * i * w, *restrict bottom = top + w;  /* (W) */
        const int32_t row = base + 2 * i * w;  /* index of the window row's first tap */
#pragma omp simd
        for (int j = 0; j < ow; j++) {
            const int32_t at = arg[i * ow + j] - row - 2 * j;  /* 0, 1, w or w + 1 */
            const float v = g[i * ow + j];
            top[2 * j] = at == 0 ? v : 0.0f;
            top[2 * j + 1] = at == 1 ? v : 0.0f;
            bottom[2 * j] = at == w ? v : 0.0f;
            bottom[2 * j + 1] = at == w + 1 ? v : 0.0f;
        }
        if (w > 2 * ow) top[w - 1] = bottom[w - 1] = 0.0f;
    }
    if (s->h > 2 * s->oh) memset(d + (size_t)(s->h - 1) * w, 0, sizeof(float) * (size_t)w);
}

static void maxpool_plane_2x2_backward_any(const maxpool *s, const float *g, const int32_t *arg, int32_t base,
                                           float *d)
{
    switch (s->ow) {
    case 4: maxpool_plane_2x2_backward(s, g, arg, base, d, 4); break;
    case 8: maxpool_plane_2x2_backward(s, g, arg, base, d, 8); break;
    default: maxpool_plane_2x2_backward(s, g, arg, base, d, s->ow);
    }
}

static int maxpool_backward_cpu(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y,
                                const rx_tensor *dy, const rx_tensor *w, const void *state,
                                rx_tensor *dx, rx_tensor *dw)
{
    if (!dx) return 0;
    const maxpool *s = self;
    const int64_t n = x->shape.d[0];
    const size_t in_plane = (size_t)s->h * s->w, out_plane = (size_t)s->oh * s->ow;
    const size_t in_size = (size_t)s->c * in_plane, out_size = (size_t)s->c * out_plane;
    const bool two_by_two = s->size == 2 && s->stride == 2;
    /* Per sample, so that overlapping windows (which add into the same input) stay in one
     * thread, in the same order as without threads. */
    const int threads = maxpool_threads(ctx, (size_t)n * in_size);
    (void)threads;  /* read only by the pragma, which a build without OpenMP ignores */
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const int32_t *restrict arg = (const int32_t *)state + (size_t)i * out_size; /* (C, OH, OW) */
        const float *restrict g = dy->data + (size_t)i * out_size;                   /* (C, OH, OW) */
        float *restrict d = dx->data + (size_t)i * in_size;                          /* (C, H, W) */
        if (two_by_two) {
            for (int c = 0; c < s->c; c++)
                maxpool_plane_2x2_backward_any(s, g + c * out_plane, arg + c * out_plane,
                                               (int32_t)(c * in_plane), d + c * in_plane);
            continue;
        }
        memset(d, 0, sizeof(float) * in_size);
        for (size_t o = 0; o < out_size; o++) d[arg[o]] += g[o];
    }
    return 0;
}

static const rx_plugin desc = {
    .abi = RX_ABI_VERSION,
    .size = sizeof(rx_plugin),
    .kind = RX_LAYER,
    .name = "maxpool",
    .summary = "2-D max pooling over (C, H, W), like torch.nn.MaxPool2d",
    .params = params,
    .layer = {
        .create = maxpool_create,
        .destroy = maxpool_destroy,
#ifdef RX_WITH_CUDA
        .forward = { [RX_CPU] = maxpool_forward_cpu, [RX_CUDA] = maxpool_forward_cuda },
        .backward = { [RX_CPU] = maxpool_backward_cpu, [RX_CUDA] = maxpool_backward_cuda },
#else
        .forward = { [RX_CPU] = maxpool_forward_cpu },
        .backward = { [RX_CPU] = maxpool_backward_cpu },
#endif
    },
};

RX_EXPORT(maxpool) { return &desc; }
