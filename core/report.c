/* report.c: the run report and the sweep report as self-contained HTML (see report.h).
 * Everything is drawn here as inline SVG: line charts of the metrics per epoch, per-class
 * accuracy bars and the confusion matrix as a heat map; the image grids are read from the run
 * folder and embedded as base64 data: URIs. The page is built in a strbuf and written atomically. */
#include "report.h"

#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "files.h"

#define RELOAD_SECONDS 30      /* a running run's report reloads itself this often */
#define MAX_BAR_CLASSES 100    /* more classes get no per-class chart (summary.json has them) */
#define MAX_HEATMAP_CLASSES 40 /* ... and no confusion heat map */

/* Colours of the charts' lines, one per run of a sweep (Tableau 10); after ten, lines are dashed. */
static const char *const PALETTE[] = { "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                       "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf" };
#define NPALETTE ((int)(sizeof PALETTE / sizeof PALETTE[0]))

static const char STYLE[] =
    "body{margin:0;background:#f6f6f2;color:#222;"
    "font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',Arial,sans-serif}\n"
    "main{max-width:1160px;margin:0 auto;padding:12px 24px 48px}\n"
    "h1{font-size:24px;margin:12px 0 4px;word-break:break-all}\n"
    "h2{font-size:18px;margin:32px 0 10px;padding-bottom:4px;border-bottom:1px solid #ddd}\n"
    "nav{margin:8px 0 4px}nav a{margin-right:14px;color:#1f5fa8;text-decoration:none}\n"
    ".status{color:#555;margin:4px 0 12px}\n"
    ".cards{display:flex;flex-wrap:wrap;gap:12px}\n"
    ".card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 16px;min-width:130px}\n"
    ".card .k{font-size:12px;color:#666}.card .v{font-size:20px;font-weight:600}\n"
    "svg{background:#fff;border:1px solid #ddd;border-radius:6px;max-width:100%;height:auto;display:block;"
    "margin-bottom:12px}\n"
    "svg text{font-size:12px;fill:#333}svg .title{font-size:14px;font-weight:600}\n"
    ".note{color:#777;font-style:italic}.error{color:#b00000}\n"
    "img.grid{image-rendering:pixelated;max-width:100%;border:1px solid #ddd;border-radius:6px}\n"
    "pre{background:#fff;border:1px solid #ddd;border-radius:6px;padding:12px;overflow:auto;font-size:13px}\n"
    "table{border-collapse:collapse;background:#fff;margin-bottom:12px}\n"
    "td,th{border:1px solid #ddd;padding:4px 10px;text-align:right}th{background:#efefe8}\n"
    "td.l,th.l{text-align:left}tr.best td{background:#e8f5e8}tr.failed td{color:#b00000}\n"
    ".swatch{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:6px;"
    "vertical-align:-1px}\n";

/* ---- text ---- */

/* Appends s with &, <, >, " and ' escaped: safe as element text and as an attribute value.
 * Bytes that are not UTF-8 (a run folder's name, a class name from a data file) and control
 * characters other than tab and newlines become U+FFFD, so the page stays valid UTF-8 and HTML. */
static void html_text(strbuf *b, const char *s)
{
    for (const char *c = s ? s : ""; *c;) {
        size_t n = utf8_char_len(c);
        switch (*c) {
        case '&': sb_printf(b, "&amp;"); break;
        case '<': sb_printf(b, "&lt;"); break;
        case '>': sb_printf(b, "&gt;"); break;
        case '"': sb_printf(b, "&quot;"); break;
        case '\'': sb_printf(b, "&#39;"); break;
        default:
            if (n == 0 || *c == 0x7f || ((unsigned char)*c < 0x20 && !strchr("\t\n\r", *c)))
                sb_append(b, UTF8_REPLACEMENT, 3);
            else
                sb_append(b, c, n);
        }
        c += n ? n : 1;
    }
}

/* Appends s escaped, cut to max characters with ".." when longer (SVG text does not wrap). */
static void short_text(strbuf *b, const char *s, int max)
{
    char cut[128];
    if (max > (int)sizeof cut - 3) max = (int)sizeof cut - 3;
    int keep = (int)strlen(s);
    if (keep > max) {
        keep = max - 2;
        while (keep > 0 && ((unsigned char)s[keep] & 0xc0) == 0x80) keep--; /* not inside a UTF-8 character */
    }
    snprintf(cut, sizeof cut, "%.*s%s", keep, s, s[keep] ? ".." : "");
    html_text(b, cut);
}

/* Appends a file path as a URL path: unreserved characters and '/' as they are, the rest %XX.
 * The result is ASCII whatever the path holds, and a byte that is not UTF-8 stays that byte
 * (%FF), so the link still reaches the folder. */
static void url_path(strbuf *b, const char *s)
{
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
            strchr("/-._~", *c))
            sb_append(b, c, 1);
        else
            sb_printf(b, "%%%02X", *c);
    }
}

