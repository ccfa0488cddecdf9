/* record.c: the field lists of record.h, and the writers and readers they drive. */
#include "record.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define EPOCH_FIELD(type, name, csv, term, scale) { #name, type, offsetof(epoch_record, name), csv, term, scale },
const field epoch_fields[] = { EPOCH_FIELDS(EPOCH_FIELD) };
const int n_epoch_fields = (int)(sizeof epoch_fields / sizeof *epoch_fields);

#define EVAL_FIELD(type, name, member, json) { #name, type, offsetof(eval_result, member), json, NULL, 1 }
const field eval_fields[] = {
    EVAL_FIELD(FIELD_NUM, loss, loss, "%.9g"),
    EVAL_FIELD(FIELD_NUM, accuracy, accuracy, "%.9g"),
    EVAL_FIELD(FIELD_INT, correct, correct, NULL),
    EVAL_FIELD(FIELD_INT, total, total, NULL),
    { "per_class_accuracy", FIELD_CLASSES, 0, NULL, NULL, 1 },
};
const int n_eval_fields = (int)(sizeof eval_fields / sizeof *eval_fields);

#define SUMMARY_FIELD(type, name, json) { #name, type, offsetof(run_summary, name), json, NULL, 1 }
const field summary_fields[] = {
    SUMMARY_FIELD(FIELD_STR, config, NULL),
    { "run_dir", FIELD_STR, offsetof(run_summary, dir), NULL, NULL, 1 },
    SUMMARY_FIELD(FIELD_STR, device, NULL),
    SUMMARY_FIELD(FIELD_INT, threads, NULL),
    SUMMARY_FIELD(FIELD_INT, seed, NULL),
    SUMMARY_FIELD(FIELD_INT, epochs, NULL),
    SUMMARY_FIELD(FIELD_INT, best_epoch, NULL),
    SUMMARY_FIELD(FIELD_NUM, best_valid_loss, "%.9g"),
    SUMMARY_FIELD(FIELD_EVAL, test, NULL), /* the test's eval_fields, prefixed "test_" */
    SUMMARY_FIELD(FIELD_NUM, train_seconds_per_epoch, "%.6g"),
    SUMMARY_FIELD(FIELD_NUM, images_per_second, "%.6g"),
    SUMMARY_FIELD(FIELD_NUM, total_seconds, "%.6g"),
    SUMMARY_FIELD(FIELD_BOOL, stopped_early, NULL),
    SUMMARY_FIELD(FIELD_INT, stopped_epoch, NULL),
    SUMMARY_FIELD(FIELD_INT, clipped_steps, NULL),
    SUMMARY_FIELD(FIELD_STR, started, NULL),
    SUMMARY_FIELD(FIELD_STR, host, NULL),
    SUMMARY_FIELD(FIELD_STR, runexp_version, NULL),
    SUMMARY_FIELD(FIELD_STR, revision, NULL),
};
const int n_summary_fields = (int)(sizeof summary_fields / sizeof *summary_fields);

int64_t field_int(const field *f, const void *record)
{
    return *(const int64_t *)(const void *)((const char *)record + f->offset);
}

double field_number(const field *f, const void *record)
{
    if (f->type == FIELD_INT) return (double)field_int(f, record);
    return *(const double *)(const void *)((const char *)record + f->offset);
}

bool field_bool(const field *f, const void *record)
{
    return *(const bool *)(const void *)((const char *)record + f->offset);
}

const char *field_string(const field *f, const void *record)
{
    return (const char *)record + f->offset;
}

double class_accuracy(const eval_result *e, int k)
{
    return e->class_total[k] ? (double)e->class_correct[k] / (double)e->class_total[k] : 0.0;
}

void run_summary_free(run_summary *s)
{
    free(s->history);
    s->history = NULL;
    s->nhistory = 0;
}

/* ---- metrics.csv and the terminal ---- */

void epoch_csv_header(strbuf *b)
{
    for (int i = 0; i < n_epoch_fields; i++) sb_printf(b, "%s%s", i ? "," : "", epoch_fields[i].name);
    sb_printf(b, "\n");
}

