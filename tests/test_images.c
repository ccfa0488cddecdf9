/* test_images.c: pictures in. The decoder (plugins/common/picture.c) on PNG and JPEG files this
 * suite writes itself with libpng and libjpeg, its fitting to a size, its refusals (not an image,
 * truncated, too large); the imagefolder data plugin on small trees of such files: layouts,
 * splits, class names, normalization, the cache and its invalidation, and broken trees; and
 * runexp predict on a run trained here on a tiny CIFAR-10 the suite writes, its test images
 * saved as PNG. */
#include "helpers.h"

#include <jpeglib.h>
#include <png.h>
#include <math.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../plugins/common/picture.h"

/* ---- Writing pictures ---- */

/* A w x h PNG of colour type TYPE (PNG_COLOR_TYPE_*) and DEPTH bits from rows of bytes laid out
 * as libpng takes them; palette: PALETTE (n entries) for palette pictures. */
static void write_png(const char *path, int w, int h, int type, int depth, const uint8_t *data, size_t row,
                      const png_color *palette, int n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    assert_non_null(info);
    if (setjmp(png_jmpbuf(png))) fail_msg("libpng failed writing %s", path);
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, type, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (palette) png_set_PLTE(png, info, palette, n);
    png_write_info(png, info);
    for (int y = 0; y < h; y++) png_write_row(png, data + (size_t)y * row);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    fclose(f);
}

/* An RGB PNG of one colour. */
static void write_flat_png(const char *path, int w, int h, uint8_t r, uint8_t g, uint8_t b)
{
    uint8_t *px = malloc((size_t)w * (size_t)h * 3);
    assert_non_null(px);
    for (int i = 0; i < w * h; i++) px[3 * i] = r, px[3 * i + 1] = g, px[3 * i + 2] = b;
    write_png(path, w, h, PNG_COLOR_TYPE_RGB, 8, px, (size_t)w * 3, NULL, 0);
    free(px);
}

/* A JPEG (quality 95) of rgb (h, w, 3), or of grey (h, w) when components is 1. */
static void write_jpeg(const char *path, int w, int h, int components, const uint8_t *px)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    jpeg_stdio_dest(&c, f);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = components;
    c.in_color_space = components == 3 ? JCS_RGB : JCS_GRAYSCALE;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 95, TRUE);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(px + (size_t)c.next_scanline * (size_t)w * (size_t)components);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    fclose(f);
}

static void write_flat_jpeg(const char *path, int w, int h, uint8_t r, uint8_t g, uint8_t b)
{
    uint8_t *px = malloc((size_t)w * (size_t)h * 3);
    assert_non_null(px);
    for (int i = 0; i < w * h; i++) px[3 * i] = r, px[3 * i + 1] = g, px[3 * i + 2] = b;
    write_jpeg(path, w, h, 3, px);
    free(px);
}

static void write_text(const char *path, const char *s)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(s, f);
    fclose(f);
}

/* The first half of PATH's bytes stay; the rest go. */
static void cut_in_half(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(truncate(path, st.st_size / 2), 0);
}

static void mkdirs_in(const char *root, const char *rel)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/%s'", root, rel);
    assert_int_equal(system(cmd), 0);
}

static char *at(const char *root, const char *rel)
{
    static char path[4][1100];
    static int next;
    char *p = path[next++ % 4];
    snprintf(p, sizeof path[0], "%s/%s", root, rel);
    return p;
}

/* ---- The decoder ---- */

/* PATH decoded as the host does it: read by core/files.c, then picture_decode. -1 and the
 * message in ctx->err when it fails. */
static int decode_file(rx_ctx *ctx, const char *path, picture *p)
{
    char *bytes, err[ERR_LEN];
    size_t len;
    if (read_file(path, &bytes, &len, err) != 0) fail_msg("%s", err);
    int rc = picture_decode(ctx, path, (const uint8_t *)bytes, len, p);
    free(bytes);
    return rc;
}

static picture read_ok(const char *path)
{
    rx_ctx ctx = { .threads = 1 };
    picture p;
    if (decode_file(&ctx, path, &p) != 0) fail_msg("%s", ctx.err);
    return p;
}

static void expect_pixel(const picture *p, int x, int y, int r, int g, int b, int tolerance)
{
    const uint8_t *px = p->rgb + ((size_t)y * (size_t)p->w + (size_t)x) * 3;
    if (abs(px[0] - r) > tolerance || abs(px[1] - g) > tolerance || abs(px[2] - b) > tolerance)
        fail_msg("pixel (%d, %d) is (%d, %d, %d), expected (%d, %d, %d) +- %d", x, y, px[0], px[1], px[2], r, g, b,
                 tolerance);
}