static void base64(strbuf *b, const unsigned char *data, size_t len)
{
    static const char DIGITS[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16;
        if (i + 1 < len) v |= (uint32_t)data[i + 1] << 8;
        if (i + 2 < len) v |= data[i + 2];
        char out[4] = { DIGITS[v >> 18 & 63], DIGITS[v >> 12 & 63], i + 1 < len ? DIGITS[v >> 6 & 63] : '=',
                        i + 2 < len ? DIGITS[v & 63] : '=' };
        sb_append(b, out, 4);
    }
}

/* Appends a number, or a dash when it is not known (zero) or not finite. */
static void known_number(strbuf *b, const char *fmt, double v)
{
    if (v == 0 || !isfinite(v)) sb_printf(b, "&#8211;");
    else sb_printf(b, fmt, v);
}

/* The folder a file is in ("." for a bare name). */
static void dir_of(char *dir, const char *path)
{
    snprintf(dir, PATH_MAX, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir) dir[1] = '\0';
    else if (slash) *slash = '\0';
    else snprintf(dir, PATH_MAX, ".");
}

/* name resolved against dir, unless it is absolute. */
static void resolve(char *out, const char *dir, const char *name)
{
    if (name[0] == '/' || strcmp(dir, ".") == 0) snprintf(out, PATH_MAX, "%s", name);
    else snprintf(out, PATH_MAX, "%s/%s", dir, name);
}

/* ---- page frame ---- */

static void page_begin(strbuf *b, const char *title, bool reload)
{
    sb_printf(b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\" />\n");
    sb_printf(b, "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\" />\n");
    if (reload) sb_printf(b, "<meta http-equiv=\"refresh\" content=\"%d\" />\n", RELOAD_SECONDS);
    sb_printf(b, "<title>");
    html_text(b, title);
    sb_printf(b, "</title>\n<style>\n%s</style>\n</head>\n<body>\n<main>\n<h1>", STYLE);
    html_text(b, title);
    sb_printf(b, "</h1>\n");
}

static void page_end(strbuf *b)
{
    sb_printf(b, "</main>\n</body>\n</html>\n");
}

/* Links to the sections: ids and their headings, NULL-terminated. */
static void page_nav(strbuf *b, const char *const *ids, const char *const *names)
{
    sb_printf(b, "<nav>");
    for (int i = 0; ids[i]; i++) sb_printf(b, "<a href=\"#%s\">%s</a>", ids[i], names[i]);
    sb_printf(b, "</nav>\n");
}

static void section_begin(strbuf *b, const char *id, const char *heading)
{
    sb_printf(b, "<section id=\"%s\">\n<h2>%s</h2>\n", id, heading);
}

static void section_end(strbuf *b)
{
    sb_printf(b, "</section>\n");
}

static void note(strbuf *b, const char *text)
{
    sb_printf(b, "<p class=\"note\">");
    html_text(b, text);
    sb_printf(b, "</p>\n");
}

static void card(strbuf *b, const char *key, const char *value)
{
    sb_printf(b, "<div class=\"card\"><div class=\"k\">%s</div><div class=\"v\">", key);
    html_text(b, value);
    sb_printf(b, "</div></div>\n");
}

/* ---- axes ---- */

/* A round step (1, 2 or 5 times a power of ten) giving about `target` intervals over span. */
static double nice_step(double span, int target)
{
    double raw = span / target, mag = pow(10, floor(log10(raw))), f = raw / mag;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag;
}

typedef struct axis {
    double lo, hi, step;
} axis;

/* An axis covering [lo, hi] that starts and ends on ticks. */
static axis value_axis(double lo, double hi, int target)
{
    if (!(hi > lo)) {
        double pad = fabs(lo) > 0 ? fabs(lo) * 0.1 : 1;
        lo -= pad;
        hi += pad;
    }
    double step = nice_step(hi - lo, target);
    return (axis){ floor(lo / step) * step, ceil(hi / step) * step, step };
}

/* Decimals that tell ticks `step` apart. */
static int tick_decimals(double step)
{
    int d = (int)-floor(log10(step) + 1e-9);
    return d < 0 ? 0 : d > 6 ? 6 : d;
}

/* ---- line charts of metrics per epoch ---- */

typedef enum metric { TRAIN_LOSS, VALID_LOSS, VALID_ACCURACY } metric;

