/* predict.h: a trained model on picture files: `runexp predict RUN_DIR|CHECKPOINT [IMAGE|FOLDER ...]`
 * and runexp.predict(checkpoint_or_run_dir, images).
 *
 * The run's config.lua gives the network and the data set (built as in training: it knows the
 * class names, the pictures' size, the test-time views and the normalization its batches had,
 * which it reports in rx_data_info: configured or computed from its training split). Each file
 * is decoded (PNG, JPEG: plugins/common/picture.c, the code the imagefolder data set uses),
 * fitted to the run's size, normalized, and run through evaluate.c's forward pass with the run's
 * test-time views averaged, in batches of data.batch_size. A file that cannot be read or decoded
 * gets its message and the others go on. */
#ifndef RUNEXP_PREDICT_H
#define RUNEXP_PREDICT_H

#include "plugin.h"
#include "record.h" /* CLASS_NAME_LEN */

#define PREDICT_MAX_TOP 1000

typedef struct predict_request {
    const char *target;        /* a run folder, or a checkpoint with config.lua beside it */
    char *const *inputs;       /* files and folders (walked recursively) */
    int ninputs;
    int top;                   /* classes reported per file, 1 .. PREDICT_MAX_TOP (cut to the classes) */
    int fit;                   /* picture_fit, or -1: the run's data.resize when it has one, else "resize" */
    char *const *overrides;    /* key=value for the run's config (e.g. device=cpu) */
    int noverrides;
} predict_request;

typedef struct prediction {
    char *file;
    char *error;               /* why this file has no prediction, or NULL */
    int *index;                /* (top) classes, most probable first */
    float *probability;        /* (top) their softmax probabilities */
} prediction;

typedef struct predict_result {
    int64_t n;
    prediction *items;         /* (n) in the order the inputs name them, folders sorted */
    int top;                   /* entries of each index and probability */
    int nclasses;
    char (*class_names)[CLASS_NAME_LEN]; /* (nclasses) */
    int64_t failed;            /* items with an error */
} predict_result;

/* 0 when every file was classified or had its error recorded (r->failed counts those), or -1 with
 * err when nothing could be done (no config, no checkpoint, no file found, a stop request). */
int predict(const plugin_path *path, const predict_request *q, predict_result *r, char *err);
void predict_result_free(predict_result *r);

/* The command line: argv after "predict". Returns the exit status: 0 every file classified, 1 some
 * failed (each named) or nothing could be done, 2 usage, 130 stopped. */
int predict_main(const plugin_path *path, int argc, char **argv);

#endif
