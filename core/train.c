/* train.c: the train / validate / test loop (see train.h).
 *
 * Everything that can be refused (config, plugins, data files, shapes) is checked before the
 * run folder is created, so a failed start leaves nothing behind. Then each epoch trains (the
 * gradients clipped by their global norm when clip_grad_norm asks), validates, saves the best
 * checkpoint by validation loss (as the tutorial does), rewrites metrics.csv and saves
 * last.safetensors, which lets a resumed run continue bit for bit. After the last epoch, or
 * sooner when early_stop sees no improvement for `patience` epochs, the best checkpoint is loaded
 * and tested, and summary.json written. What is printed follows the log level (config `log`). */
#include "train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "crash.h"
#include "device.h"
#include "dist.h"
#include "evaluate.h"
#include "interrupt.h"
#include "observer.h"
#include "progress.h"
#include "run_dir.h"
#include "trainer.h"
#include "version.h"

typedef struct run {
    trainer t;
    run_position pos;            /* where training stands: saved in last.safetensors */
    run_summary *s;              /* the results, filled in as they come */
    int64_t total_steps;         /* optimizer steps in the whole run, for the schedule */
    double lr_now;               /* the last step's learning rate, for the logs */
    int backward_from;           /* this epoch's net_first_trained: backward stops there */
    epoch_record *history;       /* (c->epochs), nhistory of them done */
    int nhistory;
    char *config_text;           /* the resolved config, for the report */
    int64_t *confusion;          /* (nclasses, nclasses) test counts, for the report */
    sample_batch samples;        /* the first batch of the run, then of the test, for the pictures */
    progress bar;                /* the epoch's progress bar (a no-op off a terminal) */
    int observer_failures;       /* pictures and reports not written: the run fails at its end */
    char observer_err[ERR_LEN];  /* the first of them */
    int level;                   /* LOG_QUIET, LOG_NORMAL or LOG_VERBOSE: config `log` (-q, -v) */
    bool in_script;              /* one of a script's runs (TRAIN_IN_SCRIPT): the script says the results */
    batch_point *batches;        /* (batches in an epoch) the losses not yet told to the observers */
    int64_t nbatches;
    time_t started;              /* when this process began the run */
    bool writer;                 /* rank 0 (dist.h): writes the run folder, validates, tests, draws */
    bool stop_asked;             /* a stop request on any rank, agreed by all after each batch */
    bool opened;                 /* the run folder is open (made, or continued) */
} run;

/* What a run prints (config `log`): quiet, its result line only; normal, a line per epoch and its
 * result line (a script's run: the epoch lines, the script printing what it wants of the
 * results); verbose, everything: the resolved config, the data, each best checkpoint saved and
 * the test per class. Errors go to stderr at every level. */
enum { LOG_QUIET, LOG_NORMAL, LOG_VERBOSE };

static int log_level(const config *c)
{
    return strcmp(c->log, "quiet") == 0 ? LOG_QUIET : strcmp(c->log, "verbose") == 0 ? LOG_VERBOSE : LOG_NORMAL;
}

/* The lines about the run as a whole (the device auto chose, a resume's position): a command
 * line's run says them at the normal level, a script's only when verbose. */
static bool says_run_lines(const run *r)
{
    return r->level == LOG_VERBOSE || (r->level == LOG_NORMAL && !r->in_script);
}

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t); /* monotonic: epoch times can never come out negative */
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void observe(run *r, observe_event event)
{
    if (!r->writer) return;
    bool tested = event == OBSERVE_TEST;
    run_view v = { .dir = r->s->dir, .config_text = r->config_text, .device = r->s->device, .epochs = r->t.c->epochs,
                   .history = r->history, .nhistory = r->nhistory, .info = &r->t.info, .samples = &r->samples,
                   .test = tested ? &r->s->test : NULL, .confusion = tested ? r->confusion : NULL,
                   .summary = tested ? r->s : NULL, .tensorboard = r->t.c->tensorboard, .started = r->started,
                   .batches = r->batches, .nbatches = r->nbatches,
                   .stopping = event == OBSERVE_STOP || (event == OBSERVE_EPOCH && interrupt_requested()) };
    r->observer_failures += observers_notify(event, &v, r->t.log, &r->bar, r->observer_err);
    if (event == OBSERVE_EPOCH || event == OBSERVE_STOP) r->nbatches = 0;
}

/* A batch's mean loss, kept for the observers (rank 0's) until the epoch ends or the run stops. */
static void keep_batch_loss(run *r, double loss)
{
    if (!r->writer) return;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    r->batches[r->nbatches++] = (batch_point){ .step = r->pos.step, .loss = loss,
                                               .wall_time = (double)now.tv_sec + 1e-9 * (double)now.tv_nsec };
}

/* ---- One batch, one epoch ---- */

