/* test_report.c: what a run shows of itself. The bitmap font's glyphs, the image grids decoded
 * back with libpng (size, un-normalized pixels, green and red labels), the run and sweep reports
 * (well formed, every section, pictures embedded, text escaped, failed runs marked), and the
 * progress bar (silent off a terminal, one redrawn line on one). */
#define _XOPEN_SOURCE 700 /* posix_openpt */
#include "helpers.h"

#include <ctype.h>
#include <fcntl.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "files.h"
#include "font.h"
#include "image.h"
#include "progress.h"
#include "report.h"

static const char *path_in(const char *dir, const char *name)
{
    static char path[4][600];
    static int next;
    char *p = path[next++ % 4];
    snprintf(p, sizeof path[0], "%s/%s", dir, name);
    return p;
}

/* ---- font ---- */

enum { CELL_W = FONT_ADVANCE, CELL_H = FONT_LINE };

/* The glyph of ch as on/off pixels; returns how many are on. */
static int render_glyph(char ch, uint8_t bitmap[CELL_W * CELL_H * 3])
{
    char text[2] = { ch, '\0' };
    memset(bitmap, 0, CELL_W * CELL_H * 3);
    font_draw_text(bitmap, CELL_W, CELL_H, 0, 0, text, (rgb8){ 255, 255, 255 }, 1);
    int on = 0;
    for (int i = 0; i < CELL_W * CELL_H * 3; i += 3) on += bitmap[i] != 0;
    return on;
}

static void test_font_glyphs_are_distinct(void **state)
{
    static uint8_t glyphs[127][CELL_W * CELL_H * 3];
    assert_int_equal(render_glyph(' ', glyphs[' ']), 0);
    for (int c = 33; c < 127; c++) {
        if (render_glyph((char)c, glyphs[c]) == 0) fail_msg("glyph '%c' is empty", c);
        for (int d = 33; d < c; d++)
            if (memcmp(glyphs[c], glyphs[d], sizeof glyphs[c]) == 0) fail_msg("'%c' and '%c' look the same", c, d);
    }
    uint8_t other[CELL_W * CELL_H * 3];
    render_glyph('\t', other); /* outside 32..126: drawn as '?' */
    assert_memory_equal(other, glyphs['?'], sizeof other);
    assert_int_equal(font_text_width("", 2), 0);
    assert_int_equal(font_text_width("a", 1), FONT_GLYPH_W);
    assert_int_equal(font_text_width("abc", 2), 2 * (2 * FONT_ADVANCE + FONT_GLYPH_W));
}

static void test_font_clips_at_the_edges(void **state)
{
    uint8_t px[8 * 8 * 3] = { 0 };
    int x = font_draw_text(px, 8, 8, -20, -5, "W@W@ clipped", (rgb8){ 1, 2, 3 }, 3);
    assert_int_equal(x, -20 + 12 * FONT_ADVANCE * 3);
    font_draw_text(px, 8, 8, 6, 6, "M", (rgb8){ 1, 2, 3 }, 4); /* mostly outside: no write past the end */
    assert_int_equal(px[(7 * 8 + 7) * 3], 1);
}

/* ---- image grids ---- */

typedef struct decoded {
    int w, h;
    uint8_t *px;
} decoded;

static decoded decode_png(const char *path)
{
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&im, path)) fail_msg("%s: %s", path, im.message);
    im.format = PNG_FORMAT_RGB;
    decoded d = { (int)im.width, (int)im.height, malloc(PNG_IMAGE_SIZE(im)) };
    assert_non_null(d.px);
    if (!png_image_finish_read(&im, NULL, d.px, 0, NULL)) fail_msg("%s: %s", path, im.message);
    return d;
}

static const uint8_t *pixel(const decoded *d, int x, int y)
{
    return d->px + ((size_t)y * (size_t)d->w + (size_t)x) * 3;
}

typedef struct tally {
    int green, red, dark;
} tally;

