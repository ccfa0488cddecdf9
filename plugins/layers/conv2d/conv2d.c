/* conv2d.c: 2-D convolution, PyTorch's nn.Conv2d with a square kernel (no dilation, no groups):
 * the descriptor, create, the im2col path, the workspace plan and the CPU operations that
 * dispatch to either algorithm.
 *
 * CPU path: the batch is split into one contiguous chunk of samples per thread (OpenMP, at most
 * ctx->threads); each thread works through its chunk in its own slot of the workspace, calling
 * a single-threaded OpenBLAS SGEMM (the host keeps OpenBLAS's own pool at one thread, so the two
 * never compete for cores): im2col one sample at a time, Winograd a small group of samples at a
 * time, which keeps the scratch in the core's cache, and writes y and dx straight into their
 * NCHW planes. Two algorithms, chosen at create:
 *
 * im2col (here), any kernel, stride and padding. Per sample, with col = im2col(x) (C*K*K, OH*OW):
 *     forward   y   = W (OC, C*K*K) x col + b
 *     backward  dW += dY (OC, OH*OW) x col^T,  db += row sums of dY,
 *               dcol = W^T x dY, folded back into dx with col2im.
 *   A 1x1 kernel with stride 1 and no padding needs no im2col: col is x itself. With few taps
 *   (C*K*K up to 64: a first layer's 3 channels) and stride 1, forward is a direct convolution
 *   instead (conv2d_direct_sample): 1.45x faster on the tutorial's 3 -> 16 layer.
 *
 * Winograd F(4x4, 3x3) (winograd.c), for 3x3 kernels at stride 1 with padding 0 to 2: 4x fewer
 *   multiply-adds, with results that differ from im2col's by rounding only. Taken where it
 *   measured faster: both channel counts at least 8 (see conv2d_choose). With precision = "bf16"
 *   its three products take bfloat16 operands (bf16.c; about 2% root-mean-square error per
 *   layer, see conv2d_precision for where it is refused).
 *
 * pool = 2 (pool.c) returns the convolution's output max-pooled 2x2 at stride 2, the bits of a
 *   maxpool layer after it: Winograd pools as it writes its outputs and spreads the pooled dY back
 *   as it gathers it; im2col pools a sample's output from its slot (sc->full). The winners' places
 *   are the layer's state, a byte each.
 *
 * Determinism: y and dx come from the same groups of samples (they start at fixed indices) and
 * the same sums whatever the thread count; the weight gradients are summed per chunk in the
 * chunk's slot and the chunks then added in chunk order, so the same thread count gives the same
 * bits, run after run.
 *
 * Workspace: one slot per chunk (see conv2d_plan, conv2d_scratch), which create declares per
 * thread (workspace_thread_bytes), and in a CUDA build what the CUDA path needs per sample
 * (conv2d.h), so that the same layer runs on either device. Winograd transforms the call's
 * kernels into the first chunk's dU, which forward never uses; backward transforms the flipped
 * kernels for dx before the chunks fill dU (in bf16 packed, through dU's space; in float32 into
 * their own part of the first slot). So forward and backward write no more than the workspace,
 * and never the layer's struct: the host may run them on parts of a batch at once (per_sample).
 *
 * CUDA path: conv2d.cu, im2col over the whole batch and strided-batched cuBLAS SGEMMs, whatever
 * algorithm the CPU chose (the two agree to rounding). The layer's struct, the plan and the
 * scratch are in conv2d.h, which the three files share. */
#include <cblas.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "bf16.h"
#include "conv2d.h"
#include "create.h"
#include "onnx_nodes.h"

/* GCC turns copy_block's and add_block's short row loops into memmove calls (winograd.c says the
 * same of its row copies), which for rows of 8 to 32 floats cost more than the moves. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-tree-loop-distribute-patterns")
#endif

static const rx_param params[] = {
    { .key = "out", .type = RX_INT, .required = true, .help = "output channels" },
    { .key = "kernel", .type = RX_INT, .required = true, .help = "kernel height and width" },
    { .key = "stride", .type = RX_INT, .def = { .i = 1 }, .help = "step between kernel positions" },
    { .key = "padding", .type = RX_INT, .def = { .i = 0 }, .help = "zeros added on every side" },
    { .key = "bias", .type = RX_BOOL, .def = { .b = true }, .help = "learn one bias per output channel" },
    { .key = "precision", .type = RX_STR, .def = { .s = "fp32" },
      .help = "\"fp32\", or \"bf16\": the Winograd products' operands rounded to bfloat16, their sums in float32 "
              "(about twice as fast on a CPU with AVX-512 BF16; 3x3 kernels at stride 1 with at least 8 channels in "
              "and out; the CPU only)" },
    { .key = "pool", .type = RX_INT, .def = { .i = 0 },
      .help = "0, or 2: max-pool the output 2x2 at stride 2 within the layer (the bits of a maxpool layer of size 2 "
              "after it, without the full-size output passing through memory; the CPU only)" },
    { 0 },
};
enum { ARG_OUT, ARG_KERNEL, ARG_STRIDE, ARG_PADDING, ARG_BIAS, ARG_PRECISION, ARG_POOL };

static conv2d_plan conv2d_plan_for(const conv2d *s, const rx_ctx *ctx, int64_t n)
{
    conv2d_plan p = { .group = 1 };
    if (s->algo == CONV2D_WINOGRAD && n > 1) p.group = (int)(s->group < n ? s->group : n);
    p.groups = n < 1 ? 1 : (n + p.group - 1) / p.group;
    const int threads = ctx->threads > 0 ? ctx->threads : 1;
    p.chunks = p.groups < threads ? (int)p.groups : threads;
    if (s->algo == CONV2D_IM2COL) p.slot = s->slot;
    else wino_plan_slot(s, &p);
    return p;
}

/* The slot layout: conv2d_scratch_at carves it, conv2d_plan_for sizes it (create for im2col,
 * wino_plan_slot beside wino_scratch_at for Winograd). */
