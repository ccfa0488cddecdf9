/* check.h: `runexp check`, the project's own plugin tests offered to every plugin author.
 *
 * For a layer: the descriptor, create's report, that forward writes every output and nothing
 * past it, that backward writes every input gradient and adds into the parameter gradients,
 * a finite-difference check of the input gradient and of every parameter tensor, determinism,
 * CPU-vs-CUDA agreement where both exist, and a speed figure. For a loss: the same, against
 * the gradient of the mean loss. Prints a table; the caller exits non-zero on a failure. */
#ifndef RUNEXP_CHECK_H
#define RUNEXP_CHECK_H

#include <stdio.h>

#include "config.h"

typedef struct check_options {
    rx_shape in;      /* per-sample input shape, e.g. (3, 8, 8) */
    int64_t batch;    /* samples per batch in the checks */
    uint64_t seed;
    FILE *out;        /* where the table goes */
} check_options;

/* Runs every check on the layer or loss u. Returns the number of checks that failed, or -1 when
 * the checks could not run at all (err says why, e.g. create refused the input shape). */
int check_plugin(const plugin_use *u, const check_options *o, char *err);

#endif