/* clip_grad_norm: the global L2 norm of the gradients of every group this epoch trains, as
 * torch.nn.utils.clip_grad_norm_ computes it; above the bound, every one of them is scaled by
 * bound / (norm + 1e-6) before the step. The norm before clipping goes into the epoch's row. */
static int clip_gradients(run *r, int64_t epoch, char *err)
{
    trainer *t = &r->t;
    double bound = t->c->clip_grad_norm, sum = 0;
    if (!(bound > 0)) return 0;
    for (int i = 0; i < t->nt.ngroups; i++) {
        const param_group *g = &t->nt.groups[i];
        if (group_trains(g, epoch)) sum += device_sum_squares(t->device, &t->ctx, g->n, t->nt.grads + g->offset);
    }
    if (device_check(t->device, err) != 0) return -1;
    double norm = sqrt(sum), coef = bound / (norm + 1e-6);
    if (!isfinite(norm))
        return errorf(err, "epoch %lld, batch %lld: the gradients' norm is %s; stopping (best.safetensors is kept as it "
                      "was; try a smaller learning rate)", (long long)epoch, (long long)r->pos.batches_done + 1,
                      isnan(norm) ? "NaN" : "infinite");
    r->pos.grad_norm_sum += norm;
    if (norm > r->pos.grad_norm_max) r->pos.grad_norm_max = norm;
    if (coef >= 1) return 0;
    r->pos.clipped_steps++;
    for (int i = 0; i < t->nt.ngroups; i++) {
        const param_group *g = &t->nt.groups[i];
        if (group_trains(g, epoch)) device_axpby(t->device, &t->ctx, g->n, 0, NULL, (float)coef, t->nt.grads + g->offset);
    }
    return 0;
}

/* The schedule's learning rate for the next step, which it counts. */
static int next_step(run *r, int64_t epoch, char *err)
{
    const config *c = r->t.c;
    double factor;
    if (config_lr_factor(c, r->pos.step, r->total_steps, epoch, &factor, err) != 0) return -1;
    r->lr_now = c->lr * factor;
    r->pos.step++;
    return 0;
}

/* The step next_step planned, over parameters [begin, end) with ctx: every group the optimizer
 * trains this epoch, or its part in the range; then the moving average, if any, follows. */
static int step_range(run *r, int64_t epoch, rx_ctx *ctx, size_t begin, size_t end, char *err)
{
    trainer *t = &r->t;
    const config *c = t->c;
    for (int i = 0; i < t->nt.ngroups; i++) {
        const param_group *g = &t->nt.groups[i];
        size_t from = g->offset > begin ? g->offset : begin, to = g->offset + g->n < end ? g->offset + g->n : end;
        if (!group_trains(g, epoch) || from >= to) continue;
        rx_step s = { .lr = (float)(r->lr_now * g->lr_scale), .weight_decay = g->weight_decay, .t = r->pos.step,
                      .shape = g->shape };
        ctx->err[0] = '\0';
        crash_enter(c->optim.where, "step");
        int rc = c->optim.pl.desc->optim.step[t->device](t->optim, ctx, t->nt.grads + from, t->nt.params + from,
                                                          t->opt_state + (size_t)t->state_per_param * from, to - from, s);
        crash_leave();
        if (rc != 0) return trainer_plugin_failed_in(t, ctx, &c->optim, "step", err);
    }
    ema_update(&t->ema, ctx, t->nt.params, r->pos.step, begin, end);
    return 0;
}

/* One step of every group the optimizer trains, at the schedule's learning rate. */
static int optimizer_step(run *r, int64_t epoch, char *err)
{
    if (next_step(r, epoch, err) != 0) return -1;
    return step_range(r, epoch, &r->t.ctx, 0, r->t.nt.nparams, err);
}

/* The run's very first batch, which is kept for the pictures. */
static bool first_batch_of_run(const run *r)
{
    return r->pos.epochs_done == 0 && r->pos.batches_done == 0;
}

/* Samples [mine, mine + count) of the training batch [first, first + n) into x (a rank's part, or
 * the whole batch), with the net told where they lie in it; the run's very first batch is kept
 * for the pictures. */
static int load_part(run *r, int64_t first, int64_t n, int64_t mine, int64_t count, rx_tensor *x, char *err)
{
    trainer *t = &r->t;
    if (trainer_load_batch(t, RX_TRAIN, mine, 0, count, x, err) != 0) return -1;
    if (first_batch_of_run(r)) {
        sample_batch_capture(&r->samples, t->device, t->x, t->labels, count, NULL);
        observe(r, OBSERVE_FIRST_BATCH);
    }
    t->nt.part_offset = mine - first;
    t->nt.part_batch = dist_size() > 1 ? n : 0;
    return 0;
}

/* Rows [first, first + count) of dlogits, the gradient of their own mean loss, scaled to the
 * gradient of a batch of n's mean (a rank's part, a lane's). */