static conv2d_scratch conv2d_scratch_at(const conv2d *s, const conv2d_plan *plan, float *slot)
{
    conv2d_scratch sc = { 0 };
    float *p = slot;
    if (s->algo == CONV2D_IM2COL) {
        sc.col = p;
        p += (size_t)s->rows * s->pixels;
        sc.xpad = p;
        p += s->padded;
        sc.dxpad = p;
        p += s->padded;
        sc.dw = p;
        p += (size_t)s->oc * s->rows;
        sc.full = p;
        p += s->pool ? (size_t)s->oc * s->pixels : 0;
    } else {
        p = wino_scratch_at(s, plan, p, &sc);
    }
    sc.db = p;
    p += (size_t)s->oc;
    return sc;
}

/* Winograd where it measured faster: a 3x3 kernel at stride 1 with padding 0 to 2 (what the
 * transforms cover), and at least 8 channels in and out (with fewer, its products are too thin
 * for SGEMM to run well: the tutorial's first layer, 3 -> 16, is faster with im2col). */
static conv2d_algo conv2d_choose(const conv2d *s)
{
    const bool fits = s->k == 3 && s->stride == 1 && s->pad <= 2;
    return fits && s->c >= 8 && s->oc >= 8 ? CONV2D_WINOGRAD : CONV2D_IM2COL;
}

/* The im2col layers whose forward runs direct (conv2d_direct_sample): stride 1, rows of at least
 * DIRECT_COLS outputs, and at most DIRECT_MAX_ROWS taps (C*K*K), where SGEMM's product is thin;
 * not 1x1 kernels, whose SGEMM reads x itself, with no copy to save. */
enum { DIRECT_COLS = 16, DIRECT_OC = 16, DIRECT_MAX_ROWS = 64 };

static bool conv2d_direct_fits(const conv2d *s)
{
    return s->algo == CONV2D_IM2COL && !s->pointwise && s->stride == 1 && s->ow >= DIRECT_COLS &&
           s->rows <= DIRECT_MAX_ROWS;
}

/* precision = "bf16" where it can run: the Winograd path (the products it rounds are that path's),
 * on a CPU with AVX-512 BF16; refused elsewhere, never quietly computed in float32. */
static int conv2d_precision(conv2d *s, rx_ctx *ctx, const char *precision)
{
    if (strcmp(precision, "fp32") == 0) return 0;
    if (strcmp(precision, "bf16") != 0)
        return rx_fail(ctx, "precision must be \"fp32\" or \"bf16\", got \"%s\"", precision);
    if (s->algo != CONV2D_WINOGRAD)
        return rx_fail(ctx, "precision = \"bf16\" is for 3x3 kernels at stride 1, padding 0 to 2, with at least 8 "
                       "channels in and out (the Winograd path); this layer (kernel %d, stride %d, padding %d, %d -> "
                       "%d channels) computes in float32: leave precision out", s->k, s->stride, s->pad, s->c, s->oc);
    if (!bf16_supported())
        return rx_fail(ctx, "precision = \"bf16\" needs a CPU with AVX-512 BF16 (vdpbf16ps), which this one lacks: "
                       "leave precision out");
    s->bf16 = true;
    return 0;
}

/* pool = 2: the layer's output becomes the convolution's, max-pooled 2x2 at stride 2. */
static int conv2d_pool(conv2d *s, rx_ctx *ctx, int64_t pool)
{
    s->yh = s->oh;
    s->yw = s->ow;
    if (pool == 0) return 0;
    if (pool != 2) return rx_fail(ctx, "pool must be 0 (none) or 2 (a 2x2 max-pool at stride 2), got %" PRId64, pool);
    if (s->oh < 2 || s->ow < 2)
        return rx_fail(ctx, "pool = 2 needs an output of at least 2x2 to pool, got %dx%d", s->oh, s->ow);
    s->pool = 2;
    s->yh = s->oh / 2;
    s->yw = s->ow / 2;
    return 0;
}

