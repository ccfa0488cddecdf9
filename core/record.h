/* record.h: what a run measures, declared once. An epoch record is a row of metrics.csv; an
 * evaluation is a loss, an accuracy and per-class counts; a run summary is summary.json. Each
 * field is one line of a list below (name, type, formats), and that list drives the CSV header
 * and rows, resume's reader of metrics.csv, the terminal's epoch line, summary.json and the Lua
 * tables runexp.train and runexp.evaluate return (core/script.c). A new field is one new line. */
#ifndef RUNEXP_RECORD_H
#define RUNEXP_RECORD_H

#include <limits.h>
#include <stdint.h>
#include <stdio.h>

#include "files.h"
#include "runexp.h"

#define CLASS_NAME_LEN 32

/* X(type, name, csv format, terminal format or NULL, terminal scale), in metrics.csv's column
 * order. The terminal line shows a field only when its value is a number (a run without a
 * validation split has NaN validation fields). */
#define EPOCH_FIELDS(X)                                                          \
    X(FIELD_INT, epoch, "%lld", NULL, 1)                                         \
    X(FIELD_NUM, seconds, "%.4f", "  %.2f s", 1)                                 \
    X(FIELD_NUM, train_loss, "%.6f", "  train loss %.4f", 1)                     \
    X(FIELD_NUM, valid_loss, "%.6f", "  valid loss %.4f", 1)                     \
    X(FIELD_NUM, valid_accuracy, "%.6f", "  valid accuracy %.2f%%", 100)         \
    X(FIELD_NUM, lr, "%g", "  lr %.4g", 1)                                       \
    X(FIELD_NUM, train_seconds, "%.4f", "  (train %.2f s", 1)                    \
    X(FIELD_NUM, images_per_second, "%.1f", ", %.0f img/s)", 1)                  \
    X(FIELD_NUM, grad_norm, "%.6g", "  grad norm %.3g", 1)                       \
    X(FIELD_NUM, grad_norm_max, "%.6g", " (max %.3g)", 1)                       \
    X(FIELD_INT, clipped_steps, "%lld", NULL, 1)                                 \
    X(FIELD_INT, epochs_without_improvement, "%lld", NULL, 1)
/* grad_norm, grad_norm_max: the mean and largest global gradient norm of the epoch's steps before
 * clipping (NaN without clip_grad_norm); clipped_steps: the steps that were scaled down;
 * epochs_without_improvement: since the validation loss last fell by more than
 * early_stop.min_delta (0 after an epoch that did). A row of an older runexp ends after
 * images_per_second (EPOCH_FIELDS_BEFORE_0_3 fields); the rest then read as NaN or 0. */
#define EPOCH_FIELDS_BEFORE_0_3 8

/* FIELD_CLASSES: an eval_result's per-class accuracies; FIELD_EVAL: an embedded eval_result;
 * FIELD_BOOL: a bool (true or false in JSON and Lua). */
typedef enum { FIELD_INT, FIELD_NUM, FIELD_STR, FIELD_CLASSES, FIELD_EVAL, FIELD_BOOL } field_type;

#define RECORD_MEMBER_FIELD_INT int64_t
#define RECORD_MEMBER_FIELD_NUM double
#define RECORD_MEMBER(type, name, csv, term, scale) RECORD_MEMBER_##type name;

/* One row of metrics.csv. */
typedef struct epoch_record {
    EPOCH_FIELDS(RECORD_MEMBER)
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
    char config[PATH_MAX];       /* the config file */
    char dir[PATH_MAX];          /* the run folder */
    char device[16];
    int64_t threads, seed, epochs, best_epoch;
    double best_valid_loss;      /* NaN or infinite without a validation split: null in JSON */
    eval_result test;            /* the best checkpoint on the test split */
    double train_seconds_per_epoch, images_per_second, total_seconds;
    bool stopped_early;          /* early_stop ended the run before its last epoch */
    int64_t stopped_epoch;       /* the epoch it stopped after; 0 when every epoch ran */
    int64_t clipped_steps;       /* steps whose gradients clip_grad_norm scaled down */
    int nhistory;
    epoch_record *history;       /* (nhistory), one per epoch; free with run_summary_free */
    char started[32];            /* when the run (a resumed run: its resume) began, ISO 8601 UTC */
    char host[256];              /* the machine it ran on */
    char runexp_version[16];
    char revision[64];           /* the source's `git describe --always --dirty`, or "unknown" */
} run_summary;

void run_summary_free(run_summary *s);

/* One field of a record or summary: where it is in its struct and how it is written. The JSON
 * format applies to numbers; a non-finite number is written as null. */
typedef struct field {
    const char *name;
    field_type type;
    size_t offset;
    const char *format;          /* csv (epoch fields) or JSON (summary fields) */
    const char *term;            /* epoch fields: the terminal's format, or NULL */
    double term_scale;
} field;

extern const field epoch_fields[];
extern const int n_epoch_fields;
/* An evaluation's fields (loss, accuracy, correct, total, per_class_accuracy): summary.json and
 * runexp.train give them prefixed "test_", runexp.evaluate as they are. */
extern const field eval_fields[];
extern const int n_eval_fields;
/* summary.json's fields, in order; the FIELD_EVAL entry stands for the test's eval_fields. */
extern const field summary_fields[];
extern const int n_summary_fields;

/* A field's value: FIELD_INT, FIELD_NUM (a double; an integer converted), FIELD_STR, FIELD_BOOL. */
int64_t field_int(const field *f, const void *record);
double field_number(const field *f, const void *record);
const char *field_string(const field *f, const void *record);
bool field_bool(const field *f, const void *record);
/* An evaluation's per-class accuracy: correct / total, 0 for a class the split lacks. */
double class_accuracy(const eval_result *e, int k);

/* metrics.csv: the header line, one row, and a row read back (-1 when the line is not one). */
void epoch_csv_header(strbuf *b);
void epoch_csv_row(strbuf *b, const epoch_record *e);
int epoch_csv_parse(const char *line, epoch_record *e);
/* "epoch 3/30  12.34 s  train loss 1.2345 ...": the terminal's line for an epoch, after
 * "LABEL: " when label is not NULL (a sweep's run). */
void epoch_print(FILE *out, const char *label, const epoch_record *e, int64_t epochs);

/* summary.json, a JSON object with every summary field (per_class_accuracy as an object). */
void summary_json(strbuf *b, const run_summary *s);

#endif