static void dlogits_for_batch(trainer *t, rx_ctx *ctx, int64_t first, int64_t count, int64_t n)
{
    if (count == n) return;
    const size_t per = (size_t)rx_numel(t->nt.out);
    device_axpby(t->device, ctx, (size_t)count * per, 0.0f, NULL, (float)count / (float)n,
                 t->dlogits + (size_t)first * per);
}

/* This rank's part of the batch (all of it in one process): its loss sum into *s, and its
 * gradients scaled by its share of the batch, so that the ranks' sum is the gradient of the whole
 * batch's mean loss. A rank with no part (a batch smaller than the ranks) adds nothing. */
static int train_part(run *r, int64_t first, int64_t n, double *s, char *err)
{
    trainer *t = &r->t;
    int64_t mine, count;
    rx_tensor x, logits;
    dist_part(first, n, &mine, &count);
    *s = 0;
    net_zero_grads(&t->nt);
    if (count == 0) return 0;
    if (load_part(r, first, n, mine, count, &x, err) != 0) return -1;
    if (net_forward(&t->nt, &t->ctx, &x, &logits, err) != 0) return -1;
    if (trainer_loss(t, &logits, true, s, err) != 0) return -1;
    dlogits_for_batch(t, &t->ctx, 0, count, n);
    rx_tensor dlogits = trainer_tensor(t, t->dlogits, count, t->nt.out);
    return net_backward(&t->nt, &t->ctx, &x, &dlogits, r->backward_from, err);
}

/* ---- A step in lanes: the threads meet once ---- */

typedef struct lane_step {
    run *r;
    int64_t epoch, first, n; /* the batch: samples [first, first + n) of the epoch */
} lane_step;

/* A lane's loss: its rows of the losses, and of dlogits, which the loss gives for the part's
 * mean, rescaled to the batch's (as for a rank's part). */
static int lane_loss(void *arg, rx_ctx *ctx, int64_t first, int64_t count, const float *logits, char *err)
{
    const lane_step *ls = arg;
    trainer *t = &ls->r->t;
    rx_tensor lg = trainer_tensor(t, (float *)logits, count, t->nt.out);
    if (trainer_loss_rows(t, ctx, first, &lg, t->dlogits, err) != 0) return -1;
    dlogits_for_batch(t, ctx, first, count, ls->n);
    return 0;
}

/* A lane's rows of the batch, drawn by the lane itself (rx_data_info.parts). */
static int lane_load(void *arg, rx_ctx *ctx, int64_t first, int64_t count, char *err)
{
    const lane_step *ls = arg;
    return trainer_load_rows(&ls->r->t, ctx, RX_TRAIN, ls->first, 0, first, count, err);
}

static int lane_update(void *arg, rx_ctx *ctx, size_t begin, size_t end, char *err)
{
    const lane_step *ls = arg;
    return step_range(ls->r, ls->epoch, ctx, begin, end, err);
}

/* The whole batch in one process, on lanes, with nothing between its gradients and the step
 * (no clipping, which needs every gradient's norm first): forward, loss, backward and the step
 * in one parallel region. Same results as train_part and optimizer_step, to rounding (the
 * loss's gradient is rescaled per lane). */
static bool steps_in_lanes(const run *r, int64_t n)
{
    const trainer *t = &r->t;
    return dist_size() == 1 && !(t->c->clip_grad_norm > 0) && net_lanes_for(&t->nt, n) > 1;
}

static int train_in_lanes(run *r, int64_t epoch, int64_t first, int64_t n, double *s, char *err)
{
    trainer *t = &r->t;
    rx_tensor x = trainer_tensor(t, t->x, n, t->info.sample);
    net_zero_grads(&t->nt);
    /* Each lane draws its own part where the data plugin allows it: the threads then never
     * wait for one of them to draw the batch, which passive waiting paid for with a wake
     * (docs/benchmarks.md, "Each lane draws its own part of the batch"). The run's first batch is
     * drawn whole, for its pictures. */
    bool lanes_draw = trainer_draws_in_parts(t) && !first_batch_of_run(r);
    if (lanes_draw) t->nt.part_offset = 0, t->nt.part_batch = 0; /* the whole batch is here */
    else if (load_part(r, first, n, first, n, &x, err) != 0) return -1;
    if (next_step(r, epoch, err) != 0) return -1;
    lane_step ls = { .r = r, .epoch = epoch, .first = first, .n = n };
    /* A call's state is state_per_param blocks of its length: with more than one (adam), a
     * range that split a group would lay its state out otherwise than a whole group's call; a
     * per_tensor optimizer's groups are tensors it needs whole. */
    net_hooks h = { .load = lanes_draw ? lane_load : NULL, .loss = lane_loss, .update = lane_update, .arg = &ls,
                    .dlogits = t->dlogits,
                    .whole_groups = t->state_per_param > 1 || t->c->optim.pl.desc->optim.per_tensor };
    if (net_train_lanes(&t->nt, &t->ctx, &x, r->backward_from, &h, err) != 0) return -1;
    return trainer_losses_sum(t, n, s, err);
}

