/* train.c: the train / validate / test loop and the run folder.
 *
 * Everything that can be refused (config, plugins, data files, shapes) is checked before the
 * run folder is created, so a failed start leaves nothing behind. Then each epoch trains,
 * validates, saves the best checkpoint by validation loss (as the tutorial does), rewrites
 * metrics.csv and saves last.safetensors: the weights plus everything a resumed run needs to
 * continue bit for bit (optimizer state, step, RNG, best-so-far record, position in the epoch).
 * At the end the best checkpoint is loaded and tested, and summary.json written. */
#include "train.h"

#include <cblas.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint.h"
#include "crash.h"
#include "device.h"
#include "image.h"
#include "progress.h"
#include "report.h"

/* The one piece of global state: a signal handler can reach nothing else. Set by SIGINT or
 * SIGTERM, read after every batch. */
static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig)
{
    stop_signal = sig;
    signal(sig, SIG_DFL); /* a second Ctrl-C ends the process at once */
}

void train_handle_signals(void)
{
    signal(SIGINT, on_stop_signal);
    signal(SIGTERM, on_stop_signal);
}

bool train_stop_requested(void)
{
    return stop_signal != 0;
}

/* Everything one run holds; torn down by run_free whatever happened. */
typedef struct run {
    config *c;
    FILE *log;
    rx_ctx ctx;
    rx_device device;
    rx_data_info info;
    void *data, *loss, *optim;   /* plugin instances */
    net nt;
    float *x;                    /* (batch, sample...) on the device */
    int32_t *labels;             /* (batch) on the device */
    float *losses;               /* (batch) on the device */
    float *dlogits;              /* (batch, classes) on the device */
    float *opt_state;            /* (state_per_param * nparams) on the device */
    float *ema;                  /* (nparams) the weights' moving average, when c->ema > 0 */
    float *trained;              /* (nparams) the trained weights while the average is evaluated */
    float *avg_logits;           /* (batch, classes) the mean over test-time views */
    int64_t total_steps;         /* optimizer steps in the whole run, for the schedule */
    double lr_now;               /* the last step's learning rate, for the logs */
    int backward_from;           /* this epoch's net_first_trained: backward stops there */
    int state_per_param;
    float *host_losses, *host_logits; /* host copies for the logs */
    float *staged_x;             /* pinned host batch, when the data plugin has no path on the device */
    int32_t *staged_labels;
    int32_t *host_labels;
    int64_t step;                /* optimizer steps taken */
    /* Where training stands; all of it goes into last.safetensors. */
    int64_t epochs_done, batches_done; /* whole epochs, then batches into the next one */
    double loss_sum;             /* train loss summed over the batches done this epoch */
    double epoch_seconds;        /* training time spent on those batches */
    double train_seconds;        /* training time of the whole epochs done */
    double best_valid_loss;
    int64_t best_epoch;
    int nhistory;
    epoch_record *history;       /* (c->epochs) */
    char *config_text;           /* the resolved config, for report.html */
    int64_t *confusion;          /* (nclasses, nclasses) test counts, [true * nclasses + predicted] */
    float *host_x;               /* (batch, sample...) host copy for the pictures */
    progress bar;                /* the epoch's progress bar (a no-op off a terminal) */
} run;

#define GRID_IMAGES 32           /* pictures in train_batch.png and test_predictions.png */

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t); /* monotonic: epoch times can never come out negative */
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int plugin_failed(run *r, const plugin_use *u, const char *op, char *err)
{
    snprintf(err, ERR_LEN, "%s: %s: %s%s%s", r->c->file, u->where, op, op[0] ? ": " : "",
             r->ctx.err[0] ? r->ctx.err : "failed without a reason");
    return -1;
}

static rx_tensor batch_tensor(run *r, float *data, int64_t n, rx_shape s)
{
    rx_tensor t = { .data = data, .shape = { .ndim = s.ndim + 1, .d = { n } }, .device = r->device };
    for (int i = 0; i < s.ndim; i++) t.shape.d[i + 1] = s.d[i];
    return t;
}

static int join(char *buf, size_t len, const char *dir, const char *name, char *err)
{
    if (snprintf(buf, len, "%s/%s", dir, name) >= (int)len) {
        snprintf(err, ERR_LEN, "%s: path too long", dir);
        return -1;
    }
    return 0;
}

/* ---- Setting up ---- */

/* device = "cpu", "cuda" (a clear error where no GPU is usable) or "auto" (the GPU when one is
 * usable, else the CPU, said once). Never a silent change of device. */
static int resolve_device(run *r, bool quiet, char *err)
{
    char why[ERR_LEN];
    const char *asked = r->c->device;
    r->device = RX_CPU;
    if (strcmp(asked, "cuda") == 0) {
        if (!device_usable(RX_CUDA, why)) {
            snprintf(err, ERR_LEN, "%s: device = \"cuda\", but %s (use device=cpu or device=auto)", r->c->file, why);
            return -1;
        }
        r->device = RX_CUDA;
    } else if (strcmp(asked, "auto") == 0) {
        if (device_usable(RX_CUDA, why)) r->device = RX_CUDA;
        else if (!quiet) fprintf(r->log, "device: cpu (auto: %s)\n", why);
    }
    if (device_open_context(r->device, &r->ctx, why) != 0) {
        snprintf(err, ERR_LEN, "%s: %s", r->c->file, why);
        return -1;
    }
    return 0;
}

/* init = "whiten": the first layer's weights from the patches of the first training images of
 * epoch 1 (at most WHITEN_IMAGES, as airbench takes 5000), drawn on the CPU. */
