/* trainer.c: setting up the machinery of a run, and a batch's drawing and loss (see trainer.h). */
#include "trainer.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checked.h"
#include "crash.h"
#include "device.h"

rx_tensor trainer_tensor(const trainer *t, float *data, int64_t n, rx_shape s)
{
    rx_tensor x = { .data = data, .shape = { .ndim = s.ndim + 1, .d = { n } }, .device = t->device };
    for (int i = 0; i < s.ndim; i++) x.shape.d[i + 1] = s.d[i];
    return x;
}

int trainer_plugin_failed_in(const trainer *t, const rx_ctx *ctx, const plugin_use *u, const char *op, char *err)
{
    /* A GPU failure of the host's own before this call is where the trouble began: a plugin
     * that checks its launches sees that failure as its own. */
    char gpu[ERR_LEN];
    bool earlier = device_check(t->device, gpu) != 0;
    return errorf(err, "%s: %s: %s%s%s%s%s", t->c->file, u->where, op, op[0] ? ": " : "",
                  ctx->err[0] ? ctx->err : "failed without a reason", earlier ? "; before it, " : "",
                  earlier ? gpu : "");
}

int trainer_plugin_failed(trainer *t, const plugin_use *u, const char *op, char *err)
{
    return trainer_plugin_failed_in(t, &t->ctx, u, op, err);
}

/* t->device for device = "cpu", "cuda" (a clear error where no GPU is usable) or "auto" (the GPU
 * when one is usable and every plugin of the run has a CUDA path, else the CPU, said once). Never
 * a silent change of device. Only decides: nothing is opened on a GPU yet. */
static int resolve_device(trainer *t, bool quiet, char *err)
{
    char why[ERR_LEN];
    const char *asked = t->c->device;
    t->device = RX_CPU;
    if (strcmp(asked, "cuda") == 0) {
        if (!device_usable(RX_CUDA, why))
            return errorf(err, "%s: device = \"cuda\", but %s (use device=cpu or device=auto)", t->c->file, why);
        t->device = RX_CUDA;
    } else if (strcmp(asked, "auto") == 0) {
        const plugin_use *cpu_only = NULL;
        if (device_usable(RX_CUDA, why) && !(cpu_only = config_plugin_without(t->c, RX_CUDA))) t->device = RX_CUDA;
        else if (!quiet && cpu_only) fprintf(t->log, "device: cpu (auto: %s has no CUDA path)\n", cpu_only->where);
        else if (!quiet) fprintf(t->log, "device: cpu (auto: %s)\n", why);
    }
    return 0;
}

/* init = "whiten": the first layer's weights from the patches of the first training images of
 * epoch 1 (at most WHITEN_IMAGES, as airbench takes 5000), drawn on the CPU. */
#define WHITEN_IMAGES 5000
static int init_whitening(trainer *t, char *err)
{
    const config *c = t->c;
    const rx_data_ops *ops = &c->data.pl.desc->data;
    if (!ops->batch[RX_CPU])
        return errorf(err, "%s: init = \"whiten\" needs a data plugin that draws batches on the CPU", c->file);
    int64_t n = t->info.size[RX_TRAIN] < WHITEN_IMAGES ? t->info.size[RX_TRAIN] : WHITEN_IMAGES;
    int64_t per = rx_numel(t->info.sample);
    size_origin o = { c->file, "whitening images", n };
    size_t bytes;
    if (!checked_bytes(n, per, sizeof(float), &bytes) || bytes > checked_host_memory())
        return size_error(err, &o, (double)n * (double)per * sizeof(float), "drawing them (images x %lld floats)",
                          (long long)per);
    rx_tensor x = { .data = malloc(bytes), .device = RX_CPU, .shape = { .ndim = t->info.sample.ndim + 1, .d = { n } } };
    int32_t *labels = malloc((size_t)n * sizeof *labels);
    for (int i = 0; i < t->info.sample.ndim; i++) x.shape.d[i + 1] = t->info.sample.d[i];
    rx_ctx cpu = t->ctx;
    cpu.device = RX_CPU;
    int rc = -1;
    if (!x.data || !labels)
        size_error(err, &o, (double)bytes, "drawing them (images x %lld floats)", (long long)per);
    else if (ops->begin_epoch(t->data, &cpu, RX_TRAIN, 1) != 0 || ops->batch[RX_CPU](t->data, &cpu, RX_TRAIN, 0, 0, &x, labels) != 0)
        errorf(err, "%s: %s: drawing images for whitening: %s", c->file, c->data.where, cpu.err);
    else rc = net_init_whitening(&t->nt, x.data, n, 5e-4, err);
    free(x.data);
    free(labels);
    return rc;
}

