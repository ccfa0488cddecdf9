/* cifar10.cu: cifar10's CUDA path, the twin of cifar10_batch_cpu. The images, labels and the
 * normalization table go to the GPU once, at create (180 MB of bytes for the whole set); a batch
 * then moves only its picks (augment.h: 20 bytes a sample, drawn on the CPU by the code the CPU
 * path uses) and one kernel writes the floats and labels. The kernel calls augment_pixel, the CPU's
 * own function, which only looks values up in the CPU-built table (or writes 0.0f): no float is
 * computed on the GPU, so both devices give the same bits.
 *
 * The picks travel through pinned host memory owned here. The copy out of it is queued, so the
 * next batch waits (on an event) until that copy has run before writing its picks there; the
 * host's per-batch loss copy has usually passed that point already. Everything is queued on
 * ctx->cuda_stream; only create, growing the pick buffers and destroy wait for the GPU. */
#include <cuda_runtime.h>
#include <stdlib.h>

#include "cifar10.h"
#include "cuda_util.cuh"

/* Owned by the plugin, made by cifar10_gpu_create, freed by cifar10_gpu_destroy. */
struct cifar10_gpu {
    uint8_t *pixels;      /* (ntrain + ntest, 3, 32, 32) on the GPU */
    uint8_t *labels;      /* (ntrain + ntest) on the GPU */
    float *lut;           /* (3, 256) on the GPU: cifar10's table, copied */
    augment_pick *picks;  /* (capacity) on the GPU: the batch's picks */
    augment_pick *staged; /* (capacity) pinned host memory the picks are copied from */
    int64_t capacity;     /* picks the two buffers hold; 0 until the first batch */
    cudaEvent_t copied;   /* recorded after each copy out of staged */
    bool have_event;
};

/* x (n, 3, 32, 32) and labels (n) of the batch whose picks are picks (n); total = n * 3072. One
 * thread per float; the first float of each sample also writes its label. */
__global__ void cifar10_render_kernel(const uint8_t *__restrict__ pixels, const uint8_t *__restrict__ image_labels,
                                      const float *__restrict__ lut, const augment_pick *__restrict__ picks,
                                      float *__restrict__ x, int32_t *__restrict__ labels, int64_t total, bool zeros)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t n = i / CIFAR_PIXELS;
        const int r = (int)(i - n * CIFAR_PIXELS); /* (c, y, x) within the sample */
        const int c = r / CIFAR_PLANE, y = (r / CIFAR_SIDE) % CIFAR_SIDE, xx = r % CIFAR_SIDE;
        const augment_pick pk = picks[n];
        x[i] = augment_pixel(pixels + (size_t)pk.image * CIFAR_PIXELS, lut, pk, zeros, CIFAR_SIDE, CIFAR_SIDE, c, y, xx);
        if (r == 0) labels[n] = image_labels[pk.image];
    }
}

/* Frees everything g holds; each pointer may be NULL. cudaFree waits for the GPU to be done. */
static void cifar10_gpu_free(cifar10_gpu *g)
{
    if (!g) return;
    if (g->have_event) cudaEventDestroy(g->copied);
    cudaFree(g->pixels);
    cudaFree(g->labels);
    cudaFree(g->lut);
    cudaFree(g->picks);
    cudaFreeHost(g->staged);
    free(g);
}

extern "C" void cifar10_gpu_destroy(cifar10 *d)
{
    cifar10_gpu_free(d->gpu);
    d->gpu = NULL;
}

