/* progress.h: a progress bar for one epoch, redrawn in place on a terminal, with the time left in
 * the epoch and in the whole run:
 *   epoch 2/30 [##########..........] 1234/2000  2345 img/s  loss 1.2345  ETA 0:12, run 5:40
 * Only when the stream is a terminal (isatty); otherwise every call does nothing and the caller
 * prints its one line per epoch itself, so logs and CI output stay clean. */
#ifndef RUNEXP_PROGRESS_H
#define RUNEXP_PROGRESS_H

#include <stdint.h>
#include <stdio.h>

typedef struct progress {
    FILE *out;                 /* NULL: disabled (not a terminal, or ended) */
    int64_t total, epoch, epochs;
    double start, last_draw;   /* seconds on the monotonic clock */
    double later_epoch_seconds; /* what each epoch after this one will take (the mean of those done,
                                 * set by the caller after progress_begin); 0: as long as this one */
} progress;

/* Seconds left in the whole run after done of the epoch's batches in `elapsed` seconds: the rest
 * of this epoch at its pace so far, and each epoch to come as later_epoch_seconds says. */
double progress_run_left(const progress *p, int64_t done, double elapsed);

/* Starts an epoch of total_batches batches (epoch counts from 1 up to epochs). */
void progress_begin(progress *p, FILE *out, int64_t total_batches, int64_t epoch, int64_t epochs);
/* Reports the state after a batch; redraws at most 10 times a second, and always at the end. */
void progress_update(progress *p, int64_t batches_done, int64_t images_done, double running_loss);
/* Clears the bar's line, leaving the cursor at its start for the caller's summary line. */
void progress_end(progress *p);

#endif
