/* evaluate.c: measuring weights on a split (see evaluate.h). */
#include "evaluate.h"

#include <math.h>
#include <string.h>

#include "checkpoint.h"
#include "device.h"
#include "interrupt.h"

/* What a lane draws of an evaluation batch (rx_data_info.parts). */
typedef struct eval_draw {
    const trainer *t;
    rx_split split;
    int64_t first; /* the batch's first sample */
    int view;
} eval_draw;

static int draw_rows(void *arg, rx_ctx *ctx, int64_t row, int64_t count, char *err)
{
    const eval_draw *d = arg;
    return trainer_load_rows(d->t, ctx, d->split, d->first, d->view, row, count, err);
}

/* One view of samples [first, first + n) through the network: drawn by each lane for its own
 * rows where the data plugin allows it (no thread waits while one draws the batch), else whole. */
static int forward_view(trainer *t, rx_split split, int64_t first, int view, int64_t n, rx_tensor *logits, char *err)
{
    rx_tensor x;
    if (trainer_draws_in_parts(t)) {
        eval_draw d = { t, split, first, view };
        x = trainer_tensor(t, t->x, n, t->info.sample);
        return net_forward_drawing(&t->nt, &t->ctx, &x, draw_rows, &d, logits, err);
    }
    if (trainer_load_batch(t, split, first, view, n, &x, err) != 0) return -1;
    return net_forward(&t->nt, &t->ctx, &x, logits, err);
}

/* The logits of samples [first, first + n): the mean over the data plugin's test-time views,
 * the plain view last so that t->x holds it for the pictures. */
static int forward_views(trainer *t, rx_split split, int64_t first, int64_t n, rx_tensor *logits, char *err)
{
    int views = t->info.views > 1 ? t->info.views : 1;
    for (int v = views - 1; v >= 0; v--) {
        if (forward_view(t, split, first, v, n, logits, err) != 0) return -1;
        if (views == 1) break;
        size_t len = (size_t)rx_numel(logits->shape);
        if (v == views - 1) device_copy(t->device, t->avg_logits, logits->data, len * sizeof(float));
        else device_axpby(t->device, &t->ctx, len, 1.0f, logits->data, 1.0f, t->avg_logits);
        if (v == 0) {
            device_axpby(t->device, &t->ctx, len, 0.0f, logits->data, 1.0f / (float)views, t->avg_logits);
            logits->data = t->avg_logits;
        }
    }
    return 0;
}

/* Counts the batch's correct predictions (logits and labels on the host), per class and, when
 * asked, into the confusion matrix; the first predictions go to predicted (SAMPLE_IMAGES). */
static void score_batch(const trainer *t, int64_t n, eval_result *e, int64_t *confusion, int32_t *predicted)
{
    int64_t classes = rx_numel(t->nt.out);
    int nclasses = t->info.nclasses;
    for (int64_t i = 0; i < n; i++) {
        const float *row = t->host_logits + i * classes;
        int64_t best = 0;
        for (int64_t k = 1; k < classes; k++)
            if (row[k] > row[best]) best = k;
        int32_t y = t->host_labels[i];
        if (y >= 0 && y < nclasses) {
            e->class_total[y]++;
            e->class_correct[y] += best == y;
            if (confusion && best < nclasses) confusion[y * nclasses + best]++;
        }
        e->correct += best == y;
        if (i < SAMPLE_IMAGES) predicted[i] = (int32_t)best;
    }
}

static void finish_result(const trainer *t, eval_result *e, int64_t total, double sum)
{
    e->total = total;
    e->loss = total ? sum / (double)total : NAN;
    e->accuracy = total ? (double)e->correct / (double)total : NAN;
    e->nclasses = t->info.nclasses;
    for (int k = 0; k < e->nclasses; k++)
        snprintf(e->class_names[k], CLASS_NAME_LEN, "%s", t->info.class_names[k] ? t->info.class_names[k] : "?");
}

int evaluate_split(trainer *t, rx_split split, eval_result *e, int64_t *confusion, sample_batch *samples, char *err)
{
    const config *c = t->c;
    int nclasses = t->info.nclasses;
    if (confusion) memset(confusion, 0, sizeof *confusion * (size_t)nclasses * (size_t)nclasses);
    memset(e, 0, sizeof *e);
    t->ctx.training = false;
    t->ctx.err[0] = '\0';
    if (c->data.pl.desc->data.begin_epoch(t->data, &t->ctx, split, 0) != 0)
        return trainer_plugin_failed(t, &c->data, "begin_epoch", err);
    int64_t total = t->info.size[split], classes = rx_numel(t->nt.out);
    int32_t predicted[SAMPLE_IMAGES];
    double sum = 0;
    for (int64_t first = 0; first < total; first += c->batch_size) {
        int64_t n = total - first < c->batch_size ? total - first : c->batch_size;
        rx_tensor logits = { 0 };
        double s;
        if (forward_views(t, split, first, n, &logits, err) != 0) return -1;
        if (trainer_loss(t, &logits, false, &s, err) != 0) return -1;
        sum += s;
        device_to_host(t->device, t->host_logits, logits.data, (size_t)(n * classes) * sizeof(float));
        device_to_host(t->device, t->host_labels, t->labels, (size_t)n * sizeof(int32_t));
        if (device_check(t->device, err) != 0) return -1; /* no accuracy counted from garbage */
        score_batch(t, n, e, confusion, predicted);
        if (samples && first == 0) sample_batch_capture(samples, t->device, t->x, t->labels, n, predicted);
        /* Checked per batch: a test as long as the training cannot hold a stop request up. */
        if (interrupt_requested()) return errorf(err, "stopped by a signal while evaluating"), EVAL_STOPPED;
    }
    finish_result(t, e, total, sum);
    return 0;
}

int evaluate_logits(trainer *t, rx_split split, int64_t first, int64_t n, char *err)
{
    rx_tensor logits = { 0 };
    t->ctx.training = false;
    if (forward_views(t, split, first, n, &logits, err) != 0) return -1;
    device_to_host(t->device, t->host_logits, logits.data, (size_t)(n * rx_numel(t->nt.out)) * sizeof(float));
    return device_check(t->device, err);
}

int evaluate_checkpoint(const config *c, const char *checkpoint, rx_split split, eval_result *e, char *err)
{
    trainer t = { 0 };
    FILE *quiet = fopen("/dev/null", "w");
    int rc = -1;
    if (trainer_setup(&t, c, quiet ? quiet : stderr, true, false, err) == 0 &&
        checkpoint_load_net(&t.nt, checkpoint, NULL, 0, NULL, err) == 0)
        rc = evaluate_split(&t, split, e, NULL, NULL, err);
    trainer_free(&t);
    if (quiet) fclose(quiet);
    return rc;
}