/* Every rank's part, the gradients summed over the ranks and the step every rank takes alike
 * (in one process on lanes, all of it in one parallel region: train_in_lanes); then what the
 * ranks agree on: the loss, a failure on any of them, a stop request. A rank whose
 * part failed still joins the sum, so that no rank waits for it; the step's weights are then
 * garbage, but a failed run saves nothing (nor does a NaN loss: best.safetensors stays as it was). */
static int train_batch(run *r, int64_t epoch, int64_t first, int64_t n, char *err)
{
    trainer *t = &r->t;
    double s, agreed[3];
    int rc;
    if (steps_in_lanes(r, n)) {
        rc = train_in_lanes(r, epoch, first, n, &s, err);
    } else {
        rc = train_part(r, first, n, &s, err);
        if (dist_sum_floats(t->gpu, t->device, t->nt.grads, t->nt.nparams, err) != 0) return -1;
        /* A rank with no part drew nothing: it takes the state the others agree on, rank 0's. */
        if (n < dist_size() && dist_broadcast(NULL, RX_CPU, &t->ctx.rng.s, sizeof t->ctx.rng.s, err) != 0) return -1;
        /* Clipping sees the summed gradients, as with PyTorch's DDP; a batch whose loss is not
         * finite is reported as such below, not by its gradients' norm. */
        if (rc == 0 && isfinite(s)) rc = clip_gradients(r, epoch, err);
        if (rc == 0) rc = optimizer_step(r, epoch, err);
    }
    agreed[0] = s, agreed[1] = rc != 0, agreed[2] = interrupt_requested();
    if (dist_sum(agreed, 3, err) != 0) return -1;
    if (agreed[1] > 0) return dist_agree(rc, err), -1;
    r->stop_asked = agreed[2] > 0;
    if (!isfinite(agreed[0]))
        return errorf(err, "epoch %lld, batch %lld: the loss is %s; stopping (best.safetensors is kept as it was; try "
                      "a smaller learning rate)", (long long)epoch, (long long)r->pos.batches_done + 1,
                      isnan(agreed[0]) ? "NaN" : "infinite");
    r->pos.loss_sum += agreed[0];
    keep_batch_loss(r, agreed[0] / (double)n);
    return 0;
}

/* After a stop request: last.safetensors at the position reached, and how to go on, in err. */
static int stop(run *r, char *err)
{
    progress_end(&r->bar);
    r->pos.rng = r->t.ctx.rng.s;
    r->pos.lr = r->lr_now;
    if (r->writer && run_dir_save_last(r->s->dir, &r->t, &r->pos, err) != 0) return TRAIN_FAILED;
    observe(r, OBSERVE_STOP); /* after the save: a resume starts past what it writes */
    errorf(err, "stopped at epoch %lld, batch %lld%s: saved %s/last.safetensors; resume with: %s resume %s",
           (long long)r->pos.epochs_done + 1, (long long)r->pos.batches_done,
           r->pos.batches_done * r->t.c->batch_size >= r->t.info.size[RX_TRAIN] ? " (trained, not yet validated)" : "",
           r->s->dir, config_command(r->t.c), r->s->dir);
    return TRAIN_INTERRUPTED;
}

/* After a stop request where last.safetensors already holds where the run stands. */
static int stopped(run *r, const char *when, char *err)
{
    errorf(err, "stopped %s: %s/last.safetensors holds the run so far; resume with: %s resume %s", when, r->s->dir,
           config_command(r->t.c), r->s->dir);
    return TRAIN_INTERRUPTED;
}

/* Trains the rest of epoch pos.epochs_done + 1, from batch pos.batches_done on. */
static int train_epoch(run *r, char *err)
{
    trainer *t = &r->t;
    const config *c = t->c;
    int64_t epoch = r->pos.epochs_done + 1, total = t->info.size[RX_TRAIN];
    t->ctx.training = true;
    r->backward_from = net_first_trained(&t->nt, epoch); /* once an epoch, not per batch */
    t->ctx.err[0] = '\0';
    if (c->data.pl.desc->data.begin_epoch(t->data, &t->ctx, RX_TRAIN, epoch) != 0)
        return trainer_plugin_failed(t, &c->data, "begin_epoch", err);
    progress_begin(&r->bar, r->level > LOG_QUIET ? t->log : NULL, (total + c->batch_size - 1) / c->batch_size, epoch,
                   c->epochs);
    /* The time left for the whole run counts each epoch to come as long as those done took. */
    double done_seconds = 0;
    for (int i = 0; i < r->nhistory; i++) done_seconds += r->history[i].seconds;
    r->bar.later_epoch_seconds = r->nhistory ? done_seconds / r->nhistory : 0;
    for (int64_t first = r->pos.batches_done * c->batch_size; first < total; first += c->batch_size) {
        double t0 = now_seconds();
        int64_t n = total - first < c->batch_size ? total - first : c->batch_size;
        if (train_batch(r, epoch, first, n, err) != 0) return progress_end(&r->bar), TRAIN_FAILED;
        r->pos.batches_done++;
        r->pos.epoch_seconds += now_seconds() - t0;
        progress_update(&r->bar, r->pos.batches_done, first + n, r->pos.loss_sum / (double)(first + n));
        if (r->stop_asked && first + n < total) return stop(r, err);
    }
    progress_end(&r->bar);
    return 0;
}