/* The normalization the data plugin reported (export and predict read it): none, or one finite
 * mean and positive std per channel of the samples. */
static int check_normalization(const config *c, const rx_data_info *in, char *err)
{
    int n = in->norm_channels;
    bool ok = n == 0 || (n > 0 && n <= RX_MAX_NORM && n == in->sample.d[0]);
    for (int k = 0; ok && k < n; k++) ok = isfinite(in->mean[k]) && isfinite(in->std[k]) && in->std[k] > 0;
    if (!ok)
        return errorf(err, "%s: %s: the plugin reported a normalization of %d channels that does not fit samples "
                      "of %lld channels (expected 0, or one finite mean and std > 0 per channel, at most %d)",
                      c->file, c->data.where, n, (long long)in->sample.d[0], RX_MAX_NORM);
    return 0;
}

static int create_data(trainer *t, char *err)
{
    const config *c = t->c;
    if (plugin_use_check_device(c, &c->data, t->device, err) != 0) return -1;
    crash_enter(c->data.where, "create");
    int rc = c->data.pl.desc->data.create(&t->data, &t->ctx, c->data.args, (uint64_t)c->seed, &t->info);
    crash_leave();
    if (rc != 0) return trainer_plugin_failed(t, &c->data, "", err);
    const rx_data_info *in = &t->info;
    int64_t numel;
    if (in->sample.ndim < 1 || in->sample.ndim >= RX_MAX_DIMS || in->nclasses < 2 ||
        in->nclasses > RX_MAX_CLASSES || in->size[RX_TRAIN] < 1 || in->size[RX_TEST] < 1 || in->size[RX_VALID] < 0)
        return errorf(err, "%s: %s: the plugin described an unusable data set", c->file, c->data.where);
    for (int k = 0; k < RX_NSPLITS; k++)
        if (in->size[k] > CHECKED_MAX_ELEMENTS)
            return errorf(err, "%s: %s: the plugin described a split of %lld samples: more than 2^40 cannot be meant",
                          c->file, c->data.where, (long long)in->size[k]);
    if (!checked_numel(in->sample, &numel)) {
        char s[96];
        shape_format(in->sample, s, sizeof s);
        return errorf(err, "%s: %s: the plugin described samples of shape %s: each dimension must be 1 to 2^31 - 1, "
                      "and 2^40 elements in all at most", c->file, c->data.where, s);
    }
    return check_normalization(c, in, err);
}

static int create_loss_and_optim(trainer *t, char *err)
{
    const config *c = t->c;
    if (plugin_use_check_device(c, &c->loss, t->device, err) != 0) return -1;
    crash_enter(c->loss.where, "create");
    int rc = c->loss.pl.desc->loss.create(&t->loss, &t->ctx, c->loss.args, t->nt.out, t->info.nclasses);
    crash_leave();
    if (rc != 0) return trainer_plugin_failed(t, &c->loss, "", err);

    if (plugin_use_check_device(c, &c->optim, t->device, err) != 0) return -1;
    crash_enter(c->optim.where, "create");
    rc = c->optim.pl.desc->optim.create(&t->optim, &t->ctx, c->optim.args, &t->state_per_param);
    crash_leave();
    if (rc != 0) return trainer_plugin_failed(t, &c->optim, "", err);
    if (t->state_per_param < 0 || t->state_per_param > 16)
        return errorf(err, "%s: %s: the plugin asked for %d state values per parameter", c->file, c->optim.where,
                      t->state_per_param);
    return 0;
}