#define WHITEN_IMAGES 5000
static int init_whitening(run *r, char *err)
{
    const config *c = r->c;
    const rx_data_ops *ops = &c->data.pl.desc->data;
    if (!ops->batch[RX_CPU])
        return snprintf(err, ERR_LEN, "%s: init = \"whiten\" needs a data plugin that draws batches on the CPU", c->file), -1;
    int64_t n = r->info.size[RX_TRAIN] < WHITEN_IMAGES ? r->info.size[RX_TRAIN] : WHITEN_IMAGES;
    rx_tensor x = { .data = malloc((size_t)(n * rx_numel(r->info.sample)) * sizeof(float)), .device = RX_CPU,
                    .shape = { .ndim = r->info.sample.ndim + 1, .d = { n } } };
    int32_t *labels = malloc((size_t)n * sizeof *labels);
    for (int i = 0; i < r->info.sample.ndim; i++) x.shape.d[i + 1] = r->info.sample.d[i];
    rx_ctx cpu = r->ctx;
    cpu.device = RX_CPU;
    int rc = -1;
    if (!x.data || !labels) snprintf(err, ERR_LEN, "out of memory drawing %lld images for whitening", (long long)n);
    else if (ops->begin_epoch(r->data, &cpu, RX_TRAIN, 1) != 0 || ops->batch[RX_CPU](r->data, &cpu, RX_TRAIN, 0, 0, &x, labels) != 0)
        snprintf(err, ERR_LEN, "%s: %s: drawing images for whitening: %s", c->file, c->data.where, cpu.err);
    else rc = net_init_whitening(&r->nt, x.data, n, 5e-4, err);
    free(x.data);
    free(labels);
    return rc;
}

/* fresh: the weights start from their inits; otherwise a checkpoint will overwrite them, so the
 * data-driven init (whitening) is not computed for nothing. */
static int create_plugins(run *r, bool fresh, char *err)
{
    config *c = r->c;
    rx_ctx *ctx = &r->ctx;
    const rx_plugin *d = c->data.pl.desc;
    if (plugin_use_check_device(c, &c->data, r->device, err) != 0) return -1;
    crash_enter(c->data.where, "create");
    int rc = d->data.create(&r->data, ctx, c->data.args, (uint64_t)c->seed, &r->info);
    crash_leave();
    if (rc != 0) return plugin_failed(r, &c->data, "", err);
    rx_data_info *in = &r->info;
    if (in->sample.ndim < 1 || in->sample.ndim >= RX_MAX_DIMS || rx_numel(in->sample) < 1 || in->nclasses < 2 ||
        in->nclasses > RX_MAX_CLASSES || in->size[RX_TRAIN] < 1 || in->size[RX_TEST] < 1)
        return snprintf(err, ERR_LEN, "%s: %s: the plugin described an unusable data set", c->file, c->data.where), -1;

    if (net_build(&r->nt, ctx, c, in->sample, c->batch_size, err) != 0) return -1;
    if (net_init_params(&r->nt, (uint64_t)c->seed, err) != 0) return -1;
    if (fresh && net_whitening_layer(&r->nt) >= 0 && init_whitening(r, err) != 0) return -1;

    const rx_plugin *l = c->loss.pl.desc;
    if (plugin_use_check_device(c, &c->loss, r->device, err) != 0) return -1;
    crash_enter(c->loss.where, "create");
    rc = l->loss.create(&r->loss, ctx, c->loss.args, r->nt.out, in->nclasses);
    crash_leave();
    if (rc != 0) return plugin_failed(r, &c->loss, "", err);

    const rx_plugin *o = c->optim.pl.desc;
    if (plugin_use_check_device(c, &c->optim, r->device, err) != 0) return -1;
    crash_enter(c->optim.where, "create");
    rc = o->optim.create(&r->optim, ctx, c->optim.args, &r->state_per_param);
    crash_leave();
    if (rc != 0) return plugin_failed(r, &c->optim, "", err);
    if (r->state_per_param < 0 || r->state_per_param > 16)
        return snprintf(err, ERR_LEN, "%s: %s: the plugin asked for %d state values per parameter", c->file,
                        c->optim.where, r->state_per_param), -1;
    return 0;
}

static int alloc_buffers(run *r, char *err)
{
    size_t b = (size_t)r->c->batch_size, sample = (size_t)rx_numel(r->info.sample);
    size_t classes = (size_t)rx_numel(r->nt.out);
    r->x = device_alloc(r->device, b * sample * sizeof(float));
    r->labels = device_alloc(r->device, b * sizeof(int32_t));
    r->losses = device_alloc(r->device, b * sizeof(float));
    r->dlogits = device_alloc(r->device, b * classes * sizeof(float));
    r->opt_state = device_alloc(r->device, (size_t)r->state_per_param * r->nt.nparams * sizeof(float));
    r->avg_logits = device_alloc(r->device, b * classes * sizeof(float));
    if (r->c->ema > 0) {
        r->ema = device_alloc(r->device, r->nt.nparams * sizeof(float));
        r->trained = device_alloc(r->device, r->nt.nparams * sizeof(float));
        if (!r->ema || !r->trained) return snprintf(err, ERR_LEN, "out of memory for the moving average"), -1;
        device_copy(r->device, r->ema, r->nt.params, r->nt.nparams * sizeof(float));
    }
    int64_t batches = (r->info.size[RX_TRAIN] + r->c->batch_size - 1) / r->c->batch_size;
    r->total_steps = batches * r->c->epochs;
    r->host_losses = malloc(b * sizeof(float));
    r->host_logits = malloc(b * classes * sizeof(float));
    r->host_labels = malloc(b * sizeof(int32_t));
    r->history = calloc((size_t)r->c->epochs, sizeof *r->history);
    r->confusion = calloc((size_t)r->info.nclasses * (size_t)r->info.nclasses, sizeof *r->confusion);
    r->host_x = malloc(b * sample * sizeof(float));
    if (!r->c->data.pl.desc->data.batch[r->device]) { /* drawn on the CPU, copied over */
        r->staged_x = host_alloc_pinned(r->device, b * sample * sizeof(float));
        r->staged_labels = host_alloc_pinned(r->device, b * sizeof(int32_t));
        if (!r->staged_x || !r->staged_labels) {
            snprintf(err, ERR_LEN, "out of memory allocating pinned batch buffers (batch %zu)", b);
            return -1;
        }
    }
    if (!r->confusion || !r->host_x || !r->avg_logits || !r->x || !r->labels || !r->losses || !r->dlogits || !r->opt_state || !r->host_losses || !r->host_logits ||
        !r->host_labels || !r->history) {
        snprintf(err, ERR_LEN, "out of memory allocating batch buffers (batch %zu)", b);
        return -1;
    }
    return 0;
}