/* ---- After an epoch ---- */

/* Saves best.safetensors when the epoch's weights are the best so far by validation loss (the
 * last epoch's without a validation split). */
static int keep_best(run *r, const epoch_record *e, bool validating, char *err)
{
    if (validating ? !(e->valid_loss < r->pos.best_valid_loss) : e->epoch != r->t.c->epochs) return 0;
    char best[PATH_MAX];
    if (run_dir_path(best, r->s->dir, "best.safetensors", err) != 0 ||
        run_dir_save_best(r->s->dir, &r->t.nt, e->epoch, e->valid_loss, err) != 0)
        return -1;
    if (r->level == LOG_VERBOSE && validating)
        fprintf(r->t.log, "  validation loss decreased (%.4f -> %.4f): saved %s\n", r->pos.best_valid_loss,
                e->valid_loss, best);
    else if (r->level == LOG_VERBOSE)
        fprintf(r->t.log, "  no validation split: saved the last epoch's weights as %s\n", best);
    r->pos.best_valid_loss = e->valid_loss;
    r->pos.best_epoch = e->epoch;
    return 0;
}

/* The epoch's row, from its validation v and where its training stands; early stopping's count
 * of epochs without improvement moves on in r->pos (saved with the epoch). */
static epoch_record epoch_row(run *r, const eval_result *v, double valid_seconds)
{
    const config *c = r->t.c;
    run_position *p = &r->pos;
    double images = (double)r->t.info.size[RX_TRAIN];
    bool clipping = c->clip_grad_norm > 0;
    /* seconds: the epoch's training (summed over any resumes) plus its validation. */
    epoch_record e = { .epoch = p->epochs_done + 1, .seconds = valid_seconds + p->epoch_seconds,
                       .train_loss = p->loss_sum / images, .valid_loss = v->loss, .valid_accuracy = v->accuracy,
                       .lr = r->lr_now, .train_seconds = p->epoch_seconds, .images_per_second = images / p->epoch_seconds,
                       .grad_norm = clipping ? p->grad_norm_sum / (double)p->batches_done : NAN,
                       .grad_norm_max = clipping ? p->grad_norm_max : NAN, .clipped_steps = p->clipped_steps };
    /* Keras' and Lightning's rule: an improvement is a fall of more than min_delta below the best
     * so far by that same rule (best.safetensors follows every fall). */
    if (r->t.info.size[RX_VALID] > 0 && v->loss < p->stop_best_loss - c->early_stop_min_delta) {
        p->stop_best_loss = v->loss;
        p->stale_epochs = 0;
    } else if (r->t.info.size[RX_VALID] > 0) {
        p->stale_epochs++;
    }
    e.epochs_without_improvement = p->stale_epochs;
    return e;
}

/* Validates after an epoch's training (the moving average, if any, is what is measured and
 * kept as best), records the epoch, and saves metrics.csv and last.safetensors. A stop request
 * during validation saves the epoch as trained, not yet validated. Returns a TRAIN_ code. */
static int finish_epoch(run *r, char *err)
{
    trainer *t = &r->t;
    bool validating = t->info.size[RX_VALID] > 0;
    double valid_start = now_seconds();
    eval_result v = { .loss = NAN, .accuracy = NAN };
    epoch_record e = { 0 };
    ema_swap(&t->ema, t->nt.params, true);
    int rc = validating && r->writer ? evaluate_split(t, RX_VALID, &v, NULL, NULL, err) : 0; /* rank 0 validates */
    if (rc == 0) {
        e = epoch_row(r, &v, now_seconds() - valid_start);
        if (r->level > LOG_QUIET) epoch_print(t->log, t->c->label, &e, t->c->epochs);
        if (r->writer) rc = keep_best(r, &e, validating, err); /* the others hear rank 0's position after */
    }
    ema_swap(&t->ema, t->nt.params, false);
    if (rc == EVAL_STOPPED) return stop(r, err);
    if (rc != 0) return TRAIN_FAILED;
    r->history[r->nhistory++] = e;
    r->pos = (run_position){ .epochs_done = e.epoch, .step = r->pos.step, .best_valid_loss = r->pos.best_valid_loss,
                             .best_epoch = r->pos.best_epoch, .train_seconds = r->pos.train_seconds + r->pos.epoch_seconds,
                             .rng = t->ctx.rng.s, .lr = r->lr_now, .stale_epochs = r->pos.stale_epochs,
                             .stop_best_loss = r->pos.stop_best_loss };
    if (r->writer && (run_dir_write_metrics(r->s->dir, r->history, r->nhistory, err) != 0 ||
                      run_dir_save_last(r->s->dir, t, &r->pos, err) != 0))
        return TRAIN_FAILED;
    /* Under a stop request the pictures and the report wait (the next epoch, after the resume, or
     * the test draws them again); the view says so. */
    observe(r, OBSERVE_EPOCH);
    fflush(t->log);
    return 0;
}