static void test_png_kinds(void **state)
{
    char *dir = test_tmpdir();
    const uint8_t rgb[2 * 3] = { 10, 20, 30, 200, 210, 220 };
    write_png(at(dir, "rgb.png"), 2, 1, PNG_COLOR_TYPE_RGB, 8, rgb, 6, NULL, 0);
    picture p = read_ok(at(dir, "rgb.png"));
    assert_int_equal(p.w, 2);
    assert_int_equal(p.h, 1);
    expect_pixel(&p, 0, 0, 10, 20, 30, 0);
    expect_pixel(&p, 1, 0, 200, 210, 220, 0);
    picture_free(&p);

    const uint8_t grey[2] = { 7, 250 };
    write_png(at(dir, "grey.png"), 1, 2, PNG_COLOR_TYPE_GRAY, 8, grey, 1, NULL, 0);
    p = read_ok(at(dir, "grey.png"));
    expect_pixel(&p, 0, 1, 250, 250, 250, 0);
    picture_free(&p);

    const png_color pal[2] = { { 1, 2, 3 }, { 100, 150, 200 } };
    const uint8_t idx[2] = { 1, 0 };
    write_png(at(dir, "pal.png"), 2, 1, PNG_COLOR_TYPE_PALETTE, 8, idx, 2, pal, 2);
    p = read_ok(at(dir, "pal.png"));
    expect_pixel(&p, 0, 0, 100, 150, 200, 0);
    expect_pixel(&p, 1, 0, 1, 2, 3, 0);
    picture_free(&p);

    const uint8_t rgba[4] = { 40, 50, 60, 0 }; /* fully transparent: the colour stays, as PIL's convert("RGB") */
    write_png(at(dir, "rgba.png"), 1, 1, PNG_COLOR_TYPE_RGB_ALPHA, 8, rgba, 4, NULL, 0);
    p = read_ok(at(dir, "rgba.png"));
    expect_pixel(&p, 0, 0, 40, 50, 60, 0);
    picture_free(&p);

    const uint8_t deep[6] = { 0x12, 0x34, 0xab, 0xcd, 0xff, 0x00 }; /* 16 bits, big-endian */
    write_png(at(dir, "deep.png"), 1, 1, PNG_COLOR_TYPE_RGB, 16, deep, 6, NULL, 0);
    p = read_ok(at(dir, "deep.png"));
    expect_pixel(&p, 0, 0, 0x12, 0xab, 0xff, 0);
    picture_free(&p);
    test_rmdir(dir);
}

static void test_jpeg_kinds(void **state)
{
    char *dir = test_tmpdir();
    write_flat_jpeg(at(dir, "flat.jpg"), 16, 8, 200, 40, 90);
    picture p = read_ok(at(dir, "flat.jpg"));
    assert_int_equal(p.w, 16);
    assert_int_equal(p.h, 8);
    expect_pixel(&p, 3, 5, 200, 40, 90, 3);
    picture_free(&p);

    uint8_t grey[8 * 8];
    memset(grey, 123, sizeof grey);
    write_jpeg(at(dir, "grey.jpeg"), 8, 8, 1, grey);
    p = read_ok(at(dir, "grey.jpeg"));
    expect_pixel(&p, 7, 7, 123, 123, 123, 1);
    picture_free(&p);
    test_rmdir(dir);
}

static void expect_refused(const char *path, const char *want)
{
    rx_ctx ctx = { .threads = 1 };
    picture p = { .w = 5 };
    assert_int_equal(decode_file(&ctx, path, &p), -1);
    assert_null(p.rgb);
    if (!strstr(ctx.err, path) || !strstr(ctx.err, want))
        fail_msg("error '%s' does not name %s and say '%s'", ctx.err, path, want);
}

static uint32_t crc32_of(const uint8_t *b, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= b[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
    }
    return ~c;
}

static size_t put_chunk(uint8_t *out, const char *type, const uint8_t *data, uint32_t len)
{
    out[0] = (uint8_t)(len >> 24), out[1] = (uint8_t)(len >> 16), out[2] = (uint8_t)(len >> 8), out[3] = (uint8_t)len;
    memcpy(out + 4, type, 4);
    if (len) memcpy(out + 8, data, len);
    uint32_t crc = crc32_of(out + 4, 4 + len);
    out[8 + len] = (uint8_t)(crc >> 24), out[9 + len] = (uint8_t)(crc >> 16);
    out[10 + len] = (uint8_t)(crc >> 8), out[11 + len] = (uint8_t)crc;
    return 12 + len;
}

/* A well-formed PNG header claiming 9000 x 9000 pixels (81 million), with no pixels behind it. */
static void write_huge_png_header(const char *path)
{
    uint8_t b[128];
    size_t n = 8;
    memcpy(b, "\x89PNG\r\n\x1a\n", 8);
    const uint8_t ihdr[13] = { 0, 0, 0x23, 0x28, 0, 0, 0x23, 0x28, 8, 2, 0, 0, 0 };
    n += put_chunk(b + n, "IHDR", ihdr, 13);
    n += put_chunk(b + n, "IDAT", NULL, 0);
    n += put_chunk(b + n, "IEND", NULL, 0);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    fclose(f);
}

static void test_decoder_refusals(void **state)
{
    char *dir = test_tmpdir();
    write_text(at(dir, "notes.png"), "these are not pixels\n");
    expect_refused(at(dir, "notes.png"), "not an image");
    write_text(at(dir, "empty.jpg"), "");
    expect_refused(at(dir, "empty.jpg"), "empty");
    write_flat_png(at(dir, "cut.png"), 64, 64, 1, 2, 3);
    cut_in_half(at(dir, "cut.png"));
    expect_refused(at(dir, "cut.png"), "truncated");
    uint8_t noise[64 * 64 * 3];
    for (size_t i = 0; i < sizeof noise; i++) noise[i] = (uint8_t)(i * 7919 >> 3);
    write_jpeg(at(dir, "cut.jpg"), 64, 64, 3, noise);
    cut_in_half(at(dir, "cut.jpg"));
    expect_refused(at(dir, "cut.jpg"), "truncated");
    write_huge_png_header(at(dir, "huge.png"));
    expect_refused(at(dir, "huge.png"), "too large");
    test_rmdir(dir);
}

static void fit(const picture *p, picture_fit how, int h, int w, uint8_t *out)
{
    rx_ctx ctx = { .threads = 1 };
    if (picture_fit_to(&ctx, p, how, h, w, out) != 0) fail_msg("%s", ctx.err);
}

