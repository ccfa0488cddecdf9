/* maxpool.c: 2-D max pooling over (C, H, W), like torch.nn.MaxPool2d without padding.
 * Forward records, per output, where the maximum came from (an int32 index into the sample) in
 * the per-sample state; backward routes each upstream gradient to that one input. Ties go to the
 * first maximum in row-major order; a NaN in a window wins (the last one when there are
 * several), as in PyTorch.
 * 2x2 windows at stride 2 (the usual case) take branch-free loops the compiler vectorizes, over
 * runs of 16, 8 or 4 windows of a row whose length is a compile-time constant, with CIFAR's
 * plane widths (31, 15, 7 and 32, 16, 8) constants too; backward writes every input of a plane
 * directly, with no zeroing pass. A 3x3 window over a whole 3x3 plane (the end of the CIFAR
 * networks) vectorizes across rows and planes. Other windows take a plain scalar loop.
 * Planes are split across ctx->threads when the batch is large enough to pay (samples, for the
 * backward of windows that may overlap); each plane is one thread's, so the result never
 * depends on the thread count.
 * CUDA path: maxpool.cu, with the same state and tie rule; maxpool.h holds the struct both files
 * share. */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "max_take.h"
#include "maxpool.h"
#include "threads.h"
#include "onnx_nodes.h"

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
    info->per_sample = true;  /* windows within a sample; argmax indices into the sample */
    *self = s;
    return 0;
}

static void maxpool_destroy(void *self) { free(self); }

/* ---- 2x2 windows at stride 2 ----
 * A row of OW windows is done in runs of `run` windows, `run` a constant (through inlining) so
 * that a run fills whole vectors; with the width unknown the vectorizer left CIFAR's odd rows of
 * 15, 7 and 3 windows mostly to scalar remainders. A row that is not a multiple of `run` ends in
 * one of two ways:
 * - spilling: the last run goes on past the row's end. Its extra windows read the next two input
 *   rows' first elements and write (forward) the next output row's first outputs, which that row
 *   writes again, correctly, when its turn comes. `run` < 2 * OW keeps the spill within the next
 *   row, so only a plane's last output row cannot spill;
 * - overlapping: the last run starts at OW - run and redoes a few windows of the one before it,
 *   writing the same values again. This needs OW >= run.
 * Rows but a plane's last spill, in runs of `run`; the last row overlaps, in runs of `last` <= OW.
 * `w` is the plane's width, a constant for CIFAR's sizes, where it saves the address arithmetic
 * of every row. */

/* Windows [0, n) of one output row: their taps are top[0, 2n) and bottom[0, 2n), compared in
 * row-major order; `first` is top[0]'s index in the sample. */
static inline __attribute__((always_inline)) void maxpool_run_2x2(const float *restrict top,
                                                                  const float *restrict bottom,
                                                                  int w, int32_t first,
                                                                  float *restrict y,
                                                                  int32_t *restrict arg, int n)
{
#pragma omp simd
    for (int j = 0; j < n; j++) {
        float best = top[2 * j];
        int32_t at = first + 2 * j;
        maxpool_take(&best, &at, top[2 * j + 1], first + 2 * j + 1);
        maxpool_take(&best, &at, bottom[2 * j], first + w + 2 * j);
        maxpool_take(&best, &at, bottom[2 * j + 1], first + w + 2 * j + 1);
        y[j] = best;
        arg[j] = at;
    }
}

/* Planes [p0, p1) of the batch. x (N * C, H, W); y and arg (N * C, OH, OW). */
static inline __attribute__((always_inline)) void maxpool_planes_2x2(const maxpool *s,
                                                                     const float *restrict x,
                                                                     float *restrict y,
                                                                     int32_t *restrict arg,
                                                                     int64_t p0, int64_t p1,
                                                                     int w, int run, int last)
{
    const int channels = s->c, oh = s->oh, ow = w / 2, in_plane = s->h * w, out_plane = oh * ow;
    int c = (int)(p0 % channels);  /* channel of plane p */
    for (int64_t p = p0; p < p1; p++, c = c + 1 == channels ? 0 : c + 1) {
        const float *xp = x + (size_t)p * in_plane;  /* (H, W) */
        float *yp = y + (size_t)p * out_plane;       /* (OH, OW) */
        int32_t *ap = arg + (size_t)p * out_plane;   /* (OH, OW) */
        const int32_t base = c * in_plane;  /* index of the plane's first input in the sample */
        for (int i = 0; i < oh - 1; i++) {
            const float *top = xp + 2 * i * w, *bottom = top + w;  /* (W) each */
            for (int j = 0; j < ow; j += run)
                maxpool_run_2x2(top + 2 * j, bottom + 2 * j, w, base + 2 * i * w + 2 * j,
                                yp + i * ow + j, ap + i * ow + j, run);
        }
        const int i = oh - 1;
        const float *top = xp + 2 * i * w, *bottom = top + w;
        for (int j = 0;; j += last) {
            if (j > ow - last) j = ow - last;
            maxpool_run_2x2(top + 2 * j, bottom + 2 * j, w, base + 2 * i * w + 2 * j,
                            yp + i * ow + j, ap + i * ow + j, last);
            if (j + last == ow) break;
        }
    }
}