static int conv2d_create(void **self, rx_ctx *ctx, const rx_value *args, rx_shape in,
                         rx_layer_info *info)
{
    const int64_t oc = args[ARG_OUT].i, k = args[ARG_KERNEL].i;
    const int64_t stride = args[ARG_STRIDE].i, pad = args[ARG_PADDING].i;
    if (in.ndim != 3)
        return rx_fail(ctx, "expects a (C, H, W) input, got %d dimension%s", in.ndim,
                       in.ndim == 1 ? "" : "s");
    if (oc < 1 || oc > INT_MAX) return rx_fail(ctx, "out must be at least 1, got %" PRId64, oc);
    if (k < 1 || k > INT_MAX) return rx_fail(ctx, "kernel must be at least 1, got %" PRId64, k);
    if (stride < 1 || stride > INT_MAX)
        return rx_fail(ctx, "stride must be at least 1, got %" PRId64, stride);
    if (pad < 0 || pad > INT_MAX)
        return rx_fail(ctx, "padding must be 0 or more, got %" PRId64, pad);
    const int64_t c = in.d[0], h = in.d[1], w = in.d[2];
    if (c < 1 || h < 1 || w < 1 || c > INT_MAX || h > INT_MAX || w > INT_MAX)
        return rx_fail(ctx, "input (%" PRId64 ", %" PRId64 ", %" PRId64 ") has an empty or "
                       "oversized dimension", c, h, w);
    const int64_t ph = h + 2 * pad, pw = w + 2 * pad;
    if (k > ph || k > pw)
        return rx_fail(ctx, "kernel %" PRId64 " is larger than the padded input %" PRId64
                       "x%" PRId64, k, ph, pw);
    const int64_t oh = (ph - k) / stride + 1, ow = (pw - k) / stride + 1;
    /* OpenBLAS takes int dimensions; double keeps these products from overflowing. */
    if (ph > INT_MAX - 4 || pw > INT_MAX - 4 || (double)c * k * k > INT_MAX || (double)oh * ow > INT_MAX ||
        (double)c * h * w > INT_MAX || (double)oc * oh * ow > INT_MAX || (double)oc * c * k * k > INT_MAX)
        return rx_fail(ctx, "input (%" PRId64 ", %" PRId64 ", %" PRId64 ") with kernel %"
                       PRId64 " is too large for 32-bit BLAS sizes", c, h, w, k);

    conv2d *s = calloc(1, sizeof *s);
    if (!s) return rx_fail(ctx, "out of memory");
    const int64_t rows = c * k * k;
    *s = (conv2d){ .c = (int)c, .h = (int)h, .w = (int)w, .oc = (int)oc, .oh = (int)oh,
                   .ow = (int)ow, .k = (int)k, .stride = (int)stride, .pad = (int)pad,
                   .bias = args[ARG_BIAS].b, .rows = (int)rows, .pixels = (int)(oh * ow),
                   .pointwise = k == 1 && stride == 1 && pad == 0 };
    s->algo = conv2d_choose(s);
    s->direct = conv2d_direct_fits(s);
    if (conv2d_precision(s, ctx, args[ARG_PRECISION].s) != 0 || conv2d_pool(s, ctx, args[ARG_POOL].i) != 0) {
        free(s);
        return -1;
    }
    s->ypixels = s->yh * s->yw;
    if (s->algo == CONV2D_IM2COL) {
        s->padded = (size_t)c * (size_t)ph * (size_t)pw;
        s->slot = (size_t)rows * (size_t)(oh * ow) + 2 * s->padded + (size_t)oc * (size_t)rows + (size_t)oc +
                  (s->pool ? (size_t)oc * (size_t)(oh * ow) : 0);
    } else {
        wino_init(s);
    }
    const float scale = 1.0f / sqrtf((float)rows);
    info->out = (rx_shape){ .ndim = 3, .d = { oc, s->yh, s->yw } };
    info->ntensors = s->bias ? 2 : 1;
    info->tensors[0] = (rx_tensor_decl){ .name = "weight", .shape = { .ndim = 4, .d = { oc, c, k, k } },
                                         .init = RX_INIT_UNIFORM, .scale = scale };
    if (s->bias)
        info->tensors[1] = (rx_tensor_decl){ .name = "bias", .shape = { .ndim = 1, .d = { oc } },
                                             .init = RX_INIT_UNIFORM, .scale = scale };
    info->state_bytes = s->pool ? (size_t)oc * (size_t)s->ypixels : 0;  /* pool: the winners' places (pool.c) */
    /* The CPU path uses one slot per chunk, a chunk per thread; the CUDA path the per-sample
     * im2col and dW of every sample at once (conv2d.h). */
#ifdef RX_WITH_CUDA
    info->workspace_bytes = sizeof(float) * conv2d_cuda_floats_per_sample(s);
#endif
    info->workspace_thread_bytes = sizeof(float) * s->slot;
    info->per_sample = true;
    *self = s;
    return 0;
}