/* Same size: the pixels as they are; a flat picture stays flat at any size; shrinking averages
 * (antialiasing), and a crop keeps the centre. */
static void test_fitting(void **state)
{
    uint8_t src[4 * 8 * 3]; /* (4, 8, 3): columns 0-1 red, 2-5 green, 6-7 blue */
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 8; x++) {
            uint8_t *px = src + (y * 8 + x) * 3;
            px[0] = x < 2 ? 255 : 0, px[1] = x >= 2 && x < 6 ? 255 : 0, px[2] = x >= 6 ? 255 : 0;
        }
    picture p = { .w = 8, .h = 4, .rgb = src };
    uint8_t out[3 * 4 * 8];
    fit(&p, PICTURE_RESIZE, 4, 8, out);
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < 32; i++) assert_int_equal(out[c * 32 + i], src[i * 3 + c]);

    fit(&p, PICTURE_CROP, 4, 4, out); /* the centre 4 x 4: all green */
    for (int i = 0; i < 16; i++) {
        assert_int_equal(out[i], 0);
        assert_int_equal(out[16 + i], 255);
        assert_int_equal(out[32 + i], 0);
    }
    /* 8 columns to 2: the triangle filter 4 columns wide each side of a centre at x = 2 (4 for
     * Pillow's support of 1 times the scale, 4), weights 1 - |x + 0.5 - 2| / 4 for x = 0 .. 5:
     * 0.625, 0.875, 0.875, 0.625, 0.375, 0.125 (sum 3.5). Red: 1.5 / 3.5 * 255 = 109.3; green:
     * 2 / 3.5 * 255 = 145.7. The right half mirrors it. */
    fit(&p, PICTURE_RESIZE, 1, 2, out);
    const uint8_t want[6] = { 109, 0, 146, 146, 0, 109 }; /* (3, 1, 2) */
    for (int i = 0; i < 6; i++) assert_int_equal(out[i], want[i]);

    uint8_t flat[3 * 3 * 3], big[3 * 7 * 5];
    memset(flat, 77, sizeof flat);
    picture f = { .w = 3, .h = 3, .rgb = flat };
    fit(&f, PICTURE_CROP, 7, 5, big);
    for (size_t i = 0; i < sizeof big; i++) assert_int_equal(big[i], 77);
}

/* ---- The imagefolder plugin ---- */

static void folder_load(data_rig *ds, const char *root)
{
    data_rig_load(ds, "imagefolder");
    ds->ctx.threads = 2;
    test_arg(ds->desc, ds->args, "path")->s = root;
    *test_arg(ds->desc, ds->args, "size") = (rx_value){ .len = 2, .list = { 4, 6 } };
    /* Pixels in [0, 1] as they are: the values tests compare are v / 255. */
    *test_arg(ds->desc, ds->args, "mean") = (rx_value){ .len = 1, .list = { 0 } };
    *test_arg(ds->desc, ds->args, "std") = (rx_value){ .len = 1, .list = { 1 } };
}

/* The first float of each channel of sample I of SPLIT, times 255 (the colour byte), and its label. */
static void sample_colour(data_rig *ds, rx_split split, int64_t i, int *rgb, int32_t *label)
{
    float x[3 * 4 * 6];
    rx_tensor t = { .data = x, .shape = { .ndim = 4, .d = { 1, 3, 4, 6 } }, .device = RX_CPU };
    assert_int_equal(ds->desc->data.begin_epoch(ds->self, &ds->ctx, split, 0), 0);
    if (ds->desc->data.batch[RX_CPU](ds->self, &ds->ctx, split, i, 0, &t, label) != 0) fail_msg("%s", ds->ctx.err);
    for (int c = 0; c < 3; c++) rgb[c] = (int)lrintf(x[c * 24 + 23] * 255.0f);
}

/* ROOT/{train,val,test}/{cat,dog}: n PNGs per class in train, one JPEG per class in val and test;
 * the colour says the class (cat: red 200, dog: red 40) and the split (green). */
static void write_split_tree(const char *root, int n)
{
    static const char *const splits[] = { "train", "val", "test" };
    for (int s = 0; s < 3; s++)
        for (int k = 0; k < 2; k++) {
            char rel[128];
            snprintf(rel, sizeof rel, "%s/%s", splits[s], k ? "dog" : "cat");
            mkdirs_in(root, rel);
            for (int i = 0; i < (s == 0 ? n : 1); i++) {
                char file[160];
                snprintf(file, sizeof file, "%s/%02d.%s", rel, i, s == 0 ? "png" : "jpg");
                if (s == 0) write_flat_png(at(root, file), 12, 8, k ? 40 : 200, (uint8_t)(s * 100), (uint8_t)i);
                else write_flat_jpeg(at(root, file), 9, 9, k ? 40 : 200, (uint8_t)(s * 100), 128);
            }
        }
    write_text(at(root, "train/cat/readme.txt"), "not a picture, and not an image name: ignored\n");
}