/* The label colours found in a cell's label box. */
static tally count_label_pixels(const decoded *d, const grid_cell *c)
{
    tally t = { 0 };
    for (int y = c->label_y; y < c->label_y + c->label_h; y++)
        for (int x = c->label_x; x < c->label_x + c->label_w; x++) {
            const uint8_t *p = pixel(d, x, y);
            t.green += p[1] > p[0] + 60 && p[1] > p[2] + 40;
            t.red += p[0] > p[1] + 60 && p[0] > p[2] + 60;
            t.dark += p[0] < 100 && p[1] < 100 && p[2] < 100;
        }
    return t;
}

enum { N = 10, C = 3, H = 32, W = 32 };
static const char *const NAMES[N] = { "airplane", "automobile", "bird", "cat", "deer",
                                      "dog", "frog", "horse", "ship", "truck" };

/* Normalized-looking images: values in [-1, 1], with image 0's first pixel the batch minimum
 * of every channel and its second pixel the maximum. */
static float *make_images(int n, int c, int h, int w)
{
    float *img = malloc(sizeof(float) * (size_t)(n * c * h * w));
    assert_non_null(img);
    for (int i = 0; i < n * c * h * w; i++) img[i] = 0.9f * sinf(0.37f * (float)i);
    for (int k = 0; k < c; k++) {
        img[k * h * w] = -1.0f;
        img[k * h * w + 1] = 1.0f;
    }
    return img;
}

static void test_training_grid(void **state)
{
    char *dir = test_tmpdir(), err[ERR_LEN];
    const char *path = path_in(dir, "train_batch.png");
    float *img = make_images(N, C, H, W);
    int32_t labels[N];
    for (int i = 0; i < N; i++) labels[i] = i;
    assert_int_equal(image_grid_png(path, img, N, C, H, W, labels, NULL, NAMES, N, err), 0);

    grid_layout g;
    assert_int_equal(image_grid_layout(&g, N, C, H, W, labels, NULL, NAMES, N, err), 0);
    assert_int_equal(g.zoom, 3);
    assert_int_equal(g.cols, 8);
    assert_int_equal(g.rows, 2);
    decoded d = decode_png(path);
    assert_int_equal(d.w, g.width);
    assert_int_equal(d.h, g.height);
    assert_true(d.w >= 8 * 96 && d.h >= 2 * 96);
    grid_cell c0 = image_grid_cell(&g, 0);
    const uint8_t *lo = pixel(&d, c0.image_x, c0.image_y), *hi = pixel(&d, c0.image_x + 3, c0.image_y + 2);
    for (int k = 0; k < 3; k++) { /* per-channel min-max: -1 -> 0, 1 -> 255, zoomed 3x */
        assert_int_equal(lo[k], 0);
        assert_int_equal(hi[k], 255);
    }
    for (int i = 0; i < N; i++) {
        grid_cell c = image_grid_cell(&g, i);
        tally t = count_label_pixels(&d, &c);
        if (t.dark == 0) fail_msg("no class name under image %d", i);
        assert_int_equal(t.green + t.red, 0);
    }
    free(d.px);
    free(img);
    unlink(path);
    rmdir(dir);
    free(dir);
}

static void test_prediction_grid_colours(void **state)
{
    char *dir = test_tmpdir(), err[ERR_LEN];
    const char *path = path_in(dir, "test_predictions.png");
    float *img = make_images(N, C, H, W);
    int32_t labels[N], predicted[N];
    for (int i = 0; i < N; i++) {
        labels[i] = i;
        predicted[i] = i % 2 ? (i + 1) % N : i; /* odd images are wrong */
    }
    assert_int_equal(image_grid_png(path, img, N, C, H, W, labels, predicted, NAMES, N, err), 0);
    grid_layout g;
    assert_int_equal(image_grid_layout(&g, N, C, H, W, labels, predicted, NAMES, N, err), 0);
    assert_int_equal(g.lines, 2);
    decoded d = decode_png(path);
    assert_int_equal(d.w, g.width);
    assert_int_equal(d.h, g.height);
    for (int i = 0; i < N; i++) {
        grid_cell c = image_grid_cell(&g, i);
        tally t = count_label_pixels(&d, &c);
        bool right = i % 2 == 0;
        if (right ? t.green == 0 || t.red > 0 : t.red == 0 || t.green > 0)
            fail_msg("%s prediction %d: %d green, %d red pixels", right ? "right" : "wrong", i, t.green, t.red);
        if (t.dark == 0) fail_msg("no true class under image %d", i);
    }
    free(d.px);
    free(img);
    unlink(path);
    rmdir(dir);
    free(dir);
}