/* Backward into one input row under windows [0, n): d[2j] and d[2j + 1] get window j's gradient
 * if it was the maximum, else 0; `first` is d[0]'s index in the sample. A row at a time, since a
 * spilling run of the top row writes into the bottom one, which is then written again. */
static inline __attribute__((always_inline)) void maxpool_run_2x2_backward(const float *restrict g,
                                                                           const int32_t *restrict arg,
                                                                           int32_t first,
                                                                           float *restrict d, int n)
{
#pragma omp simd
    for (int j = 0; j < n; j++) {
        const int32_t at = arg[j] - first - 2 * j;  /* 0 or 1 when the maximum is in this row */
        d[2 * j] = at == 0 ? g[j] : 0.0f;
        d[2 * j + 1] = at == 1 ? g[j] : 0.0f;
    }
}

/* Backward through planes [p0, p1), in the forward's runs. The windows do not overlap, so every
 * input is written directly: under a window with its gradient or 0, in the row and column no
 * window covers (odd H or W) with 0. g and arg (N * C, OH, OW); d (N * C, H, W). */
static inline __attribute__((always_inline)) void maxpool_planes_2x2_backward(const maxpool *s,
                                                                              const float *restrict g,
                                                                              const int32_t *restrict arg,
                                                                              float *restrict d,
                                                                              int64_t p0, int64_t p1,
                                                                              int w, int run, int last)
{
    const int channels = s->c, h = s->h, oh = s->oh, ow = w / 2, in_plane = h * w;
    const int out_plane = oh * ow;
    int c = (int)(p0 % channels);  /* channel of plane p */
    for (int64_t p = p0; p < p1; p++, c = c + 1 == channels ? 0 : c + 1) {
        const float *gp = g + (size_t)p * out_plane;       /* (OH, OW) */
        const int32_t *ap = arg + (size_t)p * out_plane;   /* (OH, OW) */
        float *dp = d + (size_t)p * in_plane;              /* (H, W) */
        const int32_t base = c * in_plane;  /* index of the plane's first input in the sample */
        for (int i = 0; i < oh - 1; i++) {
            float *top = dp + 2 * i * w, *bottom = top + w;  /* (W) each */
            for (int j = 0; j < ow; j += run)
                maxpool_run_2x2_backward(gp + i * ow + j, ap + i * ow + j,
                                         base + 2 * i * w + 2 * j, top + 2 * j, run);
            for (int j = 0; j < ow; j += run)
                maxpool_run_2x2_backward(gp + i * ow + j, ap + i * ow + j,
                                         base + 2 * i * w + w + 2 * j, bottom + 2 * j, run);
            if (w > 2 * ow) top[w - 1] = bottom[w - 1] = 0.0f;
        }
        const int i = oh - 1;
        float *top = dp + 2 * i * w, *bottom = top + w;
        for (int j = 0;; j += last) {
            if (j > ow - last) j = ow - last;
            maxpool_run_2x2_backward(gp + i * ow + j, ap + i * ow + j, base + 2 * i * w + 2 * j,
                                     top + 2 * j, last);
            maxpool_run_2x2_backward(gp + i * ow + j, ap + i * ow + j,
                                     base + 2 * i * w + w + 2 * j, bottom + 2 * j, last);
            if (j + last == ow) break;
        }
        if (w > 2 * ow) top[w - 1] = bottom[w - 1] = 0.0f;
        if (h > 2 * oh)
            for (int k = 0; k < w; k++) dp[(h - 1) * w + k] = 0.0f;
    }
}

/* The runs for a row of `ow` windows: `run` the smallest vector (4, 8 or 16 windows) that holds
 * the row, 16 at most, and `last` the largest one within it; rows of 1 to 3 windows are one run
 * of their own width, spilling from 3 to 4. */
static void maxpool_runs_2x2(int ow, int *run, int *last)
{
    *last = ow >= 16 ? 16 : ow >= 8 ? 8 : ow >= 4 ? 4 : ow;
    *run = ow >= 16 ? 16 : ow > 8 ? 16 : ow > 4 ? 8 : ow == 3 ? 4 : *last;
}