static void test_folder_split_layout(void **state)
{
    char *root = test_tmpdir();
    write_split_tree(root, 3);
    data_rig ds;
    folder_load(&ds, root);
    data_rig_create(&ds, 1);
    assert_int_equal(ds.info.nclasses, 2);
    assert_string_equal(ds.info.class_names[0], "cat");
    assert_string_equal(ds.info.class_names[1], "dog");
    assert_int_equal(ds.info.size[RX_TRAIN], 6);
    assert_int_equal(ds.info.size[RX_VALID], 2);
    assert_int_equal(ds.info.size[RX_TEST], 2);
    assert_int_equal(ds.info.sample.d[1], 4);
    assert_int_equal(ds.info.sample.d[2], 6);
    int rgb[3];
    int32_t label;
    for (int64_t i = 0; i < 6; i++) {
        sample_colour(&ds, RX_TRAIN, i, rgb, &label);
        assert_int_equal(rgb[0], label ? 40 : 200);
        assert_int_equal(rgb[1], 0);
    }
    sample_colour(&ds, RX_TEST, 1, rgb, &label); /* in file order: cat, then dog */
    assert_int_equal(label, 1);
    assert_true(abs(rgb[0] - 40) <= 3 && abs(rgb[1] - 200) <= 3);
    sample_colour(&ds, RX_VALID, 0, rgb, &label);
    assert_int_equal(label, 0);
    assert_true(abs(rgb[1] - 100) <= 3);
    data_rig_close(&ds);
    test_rmdir(root);
}

/* One folder of classes: split by the seed into valid_fraction, test_fraction and the rest. */
static void test_folder_one_folder(void **state)
{
    char *root = test_tmpdir();
    for (int k = 0; k < 3; k++) {
        char rel[16];
        snprintf(rel, sizeof rel, "c%d", k);
        mkdirs_in(root, rel);
        for (int i = 0; i < 10; i++) {
            char file[32];
            snprintf(file, sizeof file, "%s/%d.png", rel, i);
            write_flat_png(at(root, file), 6, 4, (uint8_t)(k * 50), 0, 0);
        }
    }
    data_rig ds;
    folder_load(&ds, root);
    test_arg(ds.desc, ds.args, "valid_fraction")->num = 0.2;
    test_arg(ds.desc, ds.args, "test_fraction")->num = 0.1;
    data_rig_create(&ds, 1);
    assert_int_equal(ds.info.nclasses, 3);
    assert_int_equal(ds.info.size[RX_VALID], 6);
    assert_int_equal(ds.info.size[RX_TEST], 3);
    assert_int_equal(ds.info.size[RX_TRAIN], 21);
    assert_int_equal(ds.info.norm_channels, 3); /* the given mean 0 and std 1, per channel */
    assert_true(ds.info.mean[2] == 0 && ds.info.std[2] == 1);
    int rgb[3];
    int32_t label;
    double red = 0, red_sq = 0; /* over the training split, for the statistics below */
    for (rx_split s = RX_TRAIN; s < RX_NSPLITS; s++)
        for (int64_t i = 0; i < ds.info.size[s]; i++) {
            sample_colour(&ds, s, i, rgb, &label);
            assert_int_equal(rgb[0], label * 50);
            if (s == RX_TRAIN) red += rgb[0], red_sq += (double)rgb[0] * rgb[0];
        }
    data_rig_close(&ds);

    /* The training split's own statistics: every pixel's red is 0, 50 or 100. */
    folder_load(&ds, root);
    test_arg(ds.desc, ds.args, "mean")->len = 0;
    test_arg(ds.desc, ds.args, "std")->len = 0;
    data_rig_create(&ds, 1);
    float x[3 * 4 * 6 * 21];
    int32_t labels[21];
    rx_tensor t = { .data = x, .shape = { .ndim = 4, .d = { 21, 3, 4, 6 } }, .device = RX_CPU };
    assert_int_equal(ds.desc->data.begin_epoch(ds.self, &ds.ctx, RX_TRAIN, 0), 0);
    assert_int_equal(ds.desc->data.batch[RX_CPU](ds.self, &ds.ctx, RX_TRAIN, 0, 0, &t, labels), 0);
    double sum = 0, sq = 0;
    for (int n = 0; n < 21; n++)
        for (int k = 0; k < 24; k++) sum += x[n * 72 + k], sq += (double)x[n * 72 + k] * x[n * 72 + k];
    assert_true(fabs(sum / (21 * 24)) < 1e-4);
    assert_true(fabs(sq / (21 * 24) - 1) < 1e-3);
    /* ... and reported, for export and predict: red's from its bytes, green and blue flat (0). */
    double m = red / 21, sd = sqrt(red_sq / 21 - m * m);
    assert_int_equal(ds.info.norm_channels, 3);
    assert_true(fabs(ds.info.mean[0] - m / 255) < 1e-12 && fabs(ds.info.std[0] - sd / 255) < 1e-12);
    for (int c = 1; c < 3; c++) assert_true(ds.info.mean[c] == 0 && ds.info.std[c] == 1);
    data_rig_close(&ds);
    test_rmdir(root);
}

/* The cache's file, found by its name's start. */
static void cache_file(const char *root, char *out, size_t len)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "ls '%s'/.imagefolder-4x6-resize.cache", root);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    if (!fgets(out, (int)len, p)) fail_msg("no cache file in %s", root);
    pclose(p);
    out[strcspn(out, "\n")] = '\0';
}

/* The cache is read when the files are as they were, and rebuilt when one changed. The test
 * marks the cache (a pixel byte changed) to see which of the two happened. */
