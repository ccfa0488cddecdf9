/* image.c: the RGB canvas, PNG encoding through libpng, and the image grids (see image.h).
 * libpng reports errors by longjmp; that is kept inside image_encode_png. */
#include "image.h"

#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const rgb8 BACKGROUND = { 246, 246, 242 };
static const rgb8 INK = { 30, 30, 30 };         /* titles and class names */
static const rgb8 TRUE_INK = { 85, 85, 85 };    /* the true class under a prediction */
static const rgb8 RIGHT = { 0, 135, 45 };
static const rgb8 WRONG = { 205, 25, 25 };
static const rgb8 PLAIN_FRAME = { 205, 205, 200 };

enum {
    MARGIN = 14,       /* around the picture */
    GAP_X = 16,        /* between cells */
    GAP_Y = 14,
    FRAME = 3,         /* border around each image: green or red under a prediction */
    LABEL_GAP = 4,     /* between an image's frame and its first label line */
    TEXT_SCALE = 2,    /* labels and title: 10 x 18 pixel glyphs */
    TARGET_SIDE = 96,  /* images are zoomed (nearest) to about this many pixels: 32 -> 96 */
    MAX_LABEL = 14,    /* characters of a class name; longer ones are cut with ".." */
    LABEL_LEN = 32,
};

/* ---- canvas and PNG ---- */

int image_init(image *im, int w, int h, rgb8 background, char *err)
{
    im->w = im->h = 0;
    im->px = NULL;
    if (w < 1 || h < 1 || (int64_t)w * h > IMAGE_MAX_PIXELS) {
        snprintf(err, ERR_LEN, "a %d x %d picture is out of range (at most %d pixels)", w, h, IMAGE_MAX_PIXELS);
        return -1;
    }
    im->px = malloc((size_t)w * (size_t)h * 3);
    if (!im->px) {
        snprintf(err, ERR_LEN, "out of memory for a %d x %d picture", w, h);
        return -1;
    }
    im->w = w;
    im->h = h;
    image_fill_rect(im, 0, 0, w, h, background);
    return 0;
}

void image_free(image *im)
{
    free(im->px);
    im->px = NULL;
    im->w = im->h = 0;
}

void image_fill_rect(image *im, int x, int y, int w, int h, rgb8 color)
{
    int x0 = x < 0 ? 0 : x, y0 = y < 0 ? 0 : y;
    int x1 = x + w > im->w ? im->w : x + w, y1 = y + h > im->h ? im->h : y + h;
    for (int yy = y0; yy < y1; yy++) {
        uint8_t *p = im->px + ((size_t)yy * (size_t)im->w + (size_t)x0) * 3;
        for (int xx = x0; xx < x1; xx++, p += 3) {
            p[0] = color.r;
            p[1] = color.g;
            p[2] = color.b;
        }
    }
}