/* ---- Helpers of both algorithms (conv2d_add_bias_grad: conv2d.h) ---- */

/* dst (rows, len) = src (rows, len), each with its rows `ld` floats apart: a rectangle of a plane. */
static inline __attribute__((always_inline)) void copy_block(const float *restrict src, size_t src_ld,
                                                             float *restrict dst, size_t dst_ld,
                                                             int rows, int len)
{
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < len; j++) dst[(size_t)i * dst_ld + j] = src[(size_t)i * src_ld + j];
}

/* dst (rows, len) += src (rows, len), likewise. */
static inline __attribute__((always_inline)) void add_block(const float *restrict src, size_t src_ld,
                                                            float *restrict dst, size_t dst_ld,
                                                            int rows, int len)
{
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < len; j++) dst[(size_t)i * dst_ld + j] += src[(size_t)i * src_ld + j];
}

/* BLOCK (copy_block or add_block) with the usual CIFAR widths as constants: a row of 8, 16 or 32
 * floats becomes one or two vector moves instead of a loop with a remainder, which makes im2col
 * and col2im 2-3x faster on small planes than with a variable width. */
#define BLOCK_ANY_WIDTH(BLOCK, src, src_ld, dst, dst_ld, rows, len)  \
    switch (len) {                                                   \
    case 8: BLOCK(src, src_ld, dst, dst_ld, rows, 8); break;         \
    case 16: BLOCK(src, src_ld, dst, dst_ld, rows, 16); break;       \
    case 32: BLOCK(src, src_ld, dst, dst_ld, rows, 32); break;       \
    default: BLOCK(src, src_ld, dst, dst_ld, rows, len);             \
    }

static void copy_block_any(const float *src, size_t src_ld, float *dst, size_t dst_ld, int rows, int len)
{
    BLOCK_ANY_WIDTH(copy_block, src, src_ld, dst, dst_ld, rows, len);
}

static void add_block_any(const float *src, size_t src_ld, float *dst, size_t dst_ld, int rows, int len)
{
    BLOCK_ANY_WIDTH(add_block, src, src_ld, dst, dst_ld, rows, len);
}

/* Copies `planes` planes (h, w) into the interiors of a padded stack (planes, ph, pw), at
 * (pad, pad) in each; the border is left as it was (zero). */
static void conv2d_pad_planes(const float *x, int planes, int h, int w, float *padded, int ph, int pw, int pad)
{
    for (int c = 0; c < planes; c++)
        copy_block_any(x + (size_t)c * h * w, (size_t)w, padded + ((size_t)c * ph + pad) * pw + pad,
                       (size_t)pw, h, w);
}

/* Sum of v[0 .. n-1]; `omp simd` lets the compiler keep several partial sums in one vector,
 * which is fast and, for one build, always adds in the same order. */
static float row_sum(const float *restrict v, int n)
{
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int i = 0; i < n; i++) sum += v[i];
    return sum;
}

void conv2d_add_bias_grad(const conv2d *s, const float *dys, float *db)
{
    for (int o = 0; o < s->oc; o++) db[o] += row_sum(dys + (size_t)o * s->ypixels, s->ypixels);
}

/* Chunk t of a call: its scratch, carved from its slot, and its samples [first, end), a run of
 * whole groups. */
static conv2d_scratch conv2d_chunk(const conv2d *s, const conv2d_plan *plan, float *slots, int64_t n, int t,
                                   int64_t *first, int64_t *end)
{
    const int64_t g0 = plan->groups * t / plan->chunks, g1 = plan->groups * (t + 1) / plan->chunks;
    *first = g0 * plan->group < n ? g0 * plan->group : n;
    *end = g1 * plan->group < n ? g1 * plan->group : n;
    return conv2d_scratch_at(s, plan, slots + (size_t)t * plan->slot);
}

/* What both operations do first: plans the call for a batch of n into *plan, checks the
 * workspace (create declared s->slot floats per thread) and returns it as the plan's slots, one
 * per chunk; NULL after rx_fail. */
