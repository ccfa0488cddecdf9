/* linear.c: fully connected layer, PyTorch's nn.Linear: y = x W^T + b.
 *
 * Any per-sample input shape is read as F = numel features, so a (C, H, W) input needs no
 * flatten in front. Each pass is OpenBLAS SGEMM over the whole batch, split into one block per
 * thread (OpenMP, at most ctx->threads; OpenBLAS itself runs single-threaded) once the layer is
 * large enough for that to pay:
 *     forward   y^T = W x^T, blocks of output features, into the workspace (OUT, N); each block
 *               is then transposed into y with the bias added. W x^T rather than x W^T because
 *               OpenBLAS runs the tall product about 1.7x faster for small batches.
 *     backward  dW += dY^T x and dX = dY W, blocks of input features;  db += column sums of dY.
 * No block adds into another's output, so the result never depends on which thread ran what.
 *
 * CUDA path: linear.cu, the same three products through cuBLAS over the whole batch; linear.h
 * holds the struct both files share. */
#include <cblas.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>

#include "create.h"
#include "linear.h"
#include "threads.h"
#include "onnx_nodes.h"

static const rx_param params[] = {
    { .key = "out", .type = RX_INT, .required = true, .help = "output features" },
    { .key = "bias", .type = RX_BOOL, .def = { .b = true }, .help = "learn one bias per output" },
    { 0 },
};
enum { ARG_OUT, ARG_BIAS };

static int linear_create(void **self, rx_ctx *ctx, const rx_value *args, rx_shape in,
                         rx_layer_info *info)
{
    const int64_t out = args[ARG_OUT].i;
    if (in.ndim < 1)
        return rx_fail(ctx, "expects a per-sample input with at least 1 dimension, got 0");
    if (out < 1 || out > INT_MAX) return rx_fail(ctx, "out must be at least 1, got %" PRId64, out);
    const int64_t f = rx_numel(in);
    if (f < 1 || f > INT_MAX)
        return rx_fail(ctx, "the input has %" PRId64 " features, expected 1 to %d", f, INT_MAX);

    const linear s = { .in = (int)f, .out = (int)out, .bias = args[ARG_BIAS].b };
    const float scale = 1.0f / sqrtf((float)f);
    info->out = (rx_shape){ .ndim = 1, .d = { out } };
    info->ntensors = s.bias ? 2 : 1;
    info->tensors[0] = (rx_tensor_decl){ .name = "weight", .shape = { .ndim = 2, .d = { out, f } },
                                         .init = RX_INIT_UNIFORM, .scale = scale };
    if (s.bias)
        info->tensors[1] = (rx_tensor_decl){ .name = "bias", .shape = { .ndim = 1, .d = { out } },
                                             .init = RX_INIT_UNIFORM, .scale = scale };
    info->state_bytes = 0;
    info->workspace_bytes = sizeof(float) * (size_t)out;  /* one column of y^T */
    info->per_sample = true;  /* a sample's y from its x alone; dW and db only add */
    return plugin_new_self(self, ctx, &s, sizeof s);
}

/* How many blocks to split a product of n x out x f multiply-adds into: one per thread when
 * it is worth a parallel region (about 20 us of work on one core), else one. */
static int linear_blocks(const rx_ctx *ctx, int64_t n, const linear *s)
{
    return threads_for(ctx, n * s->out * s->in, 1 << 20);
}

/* Block b of `blocks` over [0, total): boundaries on multiples of 16 floats, so each block
 * starts on a 64-byte line and OpenBLAS's AVX-512 tiles stay whole. May be empty. */
static void linear_block(int total, int b, int blocks, int *lo, int *hi)
{
    const int64_t step = 16;
    *lo = b == 0 ? 0 : (int)((int64_t)total * b / blocks / step * step);
    *hi = b == blocks - 1 ? total : (int)((int64_t)total * (b + 1) / blocks / step * step);
}

