/* report.h: a run's report.html and a sweep's report, written as one self-contained HTML file
 * each (inline CSS and SVG, pictures embedded as data: URIs, no scripts, nothing fetched), so
 * they open offline and can be mailed or archived as they are. A run's report is meant to be
 * rewritten after every epoch: while the run goes on it shows what is known and reloads itself. */
#ifndef RUNEXP_REPORT_H
#define RUNEXP_REPORT_H

#include <stdint.h>

#include "record.h"

/* Measured times; 0 where not known yet. */
typedef struct report_timings {
    double train_seconds_per_epoch, images_per_second, total_seconds;
} report_timings;

typedef struct report_input {
    const char *title;              /* e.g. the run folder */
    const char *config_text;        /* the resolved config (Lua), shown as it is; NULL: none */
    const epoch_record *history;    /* (nhistory) epochs done so far */
    int nhistory;
    int64_t epochs;                 /* epochs planned: the charts span them; 0: unknown */
    const char *device;             /* "cpu", ...; NULL: not shown */
    const eval_result *test;        /* the best checkpoint on the test split; NULL while running */
    const int64_t *confusion;       /* test->nclasses^2 counts, [true * nclasses + predicted];
                                       NULL: none (also ignored without test) */
    const char *train_png;          /* "train_batch.png": a path relative to the report's */
    const char *predictions_png;    /* folder (or absolute); missing files get a note */
    report_timings timings;
} report_input;

/* Writes the run report to path atomically. Sections (by id): summary, loss, accuracy,
 * per-class, confusion, train-batch, predictions, timings, config. Returns 0, or -1 with one
 * line in err (ERR_LEN bytes). */
int report_write_html(const char *path, const report_input *in, char *err);

/* One run of a sweep. */
typedef struct sweep_run {
    const char *label;              /* "lr 0.01": names the run in the legend and the table */
    const epoch_record *history;    /* (nhistory) */
    int nhistory;
    double best_valid_loss;
    int64_t best_epoch;
    double test_accuracy;           /* a fraction, 0..1 */
    const char *run_dir;            /* linked to its report.html when reachable from the sweep's */
    const char *error;              /* NULL or "": the run finished; otherwise why it failed */
} sweep_run;

typedef struct sweep_input {
    const char *title;
    const sweep_run *runs;          /* (nruns), in the order the table lists them */
    int nruns;
} sweep_input;

/* Writes the sweep report to path atomically: every run's validation loss and accuracy per
 * epoch on one chart each (sections "curves", "accuracy"), and the results table ("results"),
 * failed runs marked with their error. Returns 0, or -1 with one line in err. */
int report_write_sweep_html(const char *path, const sweep_input *in, char *err);

#endif
