/* cifar10.h: what cifar10.c (reading, splits, the CPU path and the descriptor) and cifar10.cu (the
 * CUDA path) share: the plugin's state and the CUDA entry points. A sample's augmentation choices
 * (augment_pick) and the function that turns them into pixels (augment_pixel, compiled for both
 * devices) are plugins/common/augment.h's.
 */
#ifndef RX_DATA_CIFAR10_H
#define RX_DATA_CIFAR10_H

#include "runexp.h"
#include "augment.h"

#define CIFAR_SIDE     32
#define CIFAR_CHANNELS 3
#define CIFAR_PLANE    (CIFAR_SIDE * CIFAR_SIDE)       /* 1024 bytes per channel */
#define CIFAR_PIXELS   (CIFAR_CHANNELS * CIFAR_PLANE)  /* 3072 bytes per image */
#define CIFAR_CLASSES  10
#define CIFAR_LEVELS   256                            /* byte values: entries per channel's table */

struct cifar10_gpu; /* cifar10.cu's own */

typedef struct cifar10 {
    uint8_t *pixels;            /* (ntrain + ntest, 3, 32, 32): training images, then test */
    uint8_t *labels;            /* (ntrain + ntest) */
    int64_t ntrain, ntest;      /* images read from the training files and from test_batch.bin (>= 1) */
    int64_t size[RX_NSPLITS];   /* samples per split (valid may be 0) */
    int32_t *split_perm;        /* (ntrain) the seeded shuffle: valid first, then train */
    int32_t *train_order;       /* (size[RX_TRAIN]) this epoch's order of the training split */
    int32_t *test_order;        /* (ntest) ntrain, ntrain + 1, ...: the file's own order */
    int32_t *order[RX_NSPLITS]; /* the above by split; indices into pixels and labels */
    uint64_t seed;
    int64_t epoch;              /* the training epoch begin_epoch fixed last (0 before any): its
                                 * augmentation is what training batches get */
    augment aug;
    float lut[CIFAR_CHANNELS][CIFAR_LEVELS]; /* byte value -> normalized float, per channel */
    char *meta;                     /* batches.meta.txt, its lines cut in place into names */
    const char *class_names[CIFAR_CLASSES];
    struct cifar10_gpu *gpu;    /* the data set on the GPU (cifar10.cu); NULL unless created with
                                 * ctx->device == RX_CUDA */
} cifar10;

#ifdef __cplusplus
extern "C" {
#endif
/* cifar10.cu. At create: copies the images, labels and table to the GPU once (synchronously);
 * 0, or -1 after rx_fail with nothing left allocated. */
int cifar10_gpu_create(cifar10 *d, rx_ctx *ctx);
/* Frees what cifar10_gpu_create made (waits for the GPU to finish with it); NULL-safe. */
void cifar10_gpu_destroy(cifar10 *d);
/* Pinned host memory for n picks, to be filled and then handed to cifar10_gpu_render; waits, if
 * need be, until the previous batch's picks have been copied out of it. NULL after rx_fail. */
augment_pick *cifar10_gpu_picks(cifar10 *d, rx_ctx *ctx, int64_t n);
/* Queues on ctx->cuda_stream the copy of the n picks and one kernel that writes x (n, 3, 32, 32)
 * and labels (n), both on the GPU. Waits for nothing. */
int cifar10_gpu_render(cifar10 *d, rx_ctx *ctx, int64_t n, rx_tensor *x, int32_t *labels);
#ifdef __cplusplus
}
#endif

#endif