/* Threads, device, plugins, network and buffers: everything but the run folder. */
static int run_setup(run *r, config *c, FILE *log, bool quiet, bool fresh, char *err)
{
    r->c = c;
    r->log = log;
    r->best_valid_loss = INFINITY;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    r->ctx.threads = c->threads > 0 ? (int)c->threads : (int)(cores > 0 ? cores : 1);
    r->ctx.rng = rx_rng_stream((uint64_t)c->seed, 0xD0);
    /* One pool of threads: the plugins' own (OpenMP, ctx.threads of them, splitting the batch or
     * the work); OpenBLAS runs single-threaded inside them, so its pool never fights theirs. */
    openblas_set_num_threads(1);
    if (resolve_device(r, quiet, err) != 0) return -1;
    r->ctx.device = r->device;
    return create_plugins(r, fresh, err) != 0 || alloc_buffers(r, err) != 0 ? -1 : 0;
}

static void run_free(run *r)
{
    config *c = r->c;
    net_free(&r->nt);
    if (c->data.pl.desc && c->data.pl.desc->data.destroy) c->data.pl.desc->data.destroy(r->data);
    if (c->loss.pl.desc && c->loss.pl.desc->loss.destroy) c->loss.pl.desc->loss.destroy(r->loss);
    if (c->optim.pl.desc && c->optim.pl.desc->optim.destroy) c->optim.pl.desc->optim.destroy(r->optim);
    device_free(r->device, r->x);
    device_free(r->device, r->labels);
    device_free(r->device, r->losses);
    device_free(r->device, r->dlogits);
    device_free(r->device, r->opt_state);
    device_free(r->device, r->ema);
    device_free(r->device, r->trained);
    device_free(r->device, r->avg_logits);
    free(r->host_losses);
    free(r->host_logits);
    free(r->host_labels);
    free(r->history);
    free(r->config_text);
    free(r->confusion);
    free(r->host_x);
    host_free_pinned(r->device, r->staged_x);
    host_free_pinned(r->device, r->staged_labels);
    device_close_context(r->device, &r->ctx);
}

/* ---- One batch, one epoch, one evaluation ---- */

/* Draws samples [first, first + n) of split into r->x and r->labels: by the data plugin on the
 * run's device, or on the CPU into pinned memory and then copied over (queued, not waited for). */
static int load_batch(run *r, rx_split split, int64_t first, int view, int64_t n, rx_tensor *x, char *err)
{
    const rx_data_ops *ops = &r->c->data.pl.desc->data;
    bool staged = !ops->batch[r->device];
    *x = batch_tensor(r, staged ? r->staged_x : r->x, n, r->info.sample);
    if (staged) x->device = RX_CPU;
    r->ctx.err[0] = '\0';
    crash_enter(r->c->data.where, "batch");
    rx_ctx cpu = r->ctx;
    cpu.device = RX_CPU;
    int rc = staged ? ops->batch[RX_CPU](r->data, &cpu, split, first, view, x, r->staged_labels)
                    : ops->batch[r->device](r->data, &r->ctx, split, first, view, x, r->labels);
    crash_leave();
    if (rc != 0) {
        if (staged) snprintf(r->ctx.err, sizeof r->ctx.err, "%s", cpu.err);
        return plugin_failed(r, &r->c->data, "batch", err);
    }
    if (staged) {
        host_to_device(r->device, r->x, r->staged_x, (size_t)rx_numel(x->shape) * sizeof(float));
        host_to_device(r->device, r->labels, r->staged_labels, (size_t)n * sizeof(int32_t));
        *x = batch_tensor(r, r->x, n, r->info.sample);
    }
    return 0;
}

/* Per-sample losses into r->losses (and the mean's gradient into r->dlogits when training).
 * Returns their sum, copied to the host. */
static int compute_loss(run *r, const rx_tensor *logits, bool with_grad, double *sum, char *err)
{
    int64_t n = logits->shape.d[0];
    rx_tensor dl = batch_tensor(r, r->dlogits, n, r->nt.out);
    r->ctx.err[0] = '\0';
    crash_enter(r->c->loss.where, "forward");
    int rc = r->c->loss.pl.desc->loss.forward[r->device](r->loss, &r->ctx, logits, r->labels, r->losses,
                                                          with_grad ? &dl : NULL);
    crash_leave();
    if (rc != 0) return plugin_failed(r, &r->c->loss, "forward", err);
    device_to_host(r->device, r->host_losses, r->losses, (size_t)n * sizeof(float));
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += r->host_losses[i];
    *sum = s;
    return 0;
}

/* The pictures and the report are for looking at: a failure to write one is said, once per
 * picture, and the run goes on. */
static void warn(run *r, const char *what, const char *why)
{
    progress_end(&r->bar);
    fprintf(r->log, "warning: %s not written: %s\n", what, why);
}

/* The first images of the batch in r->x, with their classes (and predictions), as a PNG grid. */
static void write_grid(run *r, const char *dir, const char *name, int64_t n, const int32_t *labels,
                       const int32_t *predicted)
{
    char path[PATH_MAX], err[ERR_LEN];
    int64_t count = n < GRID_IMAGES ? n : GRID_IMAGES;
    rx_shape s = r->info.sample;
    if (s.ndim != 3) return; /* only images are drawn */
    device_to_host(r->device, r->host_x, r->x, (size_t)(count * rx_numel(s)) * sizeof(float));
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path ||
        image_grid_png(path, r->host_x, (int)count, (int)s.d[0], (int)s.d[1], (int)s.d[2], labels, predicted,
                       r->info.class_names, r->info.nclasses, err) != 0)
        warn(r, name, err);
}