static float *conv2d_slots(const conv2d *s, rx_ctx *ctx, int64_t n, conv2d_plan *plan)
{
    *plan = conv2d_plan_for(s, ctx, n);
    const size_t declared = sizeof(float) * s->slot * (size_t)(ctx->threads > 0 ? ctx->threads : 1);
    const size_t need = sizeof(float) * plan->slot * (size_t)plan->chunks;
    if (need > declared) {  /* create's bound in conv2d_create is wrong: a bug, not bad input */
        rx_fail(ctx, "a batch of %" PRId64 " needs %zu bytes of workspace, more than the %zu declared", n, need,
                declared);
        return NULL;
    }
    if (!ctx->workspace || ctx->workspace_bytes < need) {
        rx_fail(ctx, "needs %zu bytes of workspace for a batch of %" PRId64 ", got %zu", need, n,
                ctx->workspace ? ctx->workspace_bytes : 0);
        return NULL;
    }
    return ctx->workspace;
}

/* ---- im2col ---- */

/* Unfolds one sample x (C, H, W) into col (C*K*K, OH*OW): row (c, ki, kj) holds, for each output
 * pixel, the input pixel under that kernel tap (0 in the padding). x is first copied into the
 * interior of pad (C, H+2P, W+2P), whose border the caller has zeroed, so that every tap reads a
 * plain rectangle and no loop tests for the padding. */
static void conv2d_im2col(const conv2d *s, const float *restrict x, float *restrict pad,
                          float *restrict col)
{
    const int k = s->k, st = s->stride, oh = s->oh, ow = s->ow;
    const size_t ph = (size_t)s->h + 2 * s->pad, pw = (size_t)s->w + 2 * s->pad;
    conv2d_pad_planes(x, s->c, s->h, s->w, pad, (int)ph, (int)pw, s->pad);
    for (int c = 0; c < s->c; c++)
        for (int ki = 0; ki < k; ki++)
            for (int kj = 0; kj < k; kj++) {
                const float *tap = pad + ((size_t)c * ph + ki) * pw + kj;  /* under output pixel (0, 0) */
                float *row = col + (size_t)((c * k + ki) * k + kj) * (size_t)s->pixels;  /* (OH, OW) */
                if (st == 1) copy_block_any(tap, pw, row, (size_t)ow, oh, ow);
                else
                    for (int i = 0; i < oh; i++)
                        for (int j = 0; j < ow; j++) row[i * ow + j] = tap[(size_t)i * st * pw + (size_t)j * st];
            }
}

/* The adjoint of im2col: dx (C, H, W) = the sum, onto each input pixel, of the entries of col
 * (C*K*K, OH*OW) that were read from it, tap by tap in im2col's order. The taps are added into
 * pad (C, H+2P, W+2P), which takes the padding's share too, and its interior is then copied to
 * dx; so, as in im2col, no loop tests for the padding. */
static void conv2d_col2im(const conv2d *s, const float *restrict col, float *restrict pad,
                          float *restrict dx)
{
    const int k = s->k, st = s->stride, oh = s->oh, ow = s->ow;
    const size_t ph = (size_t)s->h + 2 * s->pad, pw = (size_t)s->w + 2 * s->pad;
    memset(pad, 0, sizeof(float) * (size_t)s->c * ph * pw);
    for (int c = 0; c < s->c; c++)
        for (int ki = 0; ki < k; ki++)
            for (int kj = 0; kj < k; kj++) {
                float *tap = pad + ((size_t)c * ph + ki) * pw + kj;  /* under output pixel (0, 0) */
                const float *row = col + (size_t)((c * k + ki) * k + kj) * (size_t)s->pixels;  /* (OH, OW) */
                if (st == 1) add_block_any(row, (size_t)ow, tap, pw, oh, ow);
                else
                    for (int i = 0; i < oh; i++)
                        for (int j = 0; j < ow; j++) tap[(size_t)i * st * pw + (size_t)j * st] += row[i * ow + j];
            }
    for (int c = 0; c < s->c; c++)
        copy_block_any(pad + ((size_t)c * ph + s->pad) * pw + s->pad, pw, dx + (size_t)c * s->h * s->w,
                       (size_t)s->w, s->h, s->w);
}

/* ---- Direct forward, for the few input channels of a first layer ----
 * With C*K*K of 27 (the tutorial's 3 -> 16 layer), im2col's product is too thin for SGEMM to run
 * well, and the unfolded copy costs as much again. Here each block of DIRECT_COLS neighbouring
 * outputs of a row, for DIRECT_OC output channels at once, stays in registers while the C*K*K taps
 * go by: one load of the padded row per tap, then a broadcast multiply-add per channel. The
 * vector type is GCC's generic one: 16 floats, one AVX-512 register where the CPU has them, split
 * into smaller ones where not. The sums run tap by tap in im2col's row order; the result differs
 * from SGEMM's by rounding only, and is the same whatever the thread count. Stride 1 and rows of
 * at least DIRECT_COLS outputs; a last, partial block starts DIRECT_COLS before the row's end
 * and writes some outputs twice, with the same values. */
typedef float direct_vec __attribute__((vector_size(DIRECT_COLS * sizeof(float))));