static int create_plugins(trainer *t, bool fresh, char *err)
{
    const config *c = t->c;
    if (create_data(t, err) != 0) return -1;
    if (net_build(&t->nt, &t->ctx, c, t->info.sample, c->batch_size, err) != 0) return -1;
    if (net_init_params(&t->nt, (uint64_t)c->seed, err) != 0) return -1;
    if (fresh && net_whitening_layer(&t->nt) >= 0 && init_whitening(t, err) != 0) return -1;
    return create_loss_and_optim(t, err);
}

/* The batch buffers' sizes, checked: the inputs (a batch of samples), the labels and losses, the
 * logits' gradient and their average over views (a batch of logits each), and the optimizer's
 * state. Refuses, naming data.batch_size, a batch whose buffers overflow or pass the machine's
 * memory (on the CPU); then no size alloc_buffers computes can wrap, each being part of it. */
static int plan_buffers(const trainer *t, char *err)
{
    const config *c = t->c;
    size_origin o = { c->file, "data.batch_size", (long long)c->batch_size };
    int64_t per = rx_numel(t->info.sample) + 2 * rx_numel(t->nt.out) + 2; /* floats or int32s per sample */
    size_t batch, state, total;
    int staged = !c->data.pl.desc->data.batch[t->device];
    if (!checked_bytes(c->batch_size, per, sizeof(float), &batch) || !checked_mul(batch, 2 + staged, &total))
        return size_error(err, &o, (double)c->batch_size * (double)per * sizeof(float) * (2 + staged),
                          "the batch buffers (batch x %lld values, on the device and on the host)", (long long)per);
    /* at most 16 x 2^40 x 4 bytes: state_per_param and nparams are bounded */
    state = (size_t)t->state_per_param * t->nt.nparams * sizeof(float);
    double need = (double)total + (double)state;
    if (!checked_add(total, state, &total) || (t->device == RX_CPU && total > checked_host_memory()))
        return size_error(err, &o, need,
                          "the batch buffers (batch x %lld values) and the optimizer's state", (long long)per);
    return 0;
}

/* A buffer of a size plan_buffers checked, on the host or the run's device, or NULL with the
 * message: what, and how much. */
static void *buffer(const trainer *t, bool host, size_t bytes, const char *what, char *err)
{
    void *p = host ? malloc(bytes ? bytes : 1) : device_alloc(t->device, bytes);
    size_origin o = { t->c->file, "data.batch_size", (long long)t->c->batch_size };
    if (!p) size_error(err, &o, (double)bytes, "%s", what);
    return p;
}

static int alloc_buffers(trainer *t, char *err)
{
    size_t b = (size_t)t->c->batch_size, sample = (size_t)rx_numel(t->info.sample);
    size_t classes = (size_t)rx_numel(t->nt.out);
    if (plan_buffers(t, err) != 0) return -1;
    bool ok = (t->x = buffer(t, false, b * sample * sizeof(float), "the batch's inputs", err)) &&
              (t->labels = buffer(t, false, b * sizeof(int32_t), "the batch's labels", err)) &&
              (t->losses = buffer(t, false, b * sizeof(float), "the batch's losses", err)) &&
              (t->dlogits = buffer(t, false, b * classes * sizeof(float), "the logits' gradient", err)) &&
              (t->opt_state = buffer(t, false, (size_t)t->state_per_param * t->nt.nparams * sizeof(float),
                                     "the optimizer's state", err)) &&
              (t->avg_logits = buffer(t, false, b * classes * sizeof(float), "the views' average logits", err));
    if (!ok) return -1;
    if (ema_start(&t->ema, t->device, t->c->ema, t->nt.params, t->nt.nparams, err) != 0) return -1;
    ok = (t->host_losses = buffer(t, true, b * sizeof(float), "the batch's losses on the host", err)) &&
         (t->host_logits = buffer(t, true, b * classes * sizeof(float), "the batch's logits on the host", err)) &&
         (t->host_labels = buffer(t, true, b * sizeof(int32_t), "the batch's labels on the host", err));
    if (!ok) return -1;
    if (!t->c->data.pl.desc->data.batch[t->device]) { /* drawn on the CPU, copied over */
        size_origin o = { t->c->file, "data.batch_size", (long long)b };
        t->staged_x = host_alloc_pinned(t->device, b * sample * sizeof(float));
        t->staged_labels = host_alloc_pinned(t->device, b * sizeof(int32_t));
        if (!t->staged_x || !t->staged_labels)
            return size_error(err, &o, (double)(b * (sample + 1) * sizeof(float)), "the batch's pinned host buffers");
    }
    return 0;
}