/* report.html: rewritten after every epoch (test NULL) and at the end. */
static void write_report(run *r, const char *dir, const eval_result *test, const run_summary *s)
{
    char path[PATH_MAX], err[ERR_LEN];
    report_input in = { .title = dir, .config_text = r->config_text, .history = r->history, .nhistory = r->nhistory,
                        .epochs = r->c->epochs, .device = device_name(r->device), .test = test,
                        .confusion = test ? r->confusion : NULL, .train_png = "train_batch.png",
                        .predictions_png = "test_predictions.png" };
    if (s) in.timings = (report_timings){ s->train_seconds_per_epoch, s->images_per_second, s->total_seconds };
    if (snprintf(path, sizeof path, "%s/report.html", dir) >= (int)sizeof path || report_write_html(path, &in, err) != 0)
        warn(r, "report.html", err);
}

/* One step of every group the optimizer trains, at the schedule's learning rate; then the
 * moving average, if any, follows the weights (with timm's warm-up, so that the first steps'
 * weights do not linger: decay min(ema, (1 + t) / (10 + t))). */
static int optimizer_step(run *r, int64_t epoch, char *err)
{
    const config *c = r->c;
    double factor;
    if (config_lr_factor(c, r->step, r->total_steps, epoch, &factor, err) != 0) return -1;
    r->lr_now = c->lr * factor;
    int64_t t = ++r->step;
    for (int i = 0; i < r->nt.ngroups; i++) {
        const param_group *g = &r->nt.groups[i];
        if (!group_trains(g, epoch)) continue;
        rx_step step = { .lr = (float)(r->lr_now * g->lr_scale), .weight_decay = g->weight_decay, .t = t };
        r->ctx.err[0] = '\0';
        crash_enter(c->optim.where, "step");
        int rc = c->optim.pl.desc->optim.step[r->device](r->optim, &r->ctx, r->nt.grads + g->offset,
                                                          r->nt.params + g->offset,
                                                          r->opt_state + (size_t)r->state_per_param * g->offset, g->n, step);
        crash_leave();
        if (rc != 0) return plugin_failed(r, &c->optim, "step", err);
    }
    if (r->ema) {
        double d = fmin(c->ema, (1.0 + (double)t) / (10.0 + (double)t));
        device_axpby(r->device, &r->ctx, r->nt.nparams, (float)(1 - d), r->nt.params, (float)d, r->ema);
    }
    return 0;
}

/* With a moving average, evaluation sees it: swap it in (and back out after). */
static void use_average(run *r, bool on)
{
    if (!r->ema) return;
    size_t bytes = r->nt.nparams * sizeof(float);
    if (on) {
        device_copy(r->device, r->trained, r->nt.params, bytes);
        device_copy(r->device, r->nt.params, r->ema, bytes);
    } else {
        device_copy(r->device, r->nt.params, r->trained, bytes);
    }
}

static int train_batch(run *r, int64_t epoch, int64_t first, int64_t n, const char *picture_dir, char *err)
{
    rx_tensor x, logits;
    double s;
    if (load_batch(r, RX_TRAIN, first, 0, n, &x, err) != 0) return -1;
    if (picture_dir) {
        device_to_host(r->device, r->host_labels, r->labels, (size_t)n * sizeof(int32_t));
        write_grid(r, picture_dir, "train_batch.png", n, r->host_labels, NULL);
    }
    if (net_forward(&r->nt, &r->ctx, &x, &logits, err) != 0) return -1;
    if (compute_loss(r, &logits, true, &s, err) != 0) return -1;
    if (!isfinite(s)) {
        snprintf(err, ERR_LEN, "epoch %lld, batch %lld: the loss is %s; stopping (best.safetensors is kept as it "
                 "was; try a smaller learning rate)", (long long)epoch, (long long)r->batches_done + 1,
                 isnan(s) ? "NaN" : "infinite");
        return -1;
    }
    r->loss_sum += s;
    rx_tensor dlogits = batch_tensor(r, r->dlogits, n, r->nt.out);
    net_zero_grads(&r->nt);
    if (net_backward(&r->nt, &r->ctx, &x, &dlogits, r->backward_from, err) != 0) return -1;
    return optimizer_step(r, epoch, err);
}

static int save_last(run *r, const char *dir, char *err);

/* Trains the rest of epoch r->epochs_done + 1, from batch r->batches_done on. */
static int train_epoch(run *r, const char *dir, char *err)
{
    const config *c = r->c;
    int64_t epoch = r->epochs_done + 1;
    r->ctx.training = true;
    r->backward_from = net_first_trained(&r->nt, epoch);  /* once an epoch, not per batch */
    r->ctx.err[0] = '\0';
    if (c->data.pl.desc->data.begin_epoch(r->data, &r->ctx, RX_TRAIN, epoch) != 0)
        return plugin_failed(r, &c->data, "begin_epoch", err);
    int64_t total = r->info.size[RX_TRAIN];
    progress_begin(&r->bar, r->log, (total + c->batch_size - 1) / c->batch_size, epoch, c->epochs);
    for (int64_t first = r->batches_done * c->batch_size; first < total; first += c->batch_size) {
        double t0 = now_seconds();
        int64_t n = total - first < c->batch_size ? total - first : c->batch_size;
        /* The run's very first batch is also drawn, as train_batch.png. */
        const char *pictures = r->epochs_done == 0 && r->batches_done == 0 ? dir : NULL;
        if (train_batch(r, epoch, first, n, pictures, err) != 0) return progress_end(&r->bar), TRAIN_FAILED;
        r->batches_done++;
        r->epoch_seconds += now_seconds() - t0;
        progress_update(&r->bar, r->batches_done, first + n, r->loss_sum / (double)(first + n));
        if (train_stop_requested() && first + n < total) {
            progress_end(&r->bar);
            if (save_last(r, dir, err) != 0) return TRAIN_FAILED;
            snprintf(err, ERR_LEN, "stopped at epoch %lld, batch %lld: saved %s/last.safetensors; resume with: "
                     "runexp resume %s", (long long)epoch, (long long)r->batches_done, dir, dir);
            return TRAIN_INTERRUPTED;
        }
    }
    progress_end(&r->bar);
    return 0;
}