typedef struct series {
    const char *name, *color;
    bool dashed;
    const epoch_record *h;
    int n;
    metric m;
} series;

typedef struct line_chart {
    const char *title, *y_label;
    bool percent;              /* VALID_ACCURACY drawn as 0..100 */
    int64_t epochs;            /* the x axis spans 1..max(epochs, last epoch) */
    int best;                  /* index of a series whose lowest point is ringed, or -1 */
    const series *s;
    int ns;
} line_chart;

enum { CHART_W = 800, CHART_H = 340, PLOT_L = 70, PLOT_R = 240, PLOT_T = 36, PLOT_B = 50 };

static double metric_value(const epoch_record *e, metric m)
{
    return m == TRAIN_LOSS ? e->train_loss : m == VALID_LOSS ? e->valid_loss : 100 * e->valid_accuracy;
}

/* A value a chart can show: a diverged loss (nan, inf, 1e30) is left out rather than squashing
 * every other point flat or breaking the coordinates. */
static bool drawable(double v)
{
    return isfinite(v) && fabs(v) < 1e9;
}

/* The plot's mapping from data to SVG coordinates. */
typedef struct frame {
    axis x, y;
    double left, top, w, h;
} frame;

static double frame_x(const frame *f, double x)
{
    return f->left + (x - f->x.lo) / (f->x.hi - f->x.lo) * f->w;
}

static double frame_y(const frame *f, double y)
{
    return f->top + f->h - (y - f->y.lo) / (f->y.hi - f->y.lo) * f->h;
}

/* Tall enough for the legend: one line per series beside the plot. */
static int chart_height(int nseries)
{
    int legend = PLOT_T + 8 + 22 * nseries + 10;
    return legend > CHART_H ? legend : CHART_H;
}

static frame chart_frame(const line_chart *c)
{
    double lo = INFINITY, hi = -INFINITY;
    int64_t last = c->epochs;
    for (int k = 0; k < c->ns; k++)
        for (int i = 0; i < c->s[k].n; i++) {
            double v = metric_value(&c->s[k].h[i], c->s[k].m);
            if (c->s[k].h[i].epoch > last) last = c->s[k].h[i].epoch;
            if (!drawable(v)) continue;
            if (v < lo) lo = v;
            if (v > hi) hi = v;
        }
    if (lo > hi) { /* nothing finite to draw */
        lo = 0;
        hi = c->percent ? 100 : 1;
    }
    frame f = { .left = PLOT_L, .top = PLOT_T, .w = CHART_W - PLOT_L - PLOT_R,
                .h = chart_height(c->ns) - PLOT_T - PLOT_B };
    f.y = value_axis(lo, hi, 5);
    if (c->percent && f.y.lo < 0) f.y.lo = 0;
    if (c->percent && f.y.hi > 100) f.y.hi = 100;
    double x_hi = last > 2 ? (double)last : 2;
    f.x = (axis){ 1, x_hi, ceil(nice_step(x_hi - 1, 8)) };
    return f;
}

static void chart_y_axis(strbuf *b, const frame *f, const char *label)
{
    int dec = tick_decimals(f->y.step);
    for (double v = f->y.lo; v <= f->y.hi + f->y.step * 1e-6; v += f->y.step) {
        double y = frame_y(f, v);
        sb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e4e4\" />", f->left, y,
                  f->left + f->w, y);
        sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.*f</text>\n", f->left - 8, y + 4, dec, v);
    }
    double mid = f->top + f->h / 2;
    sb_printf(b, "<text x=\"16\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 16 %.1f)\">%s</text>\n",
              mid, mid, label);
}

static void chart_x_tick(strbuf *b, const frame *f, double v)
{
    double x = frame_x(f, v), base = f->top + f->h;
    sb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#999\" />", x, base, x, base + 5);
    sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.0f</text>\n", x, base + 19, v);
}

/* Axis lines, and ticks at epoch 1 and at the multiples of the step not crowded against it. */
static void chart_x_axis(strbuf *b, const frame *f)
{
    double base = f->top + f->h;
    chart_x_tick(b, f, 1);
    for (double v = f->x.step; v <= f->x.hi + 1e-9; v += f->x.step)
        if (v - 1 >= f->x.step / 2) chart_x_tick(b, f, v);
    sb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#999\" />\n", f->left, base,
              f->left + f->w, base);
    sb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#999\" />\n", f->left, f->top,
              f->left, base);
    sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">epoch</text>\n", f->left + f->w / 2,
              base + PLOT_B - 8);
}

