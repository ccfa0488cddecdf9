/* train.c: the train / validate / test loop and the run folder.
 *
 * Everything that can be refused (config, plugins, data files, shapes) is checked before the
 * run folder is created, so a failed start leaves nothing behind. Then each epoch trains,
 * validates, saves the best checkpoint by validation loss (as the tutorial does) and rewrites
 * metrics.csv; at the end the best checkpoint is loaded and tested, and summary.json written. */
#include "train.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint.h"
#include "device.h"

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
    int state_per_param;
    float *host_losses, *host_logits; /* host copies for the logs */
    int32_t *host_labels;
    int64_t step;                /* optimizer steps taken */
    strbuf metrics;              /* metrics.csv so far */
} run;

typedef struct eval_result {
    double loss, accuracy;
    int64_t correct, total;
    int64_t class_correct[RX_MAX_CLASSES], class_total[RX_MAX_CLASSES];
} eval_result;

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

static int resolve_device(run *r, char *err)
{
    if (strcmp(r->c->device, "cuda") == 0) {
        snprintf(err, ERR_LEN, "%s: device = \"cuda\", but this runexp was built without CUDA "
                 "(use device=cpu, or rebuild on a machine with nvcc)", r->c->file);
        return -1;
    }
    r->device = RX_CPU;
    if (strcmp(r->c->device, "auto") == 0) fprintf(r->log, "device: cpu (auto: this build has no CUDA)\n");
    return 0;
}

static int create_plugins(run *r, char *err)
{
    config *c = r->c;
    rx_ctx *ctx = &r->ctx;
    const rx_plugin *d = c->data.pl.desc;
    if (!d->data.batch[r->device]) {
        snprintf(err, ERR_LEN, "%s: %s: the plugin has no %s implementation", c->file, c->data.where, device_name(r->device));
        return -1;
    }
    if (d->data.create(&r->data, ctx, c->data.args, (uint64_t)c->seed, &r->info) != 0)
        return plugin_failed(r, &c->data, "", err);
    rx_data_info *in = &r->info;
    if (in->sample.ndim < 1 || in->sample.ndim >= RX_MAX_DIMS || rx_numel(in->sample) < 1 || in->nclasses < 2 ||
        in->nclasses > RX_MAX_CLASSES || in->size[RX_TRAIN] < 1 || in->size[RX_TEST] < 1)
        return snprintf(err, ERR_LEN, "%s: %s: the plugin described an unusable data set", c->file, c->data.where), -1;
    if (in->size[RX_VALID] < 1)
        return snprintf(err, ERR_LEN, "%s: %s: the validation split is empty; the best checkpoint is chosen by "
                        "validation loss, so give it some images (valid_fraction > 0)", c->file, c->data.where), -1;

    if (net_build(&r->nt, ctx, c, in->sample, c->batch_size, err) != 0) return -1;
    if (net_init_params(&r->nt, (uint64_t)c->seed, err) != 0) return -1;

    const rx_plugin *l = c->loss.pl.desc;
    if (!l->loss.forward[r->device]) {
        snprintf(err, ERR_LEN, "%s: %s: the plugin has no %s implementation", c->file, c->loss.where, device_name(r->device));
        return -1;
    }
    if (l->loss.create(&r->loss, ctx, c->loss.args, r->nt.out, in->nclasses) != 0)
        return plugin_failed(r, &c->loss, "", err);

    const rx_plugin *o = c->optim.pl.desc;
    if (!o->optim.step[r->device]) {
        snprintf(err, ERR_LEN, "%s: %s: the plugin has no %s implementation", c->file, c->optim.where, device_name(r->device));
        return -1;
    }
    if (o->optim.create(&r->optim, ctx, c->optim.args, &r->state_per_param) != 0)
        return plugin_failed(r, &c->optim, "", err);
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
    r->host_losses = malloc(b * sizeof(float));
    r->host_logits = malloc(b * classes * sizeof(float));
    r->host_labels = malloc(b * sizeof(int32_t));
    if (!r->x || !r->labels || !r->losses || !r->dlogits || !r->opt_state || !r->host_losses || !r->host_logits ||
        !r->host_labels) {
        snprintf(err, ERR_LEN, "out of memory allocating batch buffers (batch %zu)", b);
        return -1;
    }
    return 0;
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
    free(r->host_losses);
    free(r->host_logits);
    free(r->host_labels);
    sb_free(&r->metrics);
}