/* Mean loss, accuracy and per-class counts of the current weights on a split. With a folder,
 * also the confusion matrix (r->confusion) and the first batch drawn as test_predictions.png. */
static int evaluate(run *r, rx_split split, eval_result *e, const char *picture_dir, char *err)
{
    if (picture_dir) memset(r->confusion, 0, sizeof *r->confusion * (size_t)r->info.nclasses * (size_t)r->info.nclasses);
    const config *c = r->c;
    memset(e, 0, sizeof *e);
    r->ctx.training = false;
    r->ctx.err[0] = '\0';
    if (c->data.pl.desc->data.begin_epoch(r->data, &r->ctx, split, 0) != 0)
        return plugin_failed(r, &c->data, "begin_epoch", err);
    int64_t total = r->info.size[split];
    int64_t classes = rx_numel(r->nt.out);
    int32_t predicted[GRID_IMAGES];
    double sum = 0;
    int views = r->info.views > 1 ? r->info.views : 1;
    for (int64_t first = 0; first < total; first += c->batch_size) {
        int64_t n = total - first < c->batch_size ? total - first : c->batch_size;
        rx_tensor x, logits = { 0 };
        double s;
        /* Test-time augmentation: the mean of the logits over the views, the plain view last so
         * that r->x holds it for the pictures. */
        for (int v = views - 1; v >= 0; v--) {
            if (load_batch(r, split, first, v, n, &x, err) != 0) return -1;
            if (net_forward(&r->nt, &r->ctx, &x, &logits, err) != 0) return -1;
            if (views == 1) break;
            size_t len = (size_t)rx_numel(logits.shape);
            if (v == views - 1) device_copy(r->device, r->avg_logits, logits.data, len * sizeof(float));
            else device_axpby(r->device, &r->ctx, len, 1.0f, logits.data, 1.0f, r->avg_logits);
            if (v == 0) {
                device_axpby(r->device, &r->ctx, len, 0.0f, logits.data, 1.0f / (float)views, r->avg_logits);
                logits.data = r->avg_logits;
            }
        }
        if (compute_loss(r, &logits, false, &s, err) != 0) return -1;
        sum += s;
        device_to_host(r->device, r->host_logits, logits.data, (size_t)(n * classes) * sizeof(float));
        device_to_host(r->device, r->host_labels, r->labels, (size_t)n * sizeof(int32_t));
        for (int64_t i = 0; i < n; i++) {
            const float *row = r->host_logits + i * classes;
            int64_t best = 0;
            for (int64_t k = 1; k < classes; k++)
                if (row[k] > row[best]) best = k;
            int32_t y = r->host_labels[i];
            if (y >= 0 && y < r->info.nclasses) {
                e->class_total[y]++;
                e->class_correct[y] += best == y;
                if (picture_dir && best < r->info.nclasses) r->confusion[y * r->info.nclasses + best]++;
            }
            e->correct += best == y;
            if (picture_dir && first == 0 && i < GRID_IMAGES) predicted[i] = (int32_t)best;
        }
        if (picture_dir && first == 0) write_grid(r, picture_dir, "test_predictions.png", n, r->host_labels, predicted);
    }
    e->total = total;
    e->loss = total ? sum / (double)total : NAN;
    e->accuracy = total ? (double)e->correct / (double)total : NAN;
    e->nclasses = r->info.nclasses;
    for (int k = 0; k < e->nclasses; k++)
        snprintf(e->class_names[k], CLASS_NAME_LEN, "%s", r->info.class_names[k] ? r->info.class_names[k] : "?");
    return 0;
}

/* ---- The run folder ---- */

static void default_run_dir(const config *c, char *dir, size_t len)
{
    const char *base = strrchr(c->file, '/');
    base = base ? base + 1 : c->file;
    size_t n = strcspn(base, ".");
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
    snprintf(dir, len, "runs/%.*s-%s", (int)n, base, stamp);
}

static int write_text(const char *dir, const char *name, const strbuf *b, char *err)
{
    char path[PATH_MAX];
    if (join(path, sizeof path, dir, name, err) != 0) return -1;
    if (b->oom) return snprintf(err, ERR_LEN, "%s: out of memory", path), -1;
    return write_file_atomic(path, b->s ? b->s : "", b->len, err);
}

static int write_metrics(const run *r, const char *dir, char *err)
{
    strbuf b = { 0 };
    sb_printf(&b, "epoch,seconds,train_loss,valid_loss,valid_accuracy,lr,train_seconds,images_per_second\n");
    for (int i = 0; i < r->nhistory; i++) {
        const epoch_record *e = &r->history[i];
        sb_printf(&b, "%lld,%.4f,%.6f,%.6f,%.6f,%g,%.4f,%.1f\n", (long long)e->epoch, e->seconds, e->train_loss,
                  e->valid_loss, e->valid_accuracy, e->lr, e->train_seconds, e->images_per_second);
    }
    int rc = write_text(dir, "metrics.csv", &b, err);
    sb_free(&b);
    return rc;
}

/* The rows of metrics.csv for the epochs a resumed run keeps. */
static int read_metrics(run *r, const char *dir, char *err)
{
    char path[PATH_MAX], *text;
    size_t len;
    if (join(path, sizeof path, dir, "metrics.csv", err) != 0 || read_file(path, &text, &len, err) != 0) return -1;
    r->nhistory = 0;
    char *save = NULL;
    strtok_r(text, "\n", &save); /* the header */
    for (char *line; (line = strtok_r(NULL, "\n", &save)) && r->nhistory < r->epochs_done;) {
        epoch_record e;
        long long epoch;
        if (sscanf(line, "%lld,%lf,%lf,%lf,%lf,%lf,%lf,%lf", &epoch, &e.seconds, &e.train_loss, &e.valid_loss,
                   &e.valid_accuracy, &e.lr, &e.train_seconds, &e.images_per_second) != 8 ||
            epoch != r->nhistory + 1) {
            snprintf(err, ERR_LEN, "%s: line %d is not a metrics row for epoch %d", path, r->nhistory + 2,
                     r->nhistory + 1);
            free(text);
            return -1;
        }
        e.epoch = epoch;
        r->history[r->nhistory++] = e;
    }
    free(text);
    if (r->nhistory != r->epochs_done) {
        snprintf(err, ERR_LEN, "%s: %d rows, but last.safetensors is at epoch %lld", path, r->nhistory,
                 (long long)r->epochs_done);
        return -1;
    }
    return 0;
}

