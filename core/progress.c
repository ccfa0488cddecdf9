/* progress.c: the terminal progress bar (see progress.h). Each redraw is one carriage return, the
 * line cut to the terminal's width so that it never wraps, and an erase to the end of the line. */
#include "progress.h"

#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define REDRAW_SECONDS 0.1
#define MAX_BAR 30
#define MIN_BAR 5
#define ERASE_LINE "\033[K"

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* The terminal's width in columns; 80 when it does not say. */
static int terminal_columns(FILE *out)
{
    struct winsize ws;
    if (ioctl(fileno(out), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
    return 80;
}

/* "0:12", "12:05" or "1:02:03"; "--:--" when not known. */
static void format_duration(char *buf, size_t len, double seconds)
{
    if (!(seconds >= 0) || seconds > 1e8) {
        snprintf(buf, len, "--:--");
        return;
    }
    long s = (long)(seconds + 0.5);
    if (s >= 3600) snprintf(buf, len, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    else snprintf(buf, len, "%ld:%02ld", s / 60, s % 60);
}

/* "[#####.....]" of `width` cells inside the brackets. */
static void format_bar(char *buf, int width, int64_t done, int64_t total)
{
    int filled = total > 0 ? (int)((double)width * (double)done / (double)total) : 0;
    if (filled > width) filled = width;
    buf[0] = '[';
    for (int i = 0; i < width; i++) buf[1 + i] = i < filled ? '#' : '.';
    buf[width + 1] = ']';
    buf[width + 2] = '\0';
}

void progress_begin(progress *p, FILE *out, int64_t total_batches, int64_t epoch, int64_t epochs)
{
    memset(p, 0, sizeof *p);
    if (!out || !isatty(fileno(out))) return;
    p->out = out;
    p->total = total_batches;
    p->epoch = epoch;
    p->epochs = epochs;
    p->start = now_seconds();
    p->last_draw = p->start - 1; /* the first update draws */
}

double progress_run_left(const progress *p, int64_t done, double elapsed)
{
    if (done <= 0) return -1;
    double per_batch = elapsed / (double)done, later = p->later_epoch_seconds;
    if (!(later > 0)) later = per_batch * (double)p->total;
    return per_batch * (double)(p->total - done) + later * (double)(p->epochs - p->epoch);
}

static void draw(progress *p, int64_t done, int64_t images, double loss, double elapsed)
{
    char head[64], tail[192], eta[32], run_eta[32], rate[32], bar[MAX_BAR + 3] = "", line[352];
    snprintf(head, sizeof head, "epoch %lld/%lld ", (long long)p->epoch, (long long)p->epochs);
    if (elapsed > 0 && images > 0) snprintf(rate, sizeof rate, "%.0f", (double)images / elapsed);
    else snprintf(rate, sizeof rate, "--");
    format_duration(eta, sizeof eta, done > 0 ? elapsed * (double)(p->total - done) / (double)done : -1);
    int digits = snprintf(NULL, 0, "%lld", (long long)p->total); /* a steady width: the line does not jitter */
    format_duration(run_eta, sizeof run_eta, progress_run_left(p, done, elapsed));
    snprintf(tail, sizeof tail, " %*lld/%lld  %s img/s  loss %.4f  ETA %s, run %s", digits, (long long)done,
             (long long)p->total, rate, loss, eta, run_eta);
    int columns = terminal_columns(p->out);
    int room = columns - 1 - (int)strlen(head) - (int)strlen(tail) - 2;
    if (room >= MIN_BAR) format_bar(bar, room < MAX_BAR ? room : MAX_BAR, done, p->total);
    int n = snprintf(line, sizeof line, "%s%s%s", head, bar, tail);
    if (n > columns - 1) n = columns - 1; /* never wrap: \r would then redraw the wrong line */
    fprintf(p->out, "\r%.*s" ERASE_LINE, n > 0 ? n : 0, line);
    fflush(p->out);
}

void progress_update(progress *p, int64_t batches_done, int64_t images_done, double running_loss)
{
    if (!p->out) return;
    double now = now_seconds();
    if (now - p->last_draw < REDRAW_SECONDS && batches_done < p->total) return;
    p->last_draw = now;
    draw(p, batches_done, images_done, running_loss, now - p->start);
}

void progress_end(progress *p)
{
    if (!p->out) return;
    fputs("\r" ERASE_LINE, p->out);
    fflush(p->out);
    p->out = NULL;
}