/* Draws samples [first, first + n) of split into r->x and r->labels. */
static int load_batch(run *r, rx_split split, int64_t first, int64_t n, rx_tensor *x, char *err)
{
    *x = batch_tensor(r, r->x, n, r->info.sample);
    r->ctx.err[0] = '\0';
    if (r->c->data.pl.desc->data.batch[r->device](r->data, &r->ctx, split, first, x, r->labels) != 0)
        return plugin_failed(r, &r->c->data, "batch", err);
    return 0;
}

/* Per-sample losses into r->losses (and the mean's gradient into r->dlogits when training).
 * Returns their sum, copied to the host. */
static int compute_loss(run *r, const rx_tensor *logits, bool with_grad, double *sum, char *err)
{
    int64_t n = logits->shape.d[0];
    rx_tensor dl = batch_tensor(r, r->dlogits, n, r->nt.out);
    r->ctx.err[0] = '\0';
    if (r->c->loss.pl.desc->loss.forward[r->device](r->loss, &r->ctx, logits, r->labels, r->losses,
                                                     with_grad ? &dl : NULL) != 0)
        return plugin_failed(r, &r->c->loss, "forward", err);
    device_to_host(r->device, r->host_losses, r->losses, (size_t)n * sizeof(float));
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += r->host_losses[i];
    *sum = s;
    return 0;
}

static int train_epoch(run *r, int64_t epoch, double *mean_loss, char *err)
{
    const config *c = r->c;
    r->ctx.training = true;
    r->ctx.err[0] = '\0';
    if (c->data.pl.desc->data.begin_epoch(r->data, &r->ctx, RX_TRAIN, epoch) != 0)
        return plugin_failed(r, &c->data, "begin_epoch", err);
    int64_t total = r->info.size[RX_TRAIN];
    double sum = 0;
    for (int64_t first = 0, b = 1; first < total; first += c->batch_size, b++) {
        int64_t n = total - first < c->batch_size ? total - first : c->batch_size;
        rx_tensor x, logits;
        double s;
        if (load_batch(r, RX_TRAIN, first, n, &x, err) != 0) return -1;
        if (net_forward(&r->nt, &r->ctx, &x, &logits, err) != 0) return -1;
        if (compute_loss(r, &logits, true, &s, err) != 0) return -1;
        if (!isfinite(s)) {
            snprintf(err, ERR_LEN, "epoch %lld, batch %lld: the loss is %s; stopping (best.safetensors is kept as "
                     "it was; try a smaller learning rate)", (long long)epoch, (long long)b, isnan(s) ? "NaN" : "infinite");
            return -1;
        }
        sum += s;
        rx_tensor dlogits = batch_tensor(r, r->dlogits, n, r->nt.out);
        net_zero_grads(&r->nt);
        if (net_backward(&r->nt, &r->ctx, &x, &dlogits, err) != 0) return -1;
        rx_step step = { .lr = (float)c->lr, .t = ++r->step };
        r->ctx.err[0] = '\0';
        if (c->optim.pl.desc->optim.step[r->device](r->optim, &r->ctx, r->nt.grads, r->nt.params, r->opt_state,
                                                     r->nt.nparams, step) != 0)
            return plugin_failed(r, &c->optim, "step", err);
    }
    *mean_loss = sum / (double)total;
    return 0;
}

/* Mean loss, accuracy and per-class counts of the current weights on a split. */
static int evaluate(run *r, rx_split split, eval_result *e, char *err)
{
    const config *c = r->c;
    memset(e, 0, sizeof *e);
    r->ctx.training = false;
    r->ctx.err[0] = '\0';
    if (c->data.pl.desc->data.begin_epoch(r->data, &r->ctx, split, 0) != 0)
        return plugin_failed(r, &c->data, "begin_epoch", err);
    int64_t total = r->info.size[split];
    int64_t classes = rx_numel(r->nt.out);
    double sum = 0;
    for (int64_t first = 0; first < total; first += c->batch_size) {
        int64_t n = total - first < c->batch_size ? total - first : c->batch_size;
        rx_tensor x, logits;
        double s;
        if (load_batch(r, split, first, n, &x, err) != 0) return -1;
        if (net_forward(&r->nt, &r->ctx, &x, &logits, err) != 0) return -1;
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
            }
            e->correct += best == y;
        }
    }
    e->total = total;
    e->loss = sum / (double)total;
    e->accuracy = (double)e->correct / (double)total;
    return 0;
}

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