/* Makes the run folder; refuses one that already holds a run unless resuming it. */
static int open_run_dir(run *r, run_summary *s, bool resuming, char *err)
{
    if (!r->c->out[0]) default_run_dir(r->c, r->c->out, sizeof r->c->out);
    snprintf(s->dir, sizeof s->dir, "%s", r->c->out);
    char probe[PATH_MAX];
    if (join(probe, sizeof probe, s->dir, "metrics.csv", err) != 0) return -1;
    /* resume = true with no last.safetensors (killed before the first epoch's end): start over. */
    if (!resuming && r->c->resume && access(probe, F_OK) == 0)
        fprintf(r->log, "%s holds no last.safetensors to resume from: starting the run over\n", s->dir);
    else if (!resuming && access(probe, F_OK) == 0) {
        snprintf(err, ERR_LEN, "%s already holds a run (metrics.csv); choose another out=, remove it, or continue "
                 "it with: runexp resume %s", s->dir, s->dir);
        return -1;
    }
    if (make_dirs(s->dir, err) != 0) return -1;
    strbuf lua = { 0 };
    config_to_lua(r->c, &lua);
    fprintf(r->log, "%s", lua.s ? lua.s : "");
    int rc = write_text(s->dir, "config.lua", &lua, err);
    r->config_text = lua.s; /* kept for report.html; freed with the run */
    fprintf(r->log, "run folder: %s\n", s->dir);
    return rc;
}

/* ---- last.safetensors: the weights and everything a resume needs ---- */

static ckpt_tensor optim_tensor(run *r)
{
    ckpt_tensor t = { .name = "optim.state", .data = r->opt_state };
    t.shape = (rx_shape){ .ndim = 1, .d = { (int64_t)r->state_per_param * (int64_t)r->nt.nparams } };
    return t;
}

static ckpt_tensor ema_tensor(run *r)
{
    return (ckpt_tensor){ .name = "ema.weights", .data = r->ema, .shape = { .ndim = 1, .d = { (int64_t)r->nt.nparams } } };
}

static int save_last(run *r, const char *dir, char *err)
{
    char path[PATH_MAX];
    if (join(path, sizeof path, dir, "last.safetensors", err) != 0) return -1;
    char v[9][40];
    snprintf(v[0], sizeof v[0], "%lld", (long long)r->epochs_done);
    snprintf(v[1], sizeof v[1], "%lld", (long long)r->batches_done);
    snprintf(v[2], sizeof v[2], "%lld", (long long)r->step);
    snprintf(v[3], sizeof v[3], "%" PRIu64, r->ctx.rng.s);
    snprintf(v[4], sizeof v[4], "%.17g", r->best_valid_loss);
    snprintf(v[5], sizeof v[5], "%lld", (long long)r->best_epoch);
    snprintf(v[6], sizeof v[6], "%.17g", r->loss_sum);
    snprintf(v[7], sizeof v[7], "%.17g", r->epoch_seconds);
    snprintf(v[8], sizeof v[8], "%.17g", r->train_seconds);
    const ckpt_meta meta[] = { { "format", "pt" }, { "producer", "runexp" }, { "epoch", v[0] }, { "batch", v[1] },
                               { "step", v[2] }, { "rng", v[3] }, { "best_valid_loss", v[4] }, { "best_epoch", v[5] },
                               { "loss_sum", v[6] }, { "epoch_seconds", v[7] }, { "train_seconds", v[8] } };
    /* The optimizer state (and the moving average) live on the device; the checkpoint wants
     * host memory. */
    size_t n = (size_t)r->state_per_param * r->nt.nparams, na = r->ema ? r->nt.nparams : 0;
    float *host = malloc((n + na ? n + na : 1) * sizeof(float));
    if (!host) return snprintf(err, ERR_LEN, "%s: out of memory", path), -1;
    device_to_host(r->device, host, r->opt_state, n * sizeof(float));
    if (na) device_to_host(r->device, host + n, r->ema, na * sizeof(float));
    ckpt_tensor extra[2] = { optim_tensor(r), ema_tensor(r) }, *e = extra;
    extra[0].data = host;
    extra[1].data = host + n;
    int count = (n ? 1 : 0) + (na ? 1 : 0);
    if (!n) e++; /* no optimizer state: only the average, if any */
    int rc = checkpoint_save_net(&r->nt, path, e, count, meta, (int)(sizeof meta / sizeof *meta), err);
    free(host);
    return rc;
}

static int meta_int(const ckpt_meta_buf *m, const char *key, const char *path, int64_t *v, char *err)
{
    const char *s = ckpt_meta_get(m, key);
    char *end;
    long long x = s ? strtoll(s, &end, 10) : 0;
    if (!s || *end || x < 0) return snprintf(err, ERR_LEN, "%s: metadata '%s' is missing or not a count", path, key), -1;
    *v = x;
    return 0;
}

static int meta_double(const ckpt_meta_buf *m, const char *key, const char *path, double *v, char *err)
{
    const char *s = ckpt_meta_get(m, key);
    char *end;
    double x = s ? strtod(s, &end) : 0;
    if (!s || *end) return snprintf(err, ERR_LEN, "%s: metadata '%s' is missing or not a number", path, key), -1;
    *v = x;
    return 0;
}

