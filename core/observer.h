/* observer.h: what a run shows besides its numbers. Observers (the pictures train_batch.png and
 * test_predictions.png, and report.html) are told of a run's events with a read-only view of it;
 * the training loop knows nothing of PNG or HTML. Adding a view of a run (a new picture, a
 * log format) is one more observer in observer.c's list; TensorBoard's event files are one. */
#ifndef RUNEXP_OBSERVER_H
#define RUNEXP_OBSERVER_H

#include <stdbool.h>
#include <stdio.h>
#include <time.h>

#include "progress.h"
#include "record.h"

#define SAMPLE_IMAGES 32         /* pictures in train_batch.png and test_predictions.png */

/* The first images of a batch, copied to the host, with their classes and predictions. */
typedef struct sample_batch {
    int64_t n;                   /* images held, at most SAMPLE_IMAGES */
    rx_shape shape;              /* of one sample */
    float *x;                    /* (SAMPLE_IMAGES, shape...) host memory */
    int32_t labels[SAMPLE_IMAGES];
    int32_t predicted[SAMPLE_IMAGES];
    bool has_predictions;
} sample_batch;

/* Room for SAMPLE_IMAGES samples of `shape`; -1 when out of memory. */
int sample_batch_alloc(sample_batch *s, rx_shape shape);
void sample_batch_free(sample_batch *s);
/* Copies the first images of a batch on device d (x: (n, shape...), labels: (n)), and the
 * predictions when not NULL (host memory). */
void sample_batch_capture(sample_batch *s, rx_device d, const float *x, const int32_t *labels, int64_t n,
                          const int32_t *predicted);

typedef enum {
    OBSERVE_FIRST_BATCH,  /* the run's first training batch is drawn: samples holds it */
    OBSERVE_EPOCH,        /* an epoch is done (history has it) */
    OBSERVE_TEST,         /* the best checkpoint is tested: test, confusion, samples, summary */
    OBSERVE_STOP,         /* a stop request left an epoch part done: batches holds its losses so far */
} observe_event;

/* One training batch's loss, for the observers that plot it. */
typedef struct batch_point {
    int64_t step;                /* the optimizer step it made, counted from the run's start */
    double loss;                 /* the batch's mean loss */
    double wall_time;            /* seconds since 1970 when it was done */
} batch_point;

typedef struct run_view {
    const char *dir;             /* the run folder */
    const char *config_text;     /* the resolved config */
    const char *device;
    int64_t epochs;              /* planned */
    const epoch_record *history; /* (nhistory) epochs done */
    int nhistory;
    const rx_data_info *info;    /* sample shape, classes and their names */
    const sample_batch *samples; /* FIRST_BATCH and TEST */
    const eval_result *test;     /* TEST */
    const int64_t *confusion;    /* TEST: (nclasses, nclasses), [true * nclasses + predicted] */
    const run_summary *summary;  /* TEST: the timings */
    const char *tensorboard;     /* TensorBoard's folder (relative: to dir), "": none */
    time_t started;              /* when this process began the run (a resumed run: the resume) */
    const batch_point *batches;  /* EPOCH and STOP: (nbatches) losses since the last EPOCH or STOP */
    int64_t nbatches;
    bool stopping;               /* a stop request is served: the pictures and the report wait for
                                  * the resumed run; what only adds to a log (TensorBoard) writes */
} run_view;

/* Tells every observer of event. What an observer cannot write is said on log at once
 * ("error: report.html not written: ...", after ending the progress bar, which may be NULL),
 * and the run goes on, its weights and numbers kept; the first such message goes to first_err
 * (ERR_LEN bytes) when that is still empty, for the run to end with. Returns how many observers
 * failed. */
int observers_notify(observe_event event, const run_view *v, FILE *log, progress *bar, char *first_err);

#endif