static int join(char *buf, size_t len, const char *dir, const char *name, char *err)
{
    if (snprintf(buf, len, "%s/%s", dir, name) >= (int)len) {
        snprintf(err, ERR_LEN, "%s: path too long", dir);
        return -1;
    }
    return 0;
}

static int write_text(const char *dir, const char *name, const strbuf *b, char *err)
{
    char path[PATH_MAX];
    if (join(path, sizeof path, dir, name, err) != 0) return -1;
    if (b->oom) return snprintf(err, ERR_LEN, "%s: out of memory", path), -1;
    return write_file_atomic(path, b->s ? b->s : "", b->len, err);
}

/* Makes the run folder; refuses one that already holds a run, so nothing is overwritten. */
static int open_run_dir(run *r, run_summary *s, char *err)
{
    if (!r->c->out[0]) default_run_dir(r->c, r->c->out, sizeof r->c->out);
    snprintf(s->dir, sizeof s->dir, "%s", r->c->out);
    char probe[PATH_MAX];
    if (join(probe, sizeof probe, s->dir, "metrics.csv", err) != 0) return -1;
    if (access(probe, F_OK) == 0) {
        snprintf(err, ERR_LEN, "%s already holds a run (metrics.csv); choose another out= or remove it", s->dir);
        return -1;
    }
    if (make_dirs(s->dir, err) != 0) return -1;
    strbuf lua = { 0 };
    config_to_lua(r->c, &lua);
    fprintf(r->log, "%s", lua.s ? lua.s : "");
    int rc = write_text(s->dir, "config.lua", &lua, err);
    sb_free(&lua);
    fprintf(r->log, "run folder: %s\n", s->dir);
    sb_printf(&r->metrics, "epoch,seconds,train_loss,valid_loss,valid_accuracy,lr,train_seconds,images_per_second\n");
    return rc;
}

static int write_summary(run *r, const run_summary *s, const eval_result *test, char *err)
{
    strbuf b = { 0 };
    sb_printf(&b, "{\n  \"config\": ");
    sb_json_string(&b, r->c->file);
    sb_printf(&b, ",\n  \"run_dir\": ");
    sb_json_string(&b, s->dir);
    sb_printf(&b, ",\n  \"device\": \"%s\",\n  \"threads\": %d,\n  \"seed\": %lld,\n  \"epochs\": %lld,\n",
              s->device, s->threads, (long long)r->c->seed, (long long)s->epochs);
    sb_printf(&b, "  \"best_epoch\": %lld,\n  \"best_valid_loss\": %.9g,\n", (long long)s->best_epoch, s->best_valid_loss);
    sb_printf(&b, "  \"test_loss\": %.9g,\n  \"test_accuracy\": %.9g,\n  \"test_correct\": %lld,\n  \"test_total\": %lld,\n",
              test->loss, test->accuracy, (long long)test->correct, (long long)test->total);
    sb_printf(&b, "  \"per_class_accuracy\": {");
    for (int k = 0; k < s->nclasses; k++) {
        sb_printf(&b, "%s\n    ", k ? "," : "");
        sb_json_string(&b, r->info.class_names[k] ? r->info.class_names[k] : "?");
        sb_printf(&b, ": %.9g", test->class_total[k] ? (double)test->class_correct[k] / (double)test->class_total[k] : 0.0);
    }
    sb_printf(&b, "\n  },\n  \"train_seconds_per_epoch\": %.6g,\n  \"images_per_second\": %.6g,\n  \"total_seconds\": %.6g\n}\n",
              s->train_seconds_per_epoch, s->images_per_second, s->total_seconds);
    int rc = write_text(s->dir, "summary.json", &b, err);
    sb_free(&b);
    return rc;
}

static void print_test(run *r, const eval_result *e)
{
    fprintf(r->log, "test loss %.4f\n", e->loss);
    for (int k = 0; k < r->info.nclasses; k++) {
        int64_t t = e->class_total[k], ok = e->class_correct[k];
        fprintf(r->log, "  %-12s %3.0f%% (%lld/%lld)\n", r->info.class_names[k] ? r->info.class_names[k] : "?",
                t ? 100.0 * (double)ok / (double)t : 0.0, (long long)ok, (long long)t);
    }
    fprintf(r->log, "test accuracy %.2f%% (%lld/%lld)\n", 100.0 * e->accuracy, (long long)e->correct, (long long)e->total);
}