extern "C" int cifar10_gpu_create(cifar10 *d, rx_ctx *ctx)
{
    const size_t images = (size_t)(d->ntrain + d->ntest);
    cifar10_gpu *g = (cifar10_gpu *)calloc(1, sizeof *g);
    if (!g) return rx_fail(ctx, "out of memory");
    int rc = RX_CUDA_OK(ctx, cudaMalloc(&g->pixels, images * CIFAR_PIXELS), "cifar10: GPU memory for the images");
    if (rc == 0) rc = RX_CUDA_OK(ctx, cudaMalloc(&g->labels, images), "cifar10: GPU memory for the labels");
    if (rc == 0) rc = RX_CUDA_OK(ctx, cudaMalloc(&g->lut, sizeof d->lut), "cifar10: GPU memory for the table");
    if (rc == 0)
        rc = RX_CUDA_OK(ctx, cudaMemcpy(g->pixels, d->pixels, images * CIFAR_PIXELS, cudaMemcpyHostToDevice),
                        "cifar10: copying the images to the GPU");
    if (rc == 0)
        rc = RX_CUDA_OK(ctx, cudaMemcpy(g->labels, d->labels, images, cudaMemcpyHostToDevice),
                        "cifar10: copying the labels to the GPU");
    if (rc == 0)
        rc = RX_CUDA_OK(ctx, cudaMemcpy(g->lut, d->lut, sizeof d->lut, cudaMemcpyHostToDevice),
                        "cifar10: copying the table to the GPU");
    if (rc == 0) {
        rc = RX_CUDA_OK(ctx, cudaEventCreateWithFlags(&g->copied, cudaEventDisableTiming), "cifar10: an event");
        g->have_event = rc == 0;
    }
    if (rc != 0) {
        cifar10_gpu_free(g);
        return -1;
    }
    d->gpu = g;
    return 0;
}

/* Room for n picks in both buffers. Growing waits for the stream, so that no queued copy or
 * kernel still uses the old ones; with a fixed batch size it happens once. (Between batches the
 * GPU buffer needs no such care: the next copy into it is queued behind the kernel reading it.) */
static int cifar10_gpu_reserve(cifar10_gpu *g, rx_ctx *ctx, int64_t n)
{
    if (n <= g->capacity) return 0;
    if (RX_CUDA_OK(ctx, cudaStreamSynchronize(rx_cuda_stream(ctx)), "cifar10: waiting for the GPU") != 0) return -1;
    cudaFree(g->picks);
    cudaFreeHost(g->staged);
    g->picks = NULL;
    g->staged = NULL;
    g->capacity = 0;
    const size_t bytes = (size_t)n * sizeof(augment_pick);
    if (RX_CUDA_OK(ctx, cudaMalloc(&g->picks, bytes), "cifar10: GPU memory for a batch's picks") != 0 ||
        RX_CUDA_OK(ctx, cudaMallocHost(&g->staged, bytes), "cifar10: pinned memory for a batch's picks") != 0)
        return -1;
    g->capacity = n;
    return 0;
}

extern "C" augment_pick *cifar10_gpu_picks(cifar10 *d, rx_ctx *ctx, int64_t n)
{
    cifar10_gpu *g = d->gpu;
    /* The last batch's picks may still be waiting to be copied out. */
    if (RX_CUDA_OK(ctx, cudaEventSynchronize(g->copied), "cifar10: waiting for the last batch's picks") != 0 ||
        cifar10_gpu_reserve(g, ctx, n) != 0)
        return NULL;
    return g->staged;
}

extern "C" int cifar10_gpu_render(cifar10 *d, rx_ctx *ctx, int64_t n, rx_tensor *x, int32_t *labels)
{
    cifar10_gpu *g = d->gpu;
    const cudaStream_t stream = rx_cuda_stream(ctx);
    if (n < 1) return 0;
    if (n > g->capacity) return rx_fail(ctx, "cifar10: %lld picks, room for %lld", (long long)n, (long long)g->capacity);
    if (RX_CUDA_OK(ctx, cudaMemcpyAsync(g->picks, g->staged, (size_t)n * sizeof(augment_pick), cudaMemcpyHostToDevice,
                                        stream), "cifar10: copying a batch's picks") != 0 ||
        RX_CUDA_OK(ctx, cudaEventRecord(g->copied, stream), "cifar10: recording the copy") != 0)
        return -1;
    const int64_t total = n * CIFAR_PIXELS;
    cifar10_render_kernel<<<rx_cuda_blocks(total), RX_CUDA_THREADS, 0, stream>>>(
        g->pixels, g->labels, g->lut, g->picks, x->data, labels, total, d->aug.pad_zeros);
    return RX_CUDA_LAUNCHED(ctx, "cifar10 batch");
}