/* One series: a polyline through each run of finite points, and a dot on every point. */
static void chart_series(strbuf *b, const frame *f, const series *s)
{
    bool open = false;
    for (int i = 0; i <= s->n; i++) {
        double v = i < s->n ? metric_value(&s->h[i], s->m) : NAN;
        if (!drawable(v)) {
            if (open) sb_printf(b, "\" />\n");
            open = false;
            continue;
        }
        if (!open)
            sb_printf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"", s->color,
                      s->dashed ? " stroke-dasharray=\"6 4\"" : "");
        sb_printf(b, "%s%.1f,%.1f", open ? " " : "", frame_x(f, (double)s->h[i].epoch), frame_y(f, v));
        open = true;
    }
    for (int i = 0; i < s->n; i++) {
        double v = metric_value(&s->h[i], s->m);
        if (drawable(v))
            sb_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\" />", frame_x(f, (double)s->h[i].epoch),
                      frame_y(f, v), s->color);
    }
    sb_printf(b, "\n");
}

/* A ring around the lowest point of a series, labelled "best". */
static void chart_best(strbuf *b, const frame *f, const series *s)
{
    int best = -1;
    for (int i = 0; i < s->n; i++) {
        double v = metric_value(&s->h[i], s->m);
        if (drawable(v) && (best < 0 || v < metric_value(&s->h[best], s->m))) best = i;
    }
    if (best < 0) return;
    double x = frame_x(f, (double)s->h[best].epoch), y = frame_y(f, metric_value(&s->h[best], s->m));
    sb_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"7\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\" />", x, y,
              s->color);
    sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">best</text>\n", x, y + 22);
}

static void chart_legend(strbuf *b, const frame *f, const series *s, int ns)
{
    double x = f->left + f->w + 20;
    for (int k = 0; k < ns; k++) {
        double y = f->top + 8 + 22 * k;
        sb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"3\"%s />",
                  x, y, x + 26, y, s[k].color, s[k].dashed ? " stroke-dasharray=\"6 4\"" : "");
        sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\">", x + 34, y + 4);
        short_text(b, s[k].name, 26);
        sb_printf(b, "</text>\n");
    }
}

static void svg_line_chart(strbuf *b, const line_chart *c)
{
    frame f = chart_frame(c);
    int h = chart_height(c->ns);
    sb_printf(b, "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 %d %d\" width=\"%d\" height=\"%d\" "
                 "role=\"img\" aria-label=\"%s\">\n",
              CHART_W, h, CHART_W, h, c->title);
    sb_printf(b, "<text class=\"title\" x=\"%d\" y=\"22\">%s</text>\n", PLOT_L, c->title);
    chart_y_axis(b, &f, c->y_label);
    chart_x_axis(b, &f);
    for (int k = 0; k < c->ns; k++) chart_series(b, &f, &c->s[k]);
    if (c->best >= 0) chart_best(b, &f, &c->s[c->best]);
    chart_legend(b, &f, c->s, c->ns);
    sb_printf(b, "</svg>\n");
}

/* ---- per-class accuracy and the confusion matrix ---- */

static double ratio(int64_t a, int64_t b)
{
    return b > 0 ? (double)a / (double)b : 0;
}

enum { BAR_NAME_W = 130, BAR_W = 440, BAR_ROW = 26, BAR_TOP = 40 };

static void svg_class_bars(strbuf *b, const eval_result *t)
{
    int h = BAR_TOP + BAR_ROW * t->nclasses + 34, w = BAR_NAME_W + BAR_W + 150;
    sb_printf(b, "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 %d %d\" width=\"%d\" height=\"%d\" "
                 "role=\"img\" aria-label=\"test accuracy per class\">\n", w, h, w, h);
    sb_printf(b, "<text class=\"title\" x=\"12\" y=\"22\">test accuracy per class</text>\n");
    for (int k = 0; k < t->nclasses; k++) {
        double acc = ratio(t->class_correct[k], t->class_total[k]), y = BAR_TOP + BAR_ROW * k;
        sb_printf(b, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">", BAR_NAME_W - 8, y + 16);
        short_text(b, t->class_names[k], 18);
        sb_printf(b, "</text><rect x=\"%d\" y=\"%.1f\" width=\"%d\" height=\"%d\" fill=\"#eef2f7\" />", BAR_NAME_W,
                  y + 3, BAR_W, BAR_ROW - 6);
        sb_printf(b, "<rect x=\"%d\" y=\"%.1f\" width=\"%.1f\" height=\"%d\" fill=\"#4e79a7\" />", BAR_NAME_W, y + 3,
                  BAR_W * acc, BAR_ROW - 6);
        sb_printf(b, "<text x=\"%d\" y=\"%.1f\">%.1f%% (%lld/%lld)</text>\n", BAR_NAME_W + BAR_W + 8, y + 16,
                  100 * acc, (long long)t->class_correct[k], (long long)t->class_total[k]);
    }
    double x = BAR_NAME_W + BAR_W * t->accuracy, bottom = BAR_TOP + BAR_ROW * t->nclasses;
    sb_printf(b, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#d62728\" stroke-width=\"2\" "
                 "stroke-dasharray=\"5 4\" />",
              x, BAR_TOP, x, bottom);
    sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">overall %.1f%%</text>\n</svg>\n", x, bottom + 18,
              100 * t->accuracy);
}

