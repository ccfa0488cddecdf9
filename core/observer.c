/* observer.c: the observers of a run (see observer.h): the image grids, report.html and
 * TensorBoard's event files. */
#include "observer.h"

#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "device.h"
#include "image.h"
#include "report.h"
#include "tensorboard.h"

int sample_batch_alloc(sample_batch *s, rx_shape shape)
{
    *s = (sample_batch){ .shape = shape };
    s->x = malloc((size_t)(SAMPLE_IMAGES * rx_numel(shape)) * sizeof(float));
    return s->x ? 0 : -1;
}

void sample_batch_free(sample_batch *s)
{
    free(s->x);
    s->x = NULL;
}

void sample_batch_capture(sample_batch *s, rx_device d, const float *x, const int32_t *labels, int64_t n,
                          const int32_t *predicted)
{
    s->n = n < SAMPLE_IMAGES ? n : SAMPLE_IMAGES;
    device_to_host(d, s->x, x, (size_t)(s->n * rx_numel(s->shape)) * sizeof(float));
    device_to_host(d, s->labels, labels, (size_t)s->n * sizeof(int32_t));
    s->has_predictions = predicted != NULL;
    if (predicted) memcpy(s->predicted, predicted, (size_t)s->n * sizeof(int32_t));
}

/* ---- The pictures: the run's first batch, and the test's first batch with predictions ---- */

static int write_grid(const run_view *v, const char *name, char *err)
{
    const sample_batch *s = v->samples;
    char path[PATH_MAX];
    if (s->shape.ndim != 3) return 0; /* only images are drawn */
    if (snprintf(path, sizeof path, "%s/%s", v->dir, name) >= (int)sizeof path)
        return errorf(err, "%s not written: %s: path too long", name, v->dir);
    char why[ERR_LEN];
    if (image_grid_png(path, s->x, (int)s->n, (int)s->shape.d[0], (int)s->shape.d[1], (int)s->shape.d[2], s->labels,
                       s->has_predictions ? s->predicted : NULL, v->info->class_names, v->info->nclasses, why) != 0)
        return errorf(err, "%s not written: %s", name, why);
    return 0;
}

static int pictures_observe(observe_event event, const run_view *v, char *err)
{
    if (event == OBSERVE_FIRST_BATCH) return write_grid(v, "train_batch.png", err);
    if (event == OBSERVE_TEST) return write_grid(v, "test_predictions.png", err);
    return 0;
}

/* ---- report.html: rewritten after every epoch, and at the end with the test ---- */

static int report_observe(observe_event event, const run_view *v, char *err)
{
    if (event == OBSERVE_FIRST_BATCH || v->stopping) return 0;
    char path[PATH_MAX], why[ERR_LEN];
    report_input in = { .title = v->dir, .config_text = v->config_text, .history = v->history, .nhistory = v->nhistory,
                        .epochs = v->epochs, .device = v->device, .test = v->test, .confusion = v->confusion,
                        .train_png = "train_batch.png", .predictions_png = "test_predictions.png" };
    const run_summary *s = v->summary;
    if (s) in.timings = (report_timings){ s->train_seconds_per_epoch, s->images_per_second, s->total_seconds };
    if (snprintf(path, sizeof path, "%s/report.html", v->dir) >= (int)sizeof path)
        return errorf(err, "report.html not written: %s: path too long", v->dir);
    if (report_write_html(path, &in, why) != 0) return errorf(err, "report.html not written: %s", why);
    return 0;
}

/* ---- TensorBoard: per batch the training loss, per epoch its row of metrics.csv, the test ----
 * Each event's records are appended to this process's event file at once and flushed, after
 * last.safetensors holds the position they reach: a resumed run starts after them and writes a
 * file of its own, so no step is written twice (a kill between the two loses that epoch's
 * events instead). Epoch scalars are at step EPOCH, batch losses at the optimizer's step. */

static void tensorboard_epoch(strbuf *b, const epoch_record *e, double wall)
{
    static const struct { const char *tag; size_t offset; } scalars[] = {
        { "train/loss", offsetof(epoch_record, train_loss) },
        { "valid/loss", offsetof(epoch_record, valid_loss) },
        { "valid/accuracy", offsetof(epoch_record, valid_accuracy) },
        { "lr", offsetof(epoch_record, lr) },
        { "images_per_second", offsetof(epoch_record, images_per_second) },
        { "epoch_seconds", offsetof(epoch_record, seconds) },
    };
    for (size_t i = 0; i < sizeof scalars / sizeof *scalars; i++) {
        double x = *(const double *)(const void *)((const char *)e + scalars[i].offset);
        if (isfinite(x)) tb_scalar(b, wall, e->epoch, scalars[i].tag, x); /* no validation split: no valid/ */
    }
}

static int tensorboard_observe(observe_event event, const run_view *v, char *err)
{
    if (!v->tensorboard[0] || event == OBSERVE_FIRST_BATCH) return 0;
    char dir[PATH_MAX], why[ERR_LEN];
    if (snprintf(dir, sizeof dir, "%s%s%s", v->tensorboard[0] == '/' ? "" : v->dir, v->tensorboard[0] == '/' ? "" : "/",
                 v->tensorboard) >= (int)sizeof dir)
        return errorf(err, "TensorBoard events not written: %s/%s: path too long", v->dir, v->tensorboard);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    double wall = (double)now.tv_sec + 1e-9 * (double)now.tv_nsec;
    strbuf b = { 0 };
    for (int64_t i = 0; event != OBSERVE_TEST && i < v->nbatches; i++)
        tb_scalar(&b, v->batches[i].wall_time, v->batches[i].step, "batch/train_loss", v->batches[i].loss);
    if (event == OBSERVE_EPOCH) tensorboard_epoch(&b, &v->history[v->nhistory - 1], wall);
    if (event == OBSERVE_TEST) {
        tb_scalar(&b, wall, v->epochs, "test/loss", v->test->loss);
        tb_scalar(&b, wall, v->epochs, "test/accuracy", v->test->accuracy);
    }
    int rc = b.len || b.oom ? tb_append(dir, v->started, &b, why) : 0;
    sb_free(&b);
    return rc == 0 ? 0 : errorf(err, "TensorBoard events not written: %s", why);
}

typedef int (*observer)(observe_event event, const run_view *v, char *err);

/* In this order: report.html embeds the pictures, so they are written first. */
static const observer observers[] = { pictures_observe, report_observe, tensorboard_observe };

int observers_notify(observe_event event, const run_view *v, FILE *log, progress *bar, char *first_err)
{
    int failed = 0;
    for (size_t i = 0; i < sizeof observers / sizeof *observers; i++) {
        char err[ERR_LEN];
        if (observers[i](event, v, err) == 0) continue;
        if (bar) progress_end(bar);
        fprintf(log, "error: %s (the run goes on, and will end with this error)\n", err);
        if (!first_err[0]) snprintf(first_err, ERR_LEN, "%s", err);
        failed++;
    }
    return failed;
}
