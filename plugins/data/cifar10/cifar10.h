/* cifar10.h: what cifar10.c (reading, splits, augmentation choices, the CPU path and the
 * descriptor) and cifar10.cu (the CUDA path) share: the plugin's state, one sample's augmentation
 * choices (a "pick"), the function that turns a pick into pixels, and the CUDA entry points.
 *
 * The picks are drawn on the CPU, by the same code for both devices; the pixels of a pick come
 * from cifar10_pixel, compiled for both. It does no float arithmetic at all: every value it
 * returns is an entry of the normalization table built once on the CPU, or 0.0f for cutout, so
 * the GPU's batches are the CPU's bit for bit. That is why it lives here, in a header: one
 * definition, not two copies to keep in step.
 */
#ifndef RX_DATA_CIFAR10_H
#define RX_DATA_CIFAR10_H

#include "runexp.h"

#ifdef __CUDACC__
#define CIFAR10_HD __host__ __device__
#else
#define CIFAR10_HD
#endif

#define CIFAR_SIDE     32
#define CIFAR_CHANNELS 3
#define CIFAR_PLANE    (CIFAR_SIDE * CIFAR_SIDE)       /* 1024 bytes per channel */
#define CIFAR_PIXELS   (CIFAR_CHANNELS * CIFAR_PLANE)  /* 3072 bytes per image */
#define CIFAR_CLASSES  10
#define CIFAR_LEVELS   256                            /* byte values: entries per channel's table */

/* The choices of params flip and tta, in the order of their names in cifar10.c. */
typedef enum { CIFAR10_FLIP_NONE, CIFAR10_FLIP_RANDOM, CIFAR10_FLIP_ALTERNATE } cifar10_flip;
typedef enum { CIFAR10_TTA_NONE, CIFAR10_TTA_FLIP, CIFAR10_TTA_FLIP_SHIFT } cifar10_tta;

/* How the training split is augmented and the others viewed, from create's arguments. */
typedef struct cifar10_augment {
    int crop_padding;  /* 0-31: crop offsets are drawn in [-crop_padding, crop_padding] */
    bool pad_zeros;    /* outside the image: byte 0 (true) or the reflection (false) */
    cifar10_flip flip;
    int cutout;        /* 0-32: side of the square of zeros */
    cifar10_tta tta;
    int views;         /* info.views: 0 (tta none), 2 or 6 */
} cifar10_augment;

/* One output sample: pixel (c, y, x) comes from pixel (c, y + dy, x' + dx) of image `image`, where
 * x' = 31 - x when flip (a crop first, then mirrored, as torchvision's RandomCrop then
 * RandomHorizontalFlip), except in rows [cut_y0, cut_y1) x columns [cut_x0, cut_x1), which are
 * 0 (cutout; empty when cut_y0 == cut_y1). Drawn on the CPU for both devices, 12 bytes each. */
typedef struct cifar10_pick {
    int32_t image;   /* index into pixels and labels */
    int8_t dy, dx;   /* -31 .. 31 */
    uint8_t flip;    /* 0 or 1 */
    int8_t cut_y0, cut_y1, cut_x0, cut_x1; /* 0 .. 32 */
} cifar10_pick;

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
    cifar10_augment aug;
    float lut[CIFAR_CHANNELS][CIFAR_LEVELS]; /* byte value -> normalized float, per channel */
    char *meta;                     /* batches.meta.txt, its lines cut in place into names */
    const char *class_names[CIFAR_CLASSES];
    struct cifar10_gpu *gpu;    /* the data set on the GPU (cifar10.cu); NULL unless created with
                                 * ctx->device == RX_CUDA */
} cifar10;

/* Mirrors an index that fell off the image back into it without repeating the edge (PyTorch's
 * 'reflect': -1 -> 1, 32 -> 30); exact for any index in [-31, 62]. */
static inline CIFAR10_HD int cifar10_reflect(int i)
{
    return i < 0 ? -i : i >= CIFAR_SIDE ? 2 * (CIFAR_SIDE - 1) - i : i;
}

/* Output pixel (c, y, x) of pick pk. img: the pick's image (3, 32, 32); lut: (3, 256), the
 * normalization table; zeros: padding_mode = "zeros". */
static inline CIFAR10_HD float cifar10_pixel(const uint8_t *img, const float *lut, cifar10_pick pk, bool zeros,
                                             int c, int y, int x)
{
    if (y >= pk.cut_y0 && y < pk.cut_y1 && x >= pk.cut_x0 && x < pk.cut_x1) return 0.0f;
    int sy = y + pk.dy, sx = (pk.flip ? CIFAR_SIDE - 1 - x : x) + pk.dx;
    bool outside = sy < 0 || sy >= CIFAR_SIDE || sx < 0 || sx >= CIFAR_SIDE;
    if (outside && zeros) return lut[c * CIFAR_LEVELS]; /* a black pixel: byte 0, normalized */
    return lut[c * CIFAR_LEVELS + img[c * CIFAR_PLANE + cifar10_reflect(sy) * CIFAR_SIDE + cifar10_reflect(sx)]];
}

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
cifar10_pick *cifar10_gpu_picks(cifar10 *d, rx_ctx *ctx, int64_t n);
/* Queues on ctx->cuda_stream the copy of the n picks and one kernel that writes x (n, 3, 32, 32)
 * and labels (n), both on the GPU. Waits for nothing. */
int cifar10_gpu_render(cifar10 *d, rx_ctx *ctx, int64_t n, rx_tensor *x, int32_t *labels);
#ifdef __cplusplus
}
#endif

#endif