/* Restores the state save_last wrote, and the metrics of the epochs it covers. */
static int resume_from(run *r, const char *dir, char *err)
{
    char path[PATH_MAX];
    if (join(path, sizeof path, dir, "last.safetensors", err) != 0) return -1;
    size_t n = (size_t)r->state_per_param * r->nt.nparams, na = r->ema ? r->nt.nparams : 0;
    float *host = malloc((n + na ? n + na : 1) * sizeof(float));
    if (!host) return snprintf(err, ERR_LEN, "%s: out of memory", path), -1;
    ckpt_tensor extra[2] = { optim_tensor(r), ema_tensor(r) }, *e = extra;
    extra[0].data = host;
    extra[1].data = host + n;
    if (!n) e++;
    ckpt_meta_buf m;
    int rc = checkpoint_load_net(&r->nt, path, e, (n ? 1 : 0) + (na ? 1 : 0), &m, err);
    if (rc == 0)
        rc = meta_int(&m, "epoch", path, &r->epochs_done, err) || meta_int(&m, "batch", path, &r->batches_done, err) ||
             meta_int(&m, "step", path, &r->step, err) || meta_int(&m, "best_epoch", path, &r->best_epoch, err) ||
             meta_double(&m, "best_valid_loss", path, &r->best_valid_loss, err) ||
             meta_double(&m, "loss_sum", path, &r->loss_sum, err) ||
             meta_double(&m, "epoch_seconds", path, &r->epoch_seconds, err) ||
             meta_double(&m, "train_seconds", path, &r->train_seconds, err) ? -1 : 0;
    if (rc == 0) {
        /* The RNG state is a full 64-bit value: parse it unsigned. */
        const char *s = ckpt_meta_get(&m, "rng");
        char *end = NULL;
        r->ctx.rng.s = s ? strtoull(s, &end, 10) : 0;
        if (!s || *end) rc = (snprintf(err, ERR_LEN, "%s: metadata 'rng' is missing or not a number", path), -1);
    }
    if (rc == 0) host_to_device(r->device, r->opt_state, host, n * sizeof(float));
    if (rc == 0 && na) host_to_device(r->device, r->ema, host + n, na * sizeof(float));
    free(host);
    if (rc != 0) return -1;
    if (r->epochs_done > r->c->epochs) {
        snprintf(err, ERR_LEN, "%s: the run has done %lld epochs, more than epochs=%lld", path,
                 (long long)r->epochs_done, (long long)r->c->epochs);
        return -1;
    }
    if (read_metrics(r, dir, err) != 0) return -1;
    fprintf(r->log, "resuming %s: %lld of %lld epochs done", dir, (long long)r->epochs_done, (long long)r->c->epochs);
    if (r->batches_done) fprintf(r->log, ", and %lld batches of epoch %lld", (long long)r->batches_done, (long long)r->epochs_done + 1);
    fprintf(r->log, "\n");
    return 0;
}

/* ---- Summary and the epochs ---- */

static void json_eval(strbuf *b, const eval_result *e)
{
    sb_printf(b, "  \"test_loss\": %.9g,\n  \"test_accuracy\": %.9g,\n  \"test_correct\": %lld,\n  \"test_total\": %lld,\n",
              e->loss, e->accuracy, (long long)e->correct, (long long)e->total);
    sb_printf(b, "  \"per_class_accuracy\": {");
    for (int k = 0; k < e->nclasses; k++) {
        sb_printf(b, "%s\n    ", k ? "," : "");
        sb_json_string(b, e->class_names[k]);
        sb_printf(b, ": %.9g", e->class_total[k] ? (double)e->class_correct[k] / (double)e->class_total[k] : 0.0);
    }
    sb_printf(b, "\n  },\n");
}

static int write_summary(run *r, const run_summary *s, char *err)
{
    strbuf b = { 0 };
    sb_printf(&b, "{\n  \"config\": ");
    sb_json_string(&b, r->c->file);
    sb_printf(&b, ",\n  \"run_dir\": ");
    sb_json_string(&b, s->dir);
    sb_printf(&b, ",\n  \"device\": \"%s\",\n  \"threads\": %d,\n  \"seed\": %lld,\n  \"epochs\": %lld,\n",
              s->device, s->threads, (long long)r->c->seed, (long long)s->epochs);
    sb_printf(&b, "  \"best_epoch\": %lld,\n  \"best_valid_loss\": ", (long long)s->best_epoch);
    if (isfinite(s->best_valid_loss)) sb_printf(&b, "%.9g,\n", s->best_valid_loss);
    else sb_printf(&b, "null,\n"); /* no validation split */
    json_eval(&b, &s->test);
    sb_printf(&b, "  \"train_seconds_per_epoch\": %.6g,\n  \"images_per_second\": %.6g,\n  \"total_seconds\": %.6g\n}\n",
              s->train_seconds_per_epoch, s->images_per_second, s->total_seconds);
    int rc = write_text(s->dir, "summary.json", &b, err);
    sb_free(&b);
    return rc;
}

static void print_test(run *r, const eval_result *e)
{
    fprintf(r->log, "test loss %.4f\n", e->loss);
    for (int k = 0; k < e->nclasses; k++) {
        int64_t t = e->class_total[k], ok = e->class_correct[k];
        fprintf(r->log, "  %-12s %3.0f%% (%lld/%lld)\n", e->class_names[k], t ? 100.0 * (double)ok / (double)t : 0.0,
                (long long)ok, (long long)t);
    }
    fprintf(r->log, "test accuracy %.2f%% (%lld/%lld)\n", 100.0 * e->accuracy, (long long)e->correct, (long long)e->total);
}

/* Validates after an epoch's training (the moving average, if any), saves the best checkpoint
 * (by validation loss; the last epoch's without a validation split), metrics.csv and last. */