void epoch_csv_row(strbuf *b, const epoch_record *e)
{
    for (int i = 0; i < n_epoch_fields; i++) {
        const field *f = &epoch_fields[i];
        if (i) sb_printf(b, ",");
        if (f->type == FIELD_INT) sb_printf(b, f->format, (long long)field_int(f, e));
        else sb_printf(b, f->format, field_number(f, e));
    }
    sb_printf(b, "\n");
}

int epoch_csv_parse(const char *line, epoch_record *e)
{
    const char *p = line;
    bool older = false;
    for (int i = 0; i < n_epoch_fields; i++) {
        const field *f = &epoch_fields[i];
        char *end;
        void *at = (char *)e + f->offset;
        if (f->type == FIELD_INT) *(int64_t *)at = strtoll(p, &end, 10);
        else *(double *)at = strtod(p, &end);
        if (end == p) return -1;
        if (*end == '\0' && i + 1 == EPOCH_FIELDS_BEFORE_0_3) { /* an older runexp's row */
            older = true;
            break;
        }
        if (*end != (i + 1 < n_epoch_fields ? ',' : '\0')) return -1;
        p = end + 1;
    }
    for (int i = EPOCH_FIELDS_BEFORE_0_3; older && i < n_epoch_fields; i++) {
        const field *f = &epoch_fields[i];
        void *at = (char *)e + f->offset;
        if (f->type == FIELD_INT) *(int64_t *)at = 0;
        else *(double *)at = NAN;
    }
    return 0;
}

void epoch_print(FILE *out, const char *label, const epoch_record *e, int64_t epochs)
{
    fprintf(out, "%s%sepoch %lld/%lld", label ? label : "", label ? ": " : "", (long long)e->epoch, (long long)epochs);
    for (int i = 0; i < n_epoch_fields; i++) {
        const field *f = &epoch_fields[i];
        double v = field_number(f, e);
        if (f->term && !isnan(v)) fprintf(out, f->term, v * f->term_scale);
    }
    fprintf(out, "\n");
}

/* ---- summary.json ---- */

static void json_value(strbuf *b, const field *f, const void *record)
{
    double v = f->type == FIELD_NUM ? field_number(f, record) : 0;
    if (f->type == FIELD_STR) sb_json_string(b, field_string(f, record));
    else if (f->type == FIELD_BOOL) sb_printf(b, "%s", field_bool(f, record) ? "true" : "false");
    else if (f->type == FIELD_INT) sb_printf(b, "%lld", (long long)field_int(f, record));
    else if (isfinite(v)) sb_printf(b, f->format, v);
    else sb_printf(b, "null"); /* e.g. no validation split: JSON has no NaN */
}

static void json_classes(strbuf *b, const eval_result *e)
{
    sb_printf(b, "{");
    for (int k = 0; k < e->nclasses; k++) {
        sb_printf(b, "%s\n    ", k ? "," : "");
        sb_json_string(b, e->class_names[k]);
        sb_printf(b, ": %.9g", class_accuracy(e, k));
    }
    sb_printf(b, "\n  }");
}

/* Writes fields as "  "name": value" lines, names prefixed except per_class_accuracy's. */
static void json_fields(strbuf *b, const field *fields, int n, const void *record, const char *prefix, bool *first)
{
    for (int i = 0; i < n; i++) {
        const field *f = &fields[i];
        const void *at = (const char *)record + f->offset;
        if (f->type == FIELD_EVAL) {
            json_fields(b, eval_fields, n_eval_fields, at, "test_", first);
            continue;
        }
        sb_printf(b, "%s\n  \"%s%s\": ", *first ? "" : ",", f->type == FIELD_CLASSES ? "" : prefix, f->name);
        *first = false;
        if (f->type == FIELD_CLASSES) json_classes(b, record);
        else json_value(b, f, record);
    }
}

void summary_json(strbuf *b, const run_summary *s)
{
    bool first = true;
    sb_printf(b, "{");
    json_fields(b, summary_fields, n_summary_fields, s, "", &first);
    sb_printf(b, "\n}\n");
}