int trainer_setup(trainer *t, const config *c, FILE *log, bool quiet, bool fresh, char *err)
{
    t->c = c;
    t->log = log;
    long cores = sysconf(_SC_NPROCESSORS_ONLN) / dist_local_size(); /* the ranks of a host share its cores */
    t->ctx.threads = c->threads > 0 ? (int)c->threads : (int)(cores > 0 ? cores : 1);
    t->ctx.rng = rx_rng_stream((uint64_t)c->seed, 0xD0);
    /* One pool of threads: the plugins' own (OpenMP, ctx.threads of them, splitting the batch or
     * the work); OpenBLAS runs single-threaded inside them, so its pool never fights theirs. */
    openblas_set_num_threads(1);
    /* The device first, then (on a GPU) this rank's GPU, then its context: a run that keeps off
     * the GPU, asked or chosen by auto, opens nothing there. */
    char why[ERR_LEN];
    if (resolve_device(t, quiet, err) != 0 || (t->device == RX_CUDA && dist_pick_gpu(err) != 0)) return -1;
    if (device_open_context(t->device, &t->ctx, why) != 0) return errorf(err, "%s: %s", c->file, why);
    t->ctx.device = t->device;
    if (dist_gpu_open(&t->gpu, t->device, err) != 0) return -1;
    return create_plugins(t, fresh, err) != 0 || alloc_buffers(t, err) != 0 ? -1 : 0;
}

int trainer_plan_epochs(const trainer *t, size_t record, int64_t *total_steps, char *err)
{
    const config *c = t->c;
    size_origin o = { c->file, "epochs", (long long)c->epochs };
    int64_t size = t->info.size[RX_TRAIN], batches = size / c->batch_size + (size % c->batch_size != 0);
    size_t bytes;
    if (!checked_bytes(c->epochs, 1, record, &bytes) || bytes > checked_host_memory())
        return size_error(err, &o, (double)c->epochs * (double)record, "the record of every epoch (epochs x %zu bytes)",
                          record);
    if (!checked_mul_i64(batches, c->epochs, total_steps))
        return errorf(err, "%s: epochs = %lld: the run's optimizer steps (epochs x %lld batches) overflow a 64-bit count",
                      c->file, (long long)c->epochs, (long long)batches);
    return 0;
}

void trainer_free(trainer *t)
{
    const config *c = t->c;
    if (!c) return;
    net_free(&t->nt);
    if (c->data.pl.desc && c->data.pl.desc->data.destroy) c->data.pl.desc->data.destroy(t->data);
    if (c->loss.pl.desc && c->loss.pl.desc->loss.destroy) c->loss.pl.desc->loss.destroy(t->loss);
    if (c->optim.pl.desc && c->optim.pl.desc->optim.destroy) c->optim.pl.desc->optim.destroy(t->optim);
    ema_free(&t->ema);
    void *on_device[] = { t->x, t->labels, t->losses, t->dlogits, t->opt_state, t->avg_logits };
    for (size_t i = 0; i < sizeof on_device / sizeof *on_device; i++) device_free(t->device, on_device[i]);
    free(t->host_losses);
    free(t->host_logits);
    free(t->host_labels);
    host_free_pinned(t->device, t->staged_x);
    host_free_pinned(t->device, t->staged_labels);
    dist_gpu_close(t->gpu);
    device_close_context(t->device, &t->ctx);
}