static int finish_epoch(run *r, const char *dir, char *err)
{
    const config *c = r->c;
    int64_t epoch = r->epochs_done + 1;
    bool validating = r->info.size[RX_VALID] > 0;
    double valid_start = now_seconds();
    eval_result v = { .loss = NAN, .accuracy = NAN };
    use_average(r, true);
    if (validating && evaluate(r, RX_VALID, &v, NULL, err) != 0) return use_average(r, false), -1;
    /* seconds: the epoch's training (summed over any resumes) plus its validation. */
    epoch_record e = { .epoch = epoch, .seconds = now_seconds() - valid_start + r->epoch_seconds,
                       .train_loss = r->loss_sum / (double)r->info.size[RX_TRAIN], .valid_loss = v.loss,
                       .valid_accuracy = v.accuracy, .lr = r->lr_now, .train_seconds = r->epoch_seconds,
                       .images_per_second = (double)r->info.size[RX_TRAIN] / r->epoch_seconds };
    fprintf(r->log, "epoch %lld/%lld  %.2f s (train %.2f s, %.0f img/s)  lr %.4g  train loss %.4f", (long long)epoch,
            (long long)c->epochs, e.seconds, e.train_seconds, e.images_per_second, e.lr, e.train_loss);
    if (validating) fprintf(r->log, "  valid loss %.4f  valid accuracy %.2f%%", v.loss, 100.0 * v.accuracy);
    fprintf(r->log, "\n");
    if (validating ? v.loss < r->best_valid_loss : epoch == c->epochs) {
        char best[PATH_MAX], ep[24], vl[40];
        snprintf(ep, sizeof ep, "%lld", (long long)epoch);
        snprintf(vl, sizeof vl, "%.9g", v.loss);
        const ckpt_meta meta[] = { { "format", "pt" }, { "producer", "runexp" }, { "epoch", ep }, { "valid_loss", vl } };
        if (join(best, sizeof best, dir, "best.safetensors", err) != 0 ||
            checkpoint_save_net(&r->nt, best, NULL, 0, meta, validating ? 4 : 3, err) != 0)
            return use_average(r, false), -1;
        if (validating)
            fprintf(r->log, "  validation loss decreased (%.4f -> %.4f): saved %s\n", r->best_valid_loss, v.loss, best);
        else
            fprintf(r->log, "  no validation split: saved the last epoch's weights as %s\n", best);
        r->best_valid_loss = v.loss;
        r->best_epoch = epoch;
    }
    use_average(r, false);
    r->history[r->nhistory++] = e;
    r->epochs_done = epoch;
    r->batches_done = 0;
    r->train_seconds += r->epoch_seconds;
    r->loss_sum = 0;
    r->epoch_seconds = 0;
    if (write_metrics(r, dir, err) != 0 || save_last(r, dir, err) != 0) return -1;
    write_report(r, dir, NULL, NULL);
    fflush(r->log);
    return 0;
}

static int run_epochs(run *r, run_summary *s, char *err)
{
    config *c = r->c;
    double start = now_seconds();
    while (r->epochs_done < c->epochs) {
        int rc = train_epoch(r, s->dir, err);
        if (rc != 0) return rc;
        if (finish_epoch(r, s->dir, err) != 0) return TRAIN_FAILED;
    }
    s->epochs = c->epochs;
    s->best_epoch = r->best_epoch;
    s->best_valid_loss = r->best_valid_loss;
    s->train_seconds_per_epoch = r->train_seconds / (double)c->epochs;
    s->images_per_second = (double)r->info.size[RX_TRAIN] * (double)c->epochs / r->train_seconds;

    /* Test the best weights, as the tutorial does. */
    char best[PATH_MAX];
    if (join(best, sizeof best, s->dir, "best.safetensors", err) != 0 ||
        checkpoint_load_net(&r->nt, best, NULL, 0, NULL, err) != 0)
        return TRAIN_FAILED;
    fprintf(r->log, "loaded %s (epoch %lld) for the test\n", best, (long long)r->best_epoch);
    if (evaluate(r, RX_TEST, &s->test, s->dir, err) != 0) return TRAIN_FAILED;
    print_test(r, &s->test);
    s->total_seconds = now_seconds() - start;
    if (write_summary(r, s, err) != 0) return TRAIN_FAILED;
    write_report(r, s->dir, &s->test, s);
    return 0;
}

int train_run(config *c, FILE *log, run_summary *s, char *err)
{
    memset(s, 0, sizeof *s);
    run r = { 0 };
    int rc = TRAIN_FAILED;
    if (c->resume && !c->out[0]) {
        snprintf(err, ERR_LEN, "%s: resume = true needs out= (the run folder to continue)", c->file);
        return TRAIN_FAILED;
    }
    char last[PATH_MAX];
    bool resuming = false;
    if (c->resume) {
        if (join(last, sizeof last, c->out, "last.safetensors", err) != 0) return TRAIN_FAILED;
        resuming = access(last, F_OK) == 0;
    }
    if (run_setup(&r, c, log, false, !resuming, err) != 0) goto done;
    snprintf(s->device, sizeof s->device, "%s", device_name(r.device));
    s->threads = r.ctx.threads;
    if (resuming && (snprintf(s->dir, sizeof s->dir, "%s", c->out), resume_from(&r, s->dir, err) != 0)) goto done;
    if (open_run_dir(&r, s, resuming, err) != 0) goto done;
    fprintf(log, "data: %lld train, %lld valid, %lld test images of shape", (long long)r.info.size[RX_TRAIN],
            (long long)r.info.size[RX_VALID], (long long)r.info.size[RX_TEST]);
    for (int i = 0; i < r.info.sample.ndim; i++) fprintf(log, "%s%lld", i ? "x" : " ", (long long)r.info.sample.d[i]);
    fprintf(log, "; %zu parameters; %s, %d threads\n", r.nt.nparams, s->device, s->threads);
    rc = run_epochs(&r, s, err);
done:
    /* The history outlives the run, for the caller (runexp.train returns it to Lua). */
    s->history = r.history;
    s->nhistory = r.nhistory;
    r.history = NULL;
    run_free(&r);
    return rc;
}

void run_summary_free(run_summary *s)
{
    free(s->history);
    s->history = NULL;
    s->nhistory = 0;
}

int train_evaluate(config *c, const char *checkpoint, rx_split split, eval_result *e, char *err)
{
    run r = { 0 };
    FILE *quiet = fopen("/dev/null", "w");
    int rc = -1;
    if (run_setup(&r, c, quiet ? quiet : stderr, true, false, err) == 0 &&
        checkpoint_load_net(&r.nt, checkpoint, NULL, 0, NULL, err) == 0 && evaluate(&r, split, e, NULL, err) == 0)
        rc = 0;
    run_free(&r);
    if (quiet) fclose(quiet);
    return rc;
}