/* Calls FN(..., w, run, last) with constants for CIFAR's plane widths and for every (run, last)
 * pair maxpool_runs_2x2 gives, so that each call inlines a loop the vectorizer can fill. */
#define MAXPOOL_2X2_DISPATCH(s, FN, ...)                                                          \
    do {                                                                                          \
        int run_, last_;                                                                          \
        maxpool_runs_2x2((s)->ow, &run_, &last_);                                                 \
        switch ((s)->w) {                                                                         \
        case 31: FN(__VA_ARGS__, 31, 16, 8); break;                                               \
        case 15: FN(__VA_ARGS__, 15, 8, 4); break;                                                \
        case 7: FN(__VA_ARGS__, 7, 4, 3); break;                                                  \
        case 32: FN(__VA_ARGS__, 32, 16, 16); break;                                              \
        case 16: FN(__VA_ARGS__, 16, 8, 8); break;                                                \
        case 8: FN(__VA_ARGS__, 8, 4, 4); break;                                                  \
        default:                                                                                  \
            if (run_ == 16 && last_ == 16) FN(__VA_ARGS__, (s)->w, 16, 16);                       \
            else if (run_ == 16) FN(__VA_ARGS__, (s)->w, 16, 8);                                  \
            else if (run_ == 8 && last_ == 8) FN(__VA_ARGS__, (s)->w, 8, 8);                      \
            else if (run_ == 8) FN(__VA_ARGS__, (s)->w, 8, 4);                                    \
            else if (run_ == 4 && last_ == 4) FN(__VA_ARGS__, (s)->w, 4, 4);                      \
            else if (run_ == 4) FN(__VA_ARGS__, (s)->w, 4, 3);                                    \
            else if (run_ == 2) FN(__VA_ARGS__, (s)->w, 2, 2);                                    \
            else FN(__VA_ARGS__, (s)->w, 1, 1);                                                   \
        }                                                                                         \
    } while (0)

static void maxpool_forward_2x2(const maxpool *s, const float *x, float *y, int32_t *arg,
                                int64_t p0, int64_t p1)
{
    MAXPOOL_2X2_DISPATCH(s, maxpool_planes_2x2, s, x, y, arg, p0, p1);
}

static void maxpool_backward_2x2(const maxpool *s, const float *g, const int32_t *arg, float *d,
                                 int64_t p0, int64_t p1)
{
    MAXPOOL_2X2_DISPATCH(s, maxpool_planes_2x2_backward, s, g, arg, d, p0, p1);
}

/* ---- Other windows ---- */

/* Square planes that one window covers whole (the 3x3 pool over 3x3 planes that ends the CIFAR
 * networks), in two passes that vectorize across rows and then across planes: every row's
 * maximum, then every plane's maximum of its rows' winners. Folding the winners of the parts in
 * order picks the same tap as folding the whole (the first maximum, or the last NaN). `size` is
 * a constant (through inlining), so that loads at its stride become shuffles. x (C, size,
 * size); y and arg (C). */
static inline __attribute__((always_inline)) void maxpool_whole_planes(const float *restrict x,
                                                                       float *restrict y,
                                                                       int32_t *restrict arg,
                                                                       int channels, int size)
{
    enum { ROWS = 1024 };  /* rows in a block of planes: their winners stay in L1 */
    float row_best[ROWS];
    int32_t row_at[ROWS];  /* column of each row's winner */
    const int block = ROWS / size;
    for (int c0 = 0; c0 < channels; c0 += block) {
        const int planes = channels - c0 < block ? channels - c0 : block;
        const float *xb = x + (size_t)c0 * size * size;  /* (planes, size, size) */
#pragma omp simd
        for (int r = 0; r < planes * size; r++) {
            float best = xb[r * size];
            int32_t at = 0;
            for (int k = 1; k < size; k++) maxpool_take(&best, &at, xb[r * size + k], k);
            row_best[r] = best;
            row_at[r] = at;
        }
#pragma omp simd
        for (int p = 0; p < planes; p++) {
            float best = row_best[p * size];
            int32_t at = row_at[p * size];
            for (int k = 1; k < size; k++)
                maxpool_take(&best, &at, row_best[p * size + k], k * size + row_at[p * size + k]);
            y[c0 + p] = best;
            arg[c0 + p] = (c0 + p) * size * size + at;
        }
    }
}