/* Outputs [j0, j0 + DIRECT_COLS) of row i of OB channels, into y (OB planes of OH x OW): tap t
 * reads the padded input at at[t] from the row's start, and its OB weights lie together at
 * wt[t * DIRECT_OC], so that one pointer serves every broadcast. */
static inline __attribute__((always_inline, optimize("fp-contract=fast"))) void
direct_block(const conv2d *s, const float *in, const ptrdiff_t *at, const float *wt, const float *bias, float *y,
             int OB)
{
    direct_vec acc[DIRECT_OC];
    for (int o = 0; o < OB; o++) acc[o] = (direct_vec){ 0 } + (bias ? bias[o] : 0.0f);
    for (int t = 0; t < s->rows; t++) {
        direct_vec v;
        memcpy(&v, in + at[t], sizeof v);
        for (int o = 0; o < OB; o++) acc[o] += wt[t * DIRECT_OC + o] * v;
    }
    const size_t plane = (size_t)s->oh * s->ow;
    for (int o = 0; o < OB; o++) memcpy(y + o * plane, &acc[o], sizeof acc[o]);
}

/* One sample's y (OC, OH, OW) from x (C, H, W), through pad (its padded copy, border zero). */
__attribute__((optimize("fp-contract=fast"))) static void conv2d_direct_sample(const conv2d *s, const float *x,
                                                                             float *pad, const float *weight,
                                                                             const float *bias, float *y)
{
    const size_t ph = (size_t)s->h + 2 * s->pad, pw = (size_t)s->w + 2 * s->pad;
    conv2d_pad_planes(x, s->c, s->h, s->w, pad, (int)ph, (int)pw, s->pad);
    ptrdiff_t at[DIRECT_MAX_ROWS];  /* tap (c, ki, kj), im2col's row order: its offset in the padded input */
    for (int c = 0; c < s->c; c++)
        for (int ki = 0; ki < s->k; ki++)
            for (int kj = 0; kj < s->k; kj++) at[(c * s->k + ki) * s->k + kj] = (ptrdiff_t)(((size_t)c * ph + ki) * pw) + kj;
    float wt[DIRECT_MAX_ROWS * DIRECT_OC];  /* a block of channels' weights, tap-major */
    for (int o0 = 0; o0 < s->oc; o0 += DIRECT_OC) {
        const int ob = s->oc - o0 < DIRECT_OC ? s->oc - o0 : DIRECT_OC;
        for (int t = 0; t < s->rows; t++)
            for (int o = 0; o < DIRECT_OC; o++) wt[t * DIRECT_OC + o] = o < ob ? weight[(size_t)(o0 + o) * s->rows + t] : 0.0f;
        const float *b = bias ? bias + o0 : NULL;
        float *yo = y + (size_t)o0 * s->oh * s->ow;
        for (int i = 0; i < s->oh; i++)
            for (int j = 0; j < s->ow; j += DIRECT_COLS) {
                const int j0 = j + DIRECT_COLS <= s->ow ? j : s->ow - DIRECT_COLS;
                const float *in = pad + (size_t)i * pw + j0;
                float *out = yo + (size_t)i * s->ow + j0;
                if (ob == DIRECT_OC) direct_block(s, in, at, wt, b, out, DIRECT_OC);
                else direct_block(s, in, at, wt, b, out, ob);
            }
    }
}

/* With pool, one sample's whole output (OC, OH, OW) into its pooled y and the winners' places. */
static void conv2d_pool_sample(const conv2d *s, const float *full, float *y, uint8_t *at)
{
    for (int o = 0; o < s->oc; o++)
        conv2d_pool_plane(full + (size_t)o * s->pixels, (size_t)s->ow, s->oh, s->ow, y + (size_t)o * s->ypixels,
                          at + (size_t)o * s->ypixels);
}

/* Samples [first, end) of a chunk forward: y (OC, OH*OW) = W col + b, sample by sample (with
 * pool into sc->full, then pooled into y). */
static void im2col_forward_chunk(const conv2d *s, const conv2d_scratch *sc, const float *x, const float *weight,
                                 const float *bias, float *y, uint8_t *at, int64_t first, int64_t end)
{
    const size_t xsize = (size_t)s->c * s->h * s->w, ysize = (size_t)s->oc * s->ypixels;
    memset(sc->xpad, 0, sizeof(float) * s->padded);  /* the border; samples fill the interior */
    for (int64_t i = first; i < end; i++) {
        const float *xs = x + (size_t)i * xsize;  /* (C, H, W) */
        float *ys = s->pool ? sc->full : y + (size_t)i * ysize;  /* (OC, OH*OW) */
        if (s->direct) {
            conv2d_direct_sample(s, xs, sc->xpad, weight, bias, ys);
        } else {
            const float *cols = xs;
            if (!s->pointwise) {
                conv2d_im2col(s, xs, sc->xpad, sc->col);
                cols = sc->col;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->oc, s->pixels, s->rows, 1.0f,
                        weight, s->rows, cols, s->pixels, 0.0f, ys, s->pixels);
            if (bias)
                for (int o = 0; o < s->oc; o++) {
                    float *restrict plane = ys + (size_t)o * s->pixels;  /* (OH*OW) */
                    for (int p = 0; p < s->pixels; p++) plane[p] += bias[o];
                }
        }
        if (s->pool) conv2d_pool_sample(s, ys, y + (size_t)i * ysize, at + (size_t)i * ysize);
    }
}

