/* picture.c: PNG and JPEG files into 8-bit RGB, and their fitting to a size (see picture.h).
 *
 * The decoders read from memory: a file's kind comes from its first bytes, and a truncated file
 * is told apart from a damaged one because each decoder knows where the bytes ran out. Both libraries report errors by longjmp; that stays
 * inside png_decode and jpeg_decode, which free what they made before they return. */
#include "picture.h"

#include <jpeglib.h>
#include <jerror.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const picture_fit_names[3] = { "resize", "crop", NULL };

static const uint8_t PNG_MAGIC[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };
static const uint8_t JPEG_MAGIC[3] = { 0xff, 0xd8, 0xff };

void picture_free(picture *p)
{
    free(p->rgb);
    *p = (picture){ 0 };
}

/* A decoded size the caller can hold: 1 .. PICTURE_MAX_PIXELS pixels. */
static int check_size(rx_ctx *ctx, const char *path, const char *kind, uint64_t w, uint64_t h)
{
    if (w < 1 || h < 1) return rx_fail(ctx, "%s: a %s of %llu x %llu pixels is empty", path, kind,
                                       (unsigned long long)w, (unsigned long long)h);
    if (w > PICTURE_MAX_PIXELS || h > PICTURE_MAX_PIXELS || w * h > (uint64_t)PICTURE_MAX_PIXELS)
        return rx_fail(ctx, "%s: too large: a %s of %llu x %llu pixels, at most %lld pixels are decoded", path, kind,
                       (unsigned long long)w, (unsigned long long)h, PICTURE_MAX_PIXELS);
    return 0;
}

static int alloc_rgb(rx_ctx *ctx, const char *path, picture *p, int w, int h)
{
    p->w = w;
    p->h = h;
    p->rgb = malloc((size_t)w * (size_t)h * 3);
    if (!p->rgb) return rx_fail(ctx, "%s: out of memory for %d x %d pixels", path, w, h);
    return 0;
}

/* ---- PNG ---- */

typedef struct png_source {
    const uint8_t *bytes;
    size_t len, pos;
    bool truncated;
    jmp_buf jump;
    char msg[200];
} png_source;

static void png_on_error(png_structp png, png_const_charp msg)
{
    png_source *s = png_get_error_ptr(png);
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    longjmp(s->jump, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) { (void)png, (void)msg; }

static void png_read_memory(png_structp png, png_bytep out, size_t n)
{
    png_source *s = png_get_io_ptr(png);
    if (n > s->len - s->pos) {
        s->truncated = true;
        png_error(png, "the file ends early");
    }
    memcpy(out, s->bytes + s->pos, n);
    s->pos += n;
}

/* Any PNG to 8-bit RGB: palette and grey expanded, transparency dropped, 16 bits to 8. */
static void png_to_rgb8(png_structp png, png_infop info)
{
    png_set_strip_16(png);
    png_set_packing(png);
    png_set_palette_to_rgb(png);
    png_set_expand_gray_1_2_4_to_8(png);
    png_set_gray_to_rgb(png);
    png_set_strip_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
}

/* volatile: rows is set after setjmp and freed after a longjmp back to it. */
static int png_decode(rx_ctx *ctx, const char *path, const uint8_t *bytes, size_t len, picture *p)
{
    png_source s = { .bytes = bytes, .len = len };
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &s, png_on_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    png_bytep *volatile rows = NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return rx_fail(ctx, "%s: out of memory for a PNG reader", path);
    }
    if (setjmp(s.jump)) {
        free(rows);
        png_destroy_read_struct(&png, &info, NULL);
        picture_free(p);
        if (s.truncated) return rx_fail(ctx, "%s: truncated: the PNG ends after %zu bytes", path, len);
        return rx_fail(ctx, "%s: not a readable PNG: %s", path, s.msg);
    }
    png_set_read_fn(png, &s, png_read_memory);
    png_set_user_limits(png, PICTURE_MAX_PIXELS, PICTURE_MAX_PIXELS);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    int rc = check_size(ctx, path, "PNG", w, h);
    if (rc == 0) {
        png_to_rgb8(png, info);
        rc = alloc_rgb(ctx, path, p, (int)w, (int)h);
    }
    if (rc == 0 && !(rows = malloc(h * sizeof *rows))) rc = rx_fail(ctx, "%s: out of memory", path);
    if (rc == 0) {
        for (png_uint_32 y = 0; y < h; y++) rows[y] = p->rgb + (size_t)y * w * 3;
        png_read_image(png, rows);
    }
    free(rows);
    png_destroy_read_struct(&png, &info, NULL);
    if (rc != 0) picture_free(p);
    return rc;
}