static void test_grey_grid_and_refusals(void **state)
{
    char *dir = test_tmpdir(), err[ERR_LEN];
    const char *path = path_in(dir, "grey.png");
    float *img = make_images(100, 1, 8, 8);
    int32_t labels[100];
    for (int i = 0; i < 100; i++) labels[i] = i % 12; /* past the names: drawn as numbers */
    assert_int_equal(image_grid_png(path, img, 100, 1, 8, 8, labels, NULL, NAMES, N, err), 0);
    grid_layout g;
    assert_int_equal(image_grid_layout(&g, 100, 1, 8, 8, labels, NULL, NAMES, N, err), 0);
    assert_int_equal(g.n, IMAGE_GRID_MAX);
    assert_int_equal(g.zoom, 12);
    decoded d = decode_png(path);
    assert_int_equal(d.w, g.width);
    assert_int_equal(d.h, g.height);
    grid_cell c = image_grid_cell(&g, 5);
    const uint8_t *p = pixel(&d, c.image_x + 40, c.image_y + 40);
    assert_true(p[0] == p[1] && p[1] == p[2]); /* one channel: grey */
    free(d.px);
    unlink(path);

    assert_int_equal(image_grid_png(path, img, 4, 2, 8, 8, labels, NULL, NAMES, N, err), -1);
    assert_non_null(strstr(err, path));
    assert_int_equal(image_grid_png(path, img, 0, 1, 8, 8, labels, NULL, NAMES, N, err), -1);
    assert_int_equal(access(path, F_OK), -1); /* nothing written */
    free(img);
    rmdir(dir);
    free(dir);
}

/* ---- HTML ---- */

static const char *const KNOWN_TAGS[] = { "html", "head", "meta", "title", "style", "body", "main", "h1", "h2",
                                          "nav", "a", "section", "p", "div", "span", "svg", "text", "line",
                                          "polyline", "circle", "rect", "table", "tr", "th", "td", "pre", "img",
                                          NULL };
static const char *const VOID_TAGS[] = { "meta", "img", NULL };

static bool in_list(const char *const *list, const char *name)
{
    for (int i = 0; list[i]; i++)
        if (strcmp(list[i], name) == 0) return true;
    return false;
}

/* Every '&' starts an entity such as &lt; or &#39;. */
static void assert_entities(const char *text, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (text[i] != '&') continue;
        size_t j = i + 1;
        while (j < len && j - i < 10 && (isalnum((unsigned char)text[j]) || text[j] == '#')) j++;
        if (j >= len || text[j] != ';' || j == i + 1) fail_msg("bare '&' at: %.30s", text + i);
    }
}

/* A tag-balance check: tags are known, nest and close in order, void ones are not closed,
 * text and attributes hold no raw '<' and only entities after '&'. */
static void assert_well_formed(const char *html)
{
    char stack[64][16];
    int depth = 0;
    const char *p = html;
    if (strncmp(p, "<!DOCTYPE html>", 15) != 0) fail_msg("no doctype");
    p += 15;
    while (*p) {
        const char *lt = strchr(p, '<');
        if (!lt) lt = p + strlen(p);
        assert_entities(p, (size_t)(lt - p));
        if (!*lt) break;
        if (strncmp(lt, "<!--", 4) == 0) {
            const char *end = strstr(lt, "-->");
            assert_non_null(end);
            p = end + 3;
            continue;
        }
        const char *gt = strchr(lt, '>');
        if (!gt) fail_msg("unclosed tag at: %.40s", lt);
        bool closing = lt[1] == '/';
        char name[16] = "";
        int n = 0;
        for (const char *c = lt + 1 + closing; isalnum((unsigned char)*c) && n < 15; c++) name[n++] = *c;
        name[n] = '\0';
        if (!in_list(KNOWN_TAGS, name)) fail_msg("unknown tag <%s> at: %.40s", name, lt);
        if (memchr(lt + 1, '<', (size_t)(gt - lt - 1))) fail_msg("'<' inside a tag: %.60s", lt);
        assert_entities(lt, (size_t)(gt - lt));
        bool self_closed = gt[-1] == '/';
        if (closing) {
            if (depth == 0 || strcmp(stack[depth - 1], name) != 0)
                fail_msg("</%s> closes <%s>", name, depth ? stack[depth - 1] : "nothing");
            depth--;
        } else if (!self_closed && !in_list(VOID_TAGS, name)) {
            assert_true(depth < 64);
            snprintf(stack[depth++], sizeof stack[0], "%s", name);
        }
        p = gt + 1;
        if (!closing && strcmp(name, "style") == 0) { /* CSS is not markup */
            const char *end = strstr(p, "</style>");
            assert_non_null(end);
            p = end;
        }
    }
    if (depth != 0) fail_msg("<%s> is never closed", stack[depth - 1]);
}