static void png_on_error(png_structp png, png_const_charp msg)
{
    char *err = png_get_error_ptr(png);
    snprintf(err, ERR_LEN, "libpng: %s", msg);
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

static void png_on_write(png_structp png, png_bytep data, size_t len)
{
    sb_append(png_get_io_ptr(png), data, len);
}

static void png_on_flush(png_structp png)
{
    (void)png;
}

int image_encode_png(const image *im, strbuf *out, char *err)
{
    png_bytep *rows = malloc((size_t)im->h * sizeof *rows);
    if (!rows) {
        snprintf(err, ERR_LEN, "out of memory encoding a PNG");
        return -1;
    }
    for (int y = 0; y < im->h; y++) rows[y] = im->px + (size_t)y * (size_t)im->w * 3;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, err, png_on_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        snprintf(err, ERR_LEN, "libpng: cannot create a PNG writer");
        png_destroy_write_struct(&png, NULL);
        free(rows);
        return -1;
    }
    if (setjmp(png_jmpbuf(png))) { /* png_on_error wrote err */
        png_destroy_write_struct(&png, &info);
        free(rows);
        return -1;
    }
    png_set_write_fn(png, out, png_on_write, png_on_flush);
    png_set_IHDR(png, info, (png_uint_32)im->w, (png_uint_32)im->h, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(rows);
    if (out->oom) {
        snprintf(err, ERR_LEN, "out of memory encoding a PNG");
        return -1;
    }
    return 0;
}

int image_write_png(const char *path, const image *im, char *err)
{
    strbuf png = { 0 };
    char why[ERR_LEN];
    if (image_encode_png(im, &png, why) != 0) {
        snprintf(err, ERR_LEN, "%s: %s", path, why);
        sb_free(&png);
        return -1;
    }
    int rc = write_file_atomic(path, png.s, png.len, err);
    sb_free(&png);
    return rc;
}

/* ---- grid layout ---- */

static int max_int(int a, int b)
{
    return a > b ? a : b;
}

/* A class's name as drawn: cut to MAX_LABEL characters, or its number when it has no name. */
static void class_label(char *buf, const char *const *class_names, int nclasses, int32_t k)
{
    const char *name = class_names && k >= 0 && k < nclasses ? class_names[k] : NULL;
    if (!name || !*name) {
        snprintf(buf, LABEL_LEN, "%d", (int)k);
        return;
    }
    if (strlen(name) <= MAX_LABEL) snprintf(buf, LABEL_LEN, "%s", name);
    else snprintf(buf, LABEL_LEN, "%.*s..", MAX_LABEL - 2, name);
}

/* One piece of the title, in its own colour. */
typedef struct title_part {
    const char *text;
    rgb8 color;
} title_part;

enum { TITLE_PARTS = 4 };

/* The title: what the grid shows, and for predictions what the colours mean. */
static void grid_title(title_part parts[TITLE_PARTS], char *head, int n, bool predictions)
{
    if (predictions) {
        snprintf(head, LABEL_LEN, "predicted over true class:  ");
        parts[0] = (title_part){ head, INK };
        parts[1] = (title_part){ "right", RIGHT };
        parts[2] = (title_part){ "  ", INK };
        parts[3] = (title_part){ "wrong", WRONG };
    } else {
        snprintf(head, LABEL_LEN, "a training batch (%d images)", n);
        parts[0] = (title_part){ head, INK };
        for (int i = 1; i < TITLE_PARTS; i++) parts[i] = (title_part){ "", INK };
    }
}

static int title_width(int n, bool predictions)
{
    title_part parts[TITLE_PARTS];
    char head[LABEL_LEN];
    grid_title(parts, head, n, predictions);
    char all[4 * LABEL_LEN];
    snprintf(all, sizeof all, "%s%s%s%s", parts[0].text, parts[1].text, parts[2].text, parts[3].text);
    return font_text_width(all, TEXT_SCALE);
}

/* The widest label line any drawn image gets. */
static int widest_label(int n, const int32_t *labels, const int32_t *predicted, const char *const *class_names,
                        int nclasses)
{
    int widest = 0;
    char label[LABEL_LEN];
    for (int i = 0; i < n; i++) {
        class_label(label, class_names, nclasses, labels[i]);
        widest = max_int(widest, font_text_width(label, TEXT_SCALE));
        if (!predicted) continue;
        class_label(label, class_names, nclasses, predicted[i]);
        widest = max_int(widest, font_text_width(label, TEXT_SCALE));
    }
    return widest;
}

int image_grid_layout(grid_layout *g, int n, int c, int h, int w, const int32_t *labels,
                      const int32_t *predicted, const char *const *class_names, int nclasses, char *err)
{
    memset(g, 0, sizeof *g);
    if (n < 1 || c < 1 || c == 2 || h < 1 || w < 1 || h > 4096 || w > 4096 || !labels) {
        snprintf(err, ERR_LEN, "cannot draw %d images of %d x %d x %d%s (channels: 1 or 3 and more)", n, c, h, w,
                 labels ? "" : " without labels");
        return -1;
    }
    g->n = n < IMAGE_GRID_MAX ? n : IMAGE_GRID_MAX;
    g->zoom = max_int(1, TARGET_SIDE / max_int(h, w));
    g->image_w = w * g->zoom;
    g->image_h = h * g->zoom;
    g->lines = predicted ? 2 : 1;
    g->cols = g->n < IMAGE_GRID_COLS ? g->n : IMAGE_GRID_COLS;
    g->rows = (g->n + g->cols - 1) / g->cols;
    g->cell_w = max_int(g->image_w + 2 * FRAME, widest_label(g->n, labels, predicted, class_names, nclasses));
    g->cell_h = g->image_h + 2 * FRAME + LABEL_GAP + g->lines * FONT_LINE * TEXT_SCALE;
    g->top = MARGIN + FONT_LINE * TEXT_SCALE + MARGIN / 2;
    g->width = max_int(2 * MARGIN + g->cols * g->cell_w + (g->cols - 1) * GAP_X,
                       2 * MARGIN + title_width(g->n, predicted != NULL));
    g->height = g->top + g->rows * g->cell_h + (g->rows - 1) * GAP_Y + MARGIN;
    if ((int64_t)g->width * g->height > IMAGE_MAX_PIXELS) {
        snprintf(err, ERR_LEN, "a grid of %d images of %d x %d would be %d x %d pixels, too large", g->n, h, w,
                 g->width, g->height);
        return -1;
    }
    return 0;
}

grid_cell image_grid_cell(const grid_layout *g, int i)
{
    int x = MARGIN + (i % g->cols) * (g->cell_w + GAP_X);
    int y = g->top + (i / g->cols) * (g->cell_h + GAP_Y);
    return (grid_cell){ .image_x = x + (g->cell_w - g->image_w) / 2,
                        .image_y = y + FRAME,
                        .label_x = x,
                        .label_y = y + 2 * FRAME + g->image_h + LABEL_GAP,
                        .label_w = g->cell_w,
                        .label_h = g->lines * FONT_LINE * TEXT_SCALE };
}

/* ---- drawing ---- */

/* The data plugin normalized each channel with an affine map, (x - mean) / std, that the host
 * does not know. Its inverse is affine too, so stretching each channel's minimum over the batch
 * to 0 and its maximum to 255 undoes it up to the batch's range: hues and contrasts are right,
 * the brightness is that of the batch's darkest and brightest values. */
typedef struct channel_range {
    float lo[3], hi[3];
} channel_range;

static channel_range batch_range(const float *images, int n, int c, int h, int w)
{
    channel_range r = { { 0 }, { 0 } }; /* channels past `shown` stay 0 */
    int shown = c < 3 ? c : 3;
    size_t plane = (size_t)h * (size_t)w;
    for (int k = 0; k < shown; k++) {
        r.lo[k] = INFINITY;
        r.hi[k] = -INFINITY;
        for (int i = 0; i < n; i++) {
            const float *p = images + ((size_t)i * (size_t)c + (size_t)k) * plane;
            for (size_t j = 0; j < plane; j++) {
                if (!isfinite(p[j])) continue;
                if (p[j] < r.lo[k]) r.lo[k] = p[j];
                if (p[j] > r.hi[k]) r.hi[k] = p[j];
            }
        }
    }
    return r;
}

static uint8_t display_value(float v, float lo, float hi)
{
    if (!isfinite(v)) return 0;
    if (!(hi > lo)) return 128; /* a flat channel: no contrast to restore */
    double t = ((double)v - lo) / ((double)hi - lo) * 255.0 + 0.5;
    return (uint8_t)(t < 0 ? 0 : t > 255 ? 255 : t);
}

/* One (c, h, w) image, zoomed, with its top-left corner at (x0, y0); one channel is drawn grey. */
static void draw_image(image *im, const float *img, int c, int h, int w, int zoom, int x0, int y0,
                       const channel_range *r)
{
    size_t plane = (size_t)h * (size_t)w;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t v[3];
            for (int k = 0; k < 3; k++) {
                int ch = c < 3 ? 0 : k;
                v[k] = display_value(img[(size_t)ch * plane + (size_t)y * (size_t)w + (size_t)x], r->lo[ch], r->hi[ch]);
            }
            image_fill_rect(im, x0 + x * zoom, y0 + y * zoom, zoom, zoom, (rgb8){ v[0], v[1], v[2] });
        }
}