static void test_folder_cache(void **state)
{
    char *root = test_tmpdir();
    write_split_tree(root, 2);
    data_rig ds;
    folder_load(&ds, root);
    data_rig_create(&ds, 1);
    data_rig_close(&ds);
    char cache[1100];
    cache_file(root, cache, sizeof cache);
    /* The last byte is the blue of the last test image's last pixel (a JPEG's 128, near enough). */
    FILE *f = fopen(cache, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, -1, SEEK_END), 0);
    fputc(7, f);
    fclose(f);

    int rgb[3];
    int32_t label;
    folder_load(&ds, root);
    data_rig_create(&ds, 1);
    sample_colour(&ds, RX_TEST, 1, rgb, &label);
    assert_int_equal(rgb[2], 7); /* read from the cache */
    data_rig_close(&ds);

    /* A file that changed (size and time): decoded again, the mark gone. */
    write_flat_png(at(root, "train/cat/00.png"), 13, 8, 200, 0, 0);
    folder_load(&ds, root);
    data_rig_create(&ds, 1);
    sample_colour(&ds, RX_TEST, 1, rgb, &label);
    assert_true(abs(rgb[2] - 128) <= 3);
    data_rig_close(&ds);

    /* A torn cache is no cache: rebuilt, not an error. */
    struct stat whole, rebuilt;
    assert_int_equal(stat(cache, &whole), 0);
    cut_in_half(cache);
    folder_load(&ds, root);
    data_rig_create(&ds, 1);
    data_rig_close(&ds);
    assert_int_equal(stat(cache, &rebuilt), 0);
    assert_int_equal(rebuilt.st_size, whole.st_size);

    /* A root that cannot take the cache: the error says where it could go. */
    char *ro = test_tmpdir();
    folder_load(&ds, root);
    char missing[1200];
    snprintf(missing, sizeof missing, "%s/not-there", ro);
    test_arg(ds.desc, ds.args, "cache")->s = missing;
    data_rig_refused(&ds, "cannot write the cache");
    expect_message(ds.ctx.err, "cache = a writable folder");
    data_rig_close(&ds);
    test_rmdir(ro);

    /* Elsewhere: cache = a folder. */
    char *elsewhere = test_tmpdir();
    folder_load(&ds, root);
    test_arg(ds.desc, ds.args, "cache")->s = elsewhere;
    data_rig_create(&ds, 1);
    data_rig_close(&ds);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "ls '%s'/.imagefolder-4x6-resize-*.cache >/dev/null", elsewhere);
    assert_int_equal(system(cmd), 0);
    test_rmdir(elsewhere);
    test_rmdir(root);
}

/* The augmentation and test-time views are cifar10's: here the mirror view of a picture whose
 * left half is red and right half blue, and the parameters' bounds for a 4 x 6 size. */
static void test_folder_views(void **state)
{
    char *root = test_tmpdir();
    for (int k = 0; k < 2; k++) {
        char rel[16];
        snprintf(rel, sizeof rel, "c%d", k);
        mkdirs_in(root, rel);
        for (int i = 0; i < 4; i++) {
            uint8_t px[4 * 6 * 3] = { 0 }; /* (4, 6, 3) */
            for (int y = 0; y < 4; y++)
                for (int x = 0; x < 6; x++) px[(y * 6 + x) * 3 + (x < 3 ? 0 : 2)] = 255;
            char file[32];
            snprintf(file, sizeof file, "%s/%d.png", rel, i);
            write_png(at(root, file), 6, 4, PNG_COLOR_TYPE_RGB, 8, px, 18, NULL, 0);
        }
    }
    data_rig ds;
    folder_load(&ds, root);
    test_arg(ds.desc, ds.args, "tta")->s = "flip";
    test_arg(ds.desc, ds.args, "test_fraction")->num = 0.25;
    data_rig_create(&ds, 1);
    assert_int_equal(ds.info.views, 2);
    float x[2][3 * 4 * 6];
    int32_t labels[2];
    for (int v = 0; v < 2; v++) {
        rx_tensor t = { .data = x[v], .shape = { .ndim = 4, .d = { 1, 3, 4, 6 } }, .device = RX_CPU };
        assert_int_equal(ds.desc->data.begin_epoch(ds.self, &ds.ctx, RX_TEST, 0), 0);
        if (ds.desc->data.batch[RX_CPU](ds.self, &ds.ctx, RX_TEST, 0, v, &t, labels) != 0) fail_msg("%s", ds.ctx.err);
    }
    assert_true(x[0][0] == 1.0f && x[0][48] == 0.0f);     /* red at (0, 0) */
    assert_true(x[1][0] == 0.0f && x[1][48] == 1.0f);     /* mirrored: blue */
    rx_tensor t = { .data = x[0], .shape = { .ndim = 4, .d = { 1, 3, 4, 6 } }, .device = RX_CPU };
    assert_int_equal(ds.desc->data.batch[RX_CPU](ds.self, &ds.ctx, RX_TEST, 0, 2, &t, labels), -1);
    expect_message(ds.ctx.err, "tta = \"flip\" gives views 0 .. 1");
    data_rig_close(&ds);

    folder_load(&ds, root);
    test_arg(ds.desc, ds.args, "crop_padding")->i = 4;
    data_rig_refused(&ds, "crop_padding must be in [0, 3] (pixels of padding around the 4x6 image");
    data_rig_close(&ds);
    test_rmdir(root);
}