/* ---- The whole run ---- */

static void print_test(FILE *log, const eval_result *e)
{
    fprintf(log, "test loss %.4f\n", e->loss);
    for (int k = 0; k < e->nclasses; k++)
        fprintf(log, "  %-12s %3.0f%% (%lld/%lld)\n", e->class_names[k], 100.0 * class_accuracy(e, k),
                (long long)e->class_correct[k], (long long)e->class_total[k]);
}

/* The run's last line: the test's result, the epoch tested, and where to look at the run. */
static void print_result(FILE *log, const run_summary *s)
{
    const eval_result *e = &s->test;
    fprintf(log, "test accuracy %.2f%% (%lld/%lld), test loss %.4f; best epoch %lld", 100.0 * e->accuracy,
            (long long)e->correct, (long long)e->total, e->loss, (long long)s->best_epoch);
    if (s->stopped_early) fprintf(log, " (stopped early after epoch %lld)", (long long)s->stopped_epoch);
    fprintf(log, "; report: %s/report.html\n", s->dir);
}

/* Tests the best weights, as the tutorial does, and writes summary.json, last: it says the run
 * is finished. A stop request leaves the test to a resume (last.safetensors holds every epoch). */
static int test_best(run *r, double start, char *err)
{
    run_summary *s = r->s;
    if (!r->writer) return 0; /* rank 0 tests; the others get its results (share_results) */
    if (interrupt_requested()) return stopped(r, "before the test", err);
    if (run_dir_load_best(s->dir, &r->t.nt, err) != 0) return TRAIN_FAILED;
    if (r->level == LOG_VERBOSE)
        fprintf(r->t.log, "loaded %s/best.safetensors (epoch %lld) for the test\n", s->dir, (long long)r->pos.best_epoch);
    int rc = evaluate_split(&r->t, RX_TEST, &s->test, r->confusion, &r->samples, err);
    if (rc == EVAL_STOPPED) return stopped(r, "during the test", err);
    if (rc != 0) return TRAIN_FAILED;
    if (r->level == LOG_VERBOSE) print_test(r->t.log, &s->test);
    s->total_seconds = now_seconds() - start;
    observe(r, OBSERVE_TEST);
    if (run_dir_write_summary(s, err) != 0) return TRAIN_FAILED;
    if (!r->in_script || r->level == LOG_VERBOSE) print_result(r->t.log, s);
    return 0;
}

static int run_epochs(run *r, char *err)
{
    const config *c = r->t.c;
    run_summary *s = r->s;
    double start = now_seconds();
    while (r->pos.epochs_done < c->epochs && !run_stopped_early(c, &r->pos)) {
        double asked = interrupt_requested();
        if (dist_sum(&asked, 1, err) != 0) return TRAIN_FAILED;
        if (asked > 0) return stopped(r, "between epochs", err);
        int rc = train_epoch(r, err); /* its failures and stops are every rank's alike */
        if (rc == 0) rc = dist_agree(finish_epoch(r, err), err); /* rank 0's validation and files */
        /* Rank 0's position (best epoch, early stopping's count) is every rank's. */
        if (rc == 0 && dist_broadcast(NULL, RX_CPU, &r->pos, sizeof r->pos, err) != 0) rc = TRAIN_FAILED;
        if (rc != 0) return rc;
    }
    int64_t done = r->pos.epochs_done; /* fewer than c->epochs when early_stop ended the run */
    s->epochs = c->epochs;
    s->stopped_early = done < c->epochs;
    s->stopped_epoch = s->stopped_early ? done : 0;
    if (s->stopped_early && r->level == LOG_VERBOSE) /* the result line says it too */
        fprintf(r->t.log, "stopping early: the validation loss has not fallen by more than %g for %lld epochs\n",
                c->early_stop_min_delta, (long long)r->pos.stale_epochs);
    for (int i = 0; i < r->nhistory; i++) s->clipped_steps += r->history[i].clipped_steps;
    s->best_epoch = r->pos.best_epoch;
    s->best_valid_loss = r->pos.best_valid_loss;
    s->train_seconds_per_epoch = r->pos.train_seconds / (double)done;
    s->images_per_second = (double)r->t.info.size[RX_TRAIN] * (double)done / r->pos.train_seconds;
    return test_best(r, start, err);
}