static int run_epochs(run *r, run_summary *s, char *err)
{
    config *c = r->c;
    char best_path[PATH_MAX], last_path[PATH_MAX];
    if (join(best_path, sizeof best_path, s->dir, "best.safetensors", err) != 0 ||
        join(last_path, sizeof last_path, s->dir, "last.safetensors", err) != 0)
        return -1;
    double train_seconds = 0, start = now_seconds();
    s->best_valid_loss = INFINITY;
    for (int64_t epoch = 1; epoch <= c->epochs; epoch++) {
        double t0 = now_seconds(), train_loss;
        if (train_epoch(r, epoch, &train_loss, err) != 0) return -1;
        double t1 = now_seconds();
        eval_result v;
        if (evaluate(r, RX_VALID, &v, err) != 0) return -1;
        double t2 = now_seconds();
        train_seconds += t1 - t0;
        double ips = (double)r->info.size[RX_TRAIN] / (t1 - t0);
        fprintf(r->log, "epoch %lld/%lld  %.2f s (train %.2f s, %.0f img/s)  train loss %.4f  valid loss %.4f  "
                "valid accuracy %.2f%%\n", (long long)epoch, (long long)c->epochs, t2 - t0, t1 - t0, ips, train_loss,
                v.loss, 100.0 * v.accuracy);
        if (v.loss < s->best_valid_loss) {
            if (checkpoint_save_net(&r->nt, best_path, epoch, v.loss, err) != 0) return -1;
            fprintf(r->log, "  validation loss decreased (%.4f -> %.4f): saved %s\n", s->best_valid_loss, v.loss,
                    best_path);
            s->best_valid_loss = v.loss;
            s->best_epoch = epoch;
        }
        if (checkpoint_save_net(&r->nt, last_path, epoch, v.loss, err) != 0) return -1;
        sb_printf(&r->metrics, "%lld,%.4f,%.6f,%.6f,%.6f,%g,%.4f,%.1f\n", (long long)epoch, t2 - t0, train_loss, v.loss,
                  v.accuracy, c->lr, t1 - t0, ips);
        if (write_text(s->dir, "metrics.csv", &r->metrics, err) != 0) return -1;
        fflush(r->log);
    }
    s->epochs = c->epochs;
    s->train_seconds_per_epoch = train_seconds / (double)c->epochs;
    s->images_per_second = (double)r->info.size[RX_TRAIN] * (double)c->epochs / train_seconds;

    /* Test the best weights, as the tutorial does. */
    if (checkpoint_load_net(&r->nt, best_path, err) != 0) return -1;
    fprintf(r->log, "loaded %s (epoch %lld) for the test\n", best_path, (long long)s->best_epoch);
    eval_result test;
    if (evaluate(r, RX_TEST, &test, err) != 0) return -1;
    print_test(r, &test);
    s->test_loss = test.loss;
    s->test_accuracy = test.accuracy;
    s->nclasses = r->info.nclasses;
    memcpy(s->class_correct, test.class_correct, sizeof s->class_correct);
    memcpy(s->class_total, test.class_total, sizeof s->class_total);
    s->total_seconds = now_seconds() - start;
    return write_summary(r, s, &test, err);
}

int train_run(config *c, FILE *log, run_summary *s, char *err)
{
    memset(s, 0, sizeof *s);
    run r = { .c = c, .log = log };
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    r.ctx.threads = c->threads > 0 ? (int)c->threads : (int)(cores > 0 ? cores : 1);
    r.ctx.rng = rx_rng_stream((uint64_t)c->seed, 0xD0);
    /* One pool of threads: OpenBLAS's own, sized by the run. */
    openblas_set_num_threads(r.ctx.threads);
    int rc = -1;
    if (resolve_device(&r, err) != 0) goto done;
    r.ctx.device = r.device;
    if (create_plugins(&r, err) != 0 || alloc_buffers(&r, err) != 0) goto done;
    snprintf(s->device, sizeof s->device, "%s", device_name(r.device));
    s->threads = r.ctx.threads;
    if (open_run_dir(&r, s, err) != 0) goto done;
    fprintf(log, "data: %lld train, %lld valid, %lld test images of shape", (long long)r.info.size[RX_TRAIN],
            (long long)r.info.size[RX_VALID], (long long)r.info.size[RX_TEST]);
    for (int i = 0; i < r.info.sample.ndim; i++) fprintf(log, "%s%lld", i ? "x" : " ", (long long)r.info.sample.d[i]);
    fprintf(log, "; %zu parameters; %s, %d threads\n", r.nt.nparams, s->device, s->threads);
    rc = run_epochs(&r, s, err);
done:
    run_free(&r);
    return rc;
}
