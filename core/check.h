/* check.h: `runexp check`, the project's own plugin tests offered to every plugin author, and
 * the one gradient and device checker the test suite runs over every in-tree layer and loss.
 *
 * For a layer, in training and again in evaluation (ctx->training false): that forward writes
 * every output and nothing past it, that backward writes every input gradient, adds into the
 * parameter gradients and leaves the buffers' alone, a finite-difference check of the input
 * gradient and of every parameter tensor, determinism, that evaluation leaves the buffers (running
 * statistics) as they were, and CPU-vs-CUDA agreement where both exist; before that the
 * descriptor and create's report, after it a speed figure. For a loss: the same, against the
 * gradient of the mean loss. Prints a table; the caller exits non-zero on a failure. */
#ifndef RUNEXP_CHECK_H
#define RUNEXP_CHECK_H

#include <stdio.h>

#include "config.h"

#define CHECK_EVERY_ENTRY (-1)  /* check_options.probes: every entry, not a sample */
#define CHECK_SAME_BITS (-1.0)  /* check_options.device_bound: the devices must agree bit for bit */

typedef struct check_options {
    rx_shape in;      /* per-sample input shape, e.g. (3, 8, 8) */
    int64_t batch;    /* samples per batch in the checks */
    uint64_t seed;
    FILE *out;        /* where the table goes */
    /* Optional: zero gives what `runexp check` does. The test suite tightens them per layer. */
    int probes;               /* entries of each tensor checked by finite differences (0: 48) */
    float input_scale;        /* inputs uniform in [-s, s] (0: 1) */
    double device_bound;      /* largest relative error between the devices (0: 1e-3) */
    double device_bound_eval; /* the same in evaluation (0: device_bound) */
    bool compare_state;       /* the devices keep the same state (saved for backward): compare it too */
    bool device_ties;         /* compare the devices again on inputs full of ties and NaNs (a max) */
    bool cpu_only;            /* the layer refuses these arguments on the GPU (conv2d's pool): no comparison */
    bool no_speed;            /* leave out the speed figure, which takes 0.2 s */
    double speed_seconds;     /* how long the speed figure times forward and backward (0: 0.2 s) */
} check_options;

/* Runs every check on the layer or loss u. Returns the number of checks that failed, or -1 when
 * the checks could not run at all (err says why, e.g. create refused the input shape). */
int check_plugin(const plugin_use *u, const check_options *o, char *err);

#endif