static int linear_forward_cpu(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *w,
                              rx_tensor *y, void *state)
{
    const linear *s = self;
    const int64_t n = x->shape.d[0];
    if (n > INT_MAX) return rx_fail(ctx, "batch %" PRId64 " is too large for 32-bit BLAS sizes", n);
    const size_t need = sizeof(float) * (size_t)s->out * (size_t)n;
    if (!ctx->workspace || ctx->workspace_bytes < need)
        return rx_fail(ctx, "needs %zu bytes of workspace for a batch of %" PRId64 ", got %zu", need, n,
                       ctx->workspace ? ctx->workspace_bytes : 0);
    float *yt = ctx->workspace;                      /* (OUT, N) */
    const float *bias = s->bias ? w[1].data : NULL;  /* (OUT) */
    const int blocks = linear_blocks(ctx, n, s);

#pragma omp parallel for num_threads(blocks) schedule(static, 1)
    for (int b = 0; b < blocks; b++) {
        int o0, o1;
        linear_block(s->out, b, blocks, &o0, &o1);
        if (o0 >= o1) continue;
        /* y^T[o0:o1] (o1-o0, N) = W[o0:o1] (o1-o0, F) x X^T (F, N) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, o1 - o0, (int)n, s->in, 1.0f,
                    w[0].data + (size_t)o0 * s->in, s->in, x->data, s->in, 0.0f, yt + (size_t)o0 * n, (int)n);
        for (int64_t i = 0; i < n; i++) {
            float *restrict row = y->data + (size_t)i * s->out;  /* (OUT) */
            for (int o = o0; o < o1; o++) row[o] = yt[(size_t)o * n + i] + (bias ? bias[o] : 0.0f);
        }
    }
    return 0;
}

static int linear_backward_cpu(void *self, rx_ctx *ctx, const rx_tensor *x, const rx_tensor *y,
                               const rx_tensor *dy, const rx_tensor *w, const void *state,
                               rx_tensor *dx, rx_tensor *dw)
{
    const linear *s = self;
    const int64_t n = x->shape.d[0];
    if (n > INT_MAX) return rx_fail(ctx, "batch %" PRId64 " is too large for 32-bit BLAS sizes", n);
    const float *g = dy->data;  /* (N, OUT) */
    const int blocks = linear_blocks(ctx, n, s);

#pragma omp parallel for num_threads(blocks) schedule(static, 1)
    for (int b = 0; b < blocks; b++) {
        int f0, f1;
        linear_block(s->in, b, blocks, &f0, &f1);
        if (f0 >= f1) continue;
        /* dW[:, f0:f1] (OUT, f1-f0) += dY^T (OUT, N) x X[:, f0:f1] (N, f1-f0) */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, s->out, f1 - f0, (int)n, 1.0f, g, s->out,
                    x->data + f0, s->in, 1.0f, dw[0].data + f0, s->in);
        /* dX[:, f0:f1] (N, f1-f0) = dY (N, OUT) x W[:, f0:f1] (OUT, f1-f0) */
        if (dx)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, f1 - f0, s->out, 1.0f, g, s->out,
                        w[0].data + f0, s->in, 0.0f, dx->data + f0, s->in);
    }
    if (s->bias) {
        float *restrict db = dw[1].data;  /* (OUT) */
        for (int64_t i = 0; i < n; i++) {
            const float *restrict row = g + (size_t)i * s->out;  /* (OUT) */
            for (int o = 0; o < s->out; o++) db[o] += row[o];
        }
    }
    return 0;
}

/* Gemm(x, weight, bias) with the weight (out, F) transposed, as y = x W^T + b; an input of more
 * than one dimension per sample is flattened first, as forward reads it. */
static int linear_export_onnx(void *self, rx_ctx *ctx, rx_onnx *g)
{
    const linear *s = self;
    const char *x = g->input;
    if (g->in.ndim > 1) {
        const rx_onnx_attr axis = { .name = "axis", .type = RX_ATTR_INT, .i = 1 };
        if (!(x = onnx_temp(ctx, g)) || onnx_op(ctx, g, "Flatten", &g->input, 1, x, &axis, 1) != 0) return -1;
    }
    const rx_onnx_attr trans_b = { .name = "transB", .type = RX_ATTR_INT, .i = 1 };
    return onnx_op(ctx, g, "Gemm", (const char *[]){ x, g->tensors[0], g->tensors[1] }, s->bias ? 3 : 2,
                   g->output, &trans_b, 1);
}

static const rx_plugin desc = {
    .abi = RX_ABI_VERSION,
    .size = sizeof(rx_plugin),
    .kind = RX_LAYER,
    .name = "linear",
    .summary = "fully connected layer y = x W^T + b (SGEMM), like torch.nn.Linear",
    .params = params,
    .layer = {
        .create = linear_create,
        .destroy = plugin_free_self,
#ifdef RX_WITH_CUDA
        .forward = { [RX_CPU] = linear_forward_cpu, [RX_CUDA] = linear_forward_cuda },
        .backward = { [RX_CPU] = linear_backward_cpu, [RX_CUDA] = linear_backward_cuda },
#else
        .forward = { [RX_CPU] = linear_forward_cpu },
        .backward = { [RX_CPU] = linear_backward_cpu },
#endif
        .export_onnx = linear_export_onnx,
    },
};

RX_EXPORT(linear) { return &desc; }