/* The loop's own memory, and where training stands: from the start, or from last.safetensors. */
static int start(run *r, bool resuming, char *err)
{
    trainer *t = &r->t;
    const config *c = t->c;
    int nclasses = t->info.nclasses;
    if (trainer_plan_epochs(t, sizeof *r->history, &r->total_steps, err) != 0) return -1;
    if (c->early_stop_patience > 0 && t->info.size[RX_VALID] == 0)
        return errorf(err, "%s: early_stop watches the validation loss, but %s has no validation split (give it one, "
                      "e.g. valid_fraction = 0.1, or leave early_stop out)", c->file, c->data.where);
    r->pos.best_valid_loss = INFINITY;
    r->pos.stop_best_loss = INFINITY;
    r->history = calloc((size_t)c->epochs, sizeof *r->history);
    r->confusion = calloc((size_t)nclasses * (size_t)nclasses, sizeof *r->confusion);
    r->batches = calloc((size_t)((t->info.size[RX_TRAIN] + c->batch_size - 1) / c->batch_size), sizeof *r->batches);
    if (!r->history || !r->confusion || !r->batches || sample_batch_alloc(&r->samples, t->info.sample) != 0)
        return errorf(err, "out of memory allocating batch buffers (batch %lld)", (long long)c->batch_size);
    if (!resuming || !r->writer) return 0; /* the other ranks get rank 0's state (share_start) */
    if (run_dir_resume(c->out, t, &r->pos, r->history, &r->nhistory, err) != 0) return -1;
    t->ctx.rng.s = r->pos.rng;
    if (!isnan(r->pos.lr)) r->lr_now = r->pos.lr; /* shown in the epoch's row when its training is done */
    /* A file of an older runexp: no clipping was recorded, and early stopping starts from the best. */
    if (isnan(r->pos.grad_norm_sum)) r->pos.grad_norm_sum = 0;
    if (isnan(r->pos.grad_norm_max)) r->pos.grad_norm_max = 0;
    if (isnan(r->pos.stop_best_loss)) r->pos.stop_best_loss = r->pos.best_valid_loss;
    return 0;
}

static void print_data(const run *r, bool resuming)
{
    const rx_data_info *in = &r->t.info;
    FILE *log = r->t.log;
    if (resuming && says_run_lines(r)) {
        const run_position *p = &r->pos;
        fprintf(log, "resuming %s: %lld of %lld epochs done", r->s->dir, (long long)p->epochs_done, (long long)r->t.c->epochs);
        if (p->batches_done)
            fprintf(log, ", and %lld batches of epoch %lld", (long long)p->batches_done, (long long)p->epochs_done + 1);
        fprintf(log, "%s\n", p->epochs_done == r->t.c->epochs || run_stopped_early(r->t.c, p) ? "; the test remains" : "");
    }
    if (r->level < LOG_VERBOSE) return;
    fprintf(log, "data: %lld train, %lld valid, %lld test images of shape", (long long)in->size[RX_TRAIN],
            (long long)in->size[RX_VALID], (long long)in->size[RX_TEST]);
    for (int i = 0; i < in->sample.ndim; i++) fprintf(log, "%s%lld", i ? "x" : " ", (long long)in->sample.d[i]);
    fprintf(log, "; %zu parameters; %s, %lld threads\n", r->t.nt.nparams, r->s->device, (long long)r->s->threads);
    const net *nt = &r->t.nt;
    for (int i = 1; i < nt->n; i++) /* a layer the network runs later than the model lists it */
        if (nt->layers[i - 1].use > nt->layers[i].use)
            fprintf(log, "%s runs after %s: the same results, on the pooled values\n", nt->layers[i].use->where,
                    nt->layers[i - 1].use->where);
}

