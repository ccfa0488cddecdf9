/* max_take.h: the max-pool tie rule, shared by the maxpool layer and conv2d's fused pool = 2, so
 * that the two pick the same tap: the first maximum in row-major order, and a NaN wins (the last
 * one when there are several), as in PyTorch. */
#ifndef RX_COMMON_MAX_TAKE_H
#define RX_COMMON_MAX_TAKE_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

/* Folds the tap `v` at index `i` into a window's running maximum (`best`, at `at`): a later tap
 * wins when it is larger or NaN. Selects, not branches, so that loops over windows vectorize. */
static inline __attribute__((always_inline)) void maxpool_take(float *best, int32_t *at, float v, int32_t i)
{
    const bool take = v > *best || isnan(v);
    *best = take ? v : *best;
    *at = take ? i : *at;
}

#endif