/* White to dark blue by the share of the true class's images in the cell. */
static void heat_color(char *out, double share)
{
    double s = share < 0 ? 0 : share > 1 ? 1 : share;
    snprintf(out, 8, "#%02x%02x%02x", (int)(255 - s * (255 - 8)), (int)(255 - s * (255 - 48)),
             (int)(255 - s * (255 - 107)));
}

enum { HEAT_LEFT = 150, HEAT_TOP = 130 };

static void heat_labels(strbuf *b, const eval_result *t, int cell)
{
    for (int k = 0; k < t->nclasses; k++) {
        double c = k * cell + cell / 2.0;
        sb_printf(b, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">", HEAT_LEFT - 8, HEAT_TOP + c + 4);
        short_text(b, t->class_names[k], 18);
        sb_printf(b, "</text><text x=\"%.1f\" y=\"%d\" transform=\"rotate(-50 %.1f %d)\">", HEAT_LEFT + c + 4,
                  HEAT_TOP - 8, HEAT_LEFT + c + 4, HEAT_TOP - 8);
        short_text(b, t->class_names[k], 18);
        sb_printf(b, "</text>\n");
    }
}

static void heat_cell(strbuf *b, const eval_result *t, const int64_t *confusion, int row, int col, int cell)
{
    int n = t->nclasses;
    int64_t count = confusion[(size_t)row * (size_t)n + (size_t)col], total = 0;
    for (int k = 0; k < n; k++) total += confusion[(size_t)row * (size_t)n + (size_t)k];
    double share = ratio(count, total);
    char fill[8];
    heat_color(fill, share);
    int x = HEAT_LEFT + col * cell, y = HEAT_TOP + row * cell;
    sb_printf(b, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\" stroke=\"%s\"><title>true ", x, y,
              cell, cell, fill, row == col ? "#2ca02c" : "#ffffff");
    html_text(b, t->class_names[row]);
    sb_printf(b, ", predicted ");
    html_text(b, t->class_names[col]);
    sb_printf(b, ": %lld (%.1f%%)</title></rect>", (long long)count, 100 * share);
    sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" style=\"font-size:%dpx;fill:%s\">%lld</text>\n",
              x + cell / 2.0, y + cell / 2.0 + 4, cell >= 40 ? 12 : 9, share > 0.5 ? "#ffffff" : "#222222",
              (long long)count);
}

static void svg_confusion(strbuf *b, const eval_result *t, const int64_t *confusion)
{
    int n = t->nclasses, cell = n <= 12 ? 48 : n <= 24 ? 32 : 24;
    int w = HEAT_LEFT + n * cell + 20, h = HEAT_TOP + n * cell + 40;
    double columns_mid = HEAT_LEFT + n * cell / 2.0, rows_mid = HEAT_TOP + n * cell / 2.0;
    sb_printf(b, "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 %d %d\" width=\"%d\" height=\"%d\" "
                 "role=\"img\" aria-label=\"confusion matrix\">\n", w, h, w, h);
    sb_printf(b, "<text class=\"title\" x=\"12\" y=\"22\">test images by true and predicted class</text>\n");
    sb_printf(b, "<text class=\"title\" x=\"%.1f\" y=\"46\" text-anchor=\"middle\">predicted class</text>\n",
              columns_mid);
    sb_printf(b, "<text class=\"title\" x=\"20\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 20 %.1f)\">"
                 "true class</text>\n", rows_mid, rows_mid);
    heat_labels(b, t, cell);
    for (int row = 0; row < n; row++)
        for (int col = 0; col < n; col++) heat_cell(b, t, confusion, row, col, cell);
    sb_printf(b, "<text x=\"12\" y=\"%d\">shade: share of the true class&#8217;s images; the diagonal is right"
                 "</text>\n</svg>\n", h - 14);
}

/* ---- the run report's sections ---- */