static void draw_centered(image *im, int x, int w, int y, const char *text, rgb8 color)
{
    int tx = x + (w - font_text_width(text, TEXT_SCALE)) / 2;
    font_draw_text(im->px, im->w, im->h, tx, y, text, color, TEXT_SCALE);
}

static void draw_title(image *im, int n, bool predictions)
{
    title_part parts[TITLE_PARTS];
    char head[LABEL_LEN];
    grid_title(parts, head, n, predictions);
    int x = MARGIN;
    for (int i = 0; i < TITLE_PARTS; i++)
        x = font_draw_text(im->px, im->w, im->h, x, MARGIN, parts[i].text, parts[i].color, TEXT_SCALE);
}

/* Image i in its cell: framed, with its class, or its predicted class over its true one. */
static void draw_cell(image *im, const grid_layout *g, int i, const float *img, int c, int h, int w,
                      const channel_range *r, const int32_t *labels, const int32_t *predicted,
                      const char *const *class_names, int nclasses)
{
    grid_cell cell = image_grid_cell(g, i);
    bool right = predicted && predicted[i] == labels[i];
    rgb8 frame = !predicted ? PLAIN_FRAME : right ? RIGHT : WRONG;
    image_fill_rect(im, cell.image_x - FRAME, cell.image_y - FRAME, g->image_w + 2 * FRAME,
                    g->image_h + 2 * FRAME, frame);
    draw_image(im, img, c, h, w, g->zoom, cell.image_x, cell.image_y, r);
    char label[LABEL_LEN];
    int line = FONT_LINE * TEXT_SCALE;
    if (predicted) {
        class_label(label, class_names, nclasses, predicted[i]);
        draw_centered(im, cell.label_x, cell.label_w, cell.label_y, label, frame);
    }
    class_label(label, class_names, nclasses, labels[i]);
    draw_centered(im, cell.label_x, cell.label_w, cell.label_y + (predicted ? line : 0), label,
                  predicted ? TRUE_INK : INK);
}

int image_grid_png(const char *path, const float *images, int n, int c, int h, int w,
                   const int32_t *labels, const int32_t *predicted, const char *const *class_names,
                   int nclasses, char *err)
{
    grid_layout g;
    image im;
    char why[ERR_LEN];
    if (!images || image_grid_layout(&g, n, c, h, w, labels, predicted, class_names, nclasses, why) != 0 ||
        image_init(&im, g.width, g.height, BACKGROUND, why) != 0) {
        snprintf(err, ERR_LEN, "%s: %s", path, images ? why : "no images to draw");
        return -1;
    }
    channel_range r = batch_range(images, g.n, c, h, w);
    draw_title(&im, g.n, predicted != NULL);
    size_t size = (size_t)c * (size_t)h * (size_t)w;
    for (int i = 0; i < g.n; i++)
        draw_cell(&im, &g, i, images + (size_t)i * size, c, h, w, &r, labels, predicted, class_names, nclasses);
    int rc = image_write_png(path, &im, err);
    image_free(&im);
    return rc;
}
