/* data.h: what the data set plugins (cifar10, synthetic, imagefolder) share: the check of a split
 * argument, the seeded shuffle their split and epoch orders come from, a string parameter's
 * choices and the normalization table of 8-bit images. */
#ifndef RX_COMMON_DATA_H
#define RX_COMMON_DATA_H

#include <stdint.h>

#include "runexp.h"

/* 0 for a known split, else -1 after rx_fail ("unknown split 7"). */
int data_check_split(rx_ctx *ctx, rx_split split);

/* In-place Fisher-Yates from rng: every permutation of v[0 .. n-1] equally likely, and the same
 * one for the same rng on every platform. */
void data_shuffle_indices(int32_t *v, int64_t n, rx_rng rng);

/* VALUE's position among the N accepted NAMES into *choice; anything else is refused with the key,
 * the accepted values and what was given. */
int data_parse_choice(rx_ctx *ctx, const char *key, const char *value, const char *const *names, int n, int *choice);

/* One table per channel so that normalizing a pixel is a lookup: lut[c][v] = (v / 255 - mean[c])
 * / std[c], computed in float in the order torchvision does it, so the values match PyTorch's bit
 * for bit. mean and std hold 1 value (for every channel) or one per channel. */
void data_build_luts(float (*lut)[256], int channels, const rx_value *mean, const rx_value *std);

#endif
