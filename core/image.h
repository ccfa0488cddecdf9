/* image.h: pictures for the run folder. An RGB canvas, PNG encoding through libpng (written to
 * memory, then atomically to disk, so a PNG is never torn), and the two grids the tutorial shows:
 * a training batch with its class names (train_batch.png), and test images with the predicted
 * class over the true one, green when right and red when wrong (test_predictions.png). */
#ifndef RUNEXP_IMAGE_H
#define RUNEXP_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "files.h"
#include "font.h"

#define IMAGE_MAX_PIXELS (64 * 1024 * 1024) /* a larger canvas is refused */
#define IMAGE_GRID_MAX 64                   /* a grid shows at most this many images */
#define IMAGE_GRID_COLS 8                   /* ... and at most this many per row */

/* w x h pixels, 3 bytes each (red, green, blue), rows top to bottom. */
typedef struct image {
    int w, h;
    uint8_t *px;
} image;

/* Allocates a w x h canvas filled with background; on failure err holds one line. */
int image_init(image *im, int w, int h, rgb8 background, char *err);
void image_free(image *im);
/* Fills a rectangle, clipped to the canvas. */
void image_fill_rect(image *im, int x, int y, int w, int h, rgb8 color);
/* Encodes the canvas as an 8-bit RGB PNG into out (appended; the caller frees it with sb_free). */
int image_encode_png(const image *im, strbuf *out, char *err);
/* Encodes and writes the canvas to path atomically. */
int image_write_png(const char *path, const image *im, char *err);

/* Where things lie in a grid picture: images in cells, row by row, under a title band. */
typedef struct grid_layout {
    int n;                /* images drawn: min(n, IMAGE_GRID_MAX) */
    int zoom;             /* each image pixel becomes zoom x zoom picture pixels */
    int image_w, image_h; /* one zoomed image */
    int lines;            /* label lines under each image: 1 (class) or 2 (predicted, true) */
    int cols, rows;
    int cell_w, cell_h;   /* one cell: framed image and its labels */
    int top;              /* height of the title band */
    int width, height;    /* the whole picture */
} grid_layout;

/* One cell: the zoomed image's top-left corner, and the box its label lines are drawn in. */
typedef struct grid_cell {
    int image_x, image_y;
    int label_x, label_y, label_w, label_h;
} grid_cell;

/* The layout image_grid_png uses for these arguments (predicted NULL: a training grid).
 * Returns -1 with err set when the arguments cannot make a picture. */
int image_grid_layout(grid_layout *g, int n, int c, int h, int w, const int32_t *labels,
                      const int32_t *predicted, const char *const *class_names, int nclasses, char *err);
grid_cell image_grid_cell(const grid_layout *g, int i);

/* Writes a grid of the first min(n, IMAGE_GRID_MAX) images of a batch to path as a PNG.
 * images: (n, c, h, w) floats as the data plugin hands them out (normalized); c is 1 (drawn
 * grey) or 3 (RGB; more channels: the first three). Under each image: its class name
 * (predicted NULL), or the predicted class, green when right and red when wrong, over the true
 * class. class_names has nclasses entries; NULL, or a label outside it, draws the number.
 * On failure err holds one line and path is left as it was. */
int image_grid_png(const char *path, const float *images, int n, int c, int h, int w,
                   const int32_t *labels, const int32_t *predicted, const char *const *class_names,
                   int nclasses, char *err);

#endif