static int best_epoch_index(const report_input *in)
{
    int best = -1;
    for (int i = 0; i < in->nhistory; i++)
        if (isfinite(in->history[i].valid_loss) &&
            (best < 0 || in->history[i].valid_loss < in->history[best].valid_loss))
            best = i;
    return best;
}

static void section_summary(strbuf *b, const report_input *in)
{
    section_begin(b, "summary", "Summary");
    char v[96];
    if (in->test) {
        sb_printf(b, "<p class=\"status\">finished: %d epochs; the best checkpoint was tested.</p>\n", in->nhistory);
    } else {
        snprintf(v, sizeof v, "%lld", (long long)in->epochs);
        sb_printf(b, "<p class=\"status\">running: %d of %s epochs done (this page reloads every %d s).</p>\n",
                  in->nhistory, in->epochs > 0 ? v : "?", RELOAD_SECONDS);
    }
    sb_printf(b, "<div class=\"cards\">\n");
    if (in->test) {
        snprintf(v, sizeof v, "%.2f%%", 100 * in->test->accuracy);
        card(b, "test accuracy", v);
        snprintf(v, sizeof v, "%.4f", in->test->loss);
        card(b, "test loss", v);
    }
    int best = best_epoch_index(in);
    if (best >= 0) {
        snprintf(v, sizeof v, "%.4f (epoch %lld)", in->history[best].valid_loss, (long long)in->history[best].epoch);
        card(b, "best validation loss", v);
        snprintf(v, sizeof v, "%.2f%%", 100 * in->history[in->nhistory - 1].valid_accuracy);
        card(b, "last validation accuracy", v);
    }
    if (in->device) card(b, "device", in->device);
    sb_printf(b, "</div>\n");
    section_end(b);
}

static void section_curves(strbuf *b, const report_input *in)
{
    series loss[2] = { { "train", PALETTE[0], false, in->history, in->nhistory, TRAIN_LOSS },
                       { "validation", PALETTE[1], false, in->history, in->nhistory, VALID_LOSS } };
    series acc = { "validation", PALETTE[1], false, in->history, in->nhistory, VALID_ACCURACY };
    section_begin(b, "loss", "Loss");
    if (in->nhistory == 0)
        note(b, "No epoch has finished yet.");
    else
        svg_line_chart(b, &(line_chart){ .title = "loss per epoch", .y_label = "loss", .epochs = in->epochs,
                                         .best = 1, .s = loss, .ns = 2 });
    section_end(b);
    section_begin(b, "accuracy", "Accuracy");
    if (in->nhistory == 0)
        note(b, "No epoch has finished yet.");
    else
        svg_line_chart(b, &(line_chart){ .title = "validation accuracy per epoch", .y_label = "accuracy (%)",
                                         .percent = true, .epochs = in->epochs, .best = -1, .s = &acc, .ns = 1 });
    section_end(b);
}

static void section_per_class(strbuf *b, const report_input *in)
{
    section_begin(b, "per-class", "Test accuracy per class");
    if (!in->test) note(b, "The best checkpoint is tested when the run ends.");
    else if (in->test->nclasses > MAX_BAR_CLASSES || in->test->nclasses < 1)
        note(b, "Too many classes to draw; summary.json lists each one's accuracy.");
    else svg_class_bars(b, in->test);
    section_end(b);
}

static void section_confusion(strbuf *b, const report_input *in)
{
    section_begin(b, "confusion", "Confusion matrix");
    if (!in->test || !in->confusion) note(b, "The confusion matrix comes with the test, when the run ends.");
    else if (in->test->nclasses > MAX_HEATMAP_CLASSES || in->test->nclasses < 1)
        note(b, "Too many classes for a readable heat map.");
    else svg_confusion(b, in->test, in->confusion);
    section_end(b);
}

/* A picture of the run folder, embedded as a data: URI, or a note saying why it is not there. */
static void section_picture(strbuf *b, const char *id, const char *heading, const char *report_dir,
                            const char *file, const char *alt)
{
    section_begin(b, id, heading);
    char path[PATH_MAX], err[ERR_LEN];
    char *data = NULL;
    size_t len = 0;
    static const unsigned char SIGNATURE[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };
    if (file && *file) resolve(path, report_dir, file);
    if (!file || !*file) {
        note(b, "No picture for this run.");
    } else if (access(path, F_OK) != 0) {
        note(b, "Not written yet.");
    } else if (read_file(path, &data, &len, err) != 0) {
        note(b, err);
    } else if (len < 8 || memcmp(data, SIGNATURE, 8) != 0) {
        snprintf(err, sizeof err, "%s is not a PNG file.", file);
        note(b, err);
    } else {
        sb_printf(b, "<img class=\"grid\" alt=\"%s\" src=\"data:image/png;base64,", alt);
        base64(b, (const unsigned char *)data, len);
        sb_printf(b, "\" />\n");
    }
    free(data);
    section_end(b);
}