/* Samples [first, end) of a chunk backward: the chunk's dW and db into sc, dx (unless NULL)
 * sample by sample (with pool, from dY spread back over its windows into sc->full). */
static void im2col_backward_chunk(const conv2d *s, const conv2d_scratch *sc, const float *x, const float *dy,
                                  const uint8_t *at, const float *weight, float *dx, int64_t first, int64_t end)
{
    const size_t xsize = (size_t)s->c * s->h * s->w, ysize = (size_t)s->oc * s->ypixels;
    memset(sc->xpad, 0, sizeof(float) * s->padded);
    memset(sc->dw, 0, sizeof(float) * (size_t)s->oc * s->rows);
    memset(sc->db, 0, sizeof(float) * (size_t)s->oc);
    for (int64_t i = first; i < end; i++) {
        const float *xs = x + (size_t)i * xsize;   /* (C, H, W) */
        const float *dys = dy + (size_t)i * ysize; /* (OC, OH*OW), or with pool (OC, YH*YW) */
        if (s->bias) conv2d_add_bias_grad(s, dys, sc->db);
        if (s->pool) {
            for (int o = 0; o < s->oc; o++)
                conv2d_unpool_plane(dys + (size_t)o * s->ypixels, at + i * ysize + (size_t)o * s->ypixels, s->oh,
                                    s->ow, sc->full + (size_t)o * s->pixels, (size_t)s->ow);
            dys = sc->full;
        }
        const float *cols = xs;
        if (!s->pointwise) {
            conv2d_im2col(s, xs, sc->xpad, sc->col);
            cols = sc->col;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s->oc, s->rows, s->pixels, 1.0f,
                    dys, s->pixels, cols, s->pixels, 1.0f, sc->dw, s->rows);
        if (!dx) continue;
        float *dxs = dx + (size_t)i * xsize;  /* (C, H, W) */
        if (s->pointwise) {  /* dx is dcol itself */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, s->rows, s->pixels, s->oc, 1.0f,
                        weight, s->rows, dys, s->pixels, 0.0f, dxs, s->pixels);
            continue;
        }
        /* dcol = W^T dY overwrites col, whose values dW has consumed */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, s->rows, s->pixels, s->oc, 1.0f,
                    weight, s->rows, dys, s->pixels, 0.0f, sc->col, s->pixels);
        conv2d_col2im(s, sc->col, sc->dxpad, dxs);
    }
}

/* ---- The operations: chunks in parallel, then the chunks' gradients in chunk order ---- */

static int conv2d_forward_cpu(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w,
                              rx_tensor *y, void *state)
{
    const conv2d *s = self;
    const int64_t n = x->shape.d[0];
    conv2d_plan plan;
    float *slots = conv2d_slots(s, ctx, n, &plan);
    if (!slots) return -1;
    const float *bias = s->bias ? w[1].data : NULL;  /* (OC) */
    uint8_t *at = s->pool ? state : NULL;            /* (N, OC, YH, YW) */
    const conv2d_scratch lead = conv2d_scratch_at(s, &plan, slots);  /* the first chunk's */
    float *u = s->algo == CONV2D_WINOGRAD ? lead.dw : NULL;  /* dU, idle forward */
    if (u) wino_kernels(s, w[0].data, u, false);
    if (u && s->bf16) wino_pack_kernels(s, &s->fwd, u, lead.upack);
    const int chunks = plan.chunks;

#pragma omp parallel for num_threads(chunks) schedule(static, 1)
    for (int t = 0; t < chunks; t++) {
        int64_t first, end;
        const conv2d_scratch sc = conv2d_chunk(s, &plan, slots, n, t, &first, &end);
        if (u) wino_forward_chunk(s, &plan, &sc, u, lead.upack, x->data, bias, y->data, at, first, end);
        else im2col_forward_chunk(s, &sc, x->data, w[0].data, bias, y->data, at, first, end);
    }
    return 0;
}