/* The whole file, NUL-terminated; the caller frees it. */
static void read_text(const char *path, char **text)
{
    char err[ERR_LEN];
    size_t len;
    if (read_file(path, text, &len, err) != 0) fail_msg("%s", err);
}

static int base64_value(char c)
{
    const char *digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *at = c ? strchr(digits, c) : NULL;
    return at ? (int)(at - digits) : -1;
}

/* Decodes base64 up to the first character that is not a digit ('=' or '"'). */
static size_t base64_decode(const char *s, unsigned char *out, size_t cap)
{
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (; base64_value(*s) >= 0; s++) {
        acc = acc << 6 | (uint32_t)base64_value(*s);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n < cap) out[n] = (unsigned char)(acc >> bits);
            n++;
        }
    }
    return n;
}

static void assert_has(const char *html, const char *what)
{
    if (!strstr(html, what)) fail_msg("the page lacks %s", what);
}

static void assert_no_nan_in_svg(const char *html)
{
    static const char *const BAD[] = { "=\"nan", "=\"-nan", ",nan", ",-nan", "=\"inf", ",inf", NULL };
    for (int i = 0; BAD[i]; i++)
        if (strstr(html, BAD[i])) fail_msg("a coordinate is not finite: %s", BAD[i]);
}

static void fill_history(epoch_record *h, int n)
{
    for (int i = 0; i < n; i++)
        h[i] = (epoch_record){ .epoch = i + 1, .seconds = 2, .train_loss = 2.0 / (i + 1),
                               .valid_loss = 2.2 / (i + 1) + 0.1 * i, .valid_accuracy = 0.3 + 0.1 * i, .lr = 0.01,
                               .train_seconds = 1.5, .images_per_second = 1000 };
}

static eval_result three_classes(int64_t *confusion)
{
    eval_result t = { .loss = 0.9, .nclasses = 3 };
    const char *names[3] = { "cat", "dog <&>", "bird" };
    for (int r = 0; r < 3; r++) {
        snprintf(t.class_names[r], CLASS_NAME_LEN, "%s", names[r]);
        for (int c = 0; c < 3; c++) {
            confusion[r * 3 + c] = r == c ? 8 : 1;
            t.class_total[r] += confusion[r * 3 + c];
        }
        t.class_correct[r] = confusion[r * 4];
        t.correct += t.class_correct[r];
        t.total += t.class_total[r];
    }
    t.accuracy = (double)t.correct / (double)t.total;
    return t;
}

