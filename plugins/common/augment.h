/* augment.h: the augmentation of training images and the test-time views, for every data set of
 * 8-bit pictures held as (3, H, W) bytes (cifar10, imagefolder): their parameters, one sample's
 * choices (a "pick") drawn from (seed, epoch, image) alone, and the function that turns a pick
 * into pixels.
 *
 * The picks are drawn on the CPU, by the same code for every device; the pixels of a pick come
 * from augment_pixel, compiled for the CPU and, in cifar10.cu, for the GPU. It does no float
 * arithmetic at all: every value it returns is an entry of the normalization table built once on
 * the CPU, or 0.0f for cutout, so the GPU's batches are the CPU's bit for bit. That is why it
 * lives here, in a header: one definition, not two copies to keep in step.
 */
#ifndef RX_COMMON_AUGMENT_H
#define RX_COMMON_AUGMENT_H

#include "runexp.h"

#ifdef __CUDACC__
#define AUGMENT_HD __host__ __device__
#else
#define AUGMENT_HD
#endif

#define AUGMENT_LEVELS 256 /* byte values: entries per channel's table */

/* The choices of params flip and tta, in the order of their names in augment.c. */
typedef enum { AUGMENT_FLIP_NONE, AUGMENT_FLIP_RANDOM, AUGMENT_FLIP_ALTERNATE } augment_flip;
typedef enum { AUGMENT_TTA_NONE, AUGMENT_TTA_FLIP, AUGMENT_TTA_FLIP_SHIFT } augment_tta;

/* How the training split is augmented and the others viewed, from create's arguments, for
 * pictures of h x w. */
typedef struct augment {
    int h, w;
    int crop_padding;  /* 0 .. min(h, w) - 1: crop offsets are drawn in [-crop_padding, crop_padding] */
    bool pad_zeros;    /* outside the image: byte 0 (true) or the reflection (false) */
    augment_flip flip;
    int cutout;        /* 0 .. min(h, w): side of the square of zeros */
    augment_tta tta;
    int views;         /* info.views: 0 (tta none), 2 or 6 */
} augment;

/* One output sample: pixel (c, y, x) comes from pixel (c, y + dy, x' + dx) of image `image`, where
 * x' = w - 1 - x when flip (a crop first, then mirrored, as torchvision's RandomCrop then
 * RandomHorizontalFlip), except in rows [cut_y0, cut_y1) x columns [cut_x0, cut_x1), which are
 * 0 (cutout; empty when cut_y0 == cut_y1). Drawn on the CPU for every device. */
typedef struct augment_pick {
    int32_t image;   /* the caller's index of the picture */
    int16_t dy, dx;  /* -(side - 1) .. side - 1 */
    int16_t cut_y0, cut_y1, cut_x0, cut_x1; /* 0 .. h or w */
    uint8_t flip;    /* 0 or 1 */
} augment_pick;

/* The augmentation's parameters, in this order, for a data plugin's params[]; SIDE names the
 * picture's size in the help ("32x32"). Their arguments go to augment_parse as one run. */
#define AUGMENT_PARAMS(SIDE) \
    { .key = "crop_padding", .type = RX_INT, .def = { .i = 0 }, \
      .help = "training: pad each image by this many pixels (below its side) and take a random " SIDE " crop of it " \
              "(0: no crop; 4 is the usual)" }, \
    { .key = "padding_mode", .type = RX_STR, .def = { .s = "reflect" }, \
      .help = "what crop_padding and the tta shifts see beyond the border: \"reflect\" (the image mirrored " \
              "without repeating its edge, PyTorch's 'reflect') or \"zeros\" (black: byte 0 before " \
              "normalization, as torchvision's RandomCrop(size, padding) fills)" }, \
    { .key = "flip", .type = RX_STR, .def = { .s = "none" }, \
      .help = "training: \"none\", \"random\" (each sample mirrored with probability 1/2) or \"alternate\" " \
              "(airbench: a random half of the images, a coin per image fixed by the seed, mirrored on odd " \
              "epochs and the other half on even epochs)" }, \
    { .key = "cutout", .type = RX_INT, .def = { .i = 0 }, \
      .help = "training: a square of this side (up to the image's) set to 0 after normalization (the mean colour, " \
              "not black), at a random centre, clipped at the borders (0: none; 8 is DAWNBench ResNet-9's)" }, \
    { .key = "tta", .type = RX_STR, .def = { .s = "none" }, \
      .help = "test-time views of validation and test images, averaged by the host: \"none\", \"flip\" (2: " \
              "as is, mirrored) or \"flip_shift\" (6: those two, then as is shifted one pixel down-right and " \
              "up-left, then mirrored the same two; shifts fill by padding_mode)" }

/* args: the five values of AUGMENT_PARAMS, in order; h, w: the pictures' size. */
int augment_parse(rx_ctx *ctx, const rx_value *args, int h, int w, augment *aug);

/* The sample showing IMAGE in SPLIT as batch VIEW asks for it: augmented from (seed, epoch,
 * image) when training, the fixed test-time view otherwise. */
augment_pick augment_pick_for(const augment *a, uint64_t seed, int64_t epoch, rx_split split, int32_t image, int view);

/* 0 when VIEW is one SPLIT has (0 for training; one of the tta views otherwise), else rx_fail. */
int augment_check_view(rx_ctx *ctx, const augment *a, rx_split split, int view);

/* One sample's (3, h, w) floats from its pick: img (3, h, w) bytes, lut (3, 256). */
void augment_render(const augment *a, const float *lut, const uint8_t *img, augment_pick pk, float *dst);

/* Mirrors an index that fell off a side of n back into it without repeating the edge (PyTorch's
 * 'reflect': -1 -> 1, n -> n - 2); exact for any index in [-(n - 1), 2n - 2]. */
static inline AUGMENT_HD int augment_reflect(int i, int n)
{
    return i < 0 ? -i : i >= n ? 2 * (n - 1) - i : i;
}

/* Output pixel (c, y, x) of pick pk. img: the pick's image (3, h, w); lut: (3, 256), the
 * normalization table; zeros: padding_mode = "zeros". */
static inline AUGMENT_HD float augment_pixel(const uint8_t *img, const float *lut, augment_pick pk, bool zeros,
                                             int h, int w, int c, int y, int x)
{
    if (y >= pk.cut_y0 && y < pk.cut_y1 && x >= pk.cut_x0 && x < pk.cut_x1) return 0.0f;
    int sy = y + pk.dy, sx = (pk.flip ? w - 1 - x : x) + pk.dx;
    bool outside = sy < 0 || sy >= h || sx < 0 || sx >= w;
    if (outside && zeros) return lut[c * AUGMENT_LEVELS]; /* a black pixel: byte 0, normalized */
    return lut[c * AUGMENT_LEVELS + img[(c * h + augment_reflect(sy, h)) * w + augment_reflect(sx, w)]];
}

#endif