static void history_table(strbuf *b, const report_input *in)
{
    int best = best_epoch_index(in);
    sb_printf(b, "<table>\n<tr><th>epoch</th><th>seconds</th><th>train loss</th><th>validation loss</th>"
                 "<th>validation accuracy</th><th>learning rate</th><th>images/s</th></tr>\n");
    for (int i = 0; i < in->nhistory; i++) {
        const epoch_record *e = &in->history[i];
        sb_printf(b, "<tr%s><td>%lld</td><td>%.1f</td><td>%.4f</td><td>%.4f</td><td>%.2f%%</td><td>%g</td><td>",
                  i == best ? " class=\"best\"" : "", (long long)e->epoch, e->seconds, e->train_loss, e->valid_loss,
                  100 * e->valid_accuracy, e->lr);
        known_number(b, "%.0f", e->images_per_second);
        sb_printf(b, "</td></tr>\n");
    }
    sb_printf(b, "</table>\n");
}

static void section_timings(strbuf *b, const report_input *in)
{
    section_begin(b, "timings", "Timings");
    sb_printf(b, "<table>\n<tr><th class=\"l\">training seconds per epoch</th><td>");
    known_number(b, "%.2f", in->timings.train_seconds_per_epoch);
    sb_printf(b, "</td></tr>\n<tr><th class=\"l\">training images per second</th><td>");
    known_number(b, "%.0f", in->timings.images_per_second);
    sb_printf(b, "</td></tr>\n<tr><th class=\"l\">total seconds</th><td>");
    known_number(b, "%.1f", in->timings.total_seconds);
    sb_printf(b, "</td></tr>\n</table>\n");
    if (in->nhistory > 0) history_table(b, in);
    section_end(b);
}

static void section_config(strbuf *b, const report_input *in)
{
    section_begin(b, "config", "Configuration");
    if (!in->config_text) {
        note(b, "Not given.");
    } else {
        sb_printf(b, "<pre>");
        html_text(b, in->config_text);
        sb_printf(b, "</pre>\n");
    }
    section_end(b);
}

static int write_page(const char *path, strbuf *b, char *err)
{
    if (b->oom) {
        snprintf(err, ERR_LEN, "%s: out of memory building the report", path);
        sb_free(b);
        return -1;
    }
    int rc = write_file_atomic(path, b->s, b->len, err);
    sb_free(b);
    return rc;
}

int report_write_html(const char *path, const report_input *in, char *err)
{
    static const char *const IDS[] = { "summary", "loss", "accuracy", "per-class", "confusion", "train-batch",
                                       "predictions", "timings", "config", NULL };
    static const char *const NAMES[] = { "summary", "loss", "accuracy", "per class", "confusion", "training batch",
                                         "predictions", "timings", "config", NULL };
    char dir[PATH_MAX];
    dir_of(dir, path);
    strbuf b = { 0 };
    page_begin(&b, in->title ? in->title : "runexp run", !in->test);
    page_nav(&b, IDS, NAMES);
    section_summary(&b, in);
    section_curves(&b, in);
    section_per_class(&b, in);
    section_confusion(&b, in);
    section_picture(&b, "train-batch", "A training batch", dir, in->train_png, "a training batch with its classes");
    section_picture(&b, "predictions", "Test predictions", dir, in->predictions_png,
                    "test images with the predicted class over the true one");
    section_timings(&b, in);
    section_config(&b, in);
    page_end(&b);
    return write_page(path, &b, err);
}

/* ---- the sweep report ---- */

static bool run_failed(const sweep_run *r)
{
    return r->error && *r->error;
}

static void sweep_charts(strbuf *b, const sweep_input *in, metric m)
{
    series *s = calloc((size_t)(in->nruns > 0 ? in->nruns : 1), sizeof *s);
    if (!s) {
        b->oom = true;
        return;
    }
    int ns = 0;
    for (int i = 0; i < in->nruns; i++) {
        if (in->runs[i].nhistory == 0) continue;
        s[ns++] = (series){ in->runs[i].label ? in->runs[i].label : "?", PALETTE[i % NPALETTE], i >= NPALETTE,
                            in->runs[i].history, in->runs[i].nhistory, m };
    }
    bool percent = m == VALID_ACCURACY;
    const char *title = percent ? "validation accuracy per epoch" : "validation loss per epoch";
    if (ns == 0)
        note(b, "No run has finished an epoch.");
    else
        svg_line_chart(b, &(line_chart){ .title = title, .y_label = percent ? "accuracy (%)" : "loss",
                                         .percent = percent, .best = -1, .s = s, .ns = ns });
    free(s);
}