static void test_run_report(void **state)
{
    char *dir = test_tmpdir(), err[ERR_LEN];
    const char *png = path_in(dir, "train_batch.png"), *html_path = path_in(dir, "report.html");
    float *img = make_images(4, 3, 8, 8);
    int32_t labels[4] = { 0, 1, 2, 0 };
    assert_int_equal(image_grid_png(png, img, 4, 3, 8, 8, labels, NULL, NAMES, N, err), 0);
    epoch_record h[5];
    fill_history(h, 5);
    h[3].valid_loss = NAN; /* diverged epochs are left out of the curves */
    h[2].train_loss = INFINITY;
    h[1].train_loss = 1e30;
    int64_t confusion[9];
    eval_result test = three_classes(confusion);
    report_input in = { .title = "runs/a<b>", .config_text = "return { x = \"<script>alert('&')</script>\" }\n",
                        .history = h, .nhistory = 5, .epochs = 8, .device = "cpu", .test = &test,
                        .confusion = confusion, .train_png = "train_batch.png",
                        .predictions_png = "test_predictions.png", .timings = { 1.5, 1000, 12.5 } };
    assert_int_equal(report_write_html(html_path, &in, err), 0);

    char *html;
    read_text(html_path, &html);
    assert_well_formed(html);
    static const char *const SECTIONS[] = { "summary", "loss", "accuracy", "per-class", "confusion",
                                            "train-batch", "predictions", "timings", "config", NULL };
    for (int i = 0; SECTIONS[i]; i++) {
        char id[64];
        snprintf(id, sizeof id, "<section id=\"%s\">", SECTIONS[i]);
        assert_has(html, id);
    }
    assert_has(html, "&lt;script&gt;alert(&#39;&amp;&#39;)&lt;/script&gt;"); /* the config, escaped */
    assert_null(strstr(html, "<script"));
    assert_has(html, "<title>runs/a&lt;b&gt;</title>");
    assert_has(html, "dog &lt;&amp;&gt;");
    assert_null(strstr(html, "src=\"http"));  /* nothing fetched */
    assert_null(strstr(html, "http-equiv=\"refresh\"")); /* finished: no reload */
    assert_has(html, "<polyline");
    assert_has(html, "<rect");
    assert_no_nan_in_svg(html);

    /* The training grid is embedded byte for byte; the missing picture gets a note. */
    const char *uri = strstr(html, "src=\"data:image/png;base64,");
    assert_non_null(uri);
    char *file;
    size_t len;
    assert_int_equal(read_file(png, &file, &len, err), 0);
    unsigned char *back = malloc(len + 16);
    assert_non_null(back);
    assert_int_equal(base64_decode(uri + strlen("src=\"data:image/png;base64,"), back, len + 16), len);
    assert_memory_equal(back, file, len);
    free(back);
    free(file);
    const char *pred = strstr(html, "<section id=\"predictions\">");
    assert_non_null(pred);
    assert_non_null(strstr(pred, "Not written yet"));
    assert_true(strstr(pred, "Not written yet") < strstr(pred, "</section>"));
    free(html);

    /* While running: no test yet, notes in its sections, and the page reloads itself. */
    in.test = NULL;
    in.nhistory = 2;
    assert_int_equal(report_write_html(html_path, &in, err), 0);
    read_text(html_path, &html);
    assert_well_formed(html);
    assert_has(html, "http-equiv=\"refresh\"");
    assert_has(html, "running: 2 of 8 epochs");
    assert_has(html, "<section id=\"confusion\">");
    free(html);

    /* Before the first epoch: no charts, still a whole page. */
    in.nhistory = 0;
    in.config_text = NULL;
    assert_int_equal(report_write_html(html_path, &in, err), 0);
    read_text(html_path, &html);
    assert_well_formed(html);
    assert_null(strstr(html, "<polyline"));
    free(html);

    assert_int_equal(report_write_html("/nonexistent-folder/report.html", &in, err), -1);
    assert_non_null(strstr(err, "/nonexistent-folder/report.html"));
    free(img);
    unlink(png);
    unlink(html_path);
    rmdir(dir);
    free(dir);
}

/* Whether python3 reads FILE as `what` ("utf-8": decodes; "json": parses). */
static void assert_python_reads(const char *file, const char *what)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "python3 -c 'import json, sys; b = open(sys.argv[1], \"rb\").read(); %s' '%s'",
             strcmp(what, "json") == 0 ? "json.loads(b)" : "b.decode(\"utf-8\")", file);
    if (system(cmd) != 0) fail_msg("%s is not valid %s", file, what);
}

/* Text from files (class names, a run folder's name) that is not UTF-8: every byte that is not
 * part of a well-formed character becomes U+FFFD in JSON and HTML alike; good characters stay. */
