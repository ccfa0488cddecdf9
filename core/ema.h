/* ema.h: the weights' exponential moving average (config key `ema`), which validation, the best
 * checkpoint and the test see instead of the trained weights. It lives on the run's device
 * beside the flat parameter vector, and is saved in last.safetensors so a resume continues it. */
#ifndef RUNEXP_EMA_H
#define RUNEXP_EMA_H

#include <stdbool.h>
#include <stdint.h>

#include "runexp.h"

typedef struct moving_average {
    double decay;        /* 0: no average (every function below does nothing) */
    rx_device device;
    size_t n;            /* floats in the parameter vector */
    float *avg;          /* (n) the average */
    float *trained;      /* (n) the trained weights, kept while the average is swapped in */
} moving_average;

/* Starts the average at params (n floats on device d); decay 0 allocates nothing. Returns -1
 * with err set when out of memory. */
int ema_start(moving_average *m, rx_device d, double decay, const float *params, size_t n, char *err);
void ema_free(moving_average *m);
/* After optimizer step t (1-based), over params [begin, end) (the range the caller stepped: all of
 * them, or one thread's): avg += (1 - d) (params - avg) with timm's warm-up,
 * d = min(decay, (1 + t) / (10 + t)), so that the first steps' weights do not linger. */
void ema_update(moving_average *m, const rx_ctx *ctx, const float *params, int64_t t, size_t begin, size_t end);
/* Puts the average into params (keeping the trained weights aside), or the trained weights back. */
void ema_swap(moving_average *m, float *params, bool average_in);

#endif
