/* train.h: one experiment, start to end: train and validate each epoch, keep the best
 * checkpoint by validation loss, then test it; everything it learns goes to the run folder.
 * A run can be resumed from its last checkpoint, bit for bit, and stopped cleanly by a signal. */
#ifndef RUNEXP_TRAIN_H
#define RUNEXP_TRAIN_H

#include <stdio.h>

#include "config.h"

#define CLASS_NAME_LEN 32

/* One row of metrics.csv. */
typedef struct epoch_record {
    int64_t epoch;
    double seconds, train_loss, valid_loss, valid_accuracy, lr, train_seconds, images_per_second;
} epoch_record;

/* Loss and accuracy of some weights on one split. */
typedef struct eval_result {
    double loss, accuracy;
    int64_t correct, total;
    int nclasses;
    char class_names[RX_MAX_CLASSES][CLASS_NAME_LEN];
    int64_t class_correct[RX_MAX_CLASSES], class_total[RX_MAX_CLASSES];
} eval_result;

typedef struct run_summary {
    char dir[PATH_MAX];          /* the run folder */
    char device[16];
    int threads;
    int64_t epochs, best_epoch;
    double best_valid_loss;
    eval_result test;            /* the best checkpoint on the test split */
    double train_seconds_per_epoch, images_per_second, total_seconds;
    int nhistory;
    epoch_record *history;       /* (nhistory), one per epoch; free with run_summary_free */
} run_summary;

enum { TRAIN_FAILED = -1, TRAIN_INTERRUPTED = -2 };

/* Runs c, printing progress to log. Returns 0, TRAIN_FAILED, or TRAIN_INTERRUPTED after a stop
 * request (the last checkpoint is saved and err says how to resume). On failure err holds one
 * line, and no output of the run is left half-written. */
int train_run(config *c, FILE *log, run_summary *s, char *err);
void run_summary_free(run_summary *s);

/* Loads a checkpoint of c's network and measures it on a split; no run folder is made. */
int train_evaluate(config *c, const char *checkpoint, rx_split split, eval_result *e, char *err);

/* SIGINT and SIGTERM ask the running experiment to stop after the current batch. */
void train_handle_signals(void);
bool train_stop_requested(void);

#endif