static void test_text_not_utf8(void **state)
{
    static const char *const bad[] = {
        "ca\xfft",          /* a byte that starts nothing */
        "\xc3(",            /* a lead byte without its continuation */
        "\xc0\xaf",         /* an overlong '/' */
        "\xed\xa0\x80",     /* a surrogate */
        "ctl\x01\x7f",      /* control characters */
        "caf\xc3\xa9 \xf0\x9f\x90\x88", /* well formed: kept as they are */
        "cut \xe2\x82",     /* a character cut short at the end */
    };
    enum { NBAD = sizeof bad / sizeof *bad };
    strbuf b = { 0 };
    sb_json_string(&b, "a\xff\x01\\b");
    assert_string_equal(b.s, "\"a" UTF8_REPLACEMENT "\\u0001\\\\b\"");
    sb_free(&b);
    assert_int_equal(utf8_char_len("\xf4\x90\x80\x80"), 0); /* past U+10FFFF */
    assert_int_equal(utf8_char_len("\xf0\x9f\x90\x88"), 4);

    char *dir = test_tmpdir(), err[ERR_LEN];
    int64_t confusion[NBAD * NBAD] = { 0 };
    eval_result test = { .loss = 0.5, .accuracy = 0.5, .nclasses = NBAD, .correct = 1, .total = 2 };
    for (int k = 0; k < NBAD; k++) {
        snprintf(test.class_names[k], CLASS_NAME_LEN, "%s", bad[k]);
        confusion[k * NBAD + k] = test.class_total[k] = test.class_correct[k] = 1;
    }
    epoch_record h[2];
    fill_history(h, 2);
    report_input in = { .title = "runs/\xff\xfe", .config_text = "-- \xff\n", .history = h, .nhistory = 2, .epochs = 2,
                        .test = &test, .confusion = confusion };
    const char *html_path = path_in(dir, "report.html");
    assert_int_equal(report_write_html(html_path, &in, err), 0);
    assert_python_reads(html_path, "utf-8");
    char *html;
    read_text(html_path, &html);
    assert_has(html, "caf\xc3\xa9 \xf0\x9f\x90\x88");
    assert_has(html, "ca" UTF8_REPLACEMENT "t");
    assert_has(html, "runs/" UTF8_REPLACEMENT UTF8_REPLACEMENT);
    free(html);

    run_summary sum = { .test = test, .epochs = 2 };
    snprintf(sum.dir, sizeof sum.dir, "runs/\xff\x01");
    summary_json(&b, &sum);
    assert_false(b.oom);
    const char *json_path = path_in(dir, "summary.json");
    assert_int_equal(write_file_atomic(json_path, b.s, b.len, err), 0);
    assert_python_reads(json_path, "json");
    sb_free(&b);
    unlink(html_path);
    unlink(json_path);
    rmdir(dir);
    free(dir);
}

static void test_sweep_report(void **state)
{
    char *dir = test_tmpdir(), err[ERR_LEN];
    const char *path = path_in(dir, "sweep.html");
    epoch_record h[3][4];
    for (int i = 0; i < 3; i++) fill_history(h[i], 4);
    char run_dir[3][700];
    for (int i = 0; i < 3; i++) snprintf(run_dir[i], sizeof run_dir[i], "%s/lr-%d", dir, i);
    for (int i = 0; i < 2; i++) { /* the failed run made no folder */
        char report[800];
        snprintf(report, sizeof report, "%s/report.html", run_dir[i]);
        assert_int_equal(make_dirs(run_dir[i], err), 0);
        assert_int_equal(write_file_atomic(report, "", 0, err), 0);
    }
    sweep_run runs[3] = {
        { "lr 0.1", h[0], 4, 0.61, 4, 0.55, run_dir[0], NULL },
        { "lr 0.01", h[1], 4, 0.52, 3, 0.58, run_dir[1], "" },
        { "lr 10", NULL, 0, 0, 0, 0, run_dir[2], "loss is nan <after> 3 batches" },
    };
    sweep_input in = { "learning rate & more", runs, 3 };
    assert_int_equal(report_write_sweep_html(path, &in, err), 0);
    char *html;
    read_text(path, &html);
    assert_well_formed(html);
    assert_has(html, "<section id=\"curves\">");
    assert_has(html, "<section id=\"accuracy\">");
    assert_has(html, "<section id=\"results\">");
    assert_has(html, "<title>learning rate &amp; more</title>");
    for (int i = 0; i < 3; i++) assert_has(html, runs[i].label);
    assert_has(html, "href=\"lr-0/report.html\"");        /* run folders linked relative to the report */
    assert_null(strstr(html, "lr-2/report.html"));         /* no link to a report that is not there */
    assert_has(html, "stroke=\"#1f77b4\" stroke-width=\"2\" points=");   /* one curve per finished run */
    assert_has(html, "stroke=\"#ff7f0e\" stroke-width=\"2\" points=");
    assert_has(html, "<tr class=\"best\"><td class=\"l\">"
                     "<span class=\"swatch\" style=\"background:#ff7f0e\"></span>lr 0.01");
    assert_has(html, "<tr class=\"failed\">");
    assert_has(html, "failed: loss is nan &lt;after&gt; 3 batches");
    assert_has(html, "1 failed");
    assert_has(html, "<td>58.00%</td>");
    free(html);
    test_rmdir(dir);
}

