/* trainer.h: the machinery one experiment runs on, set up before its run folder exists: threads,
 * the device, the plugin instances (data set, network, loss, optimizer), the weights' moving
 * average and every buffer a batch needs, allocated once. Also the two things every batch does
 * with it: draw a batch onto the device (staged through pinned host memory when the data plugin
 * draws on the CPU only) and compute the loss. The loops that use it are train.c and evaluate.c. */
#ifndef RUNEXP_TRAINER_H
#define RUNEXP_TRAINER_H

#include <stdio.h>

#include "config.h"
#include "dist.h"
#include "ema.h"
#include "net.h"

typedef struct trainer {
    const config *c;
    FILE *log;
    rx_ctx ctx;
    rx_device device;
    rx_data_info info;
    void *data, *loss, *optim;   /* plugin instances */
    net nt;
    int state_per_param;         /* optimizer state values per parameter */
    float *opt_state;            /* (state_per_param * nparams) on the device */
    moving_average ema;          /* the weights' average, when c->ema > 0 */
    float *x;                    /* (batch, sample...) on the device */
    int32_t *labels;             /* (batch) on the device */
    float *losses;               /* (batch) on the device */
    float *dlogits;              /* (batch, classes) on the device */
    float *avg_logits;           /* (batch, classes) the mean over test-time views */
    float *staged_x;             /* pinned host batch, when the data plugin has no path on the device */
    int32_t *staged_labels;
    float *host_losses, *host_logits; /* host copies, for the logs and the accuracy */
    int32_t *host_labels;
    dist_gpu *gpu;               /* NCCL over the ranks, on the GPU with more than one rank */
} trainer;

/* Everything but the run folder. quiet: no "device: cpu (auto: ...)" line. fresh: the weights
 * start from their inits (with data-driven ones such as whitening); otherwise a checkpoint will
 * overwrite them. Errors name the config file and the place. Free with trainer_free either way. */
int trainer_setup(trainer *t, const config *c, FILE *log, bool quiet, bool fresh, char *err);
void trainer_free(trainer *t);
/* The run's optimizer steps (batches of the training split x epochs) into *total_steps, checked,
 * and whether a record of `record` bytes for every epoch fits this machine: an error naming
 * epochs, not an out-of-memory one, for an epochs past either. */
int trainer_plan_epochs(const trainer *t, size_t record, int64_t *total_steps, char *err);

/* A batch of n samples (or logits) over t's device, shaped (n, s...). */
rx_tensor trainer_tensor(const trainer *t, float *data, int64_t n, rx_shape s);
/* "FILE: WHERE: OP: the plugin's reason", for a plugin call that failed. Returns -1. */
int trainer_plugin_failed(trainer *t, const plugin_use *u, const char *op, char *err);
/* The same for a call made with another context than t's (a lane's). */
int trainer_plugin_failed_in(const trainer *t, const rx_ctx *ctx, const plugin_use *u, const char *op, char *err);

/* Draws samples [first, first + n) of split, test-time view `view`, into t->x and t->labels;
 * x gets the batch tensor. */
int trainer_load_batch(trainer *t, rx_split split, int64_t first, int view, int64_t n, rx_tensor *x, char *err);
/* Whether each lane draws its own rows of a batch: a run on the CPU whose data plugin declared
 * rx_data_info.parts (and has a CPU batch). */
bool trainer_draws_in_parts(const trainer *t);
/* Draws samples [first + row, first + row + n) of split, view `view`, into rows [row, row + n)
 * of t->x and t->labels on the CPU, with ctx (a lane's): one part of a batch. */
int trainer_load_rows(const trainer *t, rx_ctx *ctx, rx_split split, int64_t first, int view, int64_t row, int64_t n,
                      char *err);
/* Per-sample losses into t->losses (and the mean's gradient into t->dlogits when with_grad);
 * their sum, copied to the host, in *sum. */
int trainer_loss(trainer *t, const rx_tensor *logits, bool with_grad, double *sum, char *err);
/* trainer_loss in two halves, for a batch whose rows are cut into parts: the loss of rows
 * [first, first + n) (n: the logits' rows) with ctx, into those rows of t->losses and, unless
 * dlogits is NULL, of dlogits (the gradient of the part's mean); then the sum of rows [0, n). */
int trainer_loss_rows(const trainer *t, rx_ctx *ctx, int64_t first, const rx_tensor *logits, float *dlogits, char *err);
int trainer_losses_sum(trainer *t, int64_t n, double *sum, char *err);

#endif