/* ---- A batch ---- */

/* The data plugin's batch on device d with ctx: samples [first, first + x's rows) into x and
 * labels; a failure named as trainer_plugin_failed_in names it. */
static int call_batch(const trainer *t, rx_ctx *ctx, rx_device d, rx_split split, int64_t first, int view, rx_tensor *x,
                      int32_t *labels, char *err)
{
    ctx->err[0] = '\0';
    crash_enter(t->c->data.where, "batch");
    int rc = t->c->data.pl.desc->data.batch[d](t->data, ctx, split, first, view, x, labels);
    crash_leave();
    return rc != 0 ? trainer_plugin_failed_in(t, ctx, &t->c->data, "batch", err) : 0;
}

int trainer_load_batch(trainer *t, rx_split split, int64_t first, int view, int64_t n, rx_tensor *x, char *err)
{
    const rx_data_ops *ops = &t->c->data.pl.desc->data;
    bool staged = !ops->batch[t->device];
    *x = trainer_tensor(t, staged ? t->staged_x : t->x, n, t->info.sample);
    if (staged) x->device = RX_CPU;
    rx_ctx cpu = t->ctx;
    cpu.device = RX_CPU;
    int rc = staged ? call_batch(t, &cpu, RX_CPU, split, first, view, x, t->staged_labels, err)
                    : call_batch(t, &t->ctx, t->device, split, first, view, x, t->labels, err);
    if (rc != 0) return -1;
    if (staged) { /* queued, not waited for */
        host_to_device(t->device, t->x, t->staged_x, (size_t)rx_numel(x->shape) * sizeof(float));
        host_to_device(t->device, t->labels, t->staged_labels, (size_t)n * sizeof(int32_t));
        *x = trainer_tensor(t, t->x, n, t->info.sample);
    }
    return 0;
}

bool trainer_draws_in_parts(const trainer *t)
{
    return t->info.parts && t->device == RX_CPU && t->c->data.pl.desc->data.batch[RX_CPU];
}

int trainer_load_rows(const trainer *t, rx_ctx *ctx, rx_split split, int64_t first, int view, int64_t row, int64_t n,
                      char *err)
{
    const size_t per = (size_t)rx_numel(t->info.sample);
    rx_tensor x = trainer_tensor(t, t->x + (size_t)row * per, n, t->info.sample);
    return call_batch(t, ctx, RX_CPU, split, first + row, view, &x, t->labels + row, err);
}

int trainer_loss_rows(const trainer *t, rx_ctx *ctx, int64_t first, const rx_tensor *logits, float *dlogits, char *err)
{
    int64_t n = logits->shape.d[0];
    rx_tensor dl = trainer_tensor(t, dlogits ? dlogits + (size_t)first * (size_t)rx_numel(t->nt.out) : NULL, n, t->nt.out);
    ctx->err[0] = '\0';
    crash_enter(t->c->loss.where, "forward");
    int rc = t->c->loss.pl.desc->loss.forward[t->device](t->loss, ctx, logits, t->labels + first, t->losses + first,
                                                          dlogits ? &dl : NULL);
    crash_leave();
    return rc != 0 ? trainer_plugin_failed_in(t, ctx, &t->c->loss, "forward", err) : 0;
}

int trainer_losses_sum(trainer *t, int64_t n, double *sum, char *err)
{
    device_to_host(t->device, t->host_losses, t->losses, (size_t)n * sizeof(float));
    /* Once a batch, after the copy that waits for the GPU: a failed call or kernel is named
     * here, before its garbage could pass for a NaN loss. */
    if (device_check(t->device, err) != 0) return -1;
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += t->host_losses[i];
    *sum = s;
    return 0;
}

int trainer_loss(trainer *t, const rx_tensor *logits, bool with_grad, double *sum, char *err)
{
    if (trainer_loss_rows(t, &t->ctx, 0, logits, with_grad ? t->dlogits : NULL, err) != 0) return -1;
    return trainer_losses_sum(t, logits->shape.d[0], sum, err);
}
