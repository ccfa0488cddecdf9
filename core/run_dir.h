/* run_dir.h: the run folder, every file in it but the pictures and the report (observer.c):
 *   started.lua        the resolved config the run started with (or last resumed with, after
 *                      changes allowed), whose first line marks a folder as runexp's run folder
 *   config.lua         the resolved config (`runexp RUN/config.lua out=NEW` repeats the run)
 *   metrics.csv        one row per epoch (record.h's epoch fields)
 *   summary.json       the run's results (record.h's summary fields)
 *   best.safetensors   the weights with the best validation loss (the last epoch's without a
 *                      validation split): loads into PyTorch as it is
 *   last.safetensors   the weights, the optimizer state, the moving average and where training
 *                      stands (run_position): what `runexp resume` continues from, bit for bit
 * Every file is written whole and renamed into place (files.c), so a crash tears none.
 *
 * A run folder is a run from the moment it appears: a new run is made in a hidden folder beside
 * it (started.lua, config.lua, and last.safetensors at epoch 0, batch 0) that is renamed into
 * place, so the folder is never there without what resumes it. A folder holding anything else
 * (a config of the user's) is not written into; an empty one may be used. */
#ifndef RUNEXP_RUN_DIR_H
#define RUNEXP_RUN_DIR_H

#include <stdio.h>

#include "checkpoint.h"
#include "record.h"
#include "trainer.h"

/* Where training stands: last.safetensors' metadata, X(type, member, metadata key), in the
 * order the file lists them. */
#define POSITION_FIELDS(X)                         \
    X(POSITION_COUNT, epochs_done, "epoch")        \
    X(POSITION_COUNT, batches_done, "batch")       \
    X(POSITION_COUNT, step, "step")                \
    X(POSITION_U64, rng, "rng")                    \
    X(POSITION_NUM, best_valid_loss, "best_valid_loss") \
    X(POSITION_COUNT, best_epoch, "best_epoch")    \
    X(POSITION_NUM, loss_sum, "loss_sum")          \
    X(POSITION_NUM, epoch_seconds, "epoch_seconds") \
    X(POSITION_NUM, train_seconds, "train_seconds") \
    X(POSITION_OPTNUM, lr, "lr")                   \
    X(POSITION_OPTNUM, grad_norm_sum, "grad_norm_sum") \
    X(POSITION_OPTNUM, grad_norm_max, "grad_norm_max") \
    X(POSITION_OPTCOUNT, clipped_steps, "clipped_steps") \
    X(POSITION_OPTCOUNT, stale_epochs, "epochs_without_improvement") \
    X(POSITION_OPTNUM, stop_best_loss, "early_stop_best")

#define POSITION_MEMBER_POSITION_COUNT int64_t
#define POSITION_MEMBER_POSITION_U64 uint64_t
#define POSITION_MEMBER_POSITION_NUM double
#define POSITION_MEMBER_POSITION_OPTNUM double /* NaN when missing (a file of an older runexp) */
#define POSITION_MEMBER_POSITION_OPTCOUNT int64_t /* 0 when missing */
#define POSITION_MEMBER(type, name, key) POSITION_MEMBER_##type name;

/* epochs_done whole epochs, then batches_done batches into the next one (all of its batches:
 * trained, not yet validated); step optimizer steps; rng the context's RNG state; the best
 * validation loss so far and its epoch; the train loss summed and the training time spent on the
 * batches done this epoch, and the training time of the whole epochs done; lr the last step's
 * learning rate (the epoch's row of metrics.csv shows it); the sum and largest of the global
 * gradient norms of this epoch's steps before clipping and how many were clipped (with
 * clip_grad_norm); the epochs since the validation loss last fell by more than
 * early_stop.min_delta, and the loss it fell to (early stopping's own best). epochs_done = epochs,
 * or stale_epochs reaching early_stop.patience: the test is what remains. */
typedef struct run_position {
    POSITION_FIELDS(POSITION_MEMBER)
} run_position;

/* Whether early stopping has ended the run at p: the test is what remains. */
static inline bool run_stopped_early(const config *c, const run_position *p)
{
    return c->early_stop_patience > 0 && p->stale_epochs >= c->early_stop_patience;
}

/* "DIR/NAME" into buf (PATH_MAX bytes); -1 when too long. */
int run_dir_path(char *buf, const char *dir, const char *name, char *err);

/* How a run folder is opened: a new run, the run in it continued, or the run in it started over
 * (RUN_RESTART). */
typedef enum { RUN_DIR_NEW, RUN_DIR_RESUME, RUN_DIR_RESTART } run_dir_mode;
/* What a resume may do beyond continuing (`runexp resume DIR --restart --allow-changes`). */
enum { RUN_RESTART = 1, RUN_ALLOW_CHANGES = 2 };

/* How c's run folder is to be opened, from what it holds and c->resume: nothing (or no folder)
 * is a new run; a run folder is refused unless resuming, and resumed only with its
 * last.safetensors (or started over with RUN_RESTART); a folder of anything else is refused. */
int run_dir_mode_of(const config *c, int flags, run_dir_mode *mode, char *err);
/* Opens the run folder c->out (a new one under runs/ when empty; the name is written back) as
 * mode says. A new or restarted run gets started.lua, config.lua and last.safetensors at p (the
 * start: t's initial weights); a resumed one is refused when it is finished or when its config
 * differs from started.lua (unless RUN_ALLOW_CHANGES; epochs may always change). The resolved
 * config is printed on log (unless NULL); *config_text gets it (the caller frees it). */
int run_dir_open(config *c, run_dir_mode mode, int flags, trainer *t, const run_position *p, FILE *log,
                 char **config_text, char *err);

int run_dir_write_metrics(const char *dir, const epoch_record *history, int n, char *err);
int run_dir_write_summary(const run_summary *s, char *err);

/* best.safetensors: the current weights, tagged with the epoch and (unless NaN) its loss. */
int run_dir_save_best(const char *dir, const net *nt, int64_t epoch, double valid_loss, char *err);
int run_dir_load_best(const char *dir, net *nt, char *err);

/* last.safetensors: t's weights, optimizer state and moving average, and p. */
int run_dir_save_last(const char *dir, trainer *t, const run_position *p, char *err);
/* last.safetensors' metadata m into p: every field there, of its type; -1 with a message naming
 * the field otherwise (path names the file). */
int run_position_read(const ckpt_meta_buf *m, run_position *p, const char *path, char *err);
/* Whether p can be where a run of `epochs` epochs of `batches` batches each stands: no epoch or
 * batch past the end, as many optimizer steps as batches done, the best epoch one of those done,
 * finite non-negative sums and times; -1 with a message naming the field and its value. */
int run_position_check(const run_position *p, int64_t epochs, int64_t batches, const char *path, char *err);
/* Restores what run_dir_save_last wrote into t and p, and the history (room for t->c->epochs
 * records) of the epochs it covers from metrics.csv. */
int run_dir_resume(const char *dir, trainer *t, run_position *p, epoch_record *history, int *nhistory, char *err);

#endif