static void test_folder_refusals(void **state)
{
    char *root = test_tmpdir();
    data_rig ds;
    folder_load(&ds, at(root, "nowhere"));
    data_rig_refused(&ds, "no such folder");
    data_rig_close(&ds);

    folder_load(&ds, root);
    data_rig_refused(&ds, "no class folders");
    data_rig_close(&ds);

    write_split_tree(root, 2);
    mkdirs_in(root, "train/emu");
    folder_load(&ds, root);
    data_rig_refused(&ds, "train/emu: an empty class folder");
    data_rig_close(&ds);
    write_flat_png(at(root, "train/emu/1.png"), 3, 3, 1, 1, 1);
    folder_load(&ds, root);
    data_rig_refused(&ds, "val lacks class 'emu'");
    data_rig_close(&ds);
    mkdirs_in(root, "val/emu");
    mkdirs_in(root, "test/emu");
    mkdirs_in(root, "test/yak");
    write_flat_png(at(root, "val/emu/1.png"), 3, 3, 1, 1, 1);
    write_flat_png(at(root, "test/emu/1.png"), 3, 3, 1, 1, 1);
    write_flat_png(at(root, "test/yak/1.png"), 3, 3, 1, 1, 1);
    folder_load(&ds, root);
    data_rig_refused(&ds, "test has class 'yak'");
    data_rig_close(&ds);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -r '%s/test/yak'", root);
    assert_int_equal(system(cmd), 0);

    write_text(at(root, "val/dog/broken.jpg"), "\xff\xd8\xff and then nothing a JPEG should hold");
    folder_load(&ds, root);
    data_rig_refused(&ds, "val/dog/broken.jpg: not a readable JPEG");
    data_rig_close(&ds);
    write_text(at(root, "val/dog/broken.jpg"), "text");
    folder_load(&ds, root);
    data_rig_refused(&ds, "val/dog/broken.jpg: not an image");
    data_rig_close(&ds);
    unlink(at(root, "val/dog/broken.jpg"));
    assert_int_equal(mkfifo(at(root, "val/dog/pipe.png"), 0600), 0);
    folder_load(&ds, root); /* not a file: passed over, never opened (it would block) */
    data_rig_create(&ds, 1);
    assert_int_equal(ds.info.size[RX_VALID], 3);
    data_rig_close(&ds);
    unlink(at(root, "val/dog/pipe.png"));

    folder_load(&ds, root);
    test_arg(ds.desc, ds.args, "resize")->s = "stretch";
    data_rig_refused(&ds, "resize must be \"resize\" or \"crop\", got \"stretch\"");
    *test_arg(ds.desc, ds.args, "size") = (rx_value){ .len = 1, .list = { 0 } };
    test_arg(ds.desc, ds.args, "resize")->s = "crop";
    data_rig_refused(&ds, "size[0] is 0");
    *test_arg(ds.desc, ds.args, "size") = (rx_value){ .len = 1, .list = { 8 } };
    test_arg(ds.desc, ds.args, "std")->len = 0;
    data_rig_refused(&ds, "mean and std are given together");
    data_rig_close(&ds);
    test_rmdir(root);
}

/* The run dir/run, whose imagefolder computed its mean and std (from write_split_tree(root, 6)'s
 * flat training pictures: red 200 or 40, green 0, blue 0 .. 5 in each class), exported: its
 * first nodes subtract those and divide by them; and predicted, with nothing more to type. */
static void check_computed_normalization(const char *dir)
{
    char err[4096];
    int rc = shell_in(dir, "\"$RUNEXP\" export run model.onnx", err, sizeof err);
    if (rc != 0) fail_msg("export exited with %d: %s", rc, err);
    rc = shell_in(dir, "OMP_WAIT_POLICY=passive \"$RUNEXP\" predict run pics/test", err, sizeof err);
    if (rc != 0) fail_msg("predict exited with %d: %s", rc, err);
    if (shell_in(dir, "\"$PYTHON\" -c 'import onnx'", err, sizeof err) != 0) {
        printf("    skipped reading model.onnx: %s cannot import onnx (scripts/setup installs it)\n", test_python());
        return;
    }
    rc = shell_in(dir, "\"$PYTHON\" -c \"import onnx, onnx.numpy_helper as h; m = onnx.load('model.onnx'); "
                  "i = {t.name: h.to_array(t) for t in m.graph.initializer}; n = m.graph.node; "
                  "v = [i[n[k].input[1]] for k in (0, 1)]; "
                  "print(n[0].op_type, n[1].op_type, v[0].shape, *['%.9g' % x for a in v for x in a.ravel()])\" >&2",
                  err, sizeof err);
    if (rc != 0) fail_msg("reading model.onnx: %s", err);
    char ops[2][8];
    double got[6];
    if (sscanf(err, "%7s %7s (3, 1, 1) %lf %lf %lf %lf %lf %lf", ops[0], ops[1], &got[0], &got[1], &got[2], &got[3],
               &got[4], &got[5]) != 8)
        fail_msg("model.onnx does not begin with per-channel constants: %s", err);
    assert_string_equal(ops[0], "Sub");
    assert_string_equal(ops[1], "Div");
    const double want[6] = { 120.0 / 255, 0, 2.5 / 255, 80.0 / 255, 1, sqrt(35.0 / 12) / 255 };
    for (int k = 0; k < 6; k++)
        if (fabs(got[k] - want[k]) > 1e-6 * fabs(want[k]) + 1e-9)
            fail_msg("constant %d of the normalization: got %.9g, want %.9g", k, got[k], want[k]);
}

/* configs/imagefolder.lua trains as the README says, on a tree of pictures made here (its last
 * layer cut to the tree's 2 classes, the pictures to 16 x 16); summary.json names the classes.
 * The run, whose mean and std no config holds, exports and predicts. */