static int conv2d_backward_cpu(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y,
                               const rx_tensor *dy, const rx_tensor *w, const void *state,
                               rx_tensor *dx, rx_tensor *dw)
{
    const conv2d *s = self;
    const bool winograd = s->algo == CONV2D_WINOGRAD;
    const int64_t n = x->shape.d[0];
    conv2d_plan plan;
    float *slots = conv2d_slots(s, ctx, n, &plan);
    if (!slots) return -1;
    const int chunks = plan.chunks;
    const uint8_t *at = s->pool ? state : NULL;
    const conv2d_scratch lead = conv2d_scratch_at(s, &plan, slots);  /* the first chunk's */
    if (winograd && dx) {  /* the flipped kernels' U for dx: in bf16 packed, through dU's space before it fills */
        wino_kernels(s, w[0].data, s->bf16 ? lead.dw : lead.uflip, true);
        if (s->bf16) wino_pack_kernels(s, &s->back, lead.dw, lead.upack);
    }

#pragma omp parallel for num_threads(chunks) schedule(static, 1)
    for (int t = 0; t < chunks; t++) {
        int64_t first, end;
        const conv2d_scratch sc = conv2d_chunk(s, &plan, slots, n, t, &first, &end);
        if (winograd)
            wino_backward_chunk(s, &plan, &sc, x->data, dy->data, at, lead.uflip, lead.upack, dx ? dx->data : NULL,
                                first, end);
        else im2col_backward_chunk(s, &sc, x->data, dy->data, at, w[0].data, dx ? dx->data : NULL, first, end);
    }

    /* The chunks' sums, added in chunk order whatever thread finished first: into chunk 0's
     * (Winograd: then turned into dW once), or straight into dW. */
    const conv2d_scratch first = conv2d_scratch_at(s, &plan, slots);
    const size_t wsize = winograd ? WINO_PLANES * s->uplane : (size_t)s->oc * s->rows;
    float *restrict sum = winograd ? first.dw : dw[0].data;
    for (int t = winograd ? 1 : 0; t < chunks; t++) {
        const float *restrict part = conv2d_scratch_at(s, &plan, slots + (size_t)t * plan.slot).dw;
        for (size_t j = 0; j < wsize; j++) sum[j] += part[j];
    }
    if (winograd) wino_kernel_grads(s, first.dw, dw[0].data);
    if (s->bias) {
        float *restrict dbias = dw[1].data;  /* (OC) */
        for (int t = 0; t < chunks; t++) {
            const float *restrict part = conv2d_scratch_at(s, &plan, slots + (size_t)t * plan.slot).db;
            for (int o = 0; o < s->oc; o++) dbias[o] += part[o];
        }
    }
    return 0;
}

/* Conv with the layer's geometry; the bias, when there is one, as its third input. With pool, a
 * MaxPool of 2 at stride 2 after it, as the maxpool layer exports. */
static int conv2d_export_onnx(void *self, rx_ctx *ctx, rx_onnx *g)
{
    const conv2d *s = self;
    const rx_onnx_attr attrs[] = {
        { .name = "kernel_shape", .type = RX_ATTR_INTS, .nints = 2, .ints = { s->k, s->k } },
        { .name = "strides", .type = RX_ATTR_INTS, .nints = 2, .ints = { s->stride, s->stride } },
        { .name = "pads", .type = RX_ATTR_INTS, .nints = 4, .ints = { s->pad, s->pad, s->pad, s->pad } },
    };
    const char *conv = s->pool ? onnx_temp(ctx, g) : g->output;
    if (!conv || onnx_op(ctx, g, "Conv", (const char *[]){ g->input, g->tensors[0], g->tensors[1] }, s->bias ? 3 : 2,
                         conv, attrs, 3) != 0)
        return -1;
    if (!s->pool) return 0;
    const rx_onnx_attr pool[] = {
        { .name = "kernel_shape", .type = RX_ATTR_INTS, .nints = 2, .ints = { 2, 2 } },
        { .name = "strides", .type = RX_ATTR_INTS, .nints = 2, .ints = { 2, 2 } },
    };
    return onnx_op(ctx, g, "MaxPool", &conv, 1, g->output, pool, 2);
}

static const rx_plugin desc = {
    .abi = RX_ABI_VERSION,
    .size = sizeof(rx_plugin),
    .kind = RX_LAYER,
    .name = "conv2d",
    .summary = "2-D convolution (im2col + SGEMM, or Winograd F(4x4, 3x3)), like torch.nn.Conv2d",
    .params = params,
    .layer = {
        .create = conv2d_create,
        .destroy = plugin_free_self,
#ifdef RX_WITH_CUDA
        .forward = { [RX_CPU] = conv2d_forward_cpu, [RX_CUDA] = conv2d_forward_cuda },
        .backward = { [RX_CPU] = conv2d_backward_cpu, [RX_CUDA] = conv2d_backward_cuda },
#else
        .forward = { [RX_CPU] = conv2d_forward_cpu },
        .backward = { [RX_CPU] = conv2d_backward_cpu },
#endif
        .export_onnx = conv2d_export_onnx,
    },
};

RX_EXPORT(conv2d) { return &desc; }