/* One (H, W) plane through any window and stride. */
static void maxpool_plane(const maxpool *s, const float *restrict xp, float *restrict yp,
                          int32_t *restrict arg, int32_t base)
{
    for (int i = 0; i < s->oh; i++)
        for (int j = 0; j < s->ow; j++) {
            const int corner = i * s->stride * s->w + j * s->stride;
            float best = xp[corner];
            int32_t at = corner;
            for (int ki = 0; ki < s->size; ki++)
                for (int kj = 0; kj < s->size; kj++) {
                    const int tap = corner + ki * s->w + kj;
                    maxpool_take(&best, &at, xp[tap], tap);
                }
            yp[i * s->ow + j] = best;
            arg[i * s->ow + j] = base + at;
        }
}

static int maxpool_forward_cpu(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w,
                               rx_tensor *y, void *state)
{
    const maxpool *s = self;
    const int64_t n = x->shape.d[0], planes = n * s->c;  /* every (sample, channel) pair */
    const size_t in_plane = (size_t)s->h * s->w, out_plane = (size_t)s->oh * s->ow;
    /* Planes are independent and each is written by one thread: the result never depends on
     * the thread count. */
    const int threads = threads_for(ctx, (size_t)planes * in_plane, THREADS_MIN_WORK);
    (void)threads;  /* read only by the pragmas, which a build without OpenMP ignores */
    if (s->size == 2 && s->stride == 2) {
        /* One range of planes per thread, so that the width is dispatched once per range. */
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int t = 0; t < threads; t++)
            maxpool_forward_2x2(s, x->data, y->data, state, planes * t / threads,
                                planes * (t + 1) / threads);
        return 0;
    }
    if (s->size == 3 && s->h == 3 && s->w == 3) {
        /* One window over each whole plane: a sample's planes at a time. */
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int64_t i = 0; i < n; i++)
            maxpool_whole_planes(x->data + (size_t)i * s->c * in_plane, y->data + (size_t)i * s->c,
                                 (int32_t *)state + (size_t)i * s->c, s->c, 3);
        return 0;
    }
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t p = 0; p < planes; p++) {
        const float *xp = x->data + (size_t)p * in_plane;         /* (H, W) */
        float *yp = y->data + (size_t)p * out_plane;              /* (OH, OW) */
        int32_t *arg = (int32_t *)state + (size_t)p * out_plane;  /* (OH, OW) */
        const int32_t base = (int32_t)((size_t)(p % s->c) * in_plane); /* channel start in the sample */
        maxpool_plane(s, xp, yp, arg, base);
    }
    return 0;
}

static int maxpool_backward_cpu(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y,
                                const rx_tensor *dy, const rx_tensor *w, const void *state,
                                rx_tensor *dx, rx_tensor *dw)
{
    if (!dx) return 0;
    const maxpool *s = self;
    const int64_t n = x->shape.d[0], planes = n * s->c;
    const size_t in_plane = (size_t)s->h * s->w, out_plane = (size_t)s->oh * s->ow;
    const size_t in_size = (size_t)s->c * in_plane, out_size = (size_t)s->c * out_plane;
    const int threads = threads_for(ctx, (size_t)n * in_size, THREADS_MIN_WORK);
    (void)threads;  /* read only by the pragmas, which a build without OpenMP ignores */
    if (s->size == 2 && s->stride == 2) {
        /* Disjoint windows: planes are independent, as in the forward. */
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int t = 0; t < threads; t++)
            maxpool_backward_2x2(s, dy->data, state, dx->data, planes * t / threads,
                                 planes * (t + 1) / threads);
        return 0;
    }
    /* Per sample, so that overlapping windows (which add into the same input) stay in one
     * thread, in the same order as without threads. */
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const int32_t *restrict arg = (const int32_t *)state + (size_t)i * out_size; /* (C, OH, OW) */
        const float *restrict g = dy->data + (size_t)i * out_size;                   /* (C, OH, OW) */
        float *restrict d = dx->data + (size_t)i * in_size;                          /* (C, H, W) */
        memset(d, 0, sizeof(float) * in_size);
        for (size_t o = 0; o < out_size; o++) d[arg[o]] += g[o];
    }
    return 0;
}

/* MaxPool without padding, rounding the output size down (ceil_mode 0), as create does. */
static int maxpool_export_onnx(void *self, rx_ctx *ctx, rx_onnx *g)
{
    const maxpool *s = self;
    const rx_onnx_attr attrs[] = {
        { .name = "kernel_shape", .type = RX_ATTR_INTS, .nints = 2, .ints = { s->size, s->size } },
        { .name = "strides", .type = RX_ATTR_INTS, .nints = 2, .ints = { s->stride, s->stride } },
    };
    return onnx_op(ctx, g, "MaxPool", &g->input, 1, g->output, attrs, 2);
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
        .export_onnx = maxpool_export_onnx,
        .traits = RX_TRAIT_MAX_POOL,
    },
};

RX_EXPORT(maxpool) { return &desc; }