static void test_example_config_trains(void **state)
{
    char *dir = test_tmpdir(), line[2048], err[4096];
    char root[1100];
    snprintf(root, sizeof root, "%s/pics", dir);
    write_split_tree(root, 6);
    snprintf(line, sizeof line, "OMP_WAIT_POLICY=passive \"$RUNEXP\" '%s/configs/imagefolder.lua' data.path=pics "
             "data.size=16 data.batch_size=4 model.14.out=2 epochs=1 threads=1 device=cpu out=run", RX_SOURCE_DIR);
    int rc = shell_in(dir, line, err, sizeof err);
    if (rc != 0) fail_msg("runexp exited with %d: %s", rc, err);
    expect_message(err, "imagefolder: pics: mean = {");
    char *summary, e[ERR_LEN];
    size_t len;
    snprintf(line, sizeof line, "%s/run/summary.json", dir);
    if (read_file(line, &summary, &len, e) != 0) fail_msg("%s", e);
    expect_message(summary, "\"dog\"");
    free(summary);
    check_computed_normalization(dir);
    test_rmdir(dir);
}

/* ---- runexp predict ---- */

#define CIFAR_FILE_BYTES 30730000 /* 10,000 records of 3,073 bytes */
#define TINY_TRAIN 240
#define TINY_TEST 100

/* Image k of the tiny CIFAR-10: its label, and (3, 32, 32) bytes a small network can tell apart
 * a little (the label shifts one channel). */
static int tiny_label(int k) { return (k * 7 + k / 3) % 10; }
static void tiny_pixels(int k, uint8_t *px)
{
    rx_rng r = rx_rng_stream(77, (uint64_t)k);
    for (int p = 0; p < 3072; p++) px[p] = (uint8_t)((rx_rng_next(&r) >> 58) + (p / 1024 == tiny_label(k) % 3 ? 25 * tiny_label(k) : 0));
}

/* A file in CIFAR-10's format: its official size (sparse), the first n records written. */
static void write_cifar_file(const char *path, int first_k, int n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint8_t rec[3073];
    for (int i = 0; i < n; i++) {
        rec[0] = (uint8_t)tiny_label(first_k + i);
        tiny_pixels(first_k + i, rec + 1);
        assert_int_equal(fwrite(rec, 1, sizeof rec, f), sizeof rec);
    }
    assert_int_equal(ftruncate(fileno(f), CIFAR_FILE_BYTES), 0);
    fclose(f);
}

/* The test images as PNG files, img-KKKK-label-L.png: what a user would save from the data set. */
static void write_test_pngs(const char *dir)
{
    uint8_t px[3072], rgb[3072];
    for (int i = 0; i < TINY_TEST; i++) {
        int k = TINY_TRAIN + i;
        tiny_pixels(k, px);
        for (int c = 0; c < 3; c++)
            for (int p = 0; p < 1024; p++) rgb[p * 3 + c] = px[c * 1024 + p];
        char file[64];
        snprintf(file, sizeof file, "img-%04d-label-%d.png", i, tiny_label(k));
        write_png(at(dir, file), 32, 32, PNG_COLOR_TYPE_RGB, 8, rgb, 96, NULL, 0);
    }
}

static char *predict_dir; /* a run trained once for the predict tests, in predict_dir/run */