/* ---- JPEG ---- */

typedef struct jpeg_failure {
    struct jpeg_error_mgr mgr;
    jmp_buf jump;
    bool truncated; /* libjpeg warns of a premature end and fills the rest with grey */
} jpeg_failure;

static void jpeg_on_error(j_common_ptr cinfo) { longjmp(((jpeg_failure *)cinfo->err)->jump, 1); }

/* Warnings pass (PIL passes them too: extra bytes, a bad Huffman code), except a premature end:
 * a truncated file is an error, not a picture half grey. */
static void jpeg_on_message(j_common_ptr cinfo, int level)
{
    jpeg_failure *f = (jpeg_failure *)cinfo->err;
    if (level < 0 && f->mgr.msg_code == JWRN_JPEG_EOF) f->truncated = true;
}

static int jpeg_decode(rx_ctx *ctx, const char *path, const uint8_t *bytes, size_t len, picture *p)
{
    struct jpeg_decompress_struct cinfo;
    jpeg_failure f;
    cinfo.err = jpeg_std_error(&f.mgr);
    f.mgr.error_exit = jpeg_on_error;
    f.mgr.emit_message = jpeg_on_message;
    f.truncated = false;
    if (setjmp(f.jump)) {
        char msg[JMSG_LENGTH_MAX];
        f.mgr.format_message((j_common_ptr)&cinfo, msg);
        jpeg_destroy_decompress(&cinfo);
        picture_free(p);
        return rx_fail(ctx, "%s: not a readable JPEG: %s", path, msg);
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, bytes, (unsigned long)len);
    jpeg_read_header(&cinfo, TRUE);
    int rc = check_size(ctx, path, "JPEG", cinfo.image_width, cinfo.image_height);
    if (rc == 0) {
        cinfo.out_color_space = JCS_RGB; /* grey too: libjpeg-turbo converts it */
        jpeg_start_decompress(&cinfo);
        rc = alloc_rgb(ctx, path, p, (int)cinfo.output_width, (int)cinfo.output_height);
    }
    while (rc == 0 && cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = p->rgb + (size_t)cinfo.output_scanline * (size_t)p->w * 3;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    if (rc == 0 && !f.truncated) jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    if (rc == 0 && f.truncated) rc = rx_fail(ctx, "%s: truncated: the JPEG ends after %zu bytes", path, len);
    if (rc != 0) picture_free(p);
    return rc;
}

int picture_decode(rx_ctx *ctx, const char *path, const uint8_t *bytes, size_t len, picture *p)
{
    *p = (picture){ 0 };
    if (len >= sizeof PNG_MAGIC && memcmp(bytes, PNG_MAGIC, sizeof PNG_MAGIC) == 0)
        return png_decode(ctx, path, bytes, len, p);
    if (len >= sizeof JPEG_MAGIC && memcmp(bytes, JPEG_MAGIC, sizeof JPEG_MAGIC) == 0)
        return jpeg_decode(ctx, path, bytes, len, p);
    if (len == 0) return rx_fail(ctx, "%s: not an image: the file is empty", path);
    return rx_fail(ctx, "%s: not an image: neither a PNG nor a JPEG by its first bytes", path);
}

/* ---- Fitting ---- */

/* The taps of a one-dimensional resampling: output i takes in[first[i] + k] * w[i * taps + k]
 * for k < count[i]. */
typedef struct taps {
    int taps;
    int *first, *count;
    float *w;
} taps;

static void taps_free(taps *t)
{
    free(t->first);
    free(t->count);
    free(t->w);
}

/* out samples from the source interval [start, start + span) of an axis of in samples, with the
 * triangle filter widened by the scale when shrinking (Pillow's precompute_coeffs). */
static int taps_make(taps *t, int in, double start, double span, int out)
{
    double scale = span / out, filter_scale = scale > 1 ? scale : 1, support = filter_scale;
    t->taps = (int)ceil(support) * 2 + 1;
    t->first = malloc((size_t)out * sizeof(int));
    t->count = malloc((size_t)out * sizeof(int));
    t->w = calloc((size_t)out * (size_t)t->taps, sizeof(float));
    if (!t->first || !t->count || !t->w) return -1;
    for (int i = 0; i < out; i++) {
        double centre = start + (i + 0.5) * scale;
        int lo = (int)floor(centre - support + 0.5), hi = (int)floor(centre + support + 0.5);
        lo = lo < 0 ? 0 : lo;
        hi = hi > in ? in : hi;
        double sum = 0;
        float *w = t->w + (size_t)i * (size_t)t->taps;
        int n = hi - lo > t->taps ? t->taps : hi - lo;
        for (int k = 0; k < n; k++) {
            double d = fabs((lo + k - centre + 0.5) / filter_scale);
            w[k] = (float)(d < 1 ? 1 - d : 0);
            sum += w[k];
        }
        for (int k = 0; k < n && sum > 0; k++) w[k] = (float)(w[k] / sum);
        t->first[i] = lo;
        t->count[i] = n;
    }
    return 0;
}

static uint8_t to_byte(float v) { return (uint8_t)(v <= 0 ? 0 : v >= 255 ? 255 : lrintf(v)); }

/* Rows of p resampled across (tw taps) into mid (p->h, w, 3), then down (th taps) into out
 * (3, h, w). */
static void resample(const picture *p, const taps *tw, const taps *th, int h, int w, float *mid, uint8_t *out)
{
    for (int y = 0; y < p->h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) {
                const float *k = tw->w + (size_t)x * (size_t)tw->taps;
                const uint8_t *src = p->rgb + ((size_t)y * (size_t)p->w + (size_t)tw->first[x]) * 3 + c;
                float acc = 0;
                for (int i = 0; i < tw->count[x]; i++) acc += k[i] * src[3 * i];
                mid[((size_t)y * (size_t)w + (size_t)x) * 3 + (size_t)c] = acc;
            }
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) {
                const float *k = th->w + (size_t)y * (size_t)th->taps;
                const float *src = mid + ((size_t)th->first[y] * (size_t)w + (size_t)x) * 3 + c;
                float acc = 0;
                for (int i = 0; i < th->count[y]; i++) acc += k[i] * src[(size_t)i * (size_t)w * 3];
                out[((size_t)c * (size_t)h + (size_t)y) * (size_t)w + (size_t)x] = to_byte(acc);
            }
}

int picture_fit_to(rx_ctx *ctx, const picture *p, picture_fit fit, int h, int w, uint8_t *out)
{
    /* The source box: all of it, or, for a crop, the centre part of the target's aspect. */
    double bw = p->w, bh = p->h;
    if (fit == PICTURE_CROP) {
        double s = fmax((double)w / p->w, (double)h / p->h);
        bw = w / s;
        bh = h / s;
    }
    taps tw = { 0 }, th = { 0 };
    float *mid = malloc((size_t)p->h * (size_t)w * 3 * sizeof(float));
    int rc = 0;
    if (!mid || taps_make(&tw, p->w, (p->w - bw) / 2, bw, w) != 0 || taps_make(&th, p->h, (p->h - bh) / 2, bh, h) != 0)
        rc = rx_fail(ctx, "out of memory fitting a %d x %d picture to %d x %d", p->w, p->h, w, h);
    else
        resample(p, &tw, &th, h, w, mid, out);
    taps_free(&tw);
    taps_free(&th);
    free(mid);
    return rc;
}