/* What summary.json says of where and when the run was made, and by which runexp. */
static void describe_start(run_summary *s, time_t started)
{
    struct tm tm;
    gmtime_r(&started, &tm);
    strftime(s->started, sizeof s->started, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (gethostname(s->host, sizeof s->host - 1) != 0 || !s->host[0]) snprintf(s->host, sizeof s->host, "unknown");
    snprintf(s->runexp_version, sizeof s->runexp_version, "%s", RUNEXP_VERSION);
    snprintf(s->revision, sizeof s->revision, "%s", build_revision());
}

/* The stop request came before the run folder was opened: nothing of it was written. */
static int not_started(const config *c, run_dir_mode mode, char *err)
{
    if (mode == RUN_DIR_NEW) return errorf(err, "stopped by a signal before the run started; nothing was written"), TRAIN_INTERRUPTED;
    errorf(err, "stopped by a signal before the run went on; %s is as it was; resume with: %s resume %s", c->out,
           config_command(c), c->out);
    return TRAIN_INTERRUPTED;
}

/* Rank 0 decides how the run folder is opened; the other ranks hear it. */
static int mode_of(const run *r, const config *c, int flags, run_dir_mode *mode, char *err)
{
    *mode = RUN_DIR_NEW;
    if (dist_agree(r->writer ? run_dir_mode_of(c, flags, mode, err) : 0, err) != 0) return -1;
    return dist_broadcast(NULL, RX_CPU, mode, sizeof *mode, err);
}

/* Every rank starts from rank 0's weights, optimizer state, average, position and history. */
static int share_start(run *r, char *err)
{
    trainer *t = &r->t;
    dist_gpu *g = t->gpu;
    size_t floats = sizeof(float) * t->nt.nparams;
    if (dist_size() < 2) return 0;
    if (dist_broadcast(g, t->device, t->nt.params, floats, err) != 0 ||
        dist_broadcast(g, t->device, t->opt_state, floats * (size_t)t->state_per_param, err) != 0 ||
        (t->ema.avg && dist_broadcast(g, t->device, t->ema.avg, floats, err) != 0) ||
        dist_broadcast(NULL, RX_CPU, &r->pos, sizeof r->pos, err) != 0 ||
        dist_broadcast(NULL, RX_CPU, &r->nhistory, sizeof r->nhistory, err) != 0 ||
        dist_broadcast(NULL, RX_CPU, r->history, sizeof *r->history * (size_t)r->nhistory, err) != 0)
        return -1;
    t->ctx.rng.s = r->pos.rng;
    if (!isnan(r->pos.lr)) r->lr_now = r->pos.lr;
    return 0;
}

/* Every rank returns rank 0's results, so that a config's Lua decides alike on every rank. */
static int share_results(run *r, run_summary *s, char *err)
{
    if (dist_size() < 2) return 0;
    if (dist_broadcast(NULL, RX_CPU, s, sizeof *s, err) != 0) return -1;
    s->history = r->history;
    return dist_broadcast(NULL, RX_CPU, r->history, sizeof *r->history * (size_t)s->nhistory, err);
}

/* Set up, open the run folder (rank 0) and train; every rank's failure is every rank's. */
static int run_all(run *r, config *c, int flags, run_dir_mode mode, FILE *log, char *err)
{
    run_summary *s = r->s;
    bool resuming = mode == RUN_DIR_RESUME;
    int rc = trainer_setup(&r->t, c, log, !says_run_lines(r), !resuming, err) == 0 && start(r, resuming, err) == 0
                 ? 0
                 : TRAIN_FAILED;
    if (dist_agree(rc, err) != 0) return TRAIN_FAILED;
    snprintf(s->device, sizeof s->device, "%s", device_name(r->t.device));
    s->threads = r->t.ctx.threads;
    r->pos.rng = r->t.ctx.rng.s; /* a new run's start: after the initial weights drew from it */
    if (interrupt_requested()) rc = not_started(c, mode, err);
    else if (r->writer && run_dir_open(c, mode, flags, &r->t, &r->pos, r->level == LOG_VERBOSE ? log : NULL,
                                       &r->config_text, err) != 0)
        rc = TRAIN_FAILED;
    if ((rc = dist_agree(rc, err)) != 0) return rc;
    if (share_start(r, err) != 0) return TRAIN_FAILED;
    r->opened = true;
    snprintf(s->dir, sizeof s->dir, "%s", c->out);
    print_data(r, resuming);
    return run_epochs(r, err);
}

int train_run(config *c, int flags, FILE *log, run_summary *s, char *err)
{
    memset(s, 0, sizeof *s);
    if (c->resume && !c->out[0])
        return errorf(err, "%s: resume = true needs out= (the run folder to continue)", c->file), TRAIN_FAILED;
    run_dir_mode mode = RUN_DIR_NEW;
    if (interrupt_requested()) return not_started(c, mode, err);
    run r = { .s = s, .writer = dist_rank() == 0, .level = log_level(c), .in_script = flags & TRAIN_IN_SCRIPT,
              .started = time(NULL) };
    if (mode_of(&r, c, flags, &mode, err) != 0) return TRAIN_FAILED;
    snprintf(s->config, sizeof s->config, "%s", c->file);
    s->seed = c->seed;
    describe_start(s, r.started);
    int rc = run_all(&r, c, flags, mode, log, err);
    if (rc == 0 && r.observer_failures) /* what is for looking at failed; what was computed is all kept */
        rc = errorf(err, "%s (the run finished; its weights and metrics are in %s)", r.observer_err, s->dir);
    /* A failure the stop request caused (an interrupted read) is the stop. */
    if (rc == TRAIN_FAILED && !r.opened && interrupt_requested()) rc = TRAIN_INTERRUPTED;
    rc = dist_agree(rc, err); /* rank 0's test, pictures and summary */
    /* The history outlives the run, for the caller (runexp.train returns it to Lua). */
    s->history = r.history;
    s->nhistory = r.nhistory;
    if (rc == 0 && share_results(&r, s, err) != 0) rc = TRAIN_FAILED;
    trainer_free(&r.t);
    free(r.config_text);
    free(r.confusion);
    free(r.batches);
    sample_batch_free(&r.samples);
    return rc;
}