/* A link from the sweep report to a run's report, when the run folder can be reached from it and
 * the report is there (a run that failed before its first epoch has none). */
static void run_link(strbuf *b, const char *report_dir, const char *run_dir)
{
    size_t n = strlen(report_dir);
    const char *rel = NULL;
    char report[PATH_MAX];
    if (strncmp(run_dir, report_dir, n) == 0 && run_dir[n] == '/') rel = run_dir + n + 1;
    else if (run_dir[0] == '/' || strcmp(report_dir, ".") == 0) rel = run_dir;
    if (snprintf(report, sizeof report, "%s/report.html", run_dir) >= (int)sizeof report || access(report, F_OK) != 0)
        rel = NULL;
    if (!rel) {
        html_text(b, run_dir);
        return;
    }
    sb_printf(b, "<a href=\"");
    url_path(b, rel);
    sb_printf(b, "/report.html\">");
    html_text(b, run_dir);
    sb_printf(b, "</a>");
}

static int best_run_index(const sweep_input *in)
{
    int best = -1;
    for (int i = 0; i < in->nruns; i++)
        if (!run_failed(&in->runs[i]) && isfinite(in->runs[i].best_valid_loss) &&
            (best < 0 || in->runs[i].best_valid_loss < in->runs[best].best_valid_loss))
            best = i;
    return best;
}

static void sweep_row(strbuf *b, const sweep_run *r, int i, bool best, const char *report_dir)
{
    sb_printf(b, "<tr%s><td class=\"l\">", run_failed(r) ? " class=\"failed\"" : best ? " class=\"best\"" : "");
    if (r->nhistory > 0 && i < NPALETTE) /* the colour of its curves */
        sb_printf(b, "<span class=\"swatch\" style=\"background:%s\"></span>", PALETTE[i]);
    else if (r->nhistory > 0) /* ... dashed */
        sb_printf(b, "<span class=\"swatch\" style=\"border:2px dashed %s;width:8px;height:8px\"></span>",
                  PALETTE[i % NPALETTE]);
    html_text(b, r->label ? r->label : "?");
    if (run_failed(r)) {
        sb_printf(b, "</td><td class=\"l\" colspan=\"4\">failed: ");
        html_text(b, r->error);
    } else {
        sb_printf(b, "</td><td>%.4f</td><td>%lld</td><td>%.2f%%</td><td>%d", r->best_valid_loss,
                  (long long)r->best_epoch, 100 * r->test_accuracy, r->nhistory);
    }
    sb_printf(b, "</td><td class=\"l\">");
    if (r->run_dir) run_link(b, report_dir, r->run_dir);
    sb_printf(b, "</td></tr>\n");
}

static void sweep_table(strbuf *b, const sweep_input *in, const char *report_dir)
{
    int best = best_run_index(in);
    sb_printf(b, "<table>\n<tr><th class=\"l\">run</th><th>best validation loss</th><th>best epoch</th>"
                 "<th>test accuracy</th><th>epochs</th><th class=\"l\">run folder</th></tr>\n");
    for (int i = 0; i < in->nruns; i++) sweep_row(b, &in->runs[i], i, i == best, report_dir);
    sb_printf(b, "</table>\n");
}

int report_write_sweep_html(const char *path, const sweep_input *in, char *err)
{
    static const char *const IDS[] = { "curves", "accuracy", "results", NULL };
    static const char *const NAMES[] = { "validation loss", "validation accuracy", "results", NULL };
    char dir[PATH_MAX];
    dir_of(dir, path);
    int failed = 0;
    for (int i = 0; i < in->nruns; i++) failed += run_failed(&in->runs[i]);
    strbuf b = { 0 };
    page_begin(&b, in->title ? in->title : "runexp sweep", false);
    sb_printf(&b, "<p class=\"status\">%d runs", in->nruns);
    if (failed) sb_printf(&b, ", <span class=\"error\">%d failed</span>", failed);
    sb_printf(&b, ".</p>\n");
    page_nav(&b, IDS, NAMES);
    section_begin(&b, "curves", "Validation loss");
    sweep_charts(&b, in, VALID_LOSS);
    section_end(&b);
    section_begin(&b, "accuracy", "Validation accuracy");
    sweep_charts(&b, in, VALID_ACCURACY);
    section_end(&b);
    section_begin(&b, "results", "Results");
    sweep_table(&b, in, dir);
    section_end(&b);
    page_end(&b);
    return write_page(path, &b, err);
}