static int train_tiny_run(void **state)
{
    predict_dir = test_tmpdir();
    mkdirs_in(predict_dir, "cifar");
    mkdirs_in(predict_dir, "pngs/sub");
    static const char *const train[] = { "data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                                         "data_batch_4.bin", "data_batch_5.bin" };
    char rel[64];
    for (int i = 0; i < 5; i++) {
        snprintf(rel, sizeof rel, "cifar/%s", train[i]);
        write_cifar_file(at(predict_dir, rel), 0, i == 0 ? TINY_TRAIN : 0);
    }
    write_cifar_file(at(predict_dir, "cifar/test_batch.bin"), TINY_TRAIN, TINY_TEST);
    write_text(at(predict_dir, "cifar/batches.meta.txt"), "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n");
    write_text(at(predict_dir, "tiny.lua"),
               "return { data = { 'cifar10', path = 'cifar', train_limit = 240, test_limit = 100, valid_fraction = 0.1,\n"
               "  batch_size = 16, crop_padding = 2, flip = 'random', tta = 'flip_shift', mean = { 0.4, 0.5, 0.6 },\n"
               "  std = { 0.2, 0.25, 0.3 } },\n"
               "  model = { { 'conv2d', out = 8, kernel = 3, padding = 1 }, { 'relu' }, { 'maxpool', size = 4 },\n"
               "            { 'flatten' }, { 'linear', out = 10 } },\n"
               "  loss = 'cross_entropy', optim = { 'sgd', lr = 0.05, momentum = 0.9 }, epochs = 1, device = 'cpu',\n"
               "  threads = 1 }\n");
    char pngs[1100];
    snprintf(pngs, sizeof pngs, "%s/pngs", predict_dir);
    write_test_pngs(pngs);
    char err[4096];
    int rc = shell_in(predict_dir, "OMP_WAIT_POLICY=passive \"$RUNEXP\" tiny.lua out=run", err, sizeof err);
    if (rc != 0) fail_msg("training the tiny run exited with %d: %s", rc, err);
    return 0;
}

static int remove_tiny_run(void **state)
{
    test_rmdir(predict_dir);
    return 0;
}

/* runexp.predict on the test images saved as PNG gets exactly as many right as runexp.evaluate
 * on the same weights, with the run's six test-time views (mirror and shifts) averaged. */
static void test_predict_matches_evaluate(void **state)
{
    write_text(at(predict_dir, "compare.lua"),
               "local e = runexp.evaluate('run/best.safetensors', dofile('run/config.lua'))\n"
               "local p = runexp.predict('run', { 'pngs' }, { top = 2 })\n"
               "local right = 0\n"
               "for _, r in ipairs(p) do\n"
               "  assert(not r.error, r.error)\n"
               "  assert(#r.top == 2 and r.top[1].class == r.class and r.top[1].probability >= r.top[2].probability)\n"
               "  if r.top[1].index == tonumber(r.file:match('label%-(%d+)')) then right = right + 1 end\n"
               "end\n"
               "io.stderr:write(string.format('evaluate %d of %d, predict %d of %d\\n', e.correct, e.total, right, #p))\n"
               "assert(e.correct == right and e.total == #p and #p == 100, 'predict and evaluate differ')\n");
    char err[4096];
    int rc = shell_in(predict_dir, "OMP_WAIT_POLICY=passive \"$RUNEXP\" compare.lua", err, sizeof err);
    if (rc != 0) fail_msg("exited with %d: %s", rc, err);
    expect_message(err, "of 100, predict");
}

static int count_char(const char *s, char c)
{
    int n = 0;
    for (; *s; s++) n += *s == c;
    return n;
}

/* The command line: one JSON line per file, in sorted order, folders walked; a broken file named
 * and the others classified, with exit status 1; a checkpoint with its config.lua beside it. */
static void test_predict_command_line(void **state)
{
    char err[4096], line[1024];
    write_flat_jpeg(at(predict_dir, "pngs/sub/zz.jpg"), 50, 40, 200, 10, 10);
    write_text(at(predict_dir, "notes.png"), "not a picture");
    snprintf(line, sizeof line, "OMP_WAIT_POLICY=passive \"$RUNEXP\" predict run pngs notes.png --json --top=1 "
             "> out.json");
    int rc = shell_in(predict_dir, line, err, sizeof err);
    assert_int_equal(rc, 1);
    expect_message(err, "notes.png: not an image");
    expect_message(err, "1 of 102 files could not be classified");
    char *json;
    size_t len;
    if (read_file(at(predict_dir, "out.json"), &json, &len, line) != 0) fail_msg("%s", line);
    assert_int_equal(count_char(json, '\n'), 102);
    const char *first = "{\"file\": \"pngs/img-0000-label-";
    assert_int_equal(strncmp(json, first, strlen(first)), 0);
    expect_message(json, "{\"file\": \"pngs/sub/zz.jpg\", \"top\": [{\"class\": \"");
    expect_message(json, "{\"file\": \"notes.png\", \"error\": \"notes.png: not an image");
    free(json);

    rc = shell_in(predict_dir, "\"$RUNEXP\" predict run/best.safetensors pngs/sub/zz.jpg --resize=crop > out.txt", err,
                  sizeof err);
    assert_int_equal(rc, 0);
    if (read_file(at(predict_dir, "out.txt"), &json, &len, line) != 0) fail_msg("%s", line);
    expect_message(json, "pngs/sub/zz.jpg: ");
    assert_int_equal(count_char(json, ','), 2); /* three classes, the default */
    free(json);

    mkdirs_in(predict_dir, "lone");
    rc = shell_in(predict_dir, "cp run/best.safetensors lone/ && \"$RUNEXP\" predict lone/best.safetensors pngs", err,
                  sizeof err);
    assert_int_equal(rc, 1);
    expect_message(err, "predict needs the run's config.lua beside the checkpoint");
    rc = shell_in(predict_dir, "\"$RUNEXP\" predict run --top=0 pngs", err, sizeof err);
    assert_int_equal(rc, 2);
    expect_message(err, "--top=K with K from 1 to 1000");
    rc = shell_in(predict_dir, "\"$RUNEXP\" predict run empty-nothing", err, sizeof err);
    assert_int_equal(rc, 1);
    expect_message(err, "empty-nothing: cannot open");
}

/* A data set that reports no normalization (synthetic: generated floats, never pixels) gives
 * predict nothing to prepare pictures with: refused, naming the data set. */
static void test_predict_needs_normalization(void **state)
{
    char *dir = test_tmpdir(), err[4096];
    write_text(at(dir, "syn.lua"),
               "return { data = { 'synthetic', size = 8, train = 32, valid = 8, test = 8, batch_size = 8 },\n"
               "  model = { { 'flatten' }, { 'linear', out = 10 } }, loss = 'cross_entropy',\n"
               "  optim = { 'sgd', lr = 0.01 }, epochs = 1, device = 'cpu', threads = 1, out = 'run' }\n");
    write_flat_png(at(dir, "a.png"), 8, 8, 10, 20, 30);
    int rc = shell_in(dir, "\"$RUNEXP\" syn.lua", err, sizeof err);
    if (rc != 0) fail_msg("training exited with %d: %s", rc, err);
    rc = shell_in(dir, "\"$RUNEXP\" predict run a.png", err, sizeof err);
    assert_int_equal(rc, 1);
    expect_message(err, "data (synthetic): the data plugin does not report the normalization its samples had");
    test_rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_png_kinds),
        cmocka_unit_test(test_jpeg_kinds),
        cmocka_unit_test(test_decoder_refusals),
        cmocka_unit_test(test_fitting),
        cmocka_unit_test(test_folder_split_layout),
        cmocka_unit_test(test_folder_one_folder),
        cmocka_unit_test(test_folder_cache),
        cmocka_unit_test(test_folder_views),
        cmocka_unit_test(test_folder_refusals),
        cmocka_unit_test(test_example_config_trains),
        cmocka_unit_test(test_predict_needs_normalization),
    };
    const struct CMUnitTest predict_tests[] = {
        cmocka_unit_test(test_predict_matches_evaluate),
        cmocka_unit_test(test_predict_command_line),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    return failed + cmocka_run_group_tests(predict_tests, train_tiny_run, remove_tiny_run);
}
