/* data.h: what the data set plugins (cifar10, synthetic) share: the check of a split argument
 * and the seeded shuffle their split and epoch orders come from. */
#ifndef RX_COMMON_DATA_H
#define RX_COMMON_DATA_H

#include <stdint.h>

#include "runexp.h"

/* 0 for a known split, else -1 after rx_fail ("unknown split 7"). */
int data_check_split(rx_ctx *ctx, rx_split split);

/* In-place Fisher-Yates from rng: every permutation of v[0 .. n-1] equally likely, and the same
 * one for the same rng on every platform. */
void data_shuffle_indices(int32_t *v, int64_t n, rx_rng rng);

#endif