/* ---- progress ---- */

static void test_progress_is_silent_off_a_terminal(void **state)
{
    FILE *f = tmpfile();
    assert_non_null(f);
    progress p;
    progress_begin(&p, f, 100, 1, 3);
    for (int i = 1; i <= 100; i++) progress_update(&p, i, 20 * i, 1.0 / i);
    progress_end(&p);
    fflush(f);
    assert_int_equal(ftell(f), 0);
    fclose(f);
}

/* Everything the pseudo-terminal's far side has received so far. */
static size_t read_terminal(int master, char *buf, size_t cap)
{
    size_t n = 0;
    for (;;) {
        ssize_t r = read(master, buf + n, cap - 1 - n);
        if (r <= 0) break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    return n;
}

static void test_progress_on_a_terminal(void **state)
{
    int master = posix_openpt(O_RDWR | O_NOCTTY);
    assert_true(master >= 0);
    assert_int_equal(grantpt(master), 0);
    assert_int_equal(unlockpt(master), 0);
    int fd = open(ptsname(master), O_RDWR | O_NOCTTY);
    assert_true(fd >= 0);
    struct winsize ws = { .ws_row = 24, .ws_col = 120 }; /* room for the whole bar beside both times */
    assert_int_equal(ioctl(fd, TIOCSWINSZ, &ws), 0);
    FILE *tty = fdopen(fd, "w");
    assert_non_null(tty);
    fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK);

    progress p;
    progress_begin(&p, tty, 2000, 2, 30);
    progress_update(&p, 1234, 24680, 1.23456);
    progress_update(&p, 1235, 24700, 1.2); /* within a tenth of a second: not drawn */
    progress_update(&p, 2000, 40000, 1.1); /* the last batch is always drawn */
    progress_end(&p);
    char out[4096];
    read_terminal(master, out, sizeof out);
    assert_has(out, "\repoch 2/30 [");
    assert_has(out, "] 1234/2000  ");
    assert_has(out, " img/s  loss 1.2346  ETA ");
    assert_has(out, ", run "); /* the time left for the whole run, after the epoch's */
    assert_null(strstr(out, "1235/2000"));
    assert_has(out, "2000/2000");
    assert_has(out, "##############################] 2000/2000"); /* a full bar at the end */
    size_t len = strlen(out);
    assert_true(len >= 4 && strcmp(out + len - 4, "\r\033[K") == 0); /* the line is cleared */
    for (char *line = strchr(out, '\r'); line; line = strchr(line + 1, '\r')) {
        char *end = strchr(line + 1, '\033');
        if (end && end - line - 1 > 119) fail_msg("a %d-column line on a 120-column terminal", (int)(end - line - 1));
    }
    progress_update(&p, 2000, 40000, 1.0); /* ended: nothing more */
    assert_int_equal(read_terminal(master, out, sizeof out), 0);
    fclose(tty);
    close(master);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_font_glyphs_are_distinct),
        cmocka_unit_test(test_font_clips_at_the_edges),
        cmocka_unit_test(test_training_grid),
        cmocka_unit_test(test_prediction_grid_colours),
        cmocka_unit_test(test_grey_grid_and_refusals),
        cmocka_unit_test(test_run_report),
        cmocka_unit_test(test_sweep_report),
        cmocka_unit_test(test_text_not_utf8),
        cmocka_unit_test(test_progress_is_silent_off_a_terminal),
        cmocka_unit_test(test_progress_on_a_terminal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
