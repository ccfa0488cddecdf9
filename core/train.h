/* train.h: one experiment, start to end: train and validate each epoch, keep the best
 * checkpoint by validation loss, then test it; everything it learns goes to the run folder. */
#ifndef RUNEXP_TRAIN_H
#define RUNEXP_TRAIN_H

#include <stdio.h>

#include "config.h"

typedef struct run_summary {
    char dir[PATH_MAX];          /* the run folder */
    char device[16];
    int threads;
    int64_t epochs, best_epoch;
    double best_valid_loss;
    double test_loss, test_accuracy;
    int nclasses;
    int64_t class_correct[RX_MAX_CLASSES], class_total[RX_MAX_CLASSES];
    double train_seconds_per_epoch, images_per_second, total_seconds;
} run_summary;

/* Runs c, printing progress to log. On failure err holds one line, and no output of the run is
 * left half-written (files are replaced whole or not at all). */
int train_run(config *c, FILE *log, run_summary *s, char *err);

#endif
